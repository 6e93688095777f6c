"""Train AIR on Multi-MNIST and report held-out count accuracy as it goes.

    python experiments/train.py --workdir=/tmp/air                      # default config
    python experiments/train.py --config=air_jax/configs/multi_mnist.py:smoke --workdir=/tmp/smoke \\
        --config.num_train_steps=10
Several processes (air_jax/distributed.py), e.g. two on this machine, one per terminal:
    python experiments/train.py --workdir=/tmp/air2 --coordinator_address=127.0.0.1:12345 \
        --num_processes=2 --process_id=0      # and the same with --process_id=1
Re-running with the same workdir resumes from its latest checkpoint. Compiled programs are kept
in XLA's persistent cache under <data dir>/xla ($JAX_COMPILATION_CACHE_DIR overrides it), so a later
run of the same shapes does not compile them again.
"""
import os

from absl import app
from absl import logging
from absl import flags

import jax

from air_jax import distributed
from air_jax import launch
from air_jax import train
from air_jax import metrics
from air_jax.data import mnist as mnist_lib
from air_jax.data import sources
from air_jax.configs import multi_mnist as multi_mnist_config

_CONFIG = launch.define_config_file(
    'config', multi_mnist_config.__file__,  # air_jax/configs/multi_mnist.py, in a checkout or installed
    'Path to a config file (get_config); append :smoke for a tiny run.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, TensorBoard logs and history go.')
_JOIN_PROCESSES = distributed.define_flags()
flags.mark_flags_as_required(['workdir'])


def main(argv):
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax, XLA) would drown progress
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    _JOIN_PROCESSES()
  except ValueError as e:
    launch.fail(str(e))
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    data_dir = _CONFIG.value.data.get('data_dir') or mnist_lib.default_data_dir()
    jax.config.update('jax_compilation_cache_dir', os.path.join(data_dir, 'xla'))
  try:
    result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, log=distributed.say)
  except Exception as e:  # pylint: disable=broad-except
    distributed.exit_in_one_line(e)  # several processes: one line for any error, at once
    if isinstance(e, (ValueError, FileNotFoundError, train.NonFiniteError, sources.UnavailableError)):
      launch.fail(str(e))
    raise
  held_out = metrics.format_evaluation(result).split('\n')[0] if 'elbo' in result else 'nothing left to train'
  distributed.say(f'final: step {result["step"]}: {held_out}')


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
