"""The 3D scene kind end to end: the smoke config trains through the one train loop (checkpoints,
evaluation, pictures), air_jax.infer reads its workdir, DAIR's canvas is the render of the steps
before, and q's identity and pose are what the loss scores and renders."""
import pathlib
import types

import chex
import jax
import numpy as np
import pytest

from air_jax import glimpse
from air_jax import infer
from air_jax import loss as loss_lib
from air_jax import steps
from air_jax import train
from air_jax.configs import shapes_3d as shapes_3d_config
from air_jax.data import shapes_3d
from air_jax import models as models_lib
from tests import helpers


def smoke_config(data_dir, **model):
  config = shapes_3d_config.get_config('smoke')
  config.data.data_dir = str(data_dir)
  config.model.update(model)
  return config


def by_hand_renderer_pose(config, pose, ids):
  """(x, y, theta) of latents (z0, z1, u0, u1): s (z0, z1) and the angle of u over the shape's
  symmetry order (cube 4, sphere 1, cylinder 2)."""
  pose = np.asarray(pose)
  order = np.array([4.0, 1.0, 2.0])[ids]
  return np.concatenate([config.objective.position_prior_scale * pose[..., :2],
                         (np.arctan2(pose[..., 3], pose[..., 2]) / order)[..., None]], -1)


