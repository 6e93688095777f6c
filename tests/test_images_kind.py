"""The 'images' scene kind (scenes/images.py, configs/images.py): training and evaluation on images
the user brings, and one clear line for bad files with nothing written."""
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from air_jax import models as models_lib
from air_jax import train
from air_jax.configs import images as images_config
from air_jax.data import multi_mnist
from tests import helpers


def write_scenes(path, num, seed, with_counts=True, size=50):
  """num composed scenes of fake digits as an npz (uint8 images, and counts when asked)."""
  digits = helpers.fake_mnist(seed)
  scenes = multi_mnist.MultiMNIST(digits.train_images, digits.train_labels, counts=(0, 1, 2), num_examples=num,
                                  seed=seed, canvas_size=size).__getitems__(range(num))
  arrays = dict(images=scenes['image'])
  if with_counts:
    arrays['counts'] = scenes['count']
  np.savez(path, **arrays)
  return scenes


def images_config_for(train_path, eval_path, **data):
  config = images_config.get_config('smoke')
  config.data.train_path, config.data.eval_path = str(train_path), str(eval_path)
  for name, value in data.items():
    config.data[name] = value
  return config


def test_trains_and_evaluates_count_accuracy_on_an_npz(tmp_path):
  write_scenes(tmp_path / 'train.npz', 32, 1)
  held_out = write_scenes(tmp_path / 'test.npz', 16, 2)
  lines = []
  result = train.train_and_evaluate(images_config_for(tmp_path / 'train.npz', tmp_path / 'test.npz'),
                                    str(tmp_path / 'work'), log=lines.append)
  assert result['step'] == 4 and 0.0 <= result['count_accuracy'] <= 1.0
  assert result['confusion'].sum() == 16  # every held-out image, against its own count
  assert np.bincount(held_out['count'], minlength=4).tolist() == result['confusion'].sum(1).tolist()
  assert '32 train images of 50x50, counts [0, 1, 2]' in lines
  assert (tmp_path / 'work' / 'checkpoints').is_dir()


def test_a_folder_of_pngs_of_another_size_reports_the_steps_used(tmp_path):
  scenes = write_scenes(tmp_path / 'unused.npz', 12, 3, size=40)['image']
  for split, part in (('train', scenes[:8]), ('test', scenes[8:])):
    (tmp_path / split).mkdir()
    for i, image in enumerate(part):
      Image.fromarray(image).save(tmp_path / split / f'{i:02d}.png')
  config = images_config_for(tmp_path / 'train', tmp_path / 'test')
  config.batch_size = config.eval_batch_size = 4
  models = models_lib.build(config)
  assert models.scene.image_shape == (40, 40) and not models.scene.has_counts
  result = train.train_and_evaluate(config, str(tmp_path / 'work'), log=lambda line: None)
  assert 'count_accuracy' not in result and result['steps_used'].sum() == pytest.approx(1.0)


@pytest.mark.parametrize('bad, fragment', [
    (dict(images=np.zeros((4, 50), np.uint8)), 'expected an array [N, H, W], got shape (4, 50)'),
    (dict(images=np.full((4, 50, 50), 2.0, np.float32)), 'float pixels must lie in [0, 1]'),
    (dict(images=np.zeros((4, 50, 50), np.int16)), 'dtype must be uint8 (0-255) or float (0-1), got int16'),
    (dict(images=np.zeros((4, 50, 40), np.uint8)), 'images must be square, got 50x40'),
    (dict(images=np.zeros((4, 50, 50), np.uint8), counts=np.zeros(3, np.int32)), 'counts must be [N] = [4]'),
    (dict(images=np.zeros((4, 50, 50), np.uint8), counts=np.full(4, 7, np.int32)), 'its counts=(7,) has more objects than config.model.max_steps=3'),
])
def test_bad_train_file_is_one_line_and_nothing_written(tmp_path, bad, fragment):
  np.savez(tmp_path / 'train.npz', **bad)
  write_scenes(tmp_path / 'test.npz', 8, 2)
  workdir = tmp_path / 'work'
  command = [sys.executable, str(helpers.REPO / 'experiments' / 'train.py'), f'--workdir={workdir}',
             f'--config={helpers.REPO / "air_jax" / "configs" / "images.py"}:smoke',
             f'--config.data.train_path={tmp_path / "train.npz"}', f'--config.data.eval_path={tmp_path / "test.npz"}']
  result = subprocess.run(command, capture_output=True, text=True, env=helpers.subprocess_env(), timeout=300)
  helpers.assert_one_error_line(result, [workdir], 'config.data.train_path', fragment)


def test_other_bad_inputs_are_clear_errors(tmp_path):
  write_scenes(tmp_path / 'train.npz', 8, 1)
  write_scenes(tmp_path / 'no_counts.npz', 8, 2, with_counts=False)
  write_scenes(tmp_path / 'small.npz', 8, 2, size=40)
  (tmp_path / 'mixed').mkdir()
  Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / 'mixed' / 'a.png')
  Image.fromarray(np.zeros((31, 31), np.uint8)).save(tmp_path / 'mixed' / 'b.png')
  cases = [(dict(eval_path=''), 'config.data.eval_path is empty'),
           (dict(train_path=str(tmp_path / 'missing.npz')), 'no such file'),
           (dict(eval_path=str(tmp_path / 'no_counts.npz')), 'one has counts and the other not'),
           (dict(eval_path=str(tmp_path / 'small.npz')), 'the model takes 50x50 images, got 40x40'),
           (dict(train_path=str(tmp_path / 'mixed')), 'mixed sizes (30x30, 31x31)')]
  for data, fragment in cases:
    paths = {'train_path': str(tmp_path / 'train.npz'), 'eval_path': str(tmp_path / 'train.npz'), **data}
    config = images_config_for(paths['train_path'], paths['eval_path'])
    with pytest.raises(ValueError) as error:
      models_lib.build(config).scene.sources(log=lambda line: None)
    assert fragment in str(error.value) and '\n' not in str(error.value)
