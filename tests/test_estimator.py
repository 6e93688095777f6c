"""The gradient estimator as the train step assembles it (loss_lib.make_loss_fn), against the exact
gradient of the ELBO on a toy AIR whose discrete latents can be enumerated.

Toy: 2 steps, 4 images of 16x16, the smoke networks, and continuous posteriors held at the scale
floor (1e-4), so z_where and z_what are their means up to 1e-4 noise. Then, with c the count,
    E_q[ELBO] = sum_{c=0..N} q(c) ELBO(c),   q(c) = prod_{i<c} p_i (1 - p_c)   (p_N := 0),
    ELBO(c)   = log N(x; sum_{i<c} object_i, sigma^2) - sum_{i<=min(c,N-1)} KL_pres_i
                - sum_{i<c} (KL_where_i + KL_what_i),
and its gradient with respect to the parameters that only the z_pres logit reads (the last layer's
logit column and bias of the z_pres/z_where head) is exact: autodiff of that sum. The mean over
many keys of make_loss_fn's gradient (its REINFORCE term with the NVIL baseline, running
statistics and mask, plus the pathwise gradient of the analytic KL) must match it within a few
standard errors; three broken estimators must not.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import loss as loss_lib
from air_jax import modules
from air_jax import objectives
from air_jax import models as models_lib
from tests import helpers

SIZE, BATCH, STEPS, KEYS = 16, 4, 2, 1024
PRIOR = 0.3  # z_pres prior: KL_pres pulls q towards a value inside (0, 1)
FLOOR_RAW_SCALE = -30.0  # softplus(-30) ~ 1e-13: every continuous posterior scale at the 1e-4 floor


def toy_config():
  config = helpers.smoke_config('')
  config.model.max_steps = STEPS
  config.objective.likelihood_scale = 1.0
  config.objective.z_pres_prior = PRIOR
  # Running moments of the last batch alone: then centring with the statistics updated by this
  # batch (instead of those of earlier batches) is centring with this batch's moments, a bias the
  # check resolves; with decay 0.99 that mistake would weigh this batch by 1% only.
  config.objective.signal_decay = 0.0
  return config


def toy_images():
  """0, 1, 1 and 2 bright squares on a 16x16 canvas, in [0, 1]."""
  images = np.zeros((BATCH, SIZE, SIZE), np.float32)
  images[1, 3:9, 4:10] = 1.0
  images[2, 8:14, 7:13] = 0.8
  images[3, 2:7, 2:7] = 1.0
  images[3, 9:15, 9:14] = 0.9
  return jnp.asarray(images)


def logit_column(params):
  """The parameters only the z_pres logit reads: [kernel[:, 0], bias[0]] of the head's last layer."""
  layer = params['step']['pres_where']['MLP_0']['Dense_1']['dense']
  return jnp.concatenate([layer['kernel'][:, 0], layer['bias'][:1]])


def with_logit_column(model_params, column):
  """model_params (a copy) with the logit column (logit_column's layout) replaced by `column`."""
  layer = model_params['step']['pres_where']['MLP_0']['Dense_1']['dense']
  layer = dict(layer, kernel=layer['kernel'].at[:, 0].set(column[:-1]), bias=layer['bias'].at[0].set(column[-1]))
  model_params = jax.tree.map(lambda x: x, model_params)
  model_params['step']['pres_where']['MLP_0']['Dense_1']['dense'] = layer
  return model_params


def with_floor_scales(params):
  """params with the raw scale biases of q(z_where) and q(z_what) at FLOOR_RAW_SCALE."""
  params = jax.tree.map(lambda x: x, params)
  head = params['step']['pres_where']['MLP_0']['Dense_1']['dense']
  head['bias'] = head['bias'].at[4:].set(FLOOR_RAW_SCALE)  # [logit, loc (3), raw scale (3)]
  encoder = params['step']['object_encoder']['MLP_0']['Dense_1']['dense']
  d = encoder['bias'].shape[0] // 2
  encoder['bias'] = encoder['bias'].at[d:].set(FLOOR_RAW_SCALE)  # [loc (D), raw scale (D)]
  return params