def fresh_params(core, images):
  """The core's parameters initialised on one image (keys 0 and 1)."""
  return helpers.compiled(core.init)({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images[:1])['params']


@pytest.fixture(scope='module')
def run_3d(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('shapes_3d_data')
  workdir = tmp_path_factory.mktemp('shapes_3d_run') / 'work'
  config = smoke_config(data_dir)
  lines = []
  result = train.train_and_evaluate(config, str(workdir), log=lines.append)
  return workdir, result, lines, config


def test_smoke_run_trains_evaluates_and_checkpoints(run_3d):
  workdir, result, lines, config = run_3d
  assert result['step'] == config.num_train_steps
  assert 0.0 <= result['count_accuracy'] <= 1.0 and np.isfinite(result['elbo'])
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == ['2', '4']
  assert any('identity' in line and 'pose' in line for line in lines), lines  # the 3D object KLs
  cached = sorted(p.name for p in (pathlib.Path(config.data.data_dir) / 'scenes').iterdir())
  assert len(cached) == 2 and all(name.startswith('shapes_3d_v') for name in cached), cached  # train, test


def test_infer_reads_a_3d_workdir(run_3d, tmp_path):
  """air_jax.infer on the 3D workdir returns what AIR.apply with q's modes gives."""
  workdir, _, _, config = run_3d
  scenes_ = models_lib.build(config).scene.scenes('test').__getitems__(range(5))
  np.savez(tmp_path / 'in.npz', images=scenes_['image'])
  result = infer.run(workdir, tmp_path / 'in.npz', tmp_path / 'out.npz', batch_size=8)
  config = infer.load_config(workdir)
  params = infer.load_params(workdir, models_lib.build(config))
  out = models_lib.build(config).core.apply({'params': params}, scenes_['image'].astype(np.float32) / 255.0, use_mode=True)
  np.testing.assert_array_equal(result['count'], np.asarray(out.z_pres.sum(-1)).astype(int))
  np.testing.assert_array_equal(result['identity'], out.objects['identity'])
  scale = config.objective.position_prior_scale
  np.testing.assert_allclose(result['position'], scale * out.objects['pose'][..., :2], atol=1e-5)
  np.testing.assert_allclose(result['theta'], by_hand_renderer_pose(config, out.objects['pose'], result['identity'])[..., 2],
                             atol=1e-5)
  assert result['identity_prob'].shape == (5, config.model.max_steps, len(shapes_3d.SHAPES))
  with np.load(tmp_path / 'out.npz') as saved:
    assert sorted(saved.keys()) == sorted(result.keys())


def test_the_render_is_of_the_present_objects_only():
  """The model's canvas is MuJoCo's render of its present objects' identities and poses."""
  config = smoke_config('', z_pres_logit_bias=0.0)  # some steps present, some not
  scene = models_lib.build(config).scene
  images = scene.scenes('train').__getitems__(range(4))['image'].astype(np.float32) / 255.0
  air = models_lib.build(config).core
  params = fresh_params(air, images)
  out = helpers.compiled(air.apply)({'params': params}, images, rngs={'sample': jax.random.key(2)})
  ids = np.asarray(out.objects['identity'])
  expected = scene.pool(ids, by_hand_renderer_pose(config, out.objects['pose'], ids), np.asarray(out.z_pres))
  np.testing.assert_allclose(out.canvas, expected, atol=1e-6)
  assert np.asarray(out.z_pres).sum() > 0 and (np.asarray(out.z_pres) == 0).any()


def test_rotation_is_the_sampled_shapes_own_and_its_kl_is_averaged_over_q_identity():
  """q(u | identity = k) per shape: an object's pose is its position and the rotation of its
  sampled shape (q's modes: the argmax shape's means); the pose KL is
  KL(q(z0, z1) || N(0, I)) + sum_k q(k) KL(q(u | k) || N(0, I))."""
  config = smoke_config('', z_pres_logit_bias=0.0)
  scene = models_lib.build(config).scene
  images = scene.scenes('train').__getitems__(range(4))['image'].astype(np.float32) / 255.0
  air = models_lib.build(config).core
  params = fresh_params(air, images)
  kl = lambda loc, scale: (0.5 * (np.square(loc) + np.square(scale) - 1) - np.log(scale)).sum(-1)
  for use_mode in (False, True):
    out = helpers.compiled(air.apply, use_mode=use_mode)({'params': params}, images, rngs={'sample': jax.random.key(5)})
    o = jax.tree.map(np.asarray, out.objects)
    chex.assert_shape([o['rotation_loc'], o['rotation_scale']], (4, config.model.max_steps, 3, 2))
    ids = o['identity']
    if use_mode:
      np.testing.assert_array_equal(ids, o['identity_logits'].argmax(-1))
      np.testing.assert_array_equal(o['pose'][..., :2], o['position_loc'])
      np.testing.assert_array_equal(o['pose'][..., 2:], np.take_along_axis(o['rotation_loc'], ids[..., None, None], 2)[:, :, 0])
    else:
      own = np.take_along_axis(o['rotation_loc'], ids[..., None, None], 2)[:, :, 0]
      own_scale = np.take_along_axis(o['rotation_scale'], ids[..., None, None], 2)[:, :, 0]
      noise = (o['pose'][..., 2:] - own) / own_scale
      assert np.abs(noise).max() < 6 and 0.3 < noise.std() < 3  # a draw around its own shape's mean
      assert len(np.unique(ids)) > 1  # the check saw more than one shape
    q = np.exp(o['identity_logits']) / np.exp(o['identity_logits']).sum(-1, keepdims=True)
    expected = kl(o['position_loc'], o['position_scale']) + (q * kl(o['rotation_loc'], o['rotation_scale'])).sum(-1)
    np.testing.assert_allclose(scene.object_kls(out)['pose'], expected, rtol=1e-5, atol=1e-5)


def test_dair_reads_the_image_minus_the_render_of_the_steps_before():
  config = smoke_config('', difference_input=True)
  scene = models_lib.build(config).scene
  images = scene.scenes('train').__getitems__(range(4))['image'].astype(np.float32) / 255.0
  air = models_lib.build(config).core
  params = fresh_params(air, images)
  out, state = helpers.compiled(air.apply, mutable='intermediates')({'params': params}, images,
                                                            rngs={'sample': jax.random.key(3)})
  inputs = np.asarray(state['intermediates']['step']['encoder_input'][0])  # [N, B, H, W]
  ids, present = np.asarray(out.objects['identity']), np.asarray(out.z_pres)
  poses = by_hand_renderer_pose(config, out.objects['pose'], ids)
  for i in range(config.model.max_steps):
    before = present * (np.arange(config.model.max_steps) < i)
    np.testing.assert_allclose(inputs[i], images - scene.pool(ids, poses, before), atol=1e-6)


def test_one_train_step_moves_the_pose_head_by_finite_differences(tmp_path):
  """The pose head gets a gradient (through the finite-difference VJP) and so does the identity
  head (through REINFORCE): one train step changes both."""
  config = smoke_config(tmp_path)
  config.batch_size = 8
  config.objective.z_pres_freeze_steps = config.objective.discrete_freeze_steps = 0  # every column moves
  scene = models_lib.build(config).scene
  batch = scene.scenes('train').__getitems__(range(8))
  state = steps.init_state(models_lib.build(config), jax.random.key(0))
  layers = {'position': ('position_head', 'MLP_0', 'Dense_1'), 'identity': ('shape_encoder', 'identity'),
            'rotation': ('shape_encoder', 'rotation')}

  def last_kernel(params, layer):
    for name in ('model', 'step') + layers[layer] + ('dense', 'kernel'):
      params = params[name]
    return np.asarray(params)

  heads = tuple(layers)
  before = {head: last_kernel(state.params, head) for head in heads}
  state, metrics = steps.make_train_step(models_lib.build(config))(state, batch['image'], batch['count'], jax.random.key(1))
  for head in heads:
    moved = np.abs(last_kernel(state.params, head) - before[head]).max(0)
    assert np.all(moved > 0), (head, moved)
  assert np.isfinite(float(metrics['loss'])) and float(metrics['kl_identity']) >= 0


def test_a_frozen_identity_gets_no_gradient_and_the_loss_is_the_same():
  """learn_discrete False (objective.discrete_freeze_steps): the identity logits' columns of the
  shape encoder get exactly no gradient (neither REINFORCE nor the KLs), the pose's still do."""
  models = models_lib.build(smoke_config(''))
  images = models.scene.scenes('train').__getitems__(range(4))['image'].astype(np.float32) / 255.0
  state = steps.init_state(models, jax.random.key(0))
  # Compiled once (learn_discrete traced, as in the train step): eager, each op compiles alone.
  loss_and_grad = jax.jit(jax.value_and_grad(loss_lib.make_loss_fn(models), has_aux=True))
  kernel = lambda g, layer: np.abs(np.asarray(g['model']['step']['shape_encoder'][layer]['dense']['kernel'])).max(0)
  results = {}
  for learn in (True, False):
    (value, _), grads = loss_and_grad(state.params, state.signal_stats, images, jax.random.key(1), 1e-4, True, learn)
    results[learn] = float(value), kernel(grads, 'identity'), kernel(grads, 'rotation')
  np.testing.assert_allclose(results[False][0], results[True][0], rtol=1e-6)
  assert np.all(results[True][1] > 0) and np.all(results[False][1] == 0)
  assert np.all(results[False][2] > 0)  # the rotations still learn


def test_overlap_is_the_soft_exclusion_of_intersecting_objects():
  """overlap_i = c sum_{j<i} z_j relu(1 - d_ij / 2r)^2 in metres, r the footprint radius: zero for
  objects as far apart as the world puts them, largest for one on top of another, and only the
  earlier present objects count."""
  config = smoke_config('')
  scene = models_lib.build(config).scene
  s, r, c = config.objective.position_prior_scale, scene.world.footprint_radius, config.objective.overlap_penalty
  position = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.6], [0.0, 0.0]])  # metres
  pose = np.concatenate([position / s, np.ones((4, 2))], -1)[None].astype(np.float32)
  for z_pres in ([1, 1, 1, 0], [0, 1, 1, 1], [1, 1, 1, 1]):
    z = np.array([z_pres], np.float32)
    closeness = lambda i, j: max(0.0, 1 - np.linalg.norm(position[i] - position[j]) / (2 * r)) ** 2
    expected = [c * sum(z[0, j] * closeness(i, j) for j in range(i)) for i in range(4)]
    np.testing.assert_allclose(scene.overlap(pose, z)[0], expected, rtol=1e-5, atol=1e-4)
  assert expected[2] == 0 and expected[1] > 0  # 0.6 m apart: free; 0.1 m: charged
  np.testing.assert_allclose(scene.overlap(pose, np.ones((1, 4), np.float32))[0, 3], c * (1 + closeness(3, 1)), rtol=1e-5)


