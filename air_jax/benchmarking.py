"""Speed measurements shared by experiments/benchmark.py, benchmark_3d.py and device_check.py.

time_train_step: one compiled train step at a batch size and matmul precision, timed in blocks
after compiling (compile time apart), with XLA's FLOP count and a matmul roofline timed after
every block (so each block's fraction of the roofline is a ratio of two rates measured seconds
apart). Batches are synthetic (random uint8 images of the configured size): no MNIST needed.
renders_per_second: MuJoCo renders/s of random 0-3 object scenes through a RenderPool.
"""
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from air_jax import models as models_lib
from air_jax import parallel
from air_jax import steps as steps_lib


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


def time_train_step(config, batch_size: int, precision: str, steps: int, repeats: int,
                    warmup: int, mesh, roofline_rate) -> dict:
  """Compile time, steps/s (median of `repeats` blocks of `steps`, and the spread), images/s,
  FLOPs per step, its memory (step_memory_bytes: arguments + outputs - donated + temporaries, XLA's
  buffer assignment per device; temp_memory_bytes: the temporaries, activations and gradients)
  and the fraction of `roofline_rate()` (GFLOP/s) achieved, of the train step of
  `config` at this global batch size and model.matmul_dtype, sharded over `mesh`."""
  config = config.copy_and_resolve_references()
  config.batch_size = batch_size
  config.model.matmul_dtype = precision
  models = models_lib.build(config)
  height, width = models.scene.image_shape
  rng = np.random.default_rng(0)
  batch = parallel.put_batch(dict(
      image=rng.integers(0, 256, (batch_size, height, width), dtype=np.uint8)[parallel.process_slice(batch_size)],
      count=rng.integers(0, 3, (batch_size,)).astype(np.int32)[parallel.process_slice(batch_size)]), mesh)
  images, counts = batch['image'], batch['count']
  key = jax.random.key(0)
  state = steps_lib.create_train_state(models, jax.random.key(1), mesh)
  step = steps_lib.make_train_step(models, mesh)

  start = time.perf_counter()
  compiled = step.lower(state, images, counts, key).compile()
  compile_seconds = time.perf_counter() - start
  flops = step_flops(compiled)
  memory = compiled.memory_analysis()  # XLA's buffer assignment of the step (per device)

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
              step_memory_bytes=(memory.argument_size_in_bytes + memory.output_size_in_bytes
                                 - memory.alias_size_in_bytes + memory.temp_size_in_bytes),
              temp_memory_bytes=memory.temp_size_in_bytes,
              steps_per_second_min=min(rates), steps_per_second_max=max(rates),
              images_per_second=median * batch_size, flops_per_step=flops,
              gflops_per_second=flops * median / 1e9, roofline_gflops=statistics.median(rooflines),
              roofline_fraction=statistics.median(fractions),
              roofline_fraction_min=min(fractions), roofline_fraction_max=max(fractions))


TRAIN_STEP_HEADER = (f'{"dtype":>8} {"batch":>6} {"compile s":>9} {"steps/s":>8} {"(min-max)":>15} {"images/s":>9} '
                     f'{"GFLOP/step":>10} {"GFLOP/s":>8} {"roof GF/s":>9} {"of roof":>7} {"(min-max)":>11}')


def format_train_step(row: dict) -> str:
  """One line of the table under TRAIN_STEP_HEADER for a time_train_step row."""
  return (f'{row["precision"]:>8} {row["batch_size"]:>6} {row["compile_seconds"]:>9.1f} {row["steps_per_second"]:>8.2f} '
          f'{row["steps_per_second_min"]:>7.2f}-{row["steps_per_second_max"]:<7.2f} '
          f'{row["images_per_second"]:>9.0f} {row["flops_per_step"] / 1e9:>10.3f} '
          f'{row["gflops_per_second"]:>8.1f} {row["roofline_gflops"]:>9.1f} {row["roofline_fraction"]:>7.1%} '
          f'{row["roofline_fraction_min"]:>5.0%}-{row["roofline_fraction_max"]:<5.0%}')


def random_scenes(world, n: int, seed: int = 0):
  """n random 3D layouts of `world` (data.shapes_3d.World): shape [n, K], pose [n, K, 3] (x, y,
  theta), present [n, K]."""
  from air_jax.data import shapes_3d  # pylint: disable=g-import-not-at-top  (MuJoCo only when asked)
  rng = np.random.default_rng(seed)
  layouts = [shapes_3d.sample_layout(rng, world) for _ in range(n)]
  shape = np.stack([l['shape'] for l in layouts])
  pose = np.concatenate([np.stack([l['position'] for l in layouts]), np.stack([l['theta'] for l in layouts])[..., None]], -1)
  present = np.arange(world.max_objects)[None] < np.array([l['count'] for l in layouts])[:, None]
  return shape, pose, present


def renders_per_second(world, n: int, processes=(1, 2)) -> dict:
  """{'<p> process(es)': renders/s} of n random scenes rendered by a RenderPool of p processes (a
  MuJoCo renderer each, images sent back through pipes), after 8 warm-up renders."""
  from air_jax.data import shapes_3d  # pylint: disable=g-import-not-at-top
  shape, pose, present = random_scenes(world, n)
  rows = {}
  for count in processes:
    pool = shapes_3d.RenderPool(world, world.max_objects, count)
    pool(shape[:8], pose[:8], present[:8])  # warm up
    start = time.perf_counter()
    pool(shape, pose, present)
    rows[f'{count} process(es)'] = n / (time.perf_counter() - start)
    pool.close()
  return rows