def normal_kl(q_loc, q_scale, p_loc, p_scale):
  return jnp.log(p_scale / q_scale) + (q_scale ** 2 + (q_loc - p_loc) ** 2) / (2 * p_scale ** 2) - 0.5


def bernoulli_kl(p, prior):
  return p * jnp.log(p / prior) + (1 - p) * jnp.log((1 - p) / (1 - prior))


def exact_expected_elbo(config, model_params, images):
  """mean over images of sum_c q(c) ELBO(c), with z_where and z_what at their means."""
  cfg, obj = config.model, config.objective
  # Every step present (a huge, unbounded logit bias) gives each step's LSTM state, window and
  # object as they are whenever that step is reached: they depend on earlier steps being present,
  # never on the logit itself.
  forced_config = config.copy_and_resolve_references()
  forced_config.model.z_pres_logit_bias, forced_config.model.z_pres_logit_bound = 1e3, 0.0
  forced = models_lib.build(forced_config).core.apply({'params': model_params}, images, use_mode=True)
  head = modules.PresWhereHead(cfg.predictor_hidden, cfg.z_pres_logit_bias,
                               logit_bound=cfg.z_pres_logit_bound)
  logits = jnp.stack([head.apply({'params': model_params['step']['pres_where']}, forced.hidden[:, i])[0]
                      for i in range(STEPS)], axis=1)
  p = jax.nn.sigmoid(logits)
  kl_pres = bernoulli_kl(p, PRIOR)
  kl_cont = (normal_kl(forced.objects['z_where_loc'], forced.objects['z_where_scale'], jnp.asarray(obj.z_where_prior_loc),
                       jnp.asarray(obj.z_where_prior_scale)).sum(-1)
             + normal_kl(forced.objects['z_what_loc'], forced.objects['z_what_scale'], 0.0, 1.0).sum(-1))
  sigma = obj.likelihood_scale
  expected = 0.0
  for c in range(STEPS + 1):
    canvas = forced.objects['image'][:, :c].sum(1)
    log_likelihood = (-0.5 * jnp.square((images - canvas) / sigma) - jnp.log(sigma)
                      - 0.5 * jnp.log(2 * jnp.pi)).sum((1, 2))
    elbo = log_likelihood - kl_pres[:, :min(c + 1, STEPS)].sum(1) - kl_cont[:, :c].sum(1)
    q = jnp.prod(p[:, :c], axis=1) * (1 - p[:, c] if c < STEPS else 1.0)
    expected = expected + q * elbo
  return expected.mean(), logits


def build_toy():
  """(config, params, earlier-batch signal stats, images, exact gradient of -E[ELBO] w.r.t. the
  logit column, the exact-side logits)."""
  config = toy_config()
  images = toy_images()
  models = models_lib.build(config)
  air, baseline = models.core, models.baseline
  model_params = jax.jit(air.init)({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images)['params']
  model_params = with_floor_scales(model_params)
  hidden = jnp.zeros((1, STEPS, config.model.lstm_size))
  features = jnp.zeros((1, 4 * config.model.lstm_size))
  params = {'model': model_params,
            'baseline': jax.jit(baseline.init)(jax.random.key(2), features, hidden)['params']}
  # Running statistics as the train step would hold them after 20 batches.
  loss_fn = jax.jit(loss_lib.make_loss_fn(models_lib.build(config)))
  stats = objectives.SignalStats.zeros(STEPS)
  for k in range(20):
    stats = loss_fn(params, stats, images, jax.random.key(100 + k), jnp.float32(PRIOR))[1]['stats']
  assert np.all(np.asarray(stats.weight) > 0)

  def negative_objective(column, model_params):
    expected, logits = exact_expected_elbo(config, with_logit_column(model_params, column), images)
    return -expected, logits

  exact, logits = jax.jit(jax.grad(negative_objective, has_aux=True))(logit_column(model_params), model_params)
  return config, params, stats, images, np.asarray(exact, np.float64), np.asarray(logits)


@pytest.fixture(scope='module')
def toy():
  return build_toy()


def estimator_samples(config, params, stats, images, variants=None, keys=KEYS):
  """make_loss_fn's gradient on the logit column, one row per key: {variant: [keys, L + 1]}.
  variants: {name: {objectives attribute: replacement}}, traced into the same jit as the real
  estimator ('real'), so one compilation serves them all."""
  variants = {'real': {}, **(variants or {})}

  def one(key):
    rows = {}
    for name, replacements in variants.items():
      originals = {attr: getattr(objectives, attr) for attr in replacements}
      try:
        for attr, replacement in replacements.items():
          setattr(objectives, attr, replacement)  # read by make_loss_fn while it is traced
        loss_fn = loss_lib.make_loss_fn(models_lib.build(config))
        grads = jax.grad(lambda p: loss_fn(p, stats, images, key, jnp.float32(PRIOR))[0])(params)
      finally:
        for attr, original in originals.items():
          setattr(objectives, attr, original)
      rows[name] = logit_column(grads['model'])
    return rows

  samples = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), keys))
  return {name: np.asarray(s, np.float64) for name, s in samples.items()}