def test_off_floor_is_the_soft_exclusion_of_centres_past_the_floor():
  """off_floor_i = c_f sum_{x, y} relu(|a| - e)^2 / (2r)^2 in metres: zero anywhere on the floor
  (its edge included), c_f a footprint's diameter past an edge, each axis counted."""
  config = smoke_config('')
  scene = models_lib.build(config).scene
  s, e, r = config.objective.position_prior_scale, scene.world.floor_extent, scene.world.footprint_radius
  c = config.objective.off_floor_penalty
  position = np.array([[0.0, 0.0], [e, -e], [-e - 2 * r, 0.0], [e + r, e + 2 * r]])  # metres
  pose = np.concatenate([position / s, np.ones((4, 2))], -1)[None].astype(np.float32)
  np.testing.assert_allclose(scene.off_floor(pose)[0], [0.0, 0.0, c, c * (0.25 + 1.0)], rtol=1e-5, atol=1e-4)
  terms = scene.object_kls(types.SimpleNamespace(
      objects=dict(pose=pose, position_loc=pose[..., :2], position_scale=np.ones((1, 4, 2), np.float32),
                   rotation_loc=np.zeros((1, 4, 3, 2), np.float32), rotation_scale=np.ones((1, 4, 3, 2), np.float32),
                   identity_logits=np.zeros((1, 4, 3), np.float32)),
      z_pres=np.ones((1, 4), np.float32)))
  np.testing.assert_allclose(terms['off_floor'], scene.off_floor(pose))  # a term of -log p(z)


