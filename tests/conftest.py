"""Shared test helpers: a fake MNIST cache, the smoke config, one shared smoke training run.

Nothing here (or in any test) downloads: every config points at a fake `mnist.npz`, and
`mnist.download_wheel` is replaced by a function that fails for the whole session.
"""
import os
import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from air_jax.configs import default  # pylint: disable=g-import-not-at-top
from air_jax.data import mnist

REAL_DOWNLOAD_WHEEL = mnist.download_wheel
NUM_TRAIN_DIGITS, NUM_TEST_DIGITS = 40, 20


def blobs(rng: np.random.Generator, n: int) -> np.ndarray:
  """n uint8 [28, 28] ellipses near the centre (ink in the middle): stand-ins for digits."""
  rows, cols = np.mgrid[:28, :28]
  centre = rng.uniform(11, 17, size=(n, 2, 1, 1))
  radius = rng.uniform(3, 8, size=(n, 2, 1, 1))
  inside = ((rows - centre[:, 0]) / radius[:, 0]) ** 2 + ((cols - centre[:, 1]) / radius[:, 1]) ** 2 <= 1
  return (inside * rng.integers(60, 256, size=(n, 1, 1))).astype(np.uint8)


def fake_mnist(seed: int = 0, num_train: int = NUM_TRAIN_DIGITS,
               num_test: int = NUM_TEST_DIGITS) -> mnist.Mnist:
  rng = np.random.default_rng(seed)
  return mnist.Mnist(train_images=blobs(rng, num_train),
                     train_labels=(np.arange(num_train) % 10).astype(np.int32),
                     test_images=blobs(rng, num_test),
                     test_labels=(np.arange(num_test) % 10).astype(np.int32))


def write_fake_mnist(folder: pathlib.Path, seed: int = 0) -> mnist.Mnist:
  """Writes <folder>/mnist.npz (the cache format load_mnist reads) and returns its digits."""
  digits = fake_mnist(seed)
  folder.mkdir(parents=True, exist_ok=True)
  np.savez(folder / mnist.CACHE_NAME, train_images=digits.train_images,
           train_labels=digits.train_labels, test_images=digits.test_images,
           test_labels=digits.test_labels)
  return digits


def smoke_config(data_dir, **overrides):
  """get_config('smoke') reading MNIST from data_dir; overrides are top-level fields."""
  config = default.get_config('smoke')
  config.data.data_dir = str(data_dir)
  for name, value in overrides.items():
    config[name] = value
  return config


def _no_download(directory):
  raise AssertionError(f'a test tried to download MNIST into {directory}')


@pytest.fixture(scope='session', autouse=True)
def no_download():
  """For the whole session, fetching the MNIST wheel is an error."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(mnist, 'download_wheel', _no_download)
    yield


@pytest.fixture(scope='session')
def mnist_dir(tmp_path_factory) -> pathlib.Path:
  """A folder holding a fake 40 + 20 digit mnist.npz."""
  folder = tmp_path_factory.mktemp('fake_mnist')
  write_fake_mnist(folder)
  return folder


@pytest.fixture(scope='session')
def smoke_run(mnist_dir, tmp_path_factory):
  """(workdir, result, log lines, config) of one train_and_evaluate: smoke, 4 steps, checkpoints at 2, 4."""
  from air_jax import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('smoke_run') / 'work'
  config = smoke_config(mnist_dir, num_train_steps=4, checkpoint_every_steps=2,
                        eval_every_steps=2, log_every_steps=2)
  lines = []
  result = train.train_and_evaluate(config, str(workdir), log=lines.append)
  return workdir, result, lines, config


def subprocess_env():
  """Environment for `python -m air_jax....` subprocesses: the repo on PYTHONPATH."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
  return env
