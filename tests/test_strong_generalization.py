"""DAIR's per-step input, and the strong-generalisation experiment's smoke mode end to end."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from air_jax import models as models_lib
from tests import helpers


def encoder_inputs(config, images, key):
  """(CoreOutput, per-step encoder input [N, B, H, W]) of one sampled forward pass."""
  air = models_lib.build(config).core
  params = air.init({'params': jax.random.key(0), 'sample': key}, images)['params']
  out, state = air.apply({'params': params}, images, rngs={'sample': key}, mutable=['intermediates'])
  (inputs,) = state['intermediates']['step']['encoder_input']
  return out, inputs


def hand_built_images():
  """Two 50x50 images: a bright square and two blobs (enough ink that every step draws)."""
  images = np.zeros((2, 50, 50), np.float32)
  images[0, 10:30, 12:32] = 1.0
  images[1, 5:20, 5:20] = 0.8
  images[1, 30:45, 28:44] = 0.6
  return jnp.asarray(images)


def test_dair_input_is_image_minus_canvas_so_far():
  config = helpers.smoke_config('')
  config.model.difference_input = True
  config.model.z_pres_logit_bias = 20.0  # every step present: the canvas really grows
  images = hand_built_images()
  out, inputs = encoder_inputs(config, images, jax.random.key(4))
  assert inputs.shape == (config.model.max_steps,) + images.shape
  drawn = np.cumsum(np.asarray(out.z_pres)[:, :, None, None] * np.asarray(out.objects['image']), axis=1)
  for i in range(config.model.max_steps):
    canvas_before = drawn[:, i - 1] if i else np.zeros_like(images)
    np.testing.assert_allclose(inputs[i], images - canvas_before, atol=1e-6)
  assert np.abs(drawn[:, 0]).max() > 0  # step 1 drew something, so step 2's input differs from x
  np.testing.assert_allclose(out.canvas, drawn[:, -1], atol=1e-5)


def test_air_input_is_the_image_at_every_step():
  config = helpers.smoke_config('')
  config.model.z_pres_logit_bias = 20.0
  images = hand_built_images()
  _, inputs = encoder_inputs(config, images, jax.random.key(4))
  for i in range(config.model.max_steps):
    np.testing.assert_array_equal(inputs[i], images)


def test_smoke_mode_end_to_end(tmp_path):
  root = tmp_path / 'sg'
  mnist_dir = tmp_path / 'mnist'  # its own: the run caches scenes beside the digits
  helpers.write_fake_mnist(mnist_dir)
  command = [sys.executable, 'experiments/strong_generalization.py', f'--workdir={root}', '--smoke',
             '--tasks=extrapolation', '--models=air,dair_memoryless', '--num_train_steps=2', '--num_eval=8',
             f'--data_dir={mnist_dir}']
  run = subprocess.run(command, cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True,
                       text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((root / 'strong_generalization.json').read_text())
  assert {(r['task'], r['model']) for r in results} == {('extrapolation', 'air'), ('extrapolation', 'dair_memoryless')}
  for r in results:
    assert 0.0 <= r['unseen']['count_accuracy'] <= 1.0
    assert np.asarray(r['unseen']['confusion']).sum() == 8
  table = (root / 'strong_generalization.md').read_text()
  assert table.startswith('| task | model |') and 'extrapolation' in table and 'DAIR memoryless' in table
  assert 'accuracy on unseen' in run.stdout

  # A second call reuses the finished runs: nothing is retrained.
  again = subprocess.run(command, cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True,
                         text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('finished earlier') == 2
  assert json.loads((root / 'strong_generalization.json').read_text()) == results
  assert all(r['ema_decay'] == 0.9995 for r in results) and 'EMA with decay 0.9995' in table

  # The same workdir asked for another config (no parameter average) is refused, naming the difference.
  before = helpers.files_under(root)
  other = subprocess.run(command + ['--ema_decay=0', '--models=air'], cwd=helpers.REPO,
                         env=helpers.subprocess_env(), capture_output=True, text=True, timeout=900)
  helpers.assert_one_error_line(other, (), 'ema_decay: 0.9995 -> 0.0', returncode=1)
  assert helpers.files_under(root) == before  # no table, run or checkpoint rewritten or added