def test_bad_3d_settings_are_refused():
  for field, value, fragment in (('gradient', 'forward', 'config.objective.gradient'),
                                 ('position_step', 0.0, 'config.objective.position_step'),
                                 ('overlap_penalty', -1.0, 'config.objective.overlap_penalty'),
                                 ('off_floor_penalty', -1.0, 'config.objective.off_floor_penalty')):
    config = smoke_config('')
    config.objective[field] = value
    with pytest.raises(ValueError, match=fragment):
      models_lib.build(config)
  config = smoke_config('')
  config.data.train_counts = (0, 5)
  with pytest.raises(ValueError, match='max_steps'):
    models_lib.build(config)


def test_the_glimpse_is_centred_on_the_object_at_its_position():
  """Attend, then infer: the glimpse at an object's true position holds the object at its centre
  (the brightness above the floor's is centred within a pixel and a half), and a glimpse 0.3 m
  away holds much less of it."""
  config = smoke_config('')
  config.data.train_counts = (1,)
  config.model.glimpse_size = 12
  scene = models_lib.build(config).scene
  batch = scene.scenes('train').__getitems__(range(8))
  images = jax.numpy.asarray(batch['image'], np.float32) / 255.0
  floor = float(np.median(batch['image'])) / 255.0
  position = jax.numpy.asarray(batch['position'][:, 0], np.float32)

  def look(where_position):
    glimpses = np.asarray(glimpse.read(images, scene.glimpse_where(where_position), (12, 12)))
    return np.abs(glimpses - floor) * (glimpses > 0)  # zero padding outside the image is not an object

  mass = look(position)
  grid = np.arange(12) - 5.5
  row = (mass.sum(2) * grid).sum(1) / mass.sum((1, 2))
  column = (mass.sum(1) * grid).sum(1) / mass.sum((1, 2))
  assert np.all(np.hypot(row, column) < 1.5), (row, column)
  missed = look(position + np.array([0.3, 0.0], np.float32))
  assert np.all(missed.sum((1, 2)) < 0.6 * mass.sum((1, 2)))


