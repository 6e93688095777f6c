"""The 'concrete' and 'vimco' z_pres estimators (air_jax.loss): the relaxed draw's gradient against
the exact one as the temperature falls, VIMCO unbiased for the K-draw bound on a toy whose bound is
enumerated exactly (with mutants it catches), and each estimator through the train step."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import loss as loss_lib
from air_jax import models as models_lib
from air_jax import objectives
from air_jax import steps
from air_jax.configs import shapes_3d as shapes_3d_config
from tests import helpers


def test_relaxed_draw_is_bernoulli_and_its_gradient_approaches_the_exact_one():
  """f(z) = (z - a)^2, z ~ Bern(sigmoid(theta)): d/dtheta E f = sigmoid'(theta) (1 - 2a). The
  relaxed draw's pathwise gradient is biased, less so as the temperature falls."""
  theta, a, draws = 0.4, 0.2, 400_000
  keys = jax.random.split(jax.random.key(0), draws)
  exact = jax.nn.sigmoid(theta) * (1 - jax.nn.sigmoid(theta)) * (1 - 2 * a)

  def mean_gradient(temperature):
    grad = jax.vmap(jax.grad(lambda t, k: (objectives.relaxed_bernoulli(t, k, temperature) - a) ** 2), (None, 0))
    return float(jnp.mean(grad(jnp.float32(theta), keys)))

  errors = [abs(mean_gradient(t) - exact) for t in (2.0, 0.5, 0.1)]
  assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05 * abs(exact), (errors, exact)
  hard = jax.vmap(lambda k: objectives.relaxed_bernoulli(jnp.float32(theta), k, 0.5, straight_through=True))(keys)
  assert set(np.unique(hard)) == {0.0, 1.0}
  assert abs(float(hard.mean()) - float(jax.nn.sigmoid(theta))) < 0.005  # the hard draw is Bern(q)


LOG_JOINT = jnp.array([[-1.0, -2.5], [-3.0, -0.5]])  # log p(x, h) for h = (h0, h1) in {0, 1}^2
K = 3


def log_q(theta, h):
  """log q(h) = sum_d log Bern(h_d; sigmoid(theta_d)); h [..., 2]."""
  return objectives.bernoulli_log_prob(h, theta).sum(-1)


def exact_bound(theta):
  """L_K = sum over K-tuples of states of prod_k q(h_k) log (1/K) sum_k p(x, h_k) / q(h_k)."""
  states = jnp.array(list(itertools.product([0.0, 1.0], repeat=2)))
  total = 0.0
  for tuple_ in itertools.product(range(4), repeat=K):
    h = states[jnp.array(tuple_)]
    log_w = LOG_JOINT[h[:, 0].astype(int), h[:, 1].astype(int)] - log_q(theta, h)
    total += jnp.exp(log_q(theta, h).sum()) * (jax.nn.logsumexp(log_w) - jnp.log(K))
  return total


def estimator(theta, key, surrogate):
  h = jax.random.bernoulli(key, jax.nn.sigmoid(theta), (K, 2)).astype(jnp.float32)
  log_w = LOG_JOINT[h[:, 0].astype(int), h[:, 1].astype(int)] - log_q(theta, h)
  return jax.grad(lambda t: -surrogate(LOG_JOINT[h[:, 0].astype(int), h[:, 1].astype(int)][:, None]
                                       - log_q(t, h)[:, None], log_q(t, h)[:, None]).sum())(theta), log_w


def no_leave_one_out(log_w, log_q_):
  """The score weighted by the bound itself (unbiased, with more variance)."""
  bound = jax.nn.logsumexp(log_w, 0) - jnp.log(log_w.shape[0])
  return -(bound + (jax.lax.stop_gradient(bound)[None] * log_q_).sum(0))


def own_draw_baseline(log_w, log_q_):
  """A baseline that keeps draw k's own weight: the score term vanishes (biased)."""
  bound = jax.nn.logsumexp(log_w, 0) - jnp.log(log_w.shape[0])
  return -bound


