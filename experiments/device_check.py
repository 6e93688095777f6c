"""One prepared check of air_jax on an accelerator (a GPU machine lent for minutes): a report
printed as it goes and written as JSON.

    python experiments/device_check.py --data_dir=DIR --output=report.json   # the full check
    python experiments/device_check.py --quick --data_dir=DIR                 # tiny sizes, CPU, a few minutes

1. Devices: JAX's backend and devices, the JAX and jaxlib versions.
2. The train-step table (air_jax.benchmarking.time_train_step, as experiments/benchmark.py) at
   --batch_sizes in --precisions: compile time, images/s, FLOP/s and the fraction of a matmul
   roofline timed in the same precision.
3. A default-config training run at --train_batch_size over a mesh of every device present (the
   data-parallel path of a multi-GPU machine), evaluated every --train_eval_every steps on 5,000
   held-out scenes until --train_target count accuracy or --train_max_steps: the steps and training
   seconds to 97% and to 98%. The batch and the learning rate move from the defaults (64, 1e-3):
   --train_learning_rate 3e-3, constant, chosen on the CPU at batch 1,024 (validation split, 1,000
   scenes, eval every 50 steps): 98% at step 200 / 250 (seeds 0 / 1) against 300 / 350 with 1e-3;
   1e-2 stayed at 69-76% from step 100 to 350 (98% at step 750). The count prior's anneal
   (10,000 steps) barely moves in so few steps.
4. Crowded scenes (configs/crowded.py, issue 38): the train step of task (c) (0-9 digits on 128x128)
   for each inference core of --crowded_cores (crowded.CORES) at --crowded_batch_size in float32, and
   a task (b) run (0-5 digits on 80x80, core --crowded_train_core, the training run's batch and
   learning rate) until 97% held-out or --crowded_train_seconds of wall time (compilation and
   evaluations included): its steps and training seconds to 97%, or 'not reached' and its last
   accuracy. --crowded_cores= and --crowded_train_seconds=0 leave them out.
5. MuJoCo renders/s of random 3D scenes (MUJOCO_GL=egl: the GPU's EGL on an NVIDIA machine).

Nothing is downloaded: MNIST comes from --data_dir's mnist.npz (the cache experiments/train.py
writes), and a missing one is an error. On the lent GPU machine, which reaches no network, the
packages its image lacks travel as wheels; experiments/device_check_prepare.sh gathers the wheels,
the EGL libraries and mnist.npz into .device/ (ignored by git) and prints the command to run.
"""
import json
import os
import pathlib
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from air_jax import launch

_QUICK = flags.DEFINE_bool('quick', False, 'Tiny sizes (the smoke config, a few steps): a CPU check of a few minutes.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'Folder holding mnist.npz; default $AIR_JAX_DATA_DIR or ~/.cache/air_jax.')
_OUTPUT = flags.DEFINE_string('output', '', 'Write the report here as JSON.')
_WORKDIR = flags.DEFINE_string('workdir', '', 'Where the training run writes (default: a temporary folder).')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['64', '1024', '8192'], 'Global batch sizes of the step table.')
_PRECISIONS = flags.DEFINE_list('precisions', ['float32', 'bfloat16'], 'Matmul dtypes of the step table.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Steps per timed block of the step table.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed blocks per row of the step table.')
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 8192, 'Side of the square matmul of the roofline.')
_TRAIN_BATCH = flags.DEFINE_integer('train_batch_size', 1024, 'Global batch of the training run.')
_TRAIN_LR = flags.DEFINE_float('train_learning_rate', 3e-3, 'Learning rate of the training run (chosen at batch 1,024).')
_TRAIN_MAX_STEPS = flags.DEFINE_integer('train_max_steps', 3000, 'The training run stops here at the latest.')
_TRAIN_EVAL_EVERY = flags.DEFINE_integer('train_eval_every', 100, 'Steps between held-out evaluations.')
_TRAIN_TARGET = flags.DEFINE_float('train_target', 0.98, 'The training run stops at this held-out count accuracy.')
_CROWDED_CORES = flags.DEFINE_list('crowded_cores', ['recurrent_dense', 'recurrent_conv', 'parallel_raster',
                                                     'parallel_at_once'], 'Cores of the task (c) step table.')
