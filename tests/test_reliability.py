"""Reliability: non-finite steps are skipped, SIGKILL + restart resumes exactly, checkpoints that
cannot be used fail clearly, and bad launcher input ends with one line and writes nothing."""
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from air_jax.configs import checks
from air_jax import evaluation
from air_jax import steps
from air_jax import checkpoints
from air_jax import metrics as metrics_lib
from air_jax import train
from air_jax import models as models_lib
from tests import helpers

TRAIN = str(helpers.REPO / 'experiments' / 'train.py')


def run_train(workdir, mnist_dir, *extra, **popen):
  args = [sys.executable, TRAIN, f'--workdir={workdir}', '--config=' + str(helpers.REPO / 'air_jax/configs/multi_mnist.py') + ':smoke',
          f'--config.data.data_dir={mnist_dir}', *extra]
  if popen:
    return subprocess.Popen(args, env=helpers.subprocess_env(), **popen)
  return subprocess.run(args, env=helpers.subprocess_env(), capture_output=True, text=True, timeout=600)


# ---- non-finite steps ------------------------------------------------------------------------------

def test_nonfinite_step_changes_nothing_but_counters(init_smoke, scene_batch):
  step = steps.make_train_step(models_lib.build(helpers.smoke_config('')))
  images, counts = scene_batch['image'][:8], scene_batch['count'][:8]
  clean = jax.device_get(init_smoke(jax.random.key(0)))  # host copy: the step donates its input
  params = jax.tree.map(np.copy, clean.params)
  params['model']['image_bias'][:] = np.nan
  after, metrics = step(init_smoke(jax.random.key(0)).replace(params=params), images, counts, jax.random.key(1))
  after = jax.device_get(after)
  assert not np.isfinite(metrics['loss'])
  jax.tree.map(np.testing.assert_array_equal, after.params, params)
  jax.tree.map(np.testing.assert_array_equal, after.opt_state, clean.opt_state)
  jax.tree.map(np.testing.assert_array_equal, after.signal_stats, clean.signal_stats)
  assert (int(after.step), int(after.nonfinite_steps), int(after.nonfinite_in_a_row)) == (1, 1, 1)
  # A finite step after it is applied and ends the run of skipped steps (the total stays).
  resumed = init_smoke(jax.random.key(0)).replace(step=after.step, nonfinite_steps=after.nonfinite_steps,
                                                  nonfinite_in_a_row=after.nonfinite_in_a_row)
  good, _ = step(resumed, images, counts, jax.random.key(1))
  good = jax.device_get(good)
  assert (int(good.step), int(good.nonfinite_steps), int(good.nonfinite_in_a_row)) == (2, 1, 0)
  assert not np.array_equal(good.params['model']['image_kernel'], clean.params['model']['image_kernel'])


def test_run_stops_after_nonfinite_steps_in_a_row(tmp_path, mnist_dir):
  """A likelihood scale (pixel noise sd) of 1e-30 overflows float32: every step is non-finite, the run stops with a
  clear error, and the checkpoint it leaves holds the (finite) initial state."""
  config = helpers.smoke_config(mnist_dir, num_train_steps=20, checkpoint_every_steps=2, log_every_steps=1,
                                eval_every_steps=100, max_nonfinite_in_a_row=3)
  config.objective.likelihood_scale = 1e-30
  lines = []
  with pytest.raises(train.NonFiniteError, match=r'stopped at step 3: the last 3 steps had a non-finite') as error:
    train.train_and_evaluate(config, str(tmp_path / 'w'), log=lines.append)
  assert 'latest checkpoint (step 2)' in str(error.value)
  assert any('skipped so far' in line for line in lines)
  saved = helpers.restore_train_state(tmp_path / 'w', config)
  fresh = jax.device_get(jax.jit(lambda: steps.init_state(models_lib.build(config), jax.random.split(jax.random.key(config.seed), 3)[0]))())
  jax.tree.map(np.testing.assert_array_equal, saved.params, fresh.params)
  assert int(saved.step) == 2 and int(saved.nonfinite_steps) == 2


