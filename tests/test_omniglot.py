"""Omniglot: the archive loader (official layout), exact inversion and area resizing, one-line errors
for bad archives, and experiments/omniglot.py --smoke on the shipped sample end to end."""
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from air_jax import models as models_lib
from air_jax.configs import omniglot as omniglot_config
from air_jax.data import omniglot
from tests import helpers


def png_bytes(drawing: np.ndarray) -> bytes:
  """A 1-bit PNG like Omniglot's: drawing [H, W] bool, True = white paper."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(drawing).convert('1').save(buffer, format='PNG')
  return buffer.getvalue()


def paper(size=omniglot.SOURCE_SIZE) -> np.ndarray:
  return np.ones((size, size), bool)


def write_archive(path, members) -> None:
  with zipfile.ZipFile(path, 'w') as archive:
    for name, data in members.items():
      archive.writestr(name, data)


def test_area_resize_is_the_mean_of_the_covered_pixels():
  resize = omniglot.area_resize_matrix(105, 50)  # output cells span 2.1 input pixels
  np.testing.assert_allclose(resize.sum(axis=1), 1.0)
  np.testing.assert_allclose(resize[0, :3], [1 / 2.1, 1 / 2.1, 0.1 / 2.1])
  np.testing.assert_allclose(resize[1, 2:5], [0.9 / 2.1, 1 / 2.1, 0.2 / 2.1])
  assert np.count_nonzero(resize[0]) == 3


def test_preprocess_inverts_and_area_averages_exactly():
  drawing = paper()
  drawing[:, :42] = False        # a stroke over columns 0-41: exactly output columns 0-19 (2.1 px each)
  drawing[50:, 60:] = False      # and over rows 50.., columns 60..
  drawing[0, 104] = False        # one stroke pixel in the top-right corner cell
  image = omniglot.preprocess(drawing[None], 50)[0]
  assert image.dtype == np.uint8 and image.shape == (50, 50)
  assert (image[:, :20] == 255).all() and (image[:20, 20:28] == 0).all()  # strokes white, paper black
  # Column 60 starts in output column 28 ([58.8, 60.9)): 0.9 of 2.1 inked; row 50 in row 23 ([48.3, 50.4)).
  assert image[30, 28] == round(255 * 0.9 / 2.1) and image[23, 40] == round(255 * 0.4 / 2.1)
  assert image[23, 28] == round(255 * (0.9 / 2.1) * (0.4 / 2.1))
  # Output cell (0, 49) spans rows [0, 2.1) and columns [102.9, 105): input pixel (0, 104) is 1/2.1 x 1/2.1 of it.
  assert image[0, 49] == round(255 / 2.1 ** 2)


def test_archive_in_the_official_layout(tmp_path):
  strokes = {}
  for a, alphabet in enumerate(('Bravo', 'Alpha')):  # listed out of order: sorted on load
    for c in (1, 2):
      for k in (1, 2):
        drawing = paper()
        drawing[:10 * (a + 1), :10 * c] = False
        strokes[f'images_background/{alphabet}/character0{c}/{a}{c}_0{k}.png'] = png_bytes(drawing)
  write_archive(tmp_path / 'tiny.zip', strokes)
  source = omniglot.Omniglot(tmp_path / 'tiny.zip', canvas_size=21)  # 5 source pixels per output pixel
  assert len(source) == 8 and source.alphabets == ['Alpha', 'Bravo'] and source.num_characters == 4
  batch = source.__getitems__(range(8))
  np.testing.assert_array_equal(batch['alphabet'], [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(batch['character'], [0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(batch['count'], -1)  # a character's number of parts is not known
  # Alpha (a = 1) character02: strokes over rows 0-19 and columns 0-19 = output pixels 0-3 of each.
  expected = np.zeros((21, 21), np.uint8)
  expected[:4, :4] = 255
  np.testing.assert_array_equal(batch['image'][2], expected)
  np.testing.assert_array_equal(source[2]['image'], expected)
  assert source.cache_name('train') != omniglot.Omniglot(tmp_path / 'tiny.zip', canvas_size=50).cache_name('train')


def test_bad_archives_are_one_clear_error(tmp_path):
  with pytest.raises(omniglot.OmniglotUnavailableError, match='no Omniglot archive at'):
    omniglot.Omniglot(tmp_path / 'missing.zip')
  (tmp_path / 'text.zip').write_text('not a zip')
  with pytest.raises(omniglot.OmniglotUnavailableError, match='is not a zip archive'):
    omniglot.Omniglot(tmp_path / 'text.zip')
  write_archive(tmp_path / 'flat.zip', {'a.png': png_bytes(paper()), 'notes/readme.txt': b'hi'})
  with pytest.raises(omniglot.OmniglotUnavailableError, match='holds no Omniglot images'):
    omniglot.Omniglot(tmp_path / 'flat.zip')
  write_archive(tmp_path / 'broken.zip', {'Alpha/character01/x.png': b'not a png'})
  with pytest.raises(omniglot.OmniglotUnavailableError, match='x.png is not a readable png'):
    omniglot.Omniglot(tmp_path / 'broken.zip')[0]
  write_archive(tmp_path / 'small.zip', {'Alpha/character01/x.png': png_bytes(paper(64))})
  with pytest.raises(omniglot.OmniglotUnavailableError, match='is 64x64, Omniglot drawings are 105x105'):
    omniglot.Omniglot(tmp_path / 'small.zip')[0]


def test_the_shipped_sample_is_the_default_and_held_out_alphabets_are_new():
  train, held_out = (models_lib.build(omniglot_config.get_config()).scene.scenes(split) for split in ('train', 'test'))
  everything = omniglot.Omniglot(omniglot.archive_path('', omniglot.SAMPLE_EVAL))
  assert set(everything.alphabets) & set(train.alphabets) == {'Greek', 'Latin'}  # the samples share two
  assert (len(train), len(everything), len(held_out)) == (2720, 3120, 2120)
  assert held_out.alphabets == ['Japanese_(katakana)', 'Sanskrit', 'Tagalog']
  assert (omniglot.SAMPLE_DIR / 'LICENSE').is_file()
  with pytest.raises(omniglot.OmniglotUnavailableError, match='every alphabet is excluded'):
    omniglot.Omniglot(everything.path, exclude_alphabets=everything.alphabets)


def test_smoke_mode_end_to_end(tmp_path):
  root = tmp_path / 'omniglot'
  command = [sys.executable, 'experiments/omniglot.py', f'--workdir={root}', '--smoke',
             f'--data_dir={tmp_path / "data"}']
  run = subprocess.run(command, cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True,
                       text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((root / 'omniglot.json').read_text())
  assert list(results) == ['air_4_steps', 'air_1_step']
  for name, result in results.items():
    assert np.isfinite(result['elbo']) and result['reconstruction_mse'] > 0 and result['num_eval'] == 2120, name
    assert len(result['steps_used']) == result['max_steps'] + 1 and abs(sum(result['steps_used']) - 1) < 1e-6
  assert results['air_1_step']['mean_steps'] <= 1.0
  # The 1-step run trained as long as the 4-step one (in chunks, resuming).
  assert results['air_1_step']['train_seconds'] >= results['air_4_steps']['train_seconds']
  assert 'steps used: 0:' in run.stdout and 'train acc' not in run.stdout  # no true counts to score
  table = (root / 'omniglot.md').read_text()
  assert table.startswith('| run | train steps |') and '| air_1_step |' in table
  for picture in ('omniglot.png', 'omniglot_curves.png'):
    assert (root / picture).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