def test_vimco_is_unbiased_for_the_k_draw_bound():
  theta = jnp.array([0.3, -0.6])
  exact = np.asarray(jax.grad(exact_bound)(theta))
  keys = jax.random.split(jax.random.key(1), 100_000)
  samples = {}
  for name, surrogate in (('vimco', objectives.vimco_surrogate), ('plain', no_leave_one_out),
                          ('own', own_draw_baseline)):
    samples[name] = np.asarray(jax.jit(jax.vmap(lambda k: estimator(theta, k, surrogate)[0]))(keys), np.float64)
  z = lambda s: (s.mean(0) - exact) / (s.std(0) / np.sqrt(len(s)))
  assert np.abs(z(samples['vimco'])).max() < 4, (samples['vimco'].mean(0), exact)
  assert np.abs(z(samples['plain'])).max() < 4  # also unbiased ...
  assert (samples['vimco'].var(0) < samples['plain'].var(0)).all()  # ... with more variance
  assert np.abs(z(samples['own'])).max() > 10  # a baseline that sees its own draw is biased
  with pytest.raises(ValueError, match='at least 2'):
    objectives.vimco_surrogate(jnp.zeros((1, 3)), jnp.zeros((1, 3)))


def test_concrete_trains_through_the_train_step(scene_batch, init_smoke):
  """The train step passes the annealed temperature; straight-through draws train too."""
  config = helpers.smoke_config('')
  config.objective.z_pres_estimator, config.objective.concrete_straight_through = 'concrete', True
  models = models_lib.build(config)
  state = init_smoke(jax.random.key(0))  # the estimator changes no parameter's shape
  before = jax.tree.map(np.array, state.params['model'])
  train_step = steps.make_train_step(models)
  for _ in range(2):
    state, metrics = train_step(state, scene_batch['image'][:8], scene_batch['count'][:8], jax.random.key(1))
  assert np.isfinite(float(metrics['loss'])) and int(metrics['nonfinite_steps']) == 0
  head = lambda p: p['step']['pres_where']['MLP_0']['Dense_1']['dense']['kernel'][:, 0]
  assert not np.allclose(head(before), head(state.params['model']))  # q(z_pres) learns


def logit_column_gradient(config, state, images, learn_z_pres=True):
  """The loss's gradient on the parameters only q(z_pres)'s logit reads (the head's logit column)."""
  loss_fn = loss_lib.make_loss_fn(models_lib.build(config))
  prior = jnp.float32(config.objective.z_pres_prior)

  def column(params, learn):
    grads = jax.grad(lambda p: loss_fn(p, state.signal_stats, images, jax.random.key(3), prior, learn)[0])(params)
    layer = grads['model']['step']['pres_where']['MLP_0']['Dense_1']['dense']
    return jnp.concatenate([layer['kernel'][:, 0], layer['bias'][:1]])

  return np.asarray(jax.jit(column)(state.params, jnp.asarray(learn_z_pres)))


@pytest.mark.parametrize('estimator_name', ['concrete', 'vimco'])
def test_held_z_pres_gets_no_gradient_and_the_likelihood_reaches_it(estimator_name, scene_batch, init_smoke):
  """learn_z_pres False (the freeze): exactly no gradient on q(z_pres)'s logit. Otherwise the
  likelihood reaches it (through the relaxed draw, or VIMCO's score): the gradient changes with
  the likelihood's scale, which the KLs do not read."""
  config = helpers.smoke_config('')
  config.objective.z_pres_estimator, config.objective.vimco_samples = estimator_name, 2
  state = init_smoke(jax.random.key(0))
  images = jnp.asarray(scene_batch['image'][:8], jnp.float32) / 255.0
  held = logit_column_gradient(config, state, images, learn_z_pres=False)
  assert np.all(held == 0), held
  sharp = logit_column_gradient(config, state, images)
  config.objective.likelihood_scale = 1e4  # the likelihood's gradient ~0: the KLs' alone
  flat = logit_column_gradient(config, state, images)
  assert np.abs(sharp - flat).max() > 1e-2 * np.abs(sharp).max(), (sharp, flat)


def test_relaxed_and_multi_draw_estimators_refuse_3d():
  config = shapes_3d_config.get_config('smoke')
  for name in ('concrete', 'vimco'):
    config.objective.z_pres_estimator = name
    with pytest.raises(ValueError, match="use 'nvil'"):
      models_lib.build(config)
  config.objective.z_pres_estimator = 'reinforce'
  with pytest.raises(ValueError, match='z_pres_estimator must be one of'):
    models_lib.build(config)
