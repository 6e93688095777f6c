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
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from air_jax import launch
from air_jax import parallel
from air_jax import steps as steps_lib
from air_jax.configs import default

_CONFIG = launch.define_config_file(
    'config', default.__file__,  # air_jax/configs/default.py, in a checkout or installed
    'Model config (get_config); the batch size is set per row.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['64', '256', '1024'], 'Global batch sizes to time.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Steps per timed block.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed blocks per batch size (median and spread).')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps after compiling.')
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 2048, 'Side of the square matmul for the roofline.')
_PRECISIONS = flags.DEFINE_list('precisions', ['float32'],
                                'Matmul dtypes to time (config model.matmul_dtype): float32, bfloat16.')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the results here as JSON.')


def make_matmul_rate(size: int, precision: str = 'float32'):
  """A function () -> GFLOP/s of one [size, size] @ [size, size] on the default device with
  operands in `precision` and float32 results (the best of 3, so a single preempted call does not
  count)."""
  a = jax.random.normal(jax.random.key(0), (size, size), precision)
  b = jax.random.normal(jax.random.key(1), (size, size), precision)
  matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  matmul(a, b).block_until_ready()

  def rate() -> float:
    times = []
    for _ in range(3):
      start = time.perf_counter()
      matmul(a, b).block_until_ready()
      times.append(time.perf_counter() - start)
    return 2 * size ** 3 / min(times) / 1e9

  return rate


def step_flops(compiled) -> float:
  """FLOPs of one step from XLA's cost analysis (nan where the backend gives none)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', float('nan')))


def benchmark_batch(config, batch_size: int, precision: str, steps: int, repeats: int,
                    warmup: int, mesh, roofline_rate) -> dict:
  config = config.copy_and_resolve_references()
  config.batch_size = batch_size
  config.model.matmul_dtype = precision
  size = config.data.canvas_size
  rng = np.random.default_rng(0)
  batch = parallel.put_batch(dict(
      image=rng.integers(0, 256, (batch_size, size, size), dtype=np.uint8)[parallel.process_slice(batch_size)],
      count=rng.integers(0, 3, (batch_size,)).astype(np.int32)[parallel.process_slice(batch_size)]), mesh)
  images, counts = batch['image'], batch['count']
  key = jax.random.key(0)
  state = steps_lib.create_train_state(config, jax.random.key(1), mesh)
  step = steps_lib.make_train_step(config, mesh)

  start = time.perf_counter()
  compiled = step.lower(state, images, counts, key).compile()
  compile_seconds = time.perf_counter() - start
  flops = step_flops(compiled)

  for _ in range(warmup):
    state, metrics = compiled(state, images, counts, key)
  jax.block_until_ready(metrics)
  rates, rooflines = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, images, counts, key)
    jax.block_until_ready((state, metrics))
    rates.append(steps / (time.perf_counter() - start))
    rooflines.append(roofline_rate())
  median = statistics.median(rates)
  fractions = [flops * r / 1e9 / g for r, g in zip(rates, rooflines)]
  return dict(batch_size=batch_size, precision=precision, compile_seconds=compile_seconds, steps_per_second=median,
              steps_per_second_min=min(rates), steps_per_second_max=max(rates),
              images_per_second=median * batch_size, flops_per_step=flops,
              gflops_per_second=flops * median / 1e9, roofline_gflops=statistics.median(rooflines),
              roofline_fraction=statistics.median(fractions),
              roofline_fraction_min=min(fractions), roofline_fraction_max=max(fractions))


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
  mesh = parallel.make_mesh()
  uneven = [b for b in batch_sizes if b % mesh.devices.size]
  if uneven:
    print(f'error: batch sizes {uneven} do not split over the {mesh.devices.size} devices', file=sys.stderr)
    sys.exit(1)
  device = jax.devices()[0]
  roofline_rates = {precision: make_matmul_rate(_MATMUL_SIZE.value, precision) for precision in _PRECISIONS.value}
  print(f'device: {device.device_kind} x{jax.device_count()} ({jax.default_backend()}); '
        f'roofline: {_MATMUL_SIZE.value}^3 matmul in the row\'s dtype (float32 results), timed after every block',
        flush=True)
  header = (f'{"dtype":>8} {"batch":>6} {"compile s":>9} {"steps/s":>8} {"(min-max)":>15} {"images/s":>9} '
            f'{"GFLOP/step":>10} {"GFLOP/s":>8} {"roof GF/s":>9} {"of roof":>7} {"(min-max)":>11}')
  print(header, flush=True)
  rows = []
  for precision, batch_size in itertools.product(_PRECISIONS.value, batch_sizes):
    row = benchmark_batch(_CONFIG.value, batch_size, precision, _STEPS.value, _REPEATS.value,
                          _WARMUP.value, mesh, roofline_rates[precision])
    rows.append(row)
    print(f'{precision:>8} {batch_size:>6} {row["compile_seconds"]:>9.1f} {row["steps_per_second"]:>8.2f} '
          f'{row["steps_per_second_min"]:>7.2f}-{row["steps_per_second_max"]:<7.2f} '
          f'{row["images_per_second"]:>9.0f} {row["flops_per_step"] / 1e9:>10.3f} '
          f'{row["gflops_per_second"]:>8.1f} {row["roofline_gflops"]:>9.1f} {row["roofline_fraction"]:>7.1%} '
          f'{row["roofline_fraction_min"]:>5.0%}-{row["roofline_fraction_max"]:<5.0%}', flush=True)
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w') as f:
      json.dump(dict(device=str(device.device_kind), backend=jax.default_backend(),
                     device_count=jax.device_count(), matmul_size=_MATMUL_SIZE.value,
                     roofline='matmul with operands in the row precision, float32 results', rows=rows), f, indent=2)


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
