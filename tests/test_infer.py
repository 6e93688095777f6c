"""`python -m air_jax.infer` on a tiny trained model: outputs, and one-line errors for bad input."""
import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from air_jax import steps
from air_jax import glimpse
from air_jax import infer
from air_jax import models as models_lib
from tests import helpers

N = 5
CANVAS = 50


def run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'air_jax.infer', *args], cwd=helpers.REPO,
                        env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def images(scene_batch):
  return scene_batch['image'][:N]


@pytest.fixture(scope='module')
def workdir(smoke_run):
  return smoke_run[0]


@pytest.fixture(scope='module')
def uint8_result(workdir, images, tmp_path_factory):
  folder = tmp_path_factory.mktemp('infer')
  np.savez(folder / 'in.npz', images=images)
  process = run_cli(f'--workdir={workdir}', f'--images={folder / "in.npz"}', f'--output={folder / "out.npz"}',
                    '--batch_size=4')  # 5 images: a full and a padded batch
  return process, folder / 'out.npz'


def load(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.keys()}


def test_uint8_images(uint8_result, smoke_run):
  process, output = uint8_result
  assert process.returncode == 0, process.stderr
  assert 'wrote' in process.stdout and f'{N} images' in process.stdout
  out = load(output)
  config = smoke_run[3]
  steps, d = config.model.max_steps, config.model.z_what_size
  assert set(out) == {'count', 'z_pres_prob', 'reconstruction_mse', 'z_where', 'boxes', 'z_what'}
  assert out['reconstruction_mse'].shape == (N,) and (out['reconstruction_mse'] >= 0).all()
  assert out['count'].shape == (N,) and np.issubdtype(out['count'].dtype, np.integer)
  assert out['z_pres_prob'].shape == (N, steps)
  assert out['z_where'].shape == (N, steps, 3)
  assert out['boxes'].shape == (N, steps, 4)
  assert out['z_what'].shape == (N, steps, d)
  for value in out.values():
    assert np.all(np.isfinite(value))
  assert np.all((out['z_pres_prob'] >= 0) & (out['z_pres_prob'] <= 1))
  # count = steps with q's mode on, stopping at the first off.
  np.testing.assert_array_equal(out['count'], np.cumprod(out['z_pres_prob'] > 0.5, axis=1).sum(1))
  np.testing.assert_allclose(out['boxes'], glimpse.boxes(out['z_where'], (CANVAS, CANVAS)), rtol=1e-5,
                             atol=1e-4)


def modes(config, params, images):
  """What infer must give: AIR's forward pass with q's modes (use_mode=True), by hand."""
  out = models_lib.build(config).core.apply({'params': params}, images.astype(np.float32) / 255.0, use_mode=True)
  size = config.data.canvas_size
  return dict(count=np.asarray(out.z_pres).sum(-1), z_pres_prob=np.asarray(jax.nn.sigmoid(out.z_pres_logits)),
              z_where=np.asarray(out.objects['z_where']), z_what=np.asarray(out.objects['z_what']),
              boxes=np.asarray(glimpse.boxes(out.objects['z_where'], (size, size))),
              reconstruction_mse=np.square(np.asarray(out.canvas) - images / 255.0).mean((1, 2)))


def test_latents_are_the_modes_of_the_latest_checkpoint(uint8_result, smoke_run, images):
  """infer's output is AIR.apply(use_mode=True) with the parameters of the latest checkpoint
  (step 4), restored here as the whole TrainState, not through the params-only restore infer uses;
  the step-2 checkpoint's or fresh parameters give other latents, so a wrong or missing restore fails."""
  workdir, _, _, config = smoke_run
  assert not steps.uses_ema(config)  # the latest params, not their average, are the ones evaluated
  state = helpers.restore_train_state(workdir, config)
  assert int(state.step) == 4
  out, expected = load(uint8_result[1]), modes(config, state.params['model'], images)
  assert out.keys() == expected.keys()
  np.testing.assert_array_equal(out['count'], expected['count'])
  assert 0 < out['count'].sum() < N * config.model.max_steps  # some steps on, some off: the count has teeth
  for k in ('z_pres_prob', 'z_where', 'z_what', 'boxes', 'reconstruction_mse'):
    np.testing.assert_allclose(out[k], expected[k], rtol=1e-5, atol=1e-5, err_msg=k)
  earlier = modes(config, helpers.restore_train_state(workdir, config, step=2).params['model'], images)
  fresh = modes(config, jax.jit(lambda: steps.init_state(models_lib.build(config), jax.random.key(123)))().params['model'], images)
  for other in (earlier, fresh):
    assert not np.allclose(out['z_where'], other['z_where'], rtol=1e-5, atol=1e-3)
    assert not np.allclose(out['z_what'], other['z_what'], rtol=1e-5, atol=1e-3)