_CROWDED_BATCH = flags.DEFINE_integer('crowded_batch_size', 256, 'Global batch of the task (c) step table.')
_CROWDED_TRAIN_CORE = flags.DEFINE_string('crowded_train_core', 'recurrent_dense', 'Core of the task (b) run.')
_CROWDED_TRAIN_SECONDS = flags.DEFINE_float('crowded_train_seconds', 150, 'Wall-time cap of the task (b) run (0: skip it).')
_RENDERS = flags.DEFINE_integer('renders', 2000, 'Random 3D scenes per renders/s figure (0: skip the renders).')
_RENDER_PROCESSES = flags.DEFINE_list('render_processes', ['1', '4'], 'Render processes per renders/s figure.')

QUICK = dict(batch_sizes=[8], steps=2, repeats=2, matmul_size=256, train_batch_size=8, train_max_steps=6,
             train_eval_every=2, renders=16, render_processes=[1], crowded_batch_size=8)
CROWDED_TARGET = 0.97  # issue 38's goal on task (c), the figure asked of task (b) on a GPU


def settings() -> dict:
  """The flags' values, with --quick's tiny sizes in place of the sizes it overrides."""
  try:
    values = dict(batch_sizes=[int(b) for b in _BATCH_SIZES.value],
                  render_processes=[int(p) for p in _RENDER_PROCESSES.value])
  except ValueError:
    launch.fail(f'--batch_sizes and --render_processes take integers, got {_BATCH_SIZES.value} and '
                f'{_RENDER_PROCESSES.value}')
  values.update(steps=_STEPS.value, repeats=_REPEATS.value, matmul_size=_MATMUL_SIZE.value,
                train_batch_size=_TRAIN_BATCH.value, train_max_steps=_TRAIN_MAX_STEPS.value,
                train_eval_every=_TRAIN_EVAL_EVERY.value, renders=_RENDERS.value,
                crowded_batch_size=_CROWDED_BATCH.value, crowded_train_seconds=_CROWDED_TRAIN_SECONDS.value)
  if _QUICK.value:
    values.update(QUICK)
  from air_jax.configs import crowded  # pylint: disable=g-import-not-at-top
  launch.require_choices('crowded_cores', _CROWDED_CORES.value, crowded.CORES)
  launch.require_choices('crowded_train_core', [_CROWDED_TRAIN_CORE.value], crowded.CORES)
  if values['crowded_batch_size'] <= 0 or values['crowded_train_seconds'] < 0:
    launch.fail('--crowded_batch_size must be positive and --crowded_train_seconds >= 0')
  bad = [p for p in _PRECISIONS.value if p not in ('float32', 'bfloat16')]
  if bad:
    launch.fail(f'--precisions takes float32 and/or bfloat16, got {bad}')
  positive = ('steps', 'repeats', 'matmul_size', 'train_batch_size', 'train_max_steps', 'train_eval_every')
  if min(values['batch_sizes'] + values['render_processes'] + [values[k] for k in positive]) <= 0:
    launch.fail('--batch_sizes, --render_processes, --steps, --repeats, --matmul_size and the --train_* '
                'sizes must be positive')
  if values['renders'] < 0 or not 0 < _TRAIN_TARGET.value <= 1 or _TRAIN_LR.value <= 0:
    launch.fail('--renders must be >= 0, --train_target in (0, 1] and --train_learning_rate positive')
  return values


def model_config(quick: bool, data_dir: str):
  from air_jax.configs import multi_mnist as multi_mnist_config  # pylint: disable=g-import-not-at-top
  config = multi_mnist_config.get_config('smoke' if quick else None)
  config.data.data_dir = data_dir
  return config


