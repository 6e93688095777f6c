"""The compiled steps: TrainState, its initialisation and optimizer, one train step and one eval
step. Every scene kind's steps are these (the scene kind is inside the model and the loss).

The train step's key is fold_in(root_key, step), so nothing random is stored.
"""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from air_jax import bounds
from air_jax import cores
from air_jax import loss as loss_lib
from air_jax import objectives
from air_jax import parallel
from air_jax.data import sources


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # {'model': AIR params, 'baseline': baseline params}
  opt_state: Any
  signal_stats: objectives.SignalStats
  nonfinite_steps: jax.Array      # steps skipped because the loss or a gradient was not finite
  nonfinite_in_a_row: jax.Array   # of those, how many came last, one after another
  ema_params: Any = flax.struct.field(default_factory=dict)  # EMA of params['model'] ({} if off)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam for the model, its own Adam for the baseline. The model's gradients are clipped to
  global norm config.grad_clip_norm by the train step (clip_by_norm, with the norm it computes
  anyway); optax.identity() holds the place of optax.clip_by_global_norm, so the optimizer state
  keeps the layout of earlier checkpoints. The model's learning rate follows a cosine to
  config.learning_rate_decay_to x learning_rate over num_train_steps (constant when that is 1)."""
  learning_rate = config.learning_rate
  if config.learning_rate_decay_to != 1.0:
    learning_rate = optax.cosine_decay_schedule(config.learning_rate, config.num_train_steps,
                                                alpha=config.learning_rate_decay_to)
  labels = lambda params: {k: jax.tree.map(lambda _: k, v) for k, v in params.items()}
  return optax.multi_transform({
      'model': optax.chain(optax.identity(), optax.adam(learning_rate)),
      'baseline': optax.adam(config.baseline_learning_rate),
  }, labels)


def clip_by_norm(tree, norm: jax.Array, max_norm: float):
  """tree * min(1, max_norm / norm): optax.clip_by_global_norm given the global norm. Clipping
  inside optax would reduce over the gradients a second time and write a clipped copy of them
  (two extra passes over the 2.56M-entry image kernel per step; 5% of the CPU step, measured)."""
  scale = jnp.minimum(1.0, max_norm / norm)
  return jax.tree.map(lambda g: g * scale, tree)


def init_state(models, key: jax.Array) -> TrainState:
  """A new TrainState of a run's models (air_jax.models.build), unsharded (see create_train_state
  for the sharded one). Compiled as one program: run eagerly, each op of the forward pass that
  init traces would compile on its own (20 s instead of 2 for the 3D smoke model)."""
  return jax.jit(functools.partial(_new_state, models))(key)


def _new_state(models, key: jax.Array) -> TrainState:
  config = models.config
  model_key, sample_key, baseline_key = jax.random.split(key, 3)
  images = jnp.zeros((1,) + models.scene.image_shape, jnp.float32)
  out, variables = models.core.init_with_output({'params': model_key, 'sample': sample_key}, images)
  model_params = variables['params']
  baseline_params = models.baseline.init(baseline_key, jnp.zeros(out.image_features.shape, jnp.float32),
                                         jnp.zeros(out.hidden.shape, jnp.float32))['params']
  params = {'model': model_params, 'baseline': baseline_params}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=make_optimizer(config).init(params),
                    signal_stats=objectives.SignalStats.zeros(config.model.max_steps),
                    nonfinite_steps=jnp.zeros((), jnp.int32), nonfinite_in_a_row=jnp.zeros((), jnp.int32),
                    # A copy, not the same arrays: the train step donates the state, and a buffer donated
                    # twice (params and their average) crashes the CPU runtime.
                    ema_params=jax.tree.map(jnp.copy, model_params) if uses_ema(config) else {})


def uses_ema(config: ml_collections.ConfigDict) -> bool:
  """Whether the run keeps an exponential moving average of the model parameters to evaluate."""
  return config.ema_decay > 0


def eval_params(state: TrainState, config: ml_collections.ConfigDict):
  """The model parameters to evaluate: their EMA when config.ema_decay > 0, else the latest."""
  return state.ema_params if uses_ema(config) else state.params['model']


def ema_update(ema, params, decay: float, step: jax.Array):
  """ema <- d ema + (1 - d) params with d = min(decay, (1 + step) / (10 + step)): early on the
  average covers the few steps there are instead of remembering the initialisation."""
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)


def create_train_state(models, key: jax.Array, mesh) -> TrainState:
  """init_state built directly replicated over the mesh."""
  return parallel.create_replicated(functools.partial(init_state, models), key, mesh)


def log_linear(step: jax.Array, start: float, end: float, steps: int) -> jax.Array:
  """start at step 0 to end at `steps` (and after), linear in log; end throughout if steps <= 0."""
  if steps <= 0:
    return jnp.float32(end)
  fraction = jnp.clip(step / steps, 0.0, 1.0)
  return jnp.exp(np.log(start) + fraction * (np.log(end) - np.log(start)))


def z_pres_prior_at(step: jax.Array, objective: ml_collections.ConfigDict) -> jax.Array:
  """Prior success probability: log-linear from z_pres_prior_start to z_pres_prior."""
  return log_linear(step, objective.z_pres_prior_start, objective.z_pres_prior, objective.z_pres_prior_anneal_steps)


def concrete_temperature_at(step: jax.Array, objective: ml_collections.ConfigDict) -> jax.Array:
  """The Concrete draw's temperature: log-linear from concrete_temperature_start to
  concrete_temperature over concrete_anneal_steps."""
  return log_linear(step, objective.concrete_temperature_start, objective.concrete_temperature,
                    objective.concrete_anneal_steps)


def make_train_step(models, mesh=None):
  """(state, images [B, H, W] uint8 or float in [0, 1], counts [B], root_key) -> (state, metrics), compiled once for
  the mesh (default: all devices): batch sharded over 'data', state replicated, state donated.

  A step whose loss or any gradient is not finite changes nothing but the step counter (so the
  next step reads the next batch) and the non-finite counters."""
  config = models.config
  loss_fn = loss_lib.make_loss_fn(models)
  optimizer = make_optimizer(config)

  def train_step(state: TrainState, images, counts, root_key):
    images = sources.to_unit_interval(images)
    key = jax.random.fold_in(root_key, state.step)
    prior = z_pres_prior_at(state.step, config.objective)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.signal_stats, images, key, prior,
        state.step >= config.objective.z_pres_freeze_steps,
        state.step >= config.objective.discrete_freeze_steps,
        concrete_temperature_at(state.step, config.objective))
    # A norm is finite iff every entry is (or it overflowed: a step to skip as well): one reduction
    # per network instead of an isfinite pass per leaf; the model's is also the grad_norm metric.
    grad_norms = {name: optax.tree.norm(g) for name, g in grads.items()}
    finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(jnp.stack(list(grad_norms.values()))))

    def apply_update(params, opt_state, ema, grads, stats, new_stats):
      grads = dict(grads, model=clip_by_norm(grads['model'], grad_norms['model'], config.grad_clip_norm))
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      if uses_ema(config):
        ema = ema_update(ema, params['model'], config.ema_decay, state.step)
      return params, opt_state, ema, new_stats

    def skip_update(params, opt_state, ema, grads, stats, new_stats):
      return params, opt_state, ema, stats

    # lax.cond, not jnp.where over the state: only one branch runs, and its writes go in place.
    params, opt_state, ema_params, signal_stats = jax.lax.cond(
        finite, apply_update, skip_update, state.params, state.opt_state, state.ema_params, grads,
        state.signal_stats, aux['stats'])
    out, terms = aux['out'], aux['terms']
    active = out.active
    count = cores.count_of(out.z_pres)
    metrics = dict(
        loss=-terms.elbo.mean(), elbo=terms.elbo.mean(), log_likelihood=terms.log_likelihood.mean(),
        kl_pres=terms.kl_pres.sum(-1).mean(), baseline_loss=aux['baseline_loss'],
        advantage_sd=jnp.sqrt((active * jnp.square(aux['advantage'])).sum() / active.sum()),
        count=count.mean(), grad_norm=grad_norms['model'], z_pres_prior=prior,
        **{f'kl_{name}': kl.sum(-1).mean() for name, kl in terms.kl_objects.items()})
    new_state = TrainState(
        step=state.step + 1, params=params, opt_state=opt_state, signal_stats=signal_stats,
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1), ema_params=ema_params)
    metrics['nonfinite_steps'] = new_state.nonfinite_steps
    if models.scene.has_counts:
      metrics['train_count_accuracy'] = (count == counts).mean()
    return new_state, metrics

  mesh = mesh if mesh is not None else parallel.make_mesh()
  data, same = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  return jax.jit(train_step, in_shardings=(same, data, data, same), out_shardings=(same, same),
                 donate_argnums=(0,))


def make_eval_step(models, mesh=None, importance_samples: int = 0):
  """(model params, images [B, H, W], key) -> per image: inferred count with q's modes (the present
  slots, cores.count_of), ELBO of a sample, the modes' reconstruction error
  mean((canvas - image)^2) and latents (the scene kind's summary of them); with
  importance_samples = K > 0 (the loop passes config.eval_importance_samples) also importance_bound,
  the K-draw bound L_K (air_jax.bounds)."""
  config, core = models.config, models.core
  draws = importance_samples

  def eval_step(params, images, key):
    images = sources.to_unit_interval(images)
    mode = core.apply({'params': params}, images, use_mode=True)
    sample = core.apply({'params': params}, images, rngs={'sample': key})
    prior = jnp.float32(config.objective.z_pres_prior)
    terms = loss_lib.elbo_terms_for(models, sample, images, prior)
    result = dict(count=cores.count_of(mode.z_pres), elbo=terms.elbo,
                  reconstruction_mse=((mode.canvas - images) ** 2).mean((1, 2)),
                  z_pres_prob=jax.nn.sigmoid(mode.z_pres_logits), z_pres=mode.z_pres,
                  **models.scene.summary(mode.objects))
    if draws > 0:
      result['importance_bound'] = bounds.importance_bound(models, params, images, jax.random.fold_in(key, 1), prior, draws)
    return result

  mesh = mesh if mesh is not None else parallel.make_mesh()
  data, same = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  return jax.jit(eval_step, in_shardings=(same, data, same), out_shardings=data)