def test_launcher_keeps_compiled_programs_beside_the_data(tmp_path):
  """Without $JAX_COMPILATION_CACHE_DIR, experiments/train.py caches compiled programs in <data dir>/xla."""
  helpers.write_fake_mnist(tmp_path / 'data')
  env = {k: v for k, v in helpers.subprocess_env().items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'  # the smoke programs compile fast
  args = [sys.executable, TRAIN, f'--workdir={tmp_path / "w"}', '--config=' + str(helpers.REPO / 'air_jax/configs/multi_mnist.py') + ':smoke',
          f'--config.data.data_dir={tmp_path / "data"}', '--config.num_train_steps=2']
  done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  assert any((tmp_path / 'data' / 'xla').iterdir())


# ---- exact resume after SIGKILL ----------------------------------------------------------------------

def test_sigkill_and_restart_matches_uninterrupted_run(tmp_path, mnist_dir):
  flags = ['--config.num_train_steps=60', '--config.checkpoint_every_steps=10', '--config.eval_every_steps=20',
           '--config.log_every_steps=10']
  whole = run_train(tmp_path / 'whole', mnist_dir, *flags)
  assert whole.returncode == 0, whole.stderr[-2000:]

  killed_dir = tmp_path / 'killed'
  process = run_train(killed_dir, mnist_dir, *flags, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:  # kill once 3 checkpoints were started
    history = metrics_lib.read_history(killed_dir) if (killed_dir / 'history.jsonl').exists() else []
    if sum(r['kind'] == 'checkpoint' for r in history) >= 3:
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.01)
  assert process.wait(timeout=60) == -signal.SIGKILL, 'the run ended before it could be killed'
  assert not any(r['step'] == 60 for r in metrics_lib.read_history(killed_dir))

  restarted = run_train(killed_dir, mnist_dir, *flags)
  assert restarted.returncode == 0, restarted.stderr[-2000:]
  assert 'resumed from the checkpoint at step' in restarted.stdout

  config = metrics_lib.load_config(tmp_path / 'whole')
  a, b = helpers.restore_train_state(tmp_path / 'whole', config), helpers.restore_train_state(killed_dir, config)
  assert int(a.step) == int(b.step) == 60
  jax.tree.map(np.testing.assert_array_equal, a, b)  # bitwise: params, optimiser, baseline statistics
  evals = lambda w: [(r['step'], r['count_accuracy'], r['elbo'], r['confusion'])
                     for r in metrics_lib.read_evaluations(w)]
  assert evals(tmp_path / 'whole') == evals(killed_dir)
  assert [r['step'] for r in metrics_lib.read_evaluations(killed_dir)] == [20, 40, 60]


# ---- checkpoints --------------------------------------------------------------------------------------

@pytest.fixture()
def saved_run(tmp_path, smoke_run):
  """A copy of the session's smoke run (checkpoints at steps 2 and 4)."""
  source, _, _, config = smoke_run
  workdir = tmp_path / 'work'
  shutil.copytree(source, workdir)
  return workdir, config


def test_interrupted_save_leaves_previous_checkpoint(saved_run):
  """Orbax writes into a temporary folder and renames it when done: a save cut short by a crash
  leaves such a folder behind, and the latest complete checkpoint is still the one restored."""
  workdir, config = saved_run
  partial = workdir / 'checkpoints' / '6.orbax-checkpoint-tmp-1700000000'
  shutil.copytree(workdir / 'checkpoints' / '4', partial)
  for f in partial.rglob('manifest.ocdbt'):
    f.unlink()
  checkpointer = checkpoints.Checkpointer(workdir)
  assert checkpointer.latest_step() == 4
  checkpointer.close()
  assert int(helpers.restore_train_state(workdir, config).step) == 4


def test_corrupt_checkpoint_names_itself(saved_run):
  workdir, config = saved_run
  for f in (workdir / 'checkpoints' / '4').rglob('manifest.ocdbt'):
    f.unlink()
  with pytest.raises(checkpoints.CheckpointError, match=r'checkpoints/4 cannot be (read|restored)'):
    helpers.restore_train_state(workdir, config)
  (workdir / 'checkpoints' / '2' / 'default' / '_METADATA').write_text('{not json')
  with pytest.raises(checkpoints.CheckpointError, match=r'checkpoints/2 cannot be read'):
    checkpoints.Checkpointer(workdir, create=False).restore(
        jax.eval_shape(lambda: steps.init_state(models_lib.build(config), jax.random.key(0))), step=2)


def test_checkpoint_of_another_model_names_the_mismatch(saved_run):
  workdir, config = saved_run
  other = config.copy_and_resolve_references()
  other.model.lstm_size = 2 * config.model.lstm_size
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'does not fit this model.*params/model/image_bias: stored \(64,\), expected \(128,\)'):
    helpers.restore_train_state(workdir, other)
  with pytest.raises(checkpoints.CheckpointError, match=r'does not fit this model.*image_kernel: stored \(2500, 64\)'):
    evaluation.restore_model_params(workdir, models_lib.build(other))  # the params-only restore used by inference
  assert evaluation.restore_model_params(workdir, models_lib.build(config))['image_kernel'].shape == (2500, 64)