def sampled_scene(discrete_gradient: str):
  """(smoke config with that discrete_gradient, its scene, 4 training images, a sampled CoreOutput)."""
  config = smoke_config('')
  config.objective.discrete_gradient = discrete_gradient
  scene = models_lib.build(config).scene
  images = scene.scenes('train').__getitems__(range(4))['image'].astype(np.float32) / 255.0
  air = models_lib.build(config).core
  params = fresh_params(air, images)
  return config, scene, images, helpers.compiled(air.apply)({'params': params}, images, rngs={'sample': jax.random.key(2)})


def test_enumerated_identity_canvases_are_the_scene_with_one_shape_swapped():
  """discrete_gradient 'enumerate': canvas (i, k) is the render of the sampled scene with step i's
  object made shape k at its q(u | k) draw, the other objects as sampled; absent steps render
  nothing; the loss then gives the identity logits a gradient and REINFORCE scores no identity."""
  config, scene, images, out = sampled_scene('enumerate')
  np.testing.assert_array_equal(scene.enumerated_discrete(out, False).canvases, 0.0)  # frozen: nothing rendered
  enumerated = scene.enumerated_discrete(out, True)
  probs, canvases = jax.nn.softmax(enumerated.logits), enumerated.canvases
  steps_, k = config.model.max_steps, len(shapes_3d.SHAPES)
  chex.assert_shape(canvases, (4, steps_, k) + scene.image_shape)
  np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)
  ids, present = np.asarray(out.objects['identity']), np.asarray(out.z_pres)
  pose, rotations = np.asarray(out.objects['pose']), np.asarray(out.objects['rotations'])
  for i in range(steps_):
    for shape in range(k):
      swapped_ids, swapped = ids.copy(), pose.copy()
      swapped_ids[:, i], swapped[:, i, 2:] = shape, rotations[:, i, shape]
      expected = scene.pool(swapped_ids, by_hand_renderer_pose(config, swapped, swapped_ids), present)
      expected = expected * present[:, i, None, None]  # absent steps: not rendered
      np.testing.assert_allclose(canvases[:, i, shape], expected, atol=1e-6)
  np.testing.assert_array_equal(scene.discrete_log_prob(out), 0.0)
  state = steps.init_state(models_lib.build(config), jax.random.key(0))
  loss_fn = loss_lib.make_loss_fn(models_lib.build(config))
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, state.signal_stats, images, jax.random.key(1), 1e-4)[0]))(state.params)
  assert np.abs(np.asarray(grads['model']['step']['shape_encoder']['identity']['dense']['kernel'])).max() > 0
  u, loc, scale = (np.asarray(out.objects[name]) for name in ('rotations', 'rotation_loc', 'rotation_scale'))
  log_ratio = (-0.5 * u ** 2 + 0.5 * ((u - loc) / scale) ** 2 + np.log(scale)).sum(-1)
  np.testing.assert_allclose(enumerated.log_ratio, log_ratio, rtol=1e-4, atol=1e-4)
  assert not enumerated.inclusive


def test_wake_identity_learns_by_the_inclusive_kl_alone():
  """discrete_gradient 'wake': the identity logits' gradient is that of wake_surrogate alone (the
  ELBO's KL terms hold them), and nothing is scored by REINFORCE."""
  _, scene, _, out = sampled_scene('wake')
  enumerated = scene.enumerated_discrete(out, True)
  assert enumerated.inclusive
  np.testing.assert_array_equal(scene.discrete_log_prob(out), 0.0)
  logits = out.objects['identity_logits']
  kl_grad = jax.grad(lambda l: sum(v.sum() for v in scene.object_kls(
      out._replace(objects=dict(out.objects, identity_logits=l))).values()))(logits)
  np.testing.assert_array_equal(kl_grad, 0.0)
