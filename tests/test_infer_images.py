"""`air_jax.infer` on PNG/JPEG input: a folder (or one file) read as greyscale, resized when square,
refused when not; `--visualize` writes the picture."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from air_jax import pictures
from air_jax import infer
from tests import helpers

CANVAS = 50


def write_pngs(folder, images):
  folder.mkdir(parents=True, exist_ok=True)
  for k, image in enumerate(images):
    Image.fromarray(image).save(folder / f'scene_{k:02d}.png')


def test_folder_of_pngs_in_name_order(scene_batch, tmp_path):
  images = scene_batch['image'][:4]
  write_pngs(tmp_path / 'in', images[::-1])  # file names reverse the order ...
  for k, path in enumerate(sorted((tmp_path / 'in').iterdir())):
    path.rename(tmp_path / 'in' / f'{9 - k}.png')  # ... and renaming restores it
  (tmp_path / 'in' / 'notes.txt').write_text('not an image: ignored')
  loaded = infer.load_images(tmp_path / 'in', CANVAS)
  assert loaded.dtype == np.float32 and loaded.shape == (4, CANVAS, CANVAS)
  np.testing.assert_array_equal(loaded, images.astype(np.float32) / 255.0)


def test_colour_jpeg_and_other_sizes(tmp_path):
  grey = np.zeros((CANVAS, CANVAS), np.uint8)
  grey[10:30, 15:35] = 200
  (tmp_path / 'in').mkdir()
  Image.fromarray(np.repeat(grey[..., None], 3, -1)).save(tmp_path / 'in' / 'a_rgb.png')
  Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], -1)).save(tmp_path / 'in' / 'b_rgba.png')
  Image.fromarray(np.kron(grey, np.ones((2, 2), np.uint8))).save(tmp_path / 'in' / 'c_twice.png')  # 100x100
  Image.fromarray(grey).save(tmp_path / 'in' / 'd.jpg', quality=95)
  Image.fromarray(grey[::2, ::2]).save(tmp_path / 'in' / 'e_half.png')  # 25x25: grown back
  loaded = infer.load_images(tmp_path / 'in', CANVAS)
  assert loaded.shape == (5, CANVAS, CANVAS)
  for k in range(3):  # grey RGB, RGBA, and a 2x2-block 100x100 (area-averaged back) are exact
    np.testing.assert_array_equal(loaded[k], grey.astype(np.float32) / 255.0)
  assert np.abs(loaded[3] - grey / 255.0).max() < 0.1  # JPEG: lossy
  assert np.abs(loaded[4] - grey / 255.0).mean() < 0.05  # bilinear from 25x25
  np.testing.assert_array_equal(infer.load_images(tmp_path / 'in' / 'a_rgb.png', CANVAS), loaded[:1])


@pytest.mark.parametrize('setup, fragments', [
    ('not_square', ('60x50', 'square')),
    ('empty', ('no PNG or JPEG',)),
    ('corrupt', ('broken.png', 'not a readable')),
    ('missing', ('no such file',)),
])
def test_bad_image_input(tmp_path, setup, fragments):
  folder = tmp_path / 'in'
  folder.mkdir()
  path = folder
  if setup == 'not_square':
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(folder / 'wide.png')
  elif setup == 'corrupt':
    (folder / 'broken.png').write_bytes(b'\x89PNG not really')
  elif setup == 'missing':
    path = folder / 'nothing.png'
  with pytest.raises(infer.InputError) as error:
    infer.load_images(path, CANVAS)
  for fragment in fragments:
    assert fragment in str(error.value), str(error.value)


def test_cli_on_a_png_folder_with_visualize(smoke_run, scene_batch, tmp_path):
  workdir, _, _, config = smoke_run
  images = scene_batch['image'][:5]
  write_pngs(tmp_path / 'in', images)
  np.savez(tmp_path / 'in.npz', images=images)
  common = [sys.executable, '-m', 'air_jax.infer', f'--workdir={workdir}']
  process = subprocess.run(common + [f'--images={tmp_path / "in"}', f'--output={tmp_path / "png.npz"}',
                                     f'--visualize={tmp_path / "picture.png"}', '--visualize_images=3'],
                           cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True, text=True,
                           timeout=300)
  assert process.returncode == 0, process.stderr
  assert '5 images' in process.stdout and 'picture.png' in process.stdout
  result = infer.run(workdir, tmp_path / 'in.npz', tmp_path / 'npz.npz')  # the same images as an npz
  with np.load(tmp_path / 'png.npz') as from_png:
    for key in ('count', 'z_where', 'z_pres_prob'):
      np.testing.assert_allclose(from_png[key], result[key], atol=1e-5)
  shape = pictures.grid_shape(3, 2 + 2 * config.model.max_steps, (2 * CANVAS, 2 * CANVAS))
  with Image.open(tmp_path / 'picture.png') as picture:
    assert picture.size == (shape[1], shape[0])
  bad = subprocess.run(common + [f'--images={tmp_path / "in"}', f'--output={tmp_path / "x.npz"}',
                                 f'--visualize={tmp_path / "picture.gif"}'],
                       cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)
  # refused before any work: neither the npz nor the picture is written
  helpers.assert_one_error_line(bad, [tmp_path / 'x.npz', tmp_path / 'picture.gif'], 'error: --visualize',
                                'PNG', returncode=1)