def test_resume_with_another_config_is_refused_and_writes_nothing(saved_run):
  workdir, config = saved_run
  files = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
  other = config.copy_and_resolve_references()
  other.model.z_what_size = 7
  other.learning_rate = 0.5
  with pytest.raises(ValueError, match=r'another config \(learning_rate: 0.001 -> 0.5; model.z_what_size: 4 -> 7\)'):
    train.train_and_evaluate(other, str(workdir), log=lambda s: None)
  assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == files
  # Settings that only change how long or how often are allowed.
  assert checks.config_differences(config, config.copy_and_resolve_references()) == []
  longer = config.copy_and_resolve_references()
  longer.num_train_steps, longer.eval_every_steps = 100, 7
  assert checks.config_differences(config, longer) == []
  # A setting added to the library after the run was saved counts as its default value, or as the
  # value runs had before it existed where the default has changed since (ema_decay: 0).
  older = config.copy_and_resolve_references()
  del older['ema_decay'], older['learning_rate_decay_to']  # as in a run saved before they existed
  assert checks.config_differences(older, config) == []
  averaging = config.copy_and_resolve_references()
  averaging.ema_decay = 0.999  # today's default: not what a run saved without the field had
  assert checks.config_differences(older, averaging) == ['ema_decay: 0.0 -> 0.999']


# ---- bad launcher input: one line, exit 1, nothing written -----------------------------------------------

@pytest.mark.parametrize('flags, message', [
    (['--config.modle.lstm_size=3'], "unknown config key 'modle'"),
    (['--config.model.lstm_sise=3'], "unknown config key 'lstm_sise'"),
    (['--config.batch_size=eight'], 'flag --config.batch_size=eight'),
    (['--config.num_train_steps=-5'], 'config.num_train_steps must be positive, got -5'),
    (['--config.batch_size=6'], 'batch_size=6 is not divisible by the 4 devices'),
    (['--config.data.train_counts=(0,9)'], 'more objects than config.model.max_steps'),
    (['--no_such_flag'], "Unknown command line flag 'no_such_flag'"),
])
def test_train_cli_bad_input(tmp_path, mnist_dir, flags, message):
  result = run_train(tmp_path / 'w', mnist_dir, *flags)
  helpers.assert_one_error_line(result, tmp_path / 'w', message, returncode=1)


def test_train_cli_workdir_is_a_file(tmp_path, mnist_dir):
  path = tmp_path / 'file'
  path.write_text('keep me')
  result = run_train(path, mnist_dir)
  helpers.assert_one_error_line(result, (), f'error: workdir {path} exists and is not a directory', returncode=1)
  assert helpers.files_under(tmp_path) == {'file': b'keep me'}  # the file kept, nothing written beside it
