"""Two processes on this machine (localhost, gloo) train as one process with two devices does.

The smoke config begun by train_and_evaluate in this process over 2 of its fake devices, continued by
`experiments/train.py` in 2 processes x 1 CPU device (one killed mid-run, both restarted), finished
in one process again, against the same config trained by one process throughout: the same
parameters and held-out figures.
Bad launch settings: one line.
"""
import json
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from air_jax import distributed
from air_jax import infer
from air_jax import metrics
from air_jax import parallel
from air_jax import train
from tests import helpers

SMOKE_RUN = dict(checkpoint_every_steps=2, eval_every_steps=2, log_every_steps=2)  # either way of running


def command(mnist_dir, workdir, steps: int, port: int, index: int, **config) -> list:
  overrides = {**SMOKE_RUN, 'num_train_steps': steps, **config}
  return ([sys.executable, str(helpers.REPO / 'experiments' / 'train.py'),
           f'--config={helpers.REPO / "air_jax" / "configs" / "multi_mnist.py"}:smoke',
           f'--config.data.data_dir={mnist_dir}', f'--workdir={workdir}']
          + [f'--config.{name}={value}' for name, value in overrides.items()]
          + [f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={index}'])


def one_device_env() -> dict:
  env = helpers.subprocess_env()
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'  # the suite's 4 fake devices: 1 a process
  return env


def start_two(mnist_dir, workdir, steps: int, **config) -> list:
  port = distributed.free_local_port()
  return [subprocess.Popen(command(mnist_dir, workdir, steps, port, index, **config), env=one_device_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(2)]


def run_two(mnist_dir, workdir, steps: int, **config) -> list:
  """stdout of processes 0 and 1, both finished with status 0."""
  outputs = []
  for process in start_two(mnist_dir, workdir, steps, **config):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    outputs.append(out)
  return outputs


def run_one(mnist_dir, workdir, steps: int, **config) -> list:
  """The same config in this process over 2 of the suite's fake devices; the log lines."""
  lines = []
  config = helpers.smoke_config(mnist_dir, **{**SMOKE_RUN, 'num_train_steps': steps, **config})
  train.train_and_evaluate(config, str(workdir), log=lines.append, mesh=parallel.make_mesh(jax.devices()[:2]))
  return lines


def params_of(workdir):
  models = infer.load_models(workdir)
  return jax.device_get(infer.load_params(workdir, models))


def assert_same_run(workdir_a, workdir_b):
  """Parameters of the latest checkpoints and every evaluation's figures agree to float tolerance."""
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               params_of(workdir_a), params_of(workdir_b))
  evals_a, evals_b = metrics.read_evaluations(workdir_a), metrics.read_evaluations(workdir_b)
  assert [r['step'] for r in evals_a] == [r['step'] for r in evals_b]
  for a, b in zip(evals_a, evals_b):
    assert a['count_accuracy'] == b['count_accuracy'] and a['confusion'] == b['confusion']
    np.testing.assert_allclose(a['elbo'], b['elbo'], rtol=1e-4)


def saved_steps(workdir) -> list:
  """Steps of the complete checkpoints (Orbax renames a save's folder to its step once complete)."""
  folder = workdir / 'checkpoints'
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def test_two_processes_train_as_one_with_two_devices_survive_a_kill_and_resume_across(tmp_path, mnist_dir):
  """A run begun by one process over two devices (to step 2) goes on in two processes (1 -> 2);
  process 1 is killed mid-run and process 0 exits at once with one line; both restarted resume
  from the last checkpoint L to L + 2; one process takes it over to L + 4 (2 -> 1). At L + 2 and
  L + 4 it equals the same config trained by one process over two devices (parameters, held-out
  figures), and process 0 alone wrote its history."""
  at_the_end = dict(eval_every_steps=100_000)  # an evaluation at the last step of each command only
  run, reference = tmp_path / 'run', tmp_path / 'reference'
  run_one(mnist_dir, run, 2, **at_the_end)
  processes = start_two(mnist_dir, run, 100_000, **at_the_end)
  deadline = time.time() + 300
  while not saved_steps(run) or saved_steps(run)[-1] < 6:
    assert time.time() < deadline and processes[0].poll() is None, processes[0].communicate()[1][-3000:]
    time.sleep(0.2)
  processes[1].kill()
  killed_at = time.time()
  _, err = processes[0].communicate(timeout=120)
  assert time.time() - killed_at < 60
  helpers.assert_one_error_line((processes[0].returncode, err), (), 'process 0 of 2',
                                'restart every process with the same command', returncode=1)
  processes[1].communicate()

  last = saved_steps(run)[-1]
  lead, other = run_two(mnist_dir, run, last + 2, **at_the_end)
  assert f'resumed from the checkpoint at step {last}' in lead and f'final: step {last + 2}' in lead
  assert '2 device(s) (cpu) in 2 processes, global batch 8' in lead
  assert other.splitlines()[0].startswith('process 1 of 2: joining the others at 127.0.0.1:'), other
  assert not [line for line in other.splitlines()[1:] if not line.startswith('[Gloo]')], other  # no progress
  # Each record once: the one-process command's, then process 0's alone.
  assert [(r['kind'], r['step']) for r in metrics.read_history(run)] == (
      [('eval', 2)] + [('checkpoint', step) for step in range(2, last + 1, 2)] + [('eval', last + 2), ('checkpoint', last + 2)])
  assert json.loads((run / 'config.json').read_text())['seed'] == 0
  for steps in (2, last + 2):
    run_one(mnist_dir, reference, steps, **at_the_end)
  assert_same_run(run, reference)

  assert f'resumed from the checkpoint at step {last + 2}' in run_one(mnist_dir, run, last + 4, **at_the_end)
  run_one(mnist_dir, reference, last + 4, **at_the_end)
  assert_same_run(run, reference)


def test_bad_launch_flags_are_one_line(tmp_path):
  result = subprocess.run([sys.executable, str(helpers.REPO / 'experiments' / 'train.py'), f'--workdir={tmp_path / "w"}',
                           '--coordinator_address=127.0.0.1:1234', '--num_processes=2'],
                          env=one_device_env(), capture_output=True, text=True, timeout=120)
  helpers.assert_one_error_line(result, [tmp_path / 'w'], 'missing --process_id (JAX_PROCESS_ID)')


@pytest.mark.parametrize('settings, fragment', [
    (('localhost', 2, 0), 'host:port'),
    (('127.0.0.1:1234', 2, 2), 'process id must be in 0..1'),
    (('127.0.0.1:1234', 'two', 0), 'must be integers'),
])
def test_bad_settings_are_refused(monkeypatch, settings, fragment):
  for name in distributed.ENVIRONMENT:
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(ValueError, match=fragment):
    distributed.settings(*settings)


def test_settings_read_the_environment(monkeypatch):
  for name in distributed.ENVIRONMENT:
    monkeypatch.delenv(name, raising=False)
  assert distributed.settings(None, None, None) is None
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.1:99')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAX_PROCESS_ID', '3')
  assert distributed.settings(None, None, None) == ('10.0.0.1:99', 4, 3)
  assert distributed.settings(None, None, 1) == ('10.0.0.1:99', 4, 1)  # a flag beats the environment