def test_float_images_match_uint8(uint8_result, workdir, images, tmp_path):
  """Float images k / 255 (stored as the file's only array) give the uint8 run's latents."""
  np.savez(tmp_path / 'in.npz', pixels=images.astype(np.float32) / 255.0)
  process = run_cli(f'--workdir={workdir}', f'--images={tmp_path / "in.npz"}',
                    f'--output={tmp_path / "out.npz"}')
  assert process.returncode == 0, process.stderr
  out, expected = load(tmp_path / 'out.npz'), load(uint8_result[1])
  assert out.keys() == expected.keys()
  np.testing.assert_array_equal(out['count'], expected['count'])
  for k in ('z_pres_prob', 'z_where', 'boxes', 'z_what'):
    assert out[k].shape == expected[k].shape
    np.testing.assert_allclose(out[k], expected[k], rtol=1e-4, atol=1e-4, err_msg=k)


def test_run_in_process_matches_cli(uint8_result, workdir, images, tmp_path):
  np.savez(tmp_path / 'in.npz', images=images)
  result = infer.run(workdir, tmp_path / 'in.npz', tmp_path / 'out.npz', batch_size=2)
  expected = load(uint8_result[1])
  np.testing.assert_array_equal(result['count'], expected['count'])
  np.testing.assert_allclose(result['z_where'], expected['z_where'], rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(load(tmp_path / 'out.npz')['count'], expected['count'])


def save(path, **arrays):
  np.savez(path, **arrays)
  return path


@pytest.mark.parametrize('array, fragments', [
    (np.zeros((N, CANVAS), np.uint8), ['expected an array [N, H, W]', '(5, 50)']),
    (np.zeros((N, 2, CANVAS, CANVAS), np.uint8), ['expected an array [N, H, W]']),
    (np.zeros((N, 28, 28), np.uint8), ['50x50', '28x28']),
    (np.zeros((N, CANVAS, 40), np.float32), ['50x50', '50x40']),
    (np.zeros((N, CANVAS, CANVAS), np.int32), ['dtype', 'int32']),
    (np.zeros((N, CANVAS, CANVAS), bool), ['dtype', 'bool']),
    (np.zeros((0, CANVAS, CANVAS), np.uint8), ['no images']),
    (np.full((N, CANVAS, CANVAS), 0.5, np.float32), None),  # valid: no error
])
def test_load_images_shape_and_dtype(tmp_path, array, fragments):
  path = save(tmp_path / 'in.npz', images=array)
  if fragments is None:
    loaded = infer.load_images(path, CANVAS)
    assert loaded.dtype == np.float32 and loaded.shape == array.shape
    return
  with pytest.raises(infer.InputError) as error:
    infer.load_images(path, CANVAS)
  message = str(error.value)
  assert message.startswith('--images:') and '\n' not in message
  for fragment in fragments:
    assert fragment in message, (fragment, message)


def test_load_images_values(tmp_path):
  images = np.full((3, CANVAS, CANVAS), 0.5, np.float32)
  nan = images.copy()
  nan[1, 3, 4] = np.nan
  nan[2, 0, 0] = np.inf
  with pytest.raises(infer.InputError, match=r'2 pixels are NaN or infinite \(first in image 1\)'):
    infer.load_images(save(tmp_path / 'nan.npz', images=nan), CANVAS)
  bright = images.copy()
  bright[0, 0, 0] = 255.0
  with pytest.raises(infer.InputError, match=r'\[0, 1\].*255'):
    infer.load_images(save(tmp_path / 'bright.npz', images=bright), CANVAS)
  negative = images.copy()
  negative[0, 0, 0] = -0.5
  with pytest.raises(infer.InputError, match=r'\[0, 1\]'):
    infer.load_images(save(tmp_path / 'negative.npz', images=negative), CANVAS)
  uint8 = np.full((1, CANVAS, CANVAS), 255, np.uint8)
  np.testing.assert_array_equal(infer.load_images(save(tmp_path / 'u8.npz', x=uint8), CANVAS), 1.0)


def test_load_images_files(tmp_path):
  with pytest.raises(infer.InputError, match='no such file'):
    infer.load_images(tmp_path / 'missing.npz', CANVAS)
  with pytest.raises(infer.InputError, match='holds no PNG or JPEG'):
    infer.load_images(tmp_path, CANVAS)  # a directory: read as a folder of images (none here)
  (tmp_path / 'text.npz').write_text('hello, not an npz\n')
  with pytest.raises(infer.InputError, match='not a readable npz'):
    infer.load_images(tmp_path / 'text.npz', CANVAS)
  np.save(tmp_path / 'objects.npy', np.array([{'a': 1}], dtype=object))
  shutil.move(tmp_path / 'objects.npy', tmp_path / 'objects.npz')
  with pytest.raises(infer.InputError, match='not a readable npz'):
    infer.load_images(tmp_path / 'objects.npz', CANVAS)
  two = save(tmp_path / 'two.npz', a=np.zeros((1, CANVAS, CANVAS)), b=np.zeros(3))
  with pytest.raises(infer.InputError, match="name the images 'images'"):
    infer.load_images(two, CANVAS)


def test_run_bad_workdir(tmp_path, workdir, images):
  path = save(tmp_path / 'in.npz', images=images)
  with pytest.raises(infer.InputError, match='no such directory'):
    infer.run(tmp_path / 'missing', path, tmp_path / 'out.npz')
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(infer.InputError, match='config.json'):
    infer.run(empty, path, tmp_path / 'out.npz')
  (empty / 'config.json').write_text((workdir / 'config.json').read_text())
  with pytest.raises(infer.InputError, match='no checkpoint'):
    infer.run(empty, path, tmp_path / 'out.npz')
  assert not (tmp_path / 'out.npz').exists()
  assert not (empty / 'checkpoints').exists()  # looking for a checkpoint writes nothing
  (empty / 'checkpoints').mkdir()
  with pytest.raises(infer.InputError, match='no checkpoint'):
    infer.run(empty, path, tmp_path / 'out.npz')


def test_run_bad_output_and_batch_size(tmp_path, workdir, images):
  path = save(tmp_path / 'in.npz', images=images)
  with pytest.raises(infer.InputError, match='no such directory'):
    infer.run(workdir, path, tmp_path / 'missing' / 'out.npz')
  with pytest.raises(infer.InputError, match='is a directory'):
    infer.run(workdir, path, tmp_path)
  with pytest.raises(infer.InputError, match='batch_size'):
    infer.run(workdir, path, tmp_path / 'out.npz', batch_size=0)


def test_cli_missing_workdir(tmp_path, images):
  path = save(tmp_path / 'in.npz', images=images)
  process = run_cli(f'--workdir={tmp_path / "nowhere"}', f'--images={path}', f'--output={tmp_path / "o.npz"}')
  helpers.assert_one_error_line(process, tmp_path / 'o.npz', 'no such directory', 'nowhere', returncode=1)


def test_cli_not_an_npz(tmp_path, workdir):
  (tmp_path / 'in.npz').write_text('not an npz')
  process = run_cli(f'--workdir={workdir}', f'--images={tmp_path / "in.npz"}', f'--output={tmp_path / "o.npz"}')
  helpers.assert_one_error_line(process, tmp_path / 'o.npz', 'not a readable npz', returncode=1)


def test_cli_nan_pixels_and_missing_flag(tmp_path, workdir):
  images = np.full((2, CANVAS, CANVAS), 0.5, np.float32)
  images[1, 7, 7] = np.nan
  path = save(tmp_path / 'in.npz', images=images)
  process = run_cli(f'--workdir={workdir}', f'--images={path}', f'--output={tmp_path / "o.npz"}')
  helpers.assert_one_error_line(process, tmp_path / 'o.npz', 'NaN', 'image 1', returncode=1)
  before = helpers.files_under(tmp_path)
  process = subprocess.run([sys.executable, '-m', 'air_jax.infer', f'--workdir={workdir}', f'--images={path}'],
                           cwd=tmp_path, env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)
  helpers.assert_one_error_line(process, (), '--output is required', returncode=1)
  assert helpers.files_under(tmp_path) == before  # nothing written where it ran


def test_saved_config_is_json(workdir):
  config = json.loads((workdir / 'config.json').read_text())
  assert config['data']['canvas_size'] == CANVAS
