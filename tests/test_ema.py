"""The exponential moving average of the model parameters (config.ema_decay) and its checkpoints."""
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from air_jax import evaluation
from air_jax import steps
from air_jax import checkpoints
from air_jax import parallel
from air_jax import train
from air_jax import models as models_lib
from tests import helpers


def test_ema_update_math():
  ema, params = {'w': np.full(3, 2.0, np.float32)}, {'w': np.full(3, 4.0, np.float32)}
  # Late in training the decay is config.ema_decay: 0.9 * 2 + 0.1 * 4.
  np.testing.assert_allclose(steps.ema_update(ema, params, 0.9, 1000)['w'], 2.2, rtol=1e-6)
  # At step 0 the warm-up decay (1 + 0) / (10 + 0) = 0.1 wins: 0.1 * 2 + 0.9 * 4.
  np.testing.assert_allclose(steps.ema_update(ema, params, 0.9, 0)['w'], 3.8, rtol=1e-6)


@pytest.fixture(scope='module')
def ema_step_and_state():
  config = helpers.smoke_config('', ema_decay=0.5)
  init = parallel.replicated_init(lambda key: steps.init_state(models_lib.build(config), key), parallel.make_mesh())
  return config, steps.make_train_step(models_lib.build(config)), init


def test_train_step_updates_the_average_and_skipped_steps_keep_it(ema_step_and_state, scene_batch):
  config, step, init = ema_step_and_state
  images, counts = scene_batch['image'][:8], scene_batch['count'][:8]
  start = jax.device_get(init(jax.random.key(0)))
  jax.tree.map(np.testing.assert_array_equal, start.ema_params, start.params['model'])
  after, _ = step(init(jax.random.key(0)), images, counts, jax.random.key(1))
  after = jax.device_get(after)
  # step 0: d = min(0.5, 1 / 10) = 0.1, so ema = 0.1 * initial + 0.9 * updated parameters.
  expected = jax.tree.map(lambda old, new: 0.1 * old + 0.9 * new, start.params['model'], after.params['model'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), after.ema_params, expected)
  assert not np.allclose(after.ema_params['image_kernel'], after.params['model']['image_kernel'])
  assert steps.eval_params(after, config) is after.ema_params

  bad = jax.tree.map(np.copy, after.params)
  bad['model']['image_bias'][:] = np.nan
  skipped, _ = step(jax.device_put(after.replace(params=bad)), images, counts, jax.random.key(2))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(skipped).ema_params, after.ema_params)


def test_restore_model_params_returns_the_average(tmp_path, mnist_dir):
  config = helpers.smoke_config(mnist_dir, ema_decay=0.5, num_train_steps=2, checkpoint_every_steps=2,
                                eval_every_steps=2, log_every_steps=2)
  train.train_and_evaluate(config, str(tmp_path), log=lambda line: None)
  target = jax.eval_shape(lambda: steps.init_state(models_lib.build(config), jax.random.key(0)))
  saved = checkpoints.Checkpointer(tmp_path, create=False).restore(target)
  restored = evaluation.restore_model_params(tmp_path, models_lib.build(config))
  jax.tree.map(np.testing.assert_array_equal, restored, jax.device_get(saved.ema_params))
  without = config.copy_and_resolve_references()
  without.ema_decay = 0.0  # the same run read as one without an average: its latest parameters
  jax.tree.map(np.testing.assert_array_equal, evaluation.restore_model_params(tmp_path, models_lib.build(without)),
               jax.device_get(saved.params['model']))


def test_average_of_a_run_without_one_is_a_clear_error(smoke_run):
  workdir, _, _, config = smoke_run
  with_ema = config.copy_and_resolve_references()
  with_ema.ema_decay = 0.5
  with pytest.raises(checkpoints.CheckpointError, match='has no ema_params'):
    evaluation.restore_model_params(workdir, models_lib.build(with_ema))


def test_checkpoint_from_before_the_average_existed_restores(tmp_path, init_smoke):
  """A state saved without the ema_params field (older checkpoints) restores when EMA is off."""
  state = jax.device_get(init_smoke(jax.random.key(3)))
  fields = {name: getattr(state, name) for name in ('step', 'params', 'opt_state', 'signal_stats',
                                                    'nonfinite_steps', 'nonfinite_in_a_row')}
  checkpointer = checkpoints.Checkpointer(tmp_path)
  checkpointer.manager.save(7, args=ocp.args.StandardSave(fields))
  checkpointer.close()
  config = helpers.smoke_config('')
  target = jax.eval_shape(lambda: steps.init_state(models_lib.build(config), jax.random.key(0)))
  restored = checkpoints.Checkpointer(tmp_path, create=False).restore(target)
  assert restored.ema_params == {}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params), state.params)


def test_eager_state_with_an_average_survives_the_donating_step(scene_batch):
  """init_state's average is a copy of the parameters, not the same buffers: the train step
  donates the state, and one buffer donated as both crashed the process (3D tests, session 19)."""
  config = helpers.smoke_config('', ema_decay=0.5)
  state = steps.init_state(models_lib.build(config), jax.random.key(0))
  pointers = lambda tree: {leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(tree)}
  assert not pointers(state.params['model']) & pointers(state.ema_params)
  state, _ = steps.make_train_step(models_lib.build(config))(state, scene_batch['image'][:8], scene_batch['count'][:8],
                                           jax.random.key(1))
  assert int(state.step) == 1


def test_resumed_run_keeps_the_checkpoints_average(tmp_path, mnist_dir):
  """A run with the average on, killed after its step-2 checkpoint and resumed, ends with the same
  average (and parameters) as an uninterrupted run, bitwise: the resumed run restores the
  checkpoint's average instead of keeping its fresh initial copy."""
  config = helpers.smoke_config(mnist_dir, ema_decay=0.9, num_train_steps=4, checkpoint_every_steps=2,
                                eval_every_steps=2, log_every_steps=2)
  train.train_and_evaluate(config, str(tmp_path / 'whole'), log=lambda line: None)
  first_half = config.copy_and_resolve_references()
  first_half.num_train_steps = 2
  train.train_and_evaluate(first_half, str(tmp_path / 'resumed'), log=lambda line: None)
  lines = []
  train.train_and_evaluate(config, str(tmp_path / 'resumed'), log=lines.append)
  assert 'resumed from the checkpoint at step 2' in lines
  target = jax.eval_shape(lambda: steps.init_state(models_lib.build(config), jax.random.key(0)))
  whole, resumed = (checkpoints.Checkpointer(tmp_path / name, create=False).restore(target)
                    for name in ('whole', 'resumed'))
  assert int(resumed.step) == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.ema_params), jax.device_get(whole.ema_params))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.params), jax.device_get(whole.params))
  fresh = jax.device_get(steps.init_state(models_lib.build(config), jax.random.split(jax.random.key(config.seed), 3)[0]))
  assert not np.array_equal(jax.device_get(resumed.ema_params)['image_kernel'], fresh.ema_params['image_kernel'])
