"""Two processes on this machine (localhost, gloo) train as one process with two devices does.

The smoke config trained for 4 steps by `experiments/train.py` in 2 processes x 1 CPU device and by
train_and_evaluate in this process over 2 of its fake devices: the same parameters and held-out
figures; only process 0 wrote history and config. Then each run resumes in the other topology
(2 processes -> 1 and 1 -> 2) to step 6, and the two agree again. A lost process and bad launch
flags: one line on stderr.
"""
import json
import os
import socket
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

STEPS, MORE_STEPS = 4, 6


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def command(mnist_dir, workdir, steps: int, port: int, index: int, **config) -> list:
  overrides = {**dict(num_train_steps=steps, checkpoint_every_steps=2, eval_every_steps=2, log_every_steps=2),
               **config}
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
  port = free_port()
  return [subprocess.Popen(command(mnist_dir, workdir, steps, port, index, **config), env=one_device_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(2)]


def run_two(mnist_dir, workdir, steps: int) -> list:
  """stdout of processes 0 and 1, both finished with status 0."""
  outputs = []
  for process in start_two(mnist_dir, workdir, steps):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    outputs.append(out)
  return outputs


def run_one(mnist_dir, workdir, steps: int) -> list:
  """The same config in this process over 2 of the suite's fake devices; the log lines."""
  lines = []
  config = helpers.smoke_config(mnist_dir, num_train_steps=steps, checkpoint_every_steps=2, eval_every_steps=2,
                                log_every_steps=2)
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


def test_two_processes_train_as_one_with_two_devices_and_resume_across(tmp_path, mnist_dir):
  two, one = tmp_path / 'two_processes', tmp_path / 'one_process'
  lead, other = run_two(mnist_dir, two, STEPS)
  run_one(mnist_dir, one, STEPS)
  assert '2 device(s) (cpu) in 2 processes, global batch 8' in lead and 'final: step 4' in lead
  assert other.strip().startswith('[Gloo]') or not other.strip(), other  # process 1 prints no progress
  # Process 0 alone wrote the history: each evaluation and checkpoint once.
  assert [(r['kind'], r['step']) for r in metrics.read_history(two)] == [
      ('eval', 2), ('checkpoint', 2), ('eval', 4), ('checkpoint', 4)]
  assert json.loads((two / 'config.json').read_text())['seed'] == 0
  assert_same_run(two, one)

  # Each resumes in the other topology to the same step 6.
  lines = run_one(mnist_dir, two, MORE_STEPS)
  assert 'resumed from the checkpoint at step 4' in lines
  lead, _ = run_two(mnist_dir, one, MORE_STEPS)
  assert 'resumed from the checkpoint at step 4' in lead
  assert_same_run(two, one)


def test_a_killed_process_stops_the_other_with_one_line(tmp_path, mnist_dir):
  """Process 1 killed mid-run: process 0's next collective fails and it exits at once, status 1,
  one line; its last checkpoint stays."""
  processes = start_two(mnist_dir, tmp_path, 100_000, checkpoint_every_steps=5, log_every_steps=5,
                        eval_every_steps=100_000)
  deadline = time.time() + 300
  while not (tmp_path / 'checkpoints' / '5').is_dir():
    assert time.time() < deadline and processes[0].poll() is None, processes[0].communicate()[1][-3000:]
    time.sleep(0.5)
  processes[1].kill()
  killed_at = time.time()
  _, err = processes[0].communicate(timeout=120)
  assert time.time() - killed_at < 60
  helpers.assert_one_error_line((processes[0].returncode, err), (), 'process 0 of 2',
                                'restart every process', returncode=1)
  processes[1].communicate()


@pytest.mark.parametrize('flags, fragment', [
    (['--coordinator_address=127.0.0.1:1234', '--num_processes=2'], 'missing --process_id'),
    (['--coordinator_address=localhost', '--num_processes=2', '--process_id=0'], 'host:port'),
    (['--coordinator_address=127.0.0.1:1234', '--num_processes=2', '--process_id=2'], 'process id must be in 0..1'),
])
def test_bad_launch_flags_are_one_line(tmp_path, flags, fragment):
  result = subprocess.run([sys.executable, str(helpers.REPO / 'experiments' / 'train.py'),
                           f'--workdir={tmp_path / "w"}'] + flags, env=one_device_env(), capture_output=True,
                          text=True, timeout=120)
  helpers.assert_one_error_line(result, [tmp_path / 'w'], fragment)


def test_settings_read_the_environment(monkeypatch):
  for name in distributed.ENVIRONMENT:
    monkeypatch.delenv(name, raising=False)
  assert distributed.settings(None, None, None) is None
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.1:99')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAX_PROCESS_ID', '3')
  assert distributed.settings(None, None, None) == ('10.0.0.1:99', 4, 3)
  assert distributed.settings(None, None, 1) == ('10.0.0.1:99', 4, 1)  # a flag beats the environment
