"""Session fixtures: no downloads, a fake MNIST cache, one shared smoke training run.

Nothing in the suite downloads: every config points at a fake `mnist.npz`, and
`mnist.download_wheel` is replaced by a function that fails for the whole session.
"""
import os
import pathlib
import sys

# Four fake CPU devices for the whole suite (before JAX starts): every training path in the tests
# runs sharded over a 4-device mesh, and test_parallel compares it with a 1-device mesh.
if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4').strip()

# One XLA compilation cache for the session, shared with the subprocesses the tests start (they
# inherit the environment): a program compiled once (the smoke train step, its eval step) is read
# back in every later test and command instead of compiled again. Compiled code is the same either
# way; the folder goes with the session.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import atexit  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  _CACHE = tempfile.mkdtemp(prefix='air_jax_test_xla_cache_')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'

# Tests are dominated by compiling small programs, not by running them: XLA's optimisation passes
# would take most of the suite's CPU time (about 40% of it measured on the Omniglot smoke run) for
# programs that then run a few steps. Semantics are the same at any optimisation level; speed
# figures come from the benchmarks, never from the suite. Subprocesses inherit it.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from air_jax import steps
from air_jax.data import mnist  # pylint: disable=g-import-not-at-top
from air_jax import models as models_lib
from tests import helpers  # pylint: disable=g-import-not-at-top


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
  helpers.write_fake_mnist(folder)
  return folder


@pytest.fixture(scope='session')
def smoke_run(mnist_dir, tmp_path_factory):
  """(workdir, result, log lines, config) of train_and_evaluate: smoke, 4 steps, checkpoints at 2, 4."""
  from air_jax import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('smoke_run') / 'work'
  config = helpers.smoke_config(mnist_dir, num_train_steps=4, checkpoint_every_steps=2,
                                eval_every_steps=2, log_every_steps=2)
  lines = []
  result = train.train_and_evaluate(config, str(workdir), log=lines.append)
  return workdir, result, lines, config


@pytest.fixture(scope='session')
def init_smoke():
  """jit-compiled key -> fresh smoke TrainState, replicated over all devices like the train step's
  output (so the step sees one input sharding; eager init_state is several times slower)."""
  from air_jax import parallel  # pylint: disable=g-import-not-at-top
  config = helpers.smoke_config('')
  return parallel.replicated_init(lambda key: steps.init_state(models_lib.build(config), key), parallel.make_mesh())


@pytest.fixture(scope='session')
def scene_batch():
  """A fixed batch of 8 composed 50x50 scenes (uint8 images, int32 counts) from fake digits."""
  from air_jax.data import multi_mnist  # pylint: disable=g-import-not-at-top
  digits = helpers.fake_mnist(seed=11)
  source = multi_mnist.MultiMNIST(digits.train_images, digits.train_labels, counts=(0, 1, 2),
                                  num_examples=32, seed=0)
  return source.__getitems__(range(32))
