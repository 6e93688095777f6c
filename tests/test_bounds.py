"""Importance-weighted bounds (air_jax.bounds): the estimator on a model whose log p(x) is known in
closed form, the scene kinds' object log ratios against their KLs, and AIR's log weights against
the ELBO the loss computes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import bounds
from air_jax import cores
from air_jax import loss as loss_lib
from air_jax import models as models_lib
from air_jax import steps
from air_jax.configs import shapes_3d as shapes_3d_config
from tests import helpers


def gaussian_toy(x, q_loc, q_scale, draws, seed=0, noise=0.5):
  """p(z) = N(0, 1), p(x | z) = N(z, noise^2), q(z) = N(q_loc, q_scale^2): log w [M, draws], the
  exact log p(x) = log N(x; 0, 1 + noise^2) [M] and the ELBO [M]."""
  z = q_loc[:, None] + q_scale[:, None] * np.random.default_rng(seed).standard_normal((len(x), draws))
  log_n = lambda v, loc, scale: -0.5 * ((v - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)
  log_w = log_n(x[:, None], z, noise) + log_n(z, 0, 1) - log_n(z, q_loc[:, None], q_scale[:, None])
  exact = log_n(x, 0, np.sqrt(1 + noise ** 2))
  elbo = (-0.5 * ((x - q_loc) ** 2 + q_scale ** 2) / noise ** 2 - np.log(noise) - 0.5 * np.log(2 * np.pi)
          - (0.5 * (q_scale ** 2 + q_loc ** 2 - 1) - np.log(q_scale)))
  return log_w, exact, elbo


def test_bounds_are_the_elbo_at_one_sample_and_rise_towards_log_px():
  x = np.linspace(-2, 2, 50)
  # q: the exact posterior N(x / 1.25, 0.2) shifted by 0.5 and narrower (sd 0.4 < 0.447): a loose ELBO
  log_w, exact, elbo = gaussian_toy(x, q_loc=x / 1.25 + 0.5, q_scale=np.full(50, 0.4), draws=4_000)
  estimates = {k: bounds.bound(log_w, k) for k in (1, 10, 100, 1_000, 4_000)}
  np.testing.assert_allclose(estimates[1], elbo, atol=0.05)
  means = [estimates[k].mean() for k in (1, 10, 100, 1_000, 4_000)]
  assert all(a < b for a, b in zip(means, means[1:])), means
  # a bound in expectation (one image's estimate may pass log p(x)); near it at 4,000 draws
  assert abs(exact.mean() - means[-1]) < 0.03 and exact.mean() - means[0] > 0.5, (exact.mean(), means)


def test_bound_of_all_draws_is_at_least_their_mean_log_weight_per_image():
  log_w = np.random.default_rng(0).normal(size=(6, 40)) * 5
  assert (bounds.bound(log_w, 40) >= bounds.bound(log_w, 1)).all()  # Jensen, draw for draw
  with pytest.raises(ValueError, match='do not divide'):
    bounds.bound(log_w, 7)


def test_count_posterior_is_the_weights_share_per_count():
  log_w = np.log(np.array([[1.0, 1.0, 2.0, 4.0], [1.0, 0.0, 0.0, 0.0]]) + 1e-300)
  counts = np.array([[0, 1, 1, 2], [2, 0, 0, 1]])
  np.testing.assert_allclose(bounds.count_posterior(log_w, counts, 2), [[1 / 8, 3 / 8, 4 / 8], [0, 0, 1]], atol=1e-12)


def test_summarise_reports_each_number_of_samples_and_the_true_counts():
  log_w = np.random.default_rng(1).normal(size=(4, 10))
  figures = bounds.summarise(log_w, (1, 10), np.array([0, 1, 1, 2]))
  assert set(figures) == {'1', '10'} and set(figures['10']['per_count']) == {'0', '1', '2'}
  np.testing.assert_allclose(figures['1']['mean'], log_w.mean())


def test_draws_per_call_divides_the_draws():
  assert [bounds.draws_per_call(n, 50) for n in (1, 10, 100, 1_000, 7, 97)] == [1, 10, 50, 50, 7, 1]


def sampled_output(objects, z_pres):
  """A CoreOutput carrying objects and z_pres (the fields object_log_ratio and object_kls read)."""
  zeros = jnp.zeros_like(z_pres)
  return cores.CoreOutput(z_pres_logits=zeros, z_pres=z_pres, active=jnp.ones_like(z_pres), objects=objects,
                          canvas=None, hidden=None, image_features=None)


def test_2d_object_log_ratio_averages_to_minus_the_object_kls():
  scene = models_lib.build(helpers.smoke_config('')).scene
  keys = iter(jax.random.split(jax.random.key(0), 8))
  draws, steps_, what = 5_000, 2, scene.model.z_what_size
  normal = lambda shape: jax.random.normal(next(keys), shape)
  where_loc, what_loc = normal((1, steps_, 3)), normal((1, steps_, what))
  where_scale, what_scale = 0.3 + jax.random.uniform(next(keys), (1, steps_, 3)), 0.5 + jax.random.uniform(next(keys), (1, steps_, what))
  tile = lambda a: jnp.broadcast_to(a, (draws,) + a.shape[1:])
  objects = dict(z_where_loc=tile(where_loc), z_where_scale=tile(where_scale),
                 z_what_loc=tile(what_loc), z_what_scale=tile(what_scale),
                 z_where=where_loc + where_scale * normal((draws, steps_, 3)),
                 z_what=what_loc + what_scale * normal((draws, steps_, what)))
  out = sampled_output(objects, jnp.ones((draws, steps_)))
  ratio = scene.object_log_ratio(out)
  kl = sum(scene.object_kls(out).values())
  standard_error = ratio.std(0) / np.sqrt(draws)
  assert (jnp.abs(ratio.mean(0) + kl[0]) < 4 * standard_error).all(), (ratio.mean(0), kl[0], standard_error)


def test_3d_object_log_ratio_averages_to_minus_the_object_kls():
  config = shapes_3d_config.get_config('smoke')
  config.objective.discrete_gradient = 'reinforce'  # object_kls then keeps q(identity)'s own KL
  scene = models_lib.build(config).scene
  keys = iter(jax.random.split(jax.random.key(1), 8))
  draws, steps_, k = 5_000, 3, scene.num_shapes
  normal = lambda shape: jax.random.normal(next(keys), shape)
  logits, position_loc, rotation_loc = normal((1, steps_, k)), 0.5 * normal((1, steps_, 2)), normal((1, steps_, k, 2))
  position_scale = 0.2 + jax.random.uniform(next(keys), (1, steps_, 2))
  rotation_scale = 0.3 + jax.random.uniform(next(keys), (1, steps_, k, 2))
  tile = lambda a: jnp.broadcast_to(a, (draws,) + a.shape[1:])
  identity = jax.random.categorical(next(keys), tile(logits)).astype(jnp.int32)
  position = position_loc + position_scale * normal((draws, steps_, 2))
  rotations = rotation_loc + rotation_scale * normal((draws, steps_, k, 2))
  chosen = jnp.take_along_axis(rotations, identity[..., None, None], -2)[..., 0, :]
  objects = dict(identity_logits=tile(logits), identity=identity, position_loc=tile(position_loc),
                 position_scale=tile(position_scale), rotation_loc=tile(rotation_loc),
                 rotation_scale=tile(rotation_scale), rotations=rotations,
                 pose=jnp.concatenate([position, chosen], -1))
  out = sampled_output(objects, jnp.ones((draws, steps_)))
  ratio = scene.object_log_ratio(out)
  kl = sum(scene.object_kls(out).values())  # the penalties are the draws' own
  standard_error = ratio.std(0) / np.sqrt(draws)
  assert (jnp.abs(ratio.mean(0) + kl.mean(0)) < 4 * standard_error).all(), (ratio.mean(0), kl.mean(0), standard_error)


@pytest.fixture(scope='module')
def smoke_models_and_params():
  models = models_lib.build(helpers.smoke_config(''))
  return models, steps.init_state(models, jax.random.key(0)).params['model']


def test_air_log_weight_is_the_elbo_on_average(smoke_models_and_params, scene_batch):
  """The same draws: log w - (the loss's Rao-Blackwellised ELBO) has mean zero."""
  models, params = smoke_models_and_params
  images = jnp.asarray(scene_batch['image'][:4], jnp.float32) / 255.0
  prior = float(models.config.objective.z_pres_prior)

  def difference(key):
    log_w, _ = bounds.log_weight(models, params, images, key, prior)
    out = models.core.apply({'params': params}, images, rngs={'sample': key})
    return log_w - loss_lib.elbo_terms_for(models, out, images, prior).elbo

  diff = jax.jit(jax.vmap(difference))(jax.random.split(jax.random.key(2), 2_000))  # [draws, B]
  standard_error = diff.std(0) / np.sqrt(len(diff))
  assert (diff.std(0) > 0).all()  # the weights do use sampled densities, not the KLs
  assert (jnp.abs(diff.mean(0)) < 4 * standard_error).all(), (diff.mean(0), standard_error)


def test_draw_log_weights_in_chunks(smoke_models_and_params, scene_batch):
  models, params = smoke_models_and_params
  images = scene_batch['image'][:5]
  log_w, counts = bounds.draw_log_weights(models, params, images, 12, jax.random.key(0), batch_size=4, draw_limit=5)
  assert log_w.shape == counts.shape == (5, 12) and np.isfinite(log_w).all()
  assert counts.min() >= 0 and counts.max() <= models.config.model.max_steps
  assert len(np.unique(log_w)) > 30  # the draws differ (a draw of no object repeats its weight)
  assert not np.array_equal(log_w[:, :4], log_w[:, 4:8])  # 4 draws a call: each chunk its own key
  again, _ = bounds.draw_log_weights(models, params, images, 12, jax.random.key(0), batch_size=4, draw_limit=5)
  np.testing.assert_array_equal(log_w, again)
  with pytest.raises(ValueError, match='positive'):
    bounds.draw_log_weights(models, params, images, 0, jax.random.key(0))


def test_importance_bound_in_chunks_is_the_bound_of_all_draws(smoke_models_and_params, scene_batch):
  models, params = smoke_models_and_params
  images = jnp.asarray(scene_batch['image'][:4], jnp.float32) / 255.0
  prior, key = float(models.config.objective.z_pres_prior), jax.random.key(3)
  chunked = jax.jit(lambda p: bounds.importance_bound(models, p, images, key, prior, 6, draw_limit=4))(params)  # 2 x 3
  log_w, _ = jax.jit(jax.vmap(lambda k: bounds.log_weight(models, params, images, k, prior)))(jax.random.split(key, 6))
  np.testing.assert_allclose(chunked, jax.nn.logsumexp(log_w, 0) - np.log(6), rtol=1e-5)