def step_table(config, values, mesh, log) -> list:
  from air_jax import benchmarking  # pylint: disable=g-import-not-at-top
  roofline = {p: benchmarking.make_matmul_rate(values['matmul_size'], p) for p in _PRECISIONS.value}
  log(f'train step (synthetic batches; roofline: a {values["matmul_size"]}^3 matmul in the row\'s dtype):')
  log(benchmarking.TRAIN_STEP_HEADER)
  rows = []
  for precision in _PRECISIONS.value:
    for batch_size in values['batch_sizes']:
      row = benchmarking.time_train_step(config, batch_size, precision, values['steps'], values['repeats'], 3,
                                         mesh, roofline[precision])
      rows.append(row)
      log(benchmarking.format_train_step(row))
  return rows


def training_run(config, values, workdir: str, log, target: float, thresholds=(0.97, 0.98),
                 max_seconds: float | None = None) -> dict:
  """config at the training batch and learning rate, until `target` held-out count accuracy, the
  step cap or max_seconds of wall time; the steps and training seconds to each threshold."""
  from air_jax import metrics  # pylint: disable=g-import-not-at-top
  from air_jax import train  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.batch_size = values['train_batch_size']
  config.learning_rate = _TRAIN_LR.value
  config.num_train_steps = values['train_max_steps']
  config.eval_every_steps = config.log_every_steps = values['train_eval_every']
  config.checkpoint_every_steps = values['train_max_steps']
  log(f'training: batch {config.batch_size}, learning rate {config.learning_rate:g}, until {target:.0%} held-out '
      f'({config.data.num_eval} scenes), step {config.num_train_steps}'
      + ('' if max_seconds is None else f' or {max_seconds:.0f} s'))
  start = time.perf_counter()
  stop_when = lambda r: r['count_accuracy'] >= target or (
      max_seconds is not None and time.perf_counter() - start >= max_seconds)
  result = train.train_and_evaluate(config, workdir, log=lambda line: log('  ' + line), stop_when=stop_when)
  wall = time.perf_counter() - start
  summary = metrics.summarise_count_accuracy(workdir, thresholds)
  for threshold, crossing in summary['crossings'].items():
    log(f'  to {threshold:.0%}: ' + ('not reached' if crossing is None else
                                     f'step {crossing[0]}, {crossing[1]:.1f} s of training'))
  return dict(batch_size=config.batch_size, learning_rate=config.learning_rate, steps=result['step'],
              final_count_accuracy=result.get('count_accuracy'), wall_seconds=wall,
              crossings={f'{t:.2f}': None if v is None else dict(step=v[0], train_seconds=v[1])
                         for t, v in summary['crossings'].items()},
              curve=summary['curve'])


def crowded_step_table(values, quick: bool, data_dir: str, mesh, log) -> list:
  """Task (c)'s train step for each core of --crowded_cores (benchmarking.time_train_step, float32)."""
  from air_jax import benchmarking  # pylint: disable=g-import-not-at-top
  from air_jax.configs import crowded  # pylint: disable=g-import-not-at-top
  log(f'task (c) train step (0-9 digits, 128x128, synthetic batches), batch {values["crowded_batch_size"]}:')
  roofline = benchmarking.make_matmul_rate(values['matmul_size'], 'float32')
  rows = []
  for core in _CROWDED_CORES.value:
    config = crowded.with_core(crowded.get_config('c,smoke' if quick else 'c'), core)
    config.data.data_dir = data_dir
    row = benchmarking.time_train_step(config, values['crowded_batch_size'], 'float32', values['steps'],
                                       values['repeats'], 1, mesh, roofline)
    rows.append(dict(core=core, **row))
    log(f'  {core:>16}: {1e3 / row["steps_per_second"]:8.1f} ms/step, {row["images_per_second"]:9.0f} images/s, '
        f'compile {row["compile_seconds"]:.1f} s, {row["step_memory_bytes"] / 2 ** 20:.0f} MB')
  return rows


