"""How a train step's cost grows with the objects and the canvas, for each inference core (issue 38).

    python experiments/cost.py --output=docs/results/cost                        # the whole table
    python experiments/cost.py --variants=parallel_raster --objects=3 --canvases=50 --output=/tmp/c

Per (variant, objects N, canvas side): Multi-MNIST's model at that canvas (configs/crowded.py's
window prior) with N object slots, its train step at --batch_size on synthetic scenes, timed as
experiments/benchmark.py does (benchmarking.time_train_step: compile apart, median of --repeats
blocks of --steps steps), with XLA's memory of the step. Variants (configs/crowded.py's CORES): the
recurrent core reading the pixels densely ('recurrent_dense', the paper's encoder: a [H W, 4 L]
projection) or through two strided convolutions ('recurrent_conv'), and the parallel core with the smallest square
grid the crowded tasks give the canvas (cells of ~CELL_PIXELS, configs/crowded.py; more if N needs
them; each cell in its crop of CELL_REACH cells on grids larger than that), its cells deciding in
raster order ('parallel_raster', the default) or at once
('parallel_at_once'): its cost follows the canvas, not N, so each of its (slots, canvas) is timed
once. Writes <output>.json and <output>.md.
"""
import itertools
import math
import pathlib

from absl import app
from absl import flags
from absl import logging
import jax

from air_jax import benchmarking
from air_jax import launch
from air_jax import parallel
from air_jax.configs import crowded

_VARIANTS = flags.DEFINE_list('variants', list(crowded.CORES), f'Any of {list(crowded.CORES)}.')
_OBJECTS = flags.DEFINE_list('objects', ['3', '5', '10'], 'Object slots N (the parallel core: its grid has >= N cells).')
_CANVASES = flags.DEFINE_list('canvases', ['50', '80', '128', '200'], 'Canvas sides in pixels.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Global batch size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Steps per timed block.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed blocks per row (median and spread).')
_SMOKE = flags.DEFINE_bool('smoke', False, "The smoke model (configs' 'smoke'): the pipeline end to end.")
_OUTPUT = flags.DEFINE_string('output', None, 'Path without suffix: writes <output>.json and <output>.md.')
flags.mark_flags_as_required(['output'])


def variant_config(variant: str, objects: int, canvas: int, smoke: bool):
  """configs/crowded.py's model on a `canvas` side with `objects` slots and the core `variant`."""
  config = crowded.with_core(crowded.get_config('a,smoke' if smoke else 'a'), variant)
  config.data.canvas_size = canvas
  config.data.train_counts = config.data.eval_counts = (0,)  # synthetic batches: no scenes composed
  config.objective.z_where_prior_loc = (crowded.window_prior_logit(canvas),) + tuple(config.objective.z_where_prior_loc[1:])
  config.model.max_steps = objects
  config.model.grid_size = max(round(canvas / crowded.CELL_PIXELS), math.ceil(math.sqrt(objects)))
  config.model.cell_reach = crowded.cell_reach(config.model.grid_size)
  return config


def markdown(rows) -> str:
  lines = ['| variant | slots | canvas | ms / step | (min-max) | compile s | GFLOP / step | step memory (MB) | temporaries (MB) |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["variant"]} | {r["slots"]} | {r["canvas"]} | {1e3 / r["steps_per_second"]:.0f} | '
                 f'{1e3 / r["steps_per_second_max"]:.0f}-{1e3 / r["steps_per_second_min"]:.0f} | '
                 f'{r["compile_seconds"]:.1f} | {r["flops_per_step"] / 1e9:.2f} | '
                 f'{r["step_memory_bytes"] / 2 ** 20:.0f} | {r["temp_memory_bytes"] / 2 ** 20:.0f} |')
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) > 1:
    launch.fail(f'unexpected arguments {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  launch.require_choices('variants', _VARIANTS.value, crowded.CORES)
  try:
    objects, canvases = [int(n) for n in _OBJECTS.value], [int(c) for c in _CANVASES.value]
  except ValueError:
    launch.fail(f'--objects and --canvases must be integers, got {_OBJECTS.value} and {_CANVASES.value}')
  if min(objects) <= 0 or min(canvases) <= crowded.WINDOW_PIXELS or _BATCH_SIZE.value <= 0:
    launch.fail(f'--objects and --batch_size must be positive and --canvases over {crowded.WINDOW_PIXELS:.0f} '
                '(the window prior\'s side)')
  output = pathlib.Path(_OUTPUT.value)
  if not output.parent.is_dir():
    launch.fail(f'--output: the folder {output.parent} does not exist')
  mesh = parallel.make_mesh()
  rate = benchmarking.make_matmul_rate(512)
  rows = []
  print(f'device: {jax.devices()[0].device_kind} x{jax.device_count()}; batch {_BATCH_SIZE.value}', flush=True)
  timed = set()
  for variant, n, canvas in itertools.product(_VARIANTS.value, objects, canvases):
    config = variant_config(variant, n, canvas, _SMOKE.value)
    slots = config.model.grid_size ** 2 if config.model.inference == 'parallel' else n
    if (variant, slots, canvas) in timed:
      continue  # the parallel core: the same grid for another N
    timed.add((variant, slots, canvas))
    row = benchmarking.time_train_step(config, _BATCH_SIZE.value, 'float32', _STEPS.value, _REPEATS.value, 1, mesh, rate)
    rows.append(dict(variant=variant, objects=n, slots=slots, canvas=canvas, **row))
    print(f'{variant:>16} slots {slots:>3} canvas {canvas:>3}: {1e3 / row["steps_per_second"]:8.1f} ms/step, '
          f'compile {row["compile_seconds"]:.1f} s, {row["step_memory_bytes"] / 2 ** 20:.0f} MB', flush=True)
  record = dict(launch.provenance('python experiments/cost.py'), batch_size=_BATCH_SIZE.value, rows=rows)
  page = markdown(rows)
  wrote = launch.write_results(_OUTPUT.value, record, page)
  print(page)
  print(wrote)


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
