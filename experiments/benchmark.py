"""Train-step throughput: compile time, steady-state steps/s and images/s, FLOPs and roofline.

    python experiments/benchmark.py --batch_sizes=64,256,1024 --output=/tmp/bench.json

For each batch size: the step is compiled ahead of time (compile time reported apart), warmed
up, then timed in `--repeats` blocks of `--steps` steps, each block ended by block_until_ready.
FLOPs per step (per device) come from XLA's cost analysis. The roofline (per device) is this
machine's dense matmul rate in the row's precision: float32, or bfloat16 operands with float32
accumulation (the rate of the bfloat16 step's forward and input-gradient products; its weight
gradients, about a third of the dense FLOPs, run in float32, so the bfloat16 fraction is a strict
bar). It is timed right after every block, so each block's fraction of the roofline is a ratio of
two rates measured seconds apart (robust to a shared machine's drifting speed); the table shows the
median block. Batches are synthetic (random uint8 images of the configured size): no MNIST needed.
"""
import itertools
import json
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from air_jax import benchmarking
from air_jax import distributed
from air_jax import launch
from air_jax import parallel
from air_jax.configs import multi_mnist as multi_mnist_config

_CONFIG = launch.define_config_file(
    'config', multi_mnist_config.__file__,  # air_jax/configs/multi_mnist.py, in a checkout or installed
    'Model config (get_config); the batch size is set per row.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['64', '256', '1024'], 'Global batch sizes to time.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Steps per timed block.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed blocks per batch size (median and spread).')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps after compiling.')
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 2048, 'Side of the square matmul for the roofline.')
_PRECISIONS = flags.DEFINE_list('precisions', ['float32'],
                                'Matmul dtypes to time (config model.matmul_dtype): float32, bfloat16.')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the results here as JSON.')
_JOIN_PROCESSES = distributed.define_flags()  # several processes time one step together


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  except ValueError:
    print(f'error: --batch_sizes must be integers, got {_BATCH_SIZES.value}', file=sys.stderr)
    sys.exit(1)
  if min(batch_sizes) <= 0 or _STEPS.value <= 0 or _REPEATS.value <= 0:
    print('error: --batch_sizes, --steps and --repeats must be positive', file=sys.stderr)
    sys.exit(1)
  bad = [p for p in _PRECISIONS.value if p not in ('float32', 'bfloat16')]
  if bad:
    print(f'error: --precisions takes float32 and/or bfloat16, got {bad}', file=sys.stderr)
    sys.exit(1)
  try:
    _JOIN_PROCESSES()
  except ValueError as e:
    launch.fail(str(e))
  mesh = parallel.make_mesh()
  uneven = [b for b in batch_sizes if b % mesh.devices.size]
  if uneven:
    print(f'error: batch sizes {uneven} do not split over the {mesh.devices.size} devices', file=sys.stderr)
    sys.exit(1)
  device = jax.devices()[0]
  roofline_rates = {precision: benchmarking.make_matmul_rate(_MATMUL_SIZE.value, precision) for precision in _PRECISIONS.value}
  distributed.say(f'device: {device.device_kind} x{jax.device_count()} ({jax.default_backend()}, {jax.process_count()} '
      f'process(es)); roofline: {_MATMUL_SIZE.value}^3 matmul in the row\'s dtype (float32 results), timed '
      'after every block')
  distributed.say(benchmarking.TRAIN_STEP_HEADER)
  rows = []
  for precision, batch_size in itertools.product(_PRECISIONS.value, batch_sizes):
    row = benchmarking.time_train_step(_CONFIG.value, batch_size, precision, _STEPS.value, _REPEATS.value,
                                       _WARMUP.value, mesh, roofline_rates[precision])
    rows.append(row)
    distributed.say(benchmarking.format_train_step(row))
  if _OUTPUT.value and distributed.is_lead():
    with open(_OUTPUT.value, 'w') as f:
      json.dump(dict(device=str(device.device_kind), backend=jax.default_backend(),
                     device_count=jax.device_count(), process_count=jax.process_count(), matmul_size=_MATMUL_SIZE.value,
                     roofline='matmul with operands in the row precision, float32 results', rows=rows), f, indent=2)


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