def render_rates(values, log) -> dict:
  from air_jax.data import shapes_3d  # pylint: disable=g-import-not-at-top
  from air_jax import benchmarking  # pylint: disable=g-import-not-at-top
  world = shapes_3d.World()
  try:
    rates = benchmarking.renders_per_second(world, values['renders'], values['render_processes'])
  except shapes_3d.RendererUnavailableError as e:
    log(f'3D renders: unavailable: {e}')
    return dict(error=str(e))
  log(f'3D renders (MUJOCO_GL={os.environ.get("MUJOCO_GL")}, {world.image_size}x{world.image_size}, '
      f'{values["renders"]} random scenes of 0-3 objects): ' +
      ', '.join(f'{name} {rate:.0f}/s' for name, rate in rates.items()))
  return dict(mujoco_gl=os.environ.get('MUJOCO_GL'), image_size=world.image_size, renders_per_second=rates)


def main(argv):
  if len(argv) > 1:
    launch.fail(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  values = settings()
  os.environ.setdefault('MUJOCO_GL', 'egl')  # before MuJoCo is imported
  from air_jax.data import mnist as mnist_lib  # pylint: disable=g-import-not-at-top
  data_dir = pathlib.Path(_DATA_DIR.value or mnist_lib.default_data_dir())
  if not (data_dir / mnist_lib.CACHE_NAME).is_file():
    launch.fail(f'no {mnist_lib.CACHE_NAME} in {data_dir}: the check downloads nothing; bring the cache '
                'experiments/train.py writes and name its folder with --data_dir')
  if _OUTPUT.value and not pathlib.Path(_OUTPUT.value).resolve().parent.is_dir():
    launch.fail(f'--output: the folder of {_OUTPUT.value} does not exist')
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  from air_jax import parallel  # pylint: disable=g-import-not-at-top
  log = lambda line: print(line, flush=True)
  mesh = parallel.make_mesh()
  devices = jax.devices()
  report = dict(quick=_QUICK.value, backend=jax.default_backend(), jax=jax.__version__, jaxlib=jaxlib.__version__,
                devices=[f'{d.device_kind} ({d.platform} {d.id})' for d in devices])
  log(f'devices: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}); jax {jax.__version__}, '
      f'jaxlib {jaxlib.__version__}; mesh {dict(mesh.shape)}')
  config = model_config(_QUICK.value, str(data_dir))
  started = time.perf_counter()
  report['train_step'] = step_table(config, values, mesh, log)
  report['step_table_seconds'] = time.perf_counter() - started
  with tempfile.TemporaryDirectory(prefix='air_jax_device_check_') as scratch:
    workdir = pathlib.Path(_WORKDIR.value or scratch)
    log('training: the default config')
    report['training'] = training_run(config, values, str(workdir / 'default'), log, _TRAIN_TARGET.value)
    if _CROWDED_CORES.value:
      report['crowded_step'] = crowded_step_table(values, _QUICK.value, str(data_dir), mesh, log)
    if values['crowded_train_seconds']:
      from air_jax.configs import crowded  # pylint: disable=g-import-not-at-top
      task_b = crowded.with_core(crowded.get_config('b,smoke' if _QUICK.value else 'b'), _CROWDED_TRAIN_CORE.value)
      task_b.data.data_dir = str(data_dir)
      log(f'training: task (b) (0-5 digits, 80x80), core {_CROWDED_TRAIN_CORE.value}')
      report['crowded_training'] = dict(core=_CROWDED_TRAIN_CORE.value, **training_run(
          task_b, values, str(workdir / 'task_b'), log, CROWDED_TARGET, (CROWDED_TARGET,),
          values['crowded_train_seconds']))
  if values['renders']:
    report['renders'] = render_rates(values, log)
  report['seconds'] = time.perf_counter() - started
  log(f'done in {report["seconds"]:.0f} s')
  if _OUTPUT.value:
    pathlib.Path(_OUTPUT.value).write_text(json.dumps(report, indent=2))
    log(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
