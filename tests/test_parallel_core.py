"""The spatially parallel core (config.model.inference 'parallel', air_jax.cores.parallel): cells in
row-major slot order, each object placed in its cell, a count of the present cells; NVIL with
per-cell credit unbiased against the exact gradient on a toy whose 2^4 cell decisions are
enumerated (as tests/test_estimator.py for the recurrent core); a run end to end through the one
loop (sharded over the suite's 4 fake devices), resume and infer."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import cores
from air_jax import glimpse
from air_jax import infer
from air_jax import loss as loss_lib
from air_jax import models as models_lib
from air_jax import objectives
from air_jax import train
from air_jax.configs import shapes_3d as shapes_3d_config
from air_jax.cores import parallel
from tests import helpers
from tests import test_estimator as recurrent_toy

GRID = 2  # 4 cells: 16 joint z_pres values to enumerate


def parallel_config(data_dir='', grid=GRID, cell_order='parallel', **overrides):
  """The smoke config with the parallel core; its cells decide at once unless cell_order says 'raster'."""
  config = helpers.smoke_config(data_dir, **overrides)
  config.model.inference, config.model.grid_size, config.model.cell_order = 'parallel', grid, cell_order
  config.model.image_conv_features, config.model.cell_hidden = (4, 8), 16
  return config


def test_cells_are_row_major_slots_and_each_object_sits_in_its_cell(scene_batch):
  np.testing.assert_allclose(parallel.cell_centres(2), [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])
  config = parallel_config(grid=3)
  config.model.z_pres_logit_bias = 0.0
  models = models_lib.build(config)
  assert models.config.model.max_steps == 9  # a slot per cell
  images = jnp.asarray(scene_batch['image'][:8], jnp.float32) / 255.0
  params = helpers.compiled(models.core.init)({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images[:1])['params']
  assert set(params['step']) == {'pres_where', 'object_encoder', 'object_decoder'}  # the recurrent core's object model
  out = helpers.compiled(models.core.apply)({'params': params}, images, rngs={'sample': jax.random.key(2)})
  assert out.z_pres.shape == (8, 9) and out.objects['z_where'].shape == (8, 9, 3) and out.canvas.shape == (8, 50, 50)
  np.testing.assert_array_equal(out.active, 1.0)
  centre = np.asarray(parallel.cell_centres(3))[None]
  np.testing.assert_allclose(out.objects['z_where'][..., 1:], centre + out.objects['z_where_offset'][..., 1:] / 3,
                             atol=1e-6)
  np.testing.assert_allclose(out.objects['z_where'][..., 0], out.objects['z_where_offset'][..., 0])
  np.testing.assert_array_equal(cores.count_of(out.z_pres), np.asarray(out.z_pres).sum(-1))
  assert 0 < float(out.z_pres.mean()) < 1  # some cells present, some not: the count is not a prefix
  drawn = (np.asarray(out.z_pres)[..., None, None] * np.asarray(out.objects['image'])).sum(1)
  np.testing.assert_allclose(out.canvas, drawn, atol=1e-5)  # composition 'sum' of the present cells


def test_per_cell_credit_is_the_likelihood_less_the_cells_own_object_kl(scene_batch):
  config = parallel_config()
  models = models_lib.build(config)
  images = jnp.asarray(scene_batch['image'][:4], jnp.float32) / 255.0
  params = helpers.compiled(models.core.init)({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images[:1])['params']
  out = helpers.compiled(models.core.apply)({'params': params}, images, rngs={'sample': jax.random.key(2)})
  terms = loss_lib.elbo_terms_for(models, out, images, 0.3)
  kl_object = sum(terms.kl_objects.values())
  np.testing.assert_allclose(terms.learning_signal, terms.log_likelihood[:, None] - kl_object, rtol=1e-6)
  assert not models.core.sequential and models_lib.build(helpers.smoke_config('')).core.sequential


def test_the_residual_context_is_the_pooled_image_less_canvas_around_the_cell():
  images = jnp.ones((2, 40, 40))
  context = parallel.residual_context(images, jnp.zeros_like(images), jnp.asarray(0), grid_size=2)
  k = parallel.CONTEXT_PIXELS
  assert context.shape == (2, (3 * k) ** 2)
  square = np.asarray(context).reshape(2, 3 * k, 3 * k)
  np.testing.assert_allclose(square[:, :k], 0.0)   # above the top row: outside the image
  np.testing.assert_allclose(square[:, :, :k], 0.0)
  np.testing.assert_allclose(square[:, k:, k:], 1.0, rtol=1e-6)  # cells 0-3 of the 2 x 2 grid (to rounding)
  corner = parallel.residual_context(images, jnp.zeros_like(images), jnp.asarray(3), grid_size=2)
  np.testing.assert_allclose(np.asarray(corner).reshape(2, 3 * k, 3 * k)[:, :2 * k, :2 * k], 1.0, rtol=1e-6)
  np.testing.assert_allclose(parallel.residual_context(images, images, jnp.asarray(3), grid_size=2), 0.0)


def test_raster_cells_read_what_the_earlier_cells_left(scene_batch):
  config = parallel_config(grid=3, cell_order='raster')
  config.model.z_pres_logit_bias = 0.0
  models = models_lib.build(config)
  assert models.core.sequential  # a cell's decision changes the later cells' input
  images = jnp.asarray(scene_batch['image'][:4], jnp.float32) / 255.0
  params = helpers.compiled(models.core.init)({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images[:1])['params']
  assert set(params['step']) == {'context_state', 'pres_where', 'object_encoder', 'object_decoder'}
  apply = helpers.compiled(models.core.apply)
  first, second = (apply({'params': params}, images, rngs={'sample': jax.random.key(seed)}) for seed in (2, 3))
  change = np.abs(np.asarray(first.z_pres_logits - second.z_pres_logits)).max(0)
  assert change[0] == 0 and change[1:].min() > 0  # cell 0 reads the image only; later cells the draws before them
  assert first.z_pres.shape == (4, 9) and first.hidden.shape == (4, 9, 16)
  drawn = (np.asarray(first.z_pres)[..., None, None] * np.asarray(first.objects['image'])).sum(1)
  np.testing.assert_allclose(first.canvas, drawn, atol=1e-5)
  terms = loss_lib.elbo_terms_for(models, first, images, 0.3)
  expected = objectives.elbo_terms(first, images, likelihood_scale=config.objective.likelihood_scale, z_pres_prior=0.3,
                                   object_kls=models.scene.object_kls(first), sequential=True)
  np.testing.assert_allclose(terms.learning_signal, expected.learning_signal, rtol=1e-6)


def test_the_boundary_penalty_is_the_border_ink_of_each_present_cells_patch(scene_batch):
  config = parallel_config()
  config.objective.boundary_penalty, config.objective.boundary_width = 2.0, 2  # smoke patches: 8 x 8
  models = models_lib.build(config)
  patches = np.zeros((3, 8, 8), np.float32)
  patches[0, 2:6, 2:6] = 1.0              # ink only inside the 2-pixel band: free
  patches[1, 0, 3] = patches[1, 7, 7] = 1.0  # two pixels of ink on the edge
  patches[2, 1, 4] = 0.5                  # half an ink unit in the band's inner row
  np.testing.assert_allclose(models.scene.border_ink(jnp.asarray(patches)), [0.0, 4.0, 1.0])

  images = jnp.asarray(scene_batch['image'][:4], jnp.float32) / 255.0
  params = helpers.compiled(models.core.init)({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images[:1])['params']
  out = helpers.compiled(models.core.apply)({'params': params}, images, rngs={'sample': jax.random.key(2)})
  assert out.objects['patch'].shape == (4, 4, 8, 8)
  penalty = models.scene.border_ink(out.objects['patch'])
  assert float(penalty.min()) > 0  # an untrained decoder inks its whole patch
  terms = loss_lib.elbo_terms_for(models, out, images, 0.3)
  np.testing.assert_allclose(terms.kl_objects['boundary'], out.z_pres * penalty, rtol=1e-6)
  config.objective.boundary_penalty = 0.0
  unpenalised = models_lib.build(config).scene
  assert 'boundary' not in unpenalised.object_kls(out)
  np.testing.assert_allclose(models.scene.object_log_ratio(out), unpenalised.object_log_ratio(out) - penalty,
                             rtol=1e-5, atol=1e-4)


def exact_expected_elbo(config, model_params, images):
  """mean over images of sum over the 2^G^2 joint z_pres of q(z) ELBO(z), objects at their means
  (a cell's object and logit do not depend on the other cells' decisions)."""
  obj = config.objective
  mode = models_lib.build(config).core.apply({'params': model_params}, images, use_mode=True)
  p = jax.nn.sigmoid(mode.z_pres_logits)  # [B, C]
  where_prior_loc = jnp.asarray(obj.z_where_prior_loc).at[1:].set(0.0)
  where_prior_scale = jnp.asarray(obj.z_where_prior_scale).at[1:].set(1.0)
  kl_object = (recurrent_toy.normal_kl(mode.objects['z_where_loc'], mode.objects['z_where_scale'], where_prior_loc,
                                       where_prior_scale).sum(-1)
               + recurrent_toy.normal_kl(mode.objects['z_what_loc'], mode.objects['z_what_scale'], 0.0, 1.0).sum(-1))
  kl_pres = recurrent_toy.bernoulli_kl(p, recurrent_toy.PRIOR).sum(-1)
  sigma, expected = obj.likelihood_scale, 0.0
  for present in itertools.product((0.0, 1.0), repeat=p.shape[1]):
    z = jnp.asarray(present)
    canvas = (z[None, :, None, None] * mode.objects['image']).sum(1)
    log_likelihood = (-0.5 * jnp.square((images - canvas) / sigma) - jnp.log(sigma) - 0.5 * jnp.log(2 * jnp.pi)).sum((1, 2))
    q = jnp.prod(jnp.where(z > 0, p, 1 - p), axis=1)
    expected = expected + q * (log_likelihood - kl_pres - (z * kl_object).sum(-1))
  return expected.mean(), mode.z_pres_logits


@pytest.fixture(scope='module')
def toy():
  """(config, params, signal stats after 20 batches, images, exact gradient, exact-side logits)."""
  config = parallel_config()
  for name in ('likelihood_scale', 'z_pres_prior', 'signal_decay'):
    config.objective[name] = recurrent_toy.toy_config().objective[name]
  images = recurrent_toy.toy_images()
  models = models_lib.build(config)
  model_params = recurrent_toy.with_floor_scales(
      jax.jit(models.core.init)({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images)['params'])
  out = helpers.compiled(models.core.apply, use_mode=True)({'params': model_params}, images)
  params = {'model': model_params,
            'baseline': jax.jit(models.baseline.init)(jax.random.key(2), out.image_features, out.hidden)['params']}
  loss_fn = jax.jit(loss_lib.make_loss_fn(models))
  stats = objectives.SignalStats.zeros(GRID * GRID)
  for k in range(20):
    stats = loss_fn(params, stats, images, jax.random.key(100 + k), jnp.float32(recurrent_toy.PRIOR))[1]['stats']

  def negative_objective(column, model_params):
    expected, logits = exact_expected_elbo(config, recurrent_toy.with_logit_column(model_params, column), images)
    return -expected, logits

  exact, logits = jax.jit(jax.grad(negative_objective, has_aux=True))(recurrent_toy.logit_column(model_params), model_params)
  return config, params, stats, images, np.asarray(exact, np.float64), np.asarray(logits)


def test_nvil_with_per_cell_credit_is_unbiased_and_a_flipped_sign_is_not(toy):
  config, params, stats, images, exact, logits = toy
  assert np.all((logits > -2) & (logits < 2)) and np.abs(exact).max() > 0.05  # the decisions matter
  samples = recurrent_toy.estimator_samples(config, params, stats, images,
                                            {'flipped': {'reinforce_surrogate': recurrent_toy.flipped_surrogate}})
  assert np.abs(recurrent_toy.z_scores(samples['real'], exact)).max() < 4.5
  assert np.abs(recurrent_toy.z_scores(samples['flipped'], exact)).max() > 6


def test_a_run_trains_resumes_and_infers(tmp_path, mnist_dir):
  """The cells at once (the raster order's run: tests/test_crowded.py)."""
  config = parallel_config(mnist_dir, num_train_steps=2, checkpoint_every_steps=2, eval_every_steps=2,
                           log_every_steps=2)
  train.train_and_evaluate(config, str(tmp_path), log=lambda line: None)
  config.num_train_steps = 4
  lines = []
  result = train.train_and_evaluate(config, str(tmp_path), log=lines.append)
  assert 'resumed from the checkpoint at step 2' in lines and result['step'] == 4
  assert result['confusion'].shape == (5, 5)  # counts 0..4: as many as the G^2 = 4 cells
  models = infer.load_models(tmp_path)
  images = np.asarray(models.scene.scenes('test').__getitems__(range(4))['image'], np.float32) / 255.0
  inferred = infer.infer(models, infer.load_params(tmp_path, models), images)
  assert inferred['boxes'].shape == (4, 4, 4) and inferred['count'].shape == (4,)
  np.testing.assert_array_equal(inferred['count'], (inferred['z_pres_prob'] > 0.5).sum(-1))


def test_bad_parallel_settings_are_refused():
  for field, value, message in (('grid_size', 0, 'grid_size must be a positive int'),
                                ('image_conv_features', (), 'at least one convolution'),
                                ('cell_hidden', 0, 'cell_hidden must be positive'),
                                ('cell_order', 'diagonal', "cell_order must be one of \\('parallel', 'raster'\\)"),
                                ('cell_reach', -1, 'cell_reach must be an int >= 0'),
                                ('cell_reach', True, 'cell_reach must be an int >= 0'),
                                ('boundary_penalty', -1.0, 'boundary_penalty must be >= 0'),
                                ('boundary_width', 4, r'boundary_width must be in \(0, patch_size / 2 = 4.0\)')):
    config = parallel_config()
    config.objective.boundary_penalty = 1.0
    (config.objective if field.startswith('boundary') else config.model)[field] = value
    with pytest.raises(ValueError, match=message):
      models_lib.build(config)
  config = parallel_config(grid=4, cell_order='raster')
  config.model.cell_reach = 2
  with pytest.raises(ValueError, match="cell_reach 2 is too small .* a cell's residual reads beyond its crop"):
    models_lib.build(config)  # the raster order's residual; cells at once read none
  config.model.cell_order = 'parallel'
  assert models_lib.build(config).core.options.cell_reach == 2
  config = shapes_3d_config.get_config('smoke')
  config.model.inference, config.model.grid_size, config.model.cell_hidden = 'parallel', 2, 8
  with pytest.raises(ValueError, match="needs a scene kind that places objects in cells"):
    models_lib.build(config)


@pytest.mark.parametrize('cell_order', ['raster', 'parallel'])
def test_cells_in_crops_are_the_same_model_while_windows_lie_inside(cell_order):
  """model.cell_reach: each cell reads and draws in its crop (parallel.CellCrops), and 'raster' takes
  its residual there; with every window inside its crop the output is the whole canvas's, and the
  parameters are the same."""
  outputs = []
  for reach in (0, 5):
    config = parallel_config(grid=4, cell_order=cell_order)
    config.data.canvas_size, config.model.cell_reach = 64, reach
    models = models_lib.build(config)
    images = jax.random.uniform(jax.random.key(1), (3, 64, 64))
    params = helpers.compiled(models.core.init)({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images[:1])['params']
    outputs.append(helpers.compiled(models.core.apply)({'params': params}, images, rngs={'sample': jax.random.key(2)}))
  whole, local = outputs
  crops = parallel.CellCrops.build(64, 4, 5)
  assert crops.side == 80 and local.objects['image'].shape == (3, 16, 80, 80)  # each object on its crop
  windows = glimpse.window_size(whole.objects['z_where'][..., 0]) * 64
  offsets = np.abs(np.asarray(whole.objects['z_where'][..., 1:]) - parallel.cell_centres(4)[None]) * 32
  assert float((windows / 2 + offsets.max(-1)).max()) < crops.side / 2  # every window inside its crop
  np.testing.assert_allclose(local.canvas, whole.canvas, atol=2e-5)
  np.testing.assert_allclose(local.z_pres_logits, whole.z_pres_logits, atol=1e-5)
  np.testing.assert_array_equal(local.z_pres, whole.z_pres)


def test_the_crops_residual_is_the_whole_canvas_residual_around_the_cell():
  crops = parallel.CellCrops.build(128, 10, 4)
  assert crops.side == 52 and crops.pad > 0
  rng = np.random.default_rng(0)
  images, canvas = (jnp.asarray(rng.uniform(size=(2, 128, 128)), jnp.float32) for _ in range(2))
  np.testing.assert_allclose(parallel.resize_matrix(40, 128) @ np.asarray(images[0]) @ parallel.resize_matrix(40, 128).T,
                             jax.image.resize(images[0], (40, 40), 'linear'), atol=1e-5)
  for cell in (0, 9, 45, 99):
    residual = crops.cut(crops.padded(images - canvas), cell)
    np.testing.assert_allclose(crops.residual_context(residual, cell),
                               parallel.residual_context(images, canvas, jnp.asarray(cell), 10), atol=1e-5)
  with pytest.raises(ValueError, match='cell_reach 3 is too small'):
    parallel.CellCrops.build(128, 10, 3)  # the 3 x 3 cells' resize reaches a little past them
