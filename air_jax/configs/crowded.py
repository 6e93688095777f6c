"""Crowded Multi-MNIST: more digits on larger canvases (issue 38's tasks), the 2D model otherwise.

    python experiments/train.py --config=air_jax/configs/crowded.py:a --workdir=/tmp/a   # 0-3 digits, 50x50
    python experiments/train.py --config=air_jax/configs/crowded.py:b --workdir=/tmp/b   # 0-5 digits, 80x80
    python experiments/train.py --config=air_jax/configs/crowded.py:c --workdir=/tmp/c   # 0-9 digits, 128x128
    python experiments/train.py --config=air_jax/configs/crowded.py:c,parallel_raster ... # another core (CORES)
    python experiments/train.py --config=air_jax/configs/crowded.py:c,smoke ...          # tiny, for tests

Digits keep MNIST's 28x28 size and are composed as in configs/multi_mnist.py (non-overlapping ink
boxes, held-out scenes of MNIST test digits). What changes with the task:
- config.model.max_steps = the most digits + 1 (the core's slots);
- the window prior's mean keeps the default's 35 px window (z_where_prior_loc's s = the logit of
  35 px / canvas side, glimpse.window_logit), so the prior says "a digit" on any canvas;
- the image encoder is strided convolutions (model.image_conv_features), so the core's image
  projection grows with the feature map, not with the canvas's pixels (128x128 read densely into
  the LSTM gates is 16,384 x 1,024 weights);
- fewer training scenes on the larger canvases (each 128x128 scene holds 4.5 digits on average);
- the parallel core's grid (model.grid_size, used with --config.model.inference=parallel) keeps
  cells of about CELL_PIXELS, the default's 4 x 4 cells on 50x50: 4, 6 and 10 cells per side; on
  grids of more than CELL_REACH cells per side each cell reads and draws in a crop CELL_REACH cells
  wide (model.cell_reach: the same model while its window lies inside, a cell's cost no longer
  growing with the canvas).
"""
import ml_collections

from air_jax import glimpse
from air_jax.configs import multi_mnist

WINDOW_PIXELS = 35.0  # the default's prior window: window_size(0.7) of a 50 px canvas
CELL_PIXELS = 12.5    # the parallel core's cell side on the default's 50 px canvas (4 x 4 cells)
CELL_REACH = 4        # the parallel core's crop, in cells per side (model.cell_reach), on larger grids
# task -> (canvas side, the most digits, training scenes)
TASKS = {'a': (50, 3, 60_000), 'b': (80, 5, 40_000), 'c': (128, 9, 20_000)}
# The inference cores measured side by side (experiments/cost.py, experiments/device_check.py):
# config.model's settings of each; 'conv' keeps the config's image_conv_features, else none.
CORES = {
    'recurrent_dense': dict(inference='recurrent', conv=False),  # the paper's: the pixels into the LSTM
    'recurrent_conv': dict(inference='recurrent', conv=True),
    'parallel_raster': dict(inference='parallel', conv=True, cell_order='raster'),
    'parallel_at_once': dict(inference='parallel', conv=True, cell_order='parallel'),
}


def window_prior_logit(canvas: int) -> float:
  """s of the prior's mean window, WINDOW_PIXELS on a canvas of this side (glimpse.window_logit)."""
  if canvas <= WINDOW_PIXELS:
    raise ValueError(f'a canvas of {canvas} px is too small for the prior\'s {WINDOW_PIXELS:.0f} px window')
  return round(float(glimpse.window_logit(WINDOW_PIXELS / canvas)), 4)


def cell_reach(grid_size: int) -> int:
  """model.cell_reach for a grid: CELL_REACH cells where the crop is smaller than the canvas, else 0."""
  return CELL_REACH if grid_size > CELL_REACH else 0


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: the task ('a', 'b' or 'c'), optionally followed by ',<core>' (a name of CORES; default
  the recurrent core with the convolutional encoder) and/or ',smoke' (a tiny model and run)."""
  task, *options = (arg or '').split(',')
  cores = [o for o in options if o in CORES]
  smoke = 'smoke' in options
  if task not in TASKS or len(cores) > 1 or len(options) != len(cores) + options.count('smoke') or options.count('smoke') > 1:
    raise ValueError(f"unknown config argument {arg!r}: use a task of {sorted(TASKS)}, optionally followed by "
                     f"',<core>' (one of {sorted(CORES)}) and/or ',smoke' (e.g. 'c', 'c,parallel_raster' or 'c,smoke')")
  canvas, most, num_train = TASKS[task]
  config = multi_mnist.get_config('smoke' if smoke else None)
  config.data.canvas_size = canvas
  config.data.train_counts = config.data.eval_counts = tuple(range(most + 1))
  config.model.max_steps = most + 1
  config.model.grid_size = round(canvas / CELL_PIXELS)
  config.model.cell_reach = cell_reach(config.model.grid_size)
  config.model.image_conv_features = (8, 16) if smoke else (32, 64)
  _, x, y = config.objective.z_where_prior_loc
  config.objective.z_where_prior_loc = (window_prior_logit(canvas), x, y)
  if not smoke:
    config.data.num_train = num_train
  return with_core(config, cores[0]) if cores else config


def with_core(config: ml_collections.ConfigDict, core: str) -> ml_collections.ConfigDict:
  """A copy of config whose model is CORES[core]'s (the recurrent core reading the pixels densely
  or through the config's convolutions, or the parallel core in raster order or all at once)."""
  if core not in CORES:
    raise ValueError(f'unknown inference core {core!r}: use one of {sorted(CORES)}')
  config = config.copy_and_resolve_references()
  settings = dict(CORES[core])
  if not settings.pop('conv'):
    config.model.image_conv_features = ()
  for name, value in settings.items():
    config.model[name] = value
  return config
