"""Data parallelism on 4 fake CPU devices (set in conftest): a sharded step equals the 1-device
step on the same global batch (either inference core); state stays replicated; one compile; checkpoints move across meshes."""
import jax
import numpy as np
import pytest

from air_jax import loss as loss_lib
from air_jax import objectives
from air_jax import steps
from air_jax import checkpoints
from air_jax import parallel
from air_jax import train
from air_jax import models as models_lib
from tests import helpers
from tests import test_parallel_core


@pytest.fixture(scope='module')
def meshes():
  assert jax.device_count() == 4, 'conftest sets 4 fake CPU devices'
  return parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()


@pytest.fixture(scope='module')
def config():
  return helpers.smoke_config('')


def batch_of(scene_batch, n=8):
  return scene_batch['image'][:n], scene_batch['count'][:n]


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol),
               jax.device_get(a), jax.device_get(b))


@pytest.mark.parametrize('core', ['recurrent', 'parallel'])
def test_sharded_step_equals_single_device_step(meshes, config, scene_batch, core):
  """Either inference core (the parallel one in raster order, its cells scanned in turn)."""
  if core == 'parallel':
    config = test_parallel_core.parallel_config(cell_order='raster')
  images, counts = batch_of(scene_batch)
  key = jax.random.key(3)
  results = []
  for mesh in meshes:
    state = steps.create_train_state(models_lib.build(config), jax.random.key(0), mesh)
    step = steps.make_train_step(models_lib.build(config), mesh)
    batch = parallel.put_batch({'image': images, 'count': counts}, mesh)
    for _ in range(2):
      state, metrics = step(state, batch['image'], batch['count'], key)
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (state_1, metrics_1), (state_4, metrics_4) = results
  assert set(metrics_1) == set(metrics_4)
  for name in metrics_1:
    np.testing.assert_allclose(metrics_1[name], metrics_4[name], rtol=1e-5, atol=1e-5, err_msg=name)
  # Adam's first steps are ~lr * sign(g): a gradient near 0 moves its parameter by a noise-sized
  # fraction of lr = 1e-3, so parameters agree to a few percent of one step.
  assert_trees_close(state_1.params, state_4.params, atol=3e-5)
  assert_trees_close(state_1.signal_stats, state_4.signal_stats)


def test_sharded_gradients_equal_single_device_gradients(meshes, config, scene_batch):
  """Same loss and gradients: the compiler's all-reduce sums exactly what one device would."""
  images, _ = batch_of(scene_batch)
  images = images.astype(np.float32) / 255
  params = jax.jit(lambda k: steps.init_state(models_lib.build(config), k))(jax.random.key(0)).params
  stats = objectives.SignalStats.zeros(config.model.max_steps)
  grad_fn = jax.grad(loss_lib.make_loss_fn(models_lib.build(config)), has_aux=True)
  outputs = []
  for mesh in meshes:
    data, same = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    fn = jax.jit(grad_fn, in_shardings=(same, same, data, same, same))
    grads, aux = fn(params, stats, images, jax.random.key(5), np.float32(1e-4))
    outputs.append(jax.device_get((grads, aux['terms'].elbo, aux['out'].objects['z_where'])))
  (grads_1, elbo_1, where_1), (grads_4, elbo_4, where_4) = outputs
  np.testing.assert_allclose(elbo_1, elbo_4, rtol=1e-5)
  # Samples do not depend on the device count: the same noise (a different draw would differ by
  # ~1); the means it is added to can differ by float32 rounding of the split products (6e-8 seen).
  np.testing.assert_allclose(where_1, where_4, rtol=0, atol=1e-6)
  # Summation order differs across devices: ~1e-6 absolute on gradients of order 1.
  assert_trees_close(grads_1, grads_4, rtol=1e-4, atol=1e-5)
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads_4))


def test_state_stays_replicated_and_step_compiles_once(meshes, config, scene_batch):
  mesh = meshes[1]
  state = steps.create_train_state(models_lib.build(config), jax.random.key(0), mesh)
  for leaf in jax.tree.leaves(state):
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
  step = steps.make_train_step(models_lib.build(config), mesh)
  for offset in range(3):  # different images and counts each call
    images, counts = scene_batch['image'][offset:offset + 8], scene_batch['count'][offset:offset + 8]
    batch = parallel.put_batch({'image': images, 'count': counts}, mesh)
    assert batch['image'].sharding.spec == parallel.batch_sharding(mesh).spec
    state, _ = step(state, batch['image'], batch['count'], jax.random.key(1))
  assert step._cache_size() == 1
  for leaf in jax.tree.leaves(state):
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4


def test_batch_must_divide_over_devices(meshes):
  parallel.check_divisible(8, meshes[1])
  with pytest.raises(ValueError, match='not divisible by the 4 devices'):
    parallel.check_divisible(6, meshes[1])


@pytest.mark.parametrize('save_on, restore_on', [(1, 0), (0, 1)])
def test_checkpoint_moves_between_meshes(tmp_path, meshes, config, scene_batch, save_on, restore_on):
  images, counts = batch_of(scene_batch)
  mesh = meshes[save_on]
  state = steps.create_train_state(models_lib.build(config), jax.random.key(0), mesh)
  batch = parallel.put_batch({'image': images, 'count': counts}, mesh)
  state, _ = steps.make_train_step(models_lib.build(config), mesh)(state, batch['image'], batch['count'], jax.random.key(1))
  saved = jax.device_get(state)
  writer = checkpoints.Checkpointer(tmp_path)
  writer.save(1, state)
  writer.close()

  target_mesh = meshes[restore_on]
  target = steps.create_train_state(models_lib.build(config), jax.random.key(9), target_mesh)
  restored = checkpoints.Checkpointer(tmp_path).restore(target)
  assert int(restored.step) == 1
  assert_trees_close(saved, restored, rtol=0, atol=0)
  devices = {len(leaf.sharding.device_set) for leaf in jax.tree.leaves(restored)}
  assert devices == {target_mesh.devices.size}


def test_resolved_global_batch_size(meshes, config):
  config = config.copy_and_resolve_references()
  assert train.resolved(config, meshes[1]).batch_size == config.batch_size
  config.per_device_batch_size = 3
  assert train.resolved(config, meshes[1]).batch_size == 12
  assert train.resolved(config, meshes[0]).batch_size == 3


def test_map_padded_runs_chunks_of_one_shape_and_unpads():
  shapes = []
  def double(chunk, start):
    shapes.append(chunk.shape)
    return {'x': chunk * 2, 'start': np.full(len(chunk), start)}
  out = parallel.map_padded(double, np.arange(10, dtype=np.float32), 4)
  assert shapes == [(4,)] * 3
  np.testing.assert_array_equal(out['x'], np.arange(10) * 2)
  np.testing.assert_array_equal(out['start'], [0] * 4 + [4] * 4 + [8] * 2)
  with pytest.raises(ValueError, match='no rows'):
    parallel.map_padded(double, np.zeros((0,)), 4)
  with pytest.raises(ValueError, match='1 to batch_size=4 rows, got 5'):
    parallel.run_padded(lambda chunk: chunk, np.zeros(5), 4)