def z_scores(samples, exact):
  """(mean - exact) / standard error per coordinate; coordinates whose every sample is the same
  (a ReLU unit dead on all four images) must equal the exact value and are left out."""
  stderr = samples.std(0) / np.sqrt(len(samples))
  constant = stderr == 0
  np.testing.assert_allclose(samples[0, constant], exact[constant], atol=1e-6)
  assert constant.sum() < len(exact) // 2
  return (samples.mean(0)[~constant] - exact[~constant]) / stderr[~constant]


def test_toy_is_what_the_exact_gradient_assumes(toy):
  """The sampled forward pass sees the exact side's step-1 logits, its continuous latents sit at
  their means, and the discrete part matters: the exact gradient is not just the KL's."""
  config, params, _, images, exact, logits = toy
  forward = jax.jit(lambda p, x, key: models_lib.build(config).core.apply({'params': p}, x, rngs={'sample': key}))
  out = forward(params['model'], images, jax.random.key(5))
  np.testing.assert_allclose(out.z_pres_logits[:, 0], logits[:, 0], atol=1e-5)
  assert float(jnp.abs(out.objects['z_where'] - out.objects['z_where_loc']).max()) < 1e-3
  assert float(jnp.abs(out.objects['z_what'] - out.objects['z_what_loc']).max()) < 1e-3
  assert np.all((logits > -2) & (logits < 2))  # both values of every z_pres are sampled often
  assert np.abs(exact).max() > 0.05


def flipped_surrogate(log_prob, advantage, active, real=objectives.reinforce_surrogate):
  return real(log_prob, -advantage, active)


def unmasked_surrogate(log_prob, advantage, active, real=objectives.reinforce_surrogate):
  return real(log_prob, advantage, jnp.ones_like(active))


def this_batch_normalised_signal(signal, stats, real=objectives.normalised_signal):
  """Centres and scales with this batch's moments, whatever the running statistics say."""
  batch_stats = objectives.SignalStats.zeros(signal.shape[1]).update(signal, jnp.ones_like(signal), 0.0)
  return real(signal, batch_stats)


BROKEN = {
    'advantage sign flipped': {'reinforce_surrogate': flipped_surrogate},
    'mask removed': {'reinforce_surrogate': unmasked_surrogate},
    "this batch's statistics": {'normalised_signal': this_batch_normalised_signal},
}


@pytest.fixture(scope='module')
def samples(toy):
  config, params, stats, images, _, _ = toy
  return estimator_samples(config, params, stats, images, BROKEN)


def test_loss_fn_gradient_matches_exact_gradient(toy, samples):
  exact, real = toy[4], samples['real']
  z = z_scores(real, exact)
  assert np.abs(z).max() < 4.5, z
  # The check resolves the REINFORCE part: the estimate's errors are small against the gradient.
  stderr = real.std(0) / np.sqrt(len(real))
  assert np.linalg.norm(stderr) < 0.1 * np.linalg.norm(exact)


@pytest.mark.parametrize('name', list(BROKEN))
def test_broken_estimators_fail_the_check(toy, samples, name):
  """Measured (1,024 keys): max |z| ~60 (sign), ~25 (mask), ~17 (this batch's statistics)."""
  exact = toy[4]
  assert np.abs(z_scores(samples['real'], exact)).max() < 4.5
  assert np.abs(z_scores(samples[name], exact)).max() > 6, z_scores(samples[name], exact)
