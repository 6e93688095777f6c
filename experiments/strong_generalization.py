"""Strong generalisation (Eslami et al. 2016, Sec. 3.1.1): AIR vs DAIR on counts never trained on.

  extrapolation: train on 0-2 digits, test on 3      (paper, read off the plot: AIR ~0%,  DAIR ~80%)
  interpolation: train on 0, 1 or 3 digits, test on 2 (paper: AIR ~60%, DAIR ~95%)

    python experiments/strong_generalization.py --workdir=runs/strong --seeds=0,1
    python experiments/strong_generalization.py --workdir=/tmp/sg --smoke     # tiny, for tests

Models: AIR, DAIR, and memoryless DAIR (each step sees only the image minus the canvas so far,
model.memoryless; the canvas is the union of the objects, model.composition='union'). Each (task,
model, seed) trains in <workdir>/<task>_<model>_seed<seed> with the default config (N = 3 steps)
and evaluates held-out scenes from MNIST test digits, both of the unseen count and of the training
counts, with an exponential moving average of the parameters (--ema_decay; a count read off one
step's parameters swings by several points from one evaluation to the next). A finished run is not
retrained and an interrupted one resumes from its checkpoint. The table goes to stdout and to
<workdir>/strong_generalization.{md,json}.
"""
import json
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from air_jax.configs import checks
from air_jax import evaluation
from air_jax import steps
from air_jax import launch
from air_jax import checkpoints
from air_jax import metrics
from air_jax import parallel
from air_jax import train
from air_jax import models as models_lib
from air_jax.configs import multi_mnist as multi_mnist_config
from air_jax.data import mnist as mnist_lib
from air_jax.data import multi_mnist
from air_jax.data import sources

TASKS = {
    'extrapolation': dict(train_counts=(0, 1, 2), unseen_counts=(3,)),
    'interpolation': dict(train_counts=(0, 1, 3), unseen_counts=(2,)),
}
# model name -> config.model settings. dair_memoryless: DAIR whose steps see only what is left to
# explain (model.memoryless): no LSTM memory of how many objects came before; its canvas is the
# union of the objects (model.composition), so that two faint copies of one digit do not add up
# to it and then leave room for an extra step (WORKSPACE.md, session 5).
MODELS = {'air': dict(difference_input=False),
          'dair': dict(difference_input=True),
          'dair_memoryless': dict(difference_input=True, memoryless=True, composition='union')}
NAMES = {'air': 'AIR', 'dair': 'DAIR', 'dair_memoryless': 'DAIR memoryless'}
PAPER = {('extrapolation', 'air'): '~0%', ('extrapolation', 'dair'): '~80%',  # paper's AIR / DAIR
         ('interpolation', 'air'): '~60%', ('interpolation', 'dair'): '~95%'}


def paper_figure(task: str, model: str) -> str:
  """The paper's accuracy on the unseen count for this model's family (AIR or DAIR)."""
  return PAPER[(task, 'air' if model == 'air' else 'dair')]

_WORKDIR = flags.DEFINE_string('workdir', None, 'Root folder of the runs and the table.')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds to train each (task, model) with.')
_TASKS = flags.DEFINE_list('tasks', list(TASKS), f'Any of {list(TASKS)}.')
_MODELS = flags.DEFINE_list('models', list(MODELS), f'Any of {list(MODELS)}.')
_NUM_TRAIN_STEPS = flags.DEFINE_integer('num_train_steps', None, 'Training steps (default: the config\'s).')
_NUM_EVAL = flags.DEFINE_integer('num_eval', 2000, 'Held-out scenes per evaluated count set.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny model, data and steps: checks the pipeline end to end.')
_EMA_DECAY = flags.DEFINE_float('ema_decay', 0.9995, 'config.ema_decay: evaluate an exponential moving '
                                 'average of the parameters (0: the last step\'s parameters).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'MNIST cache folder (default $AIR_JAX_DATA_DIR or ~/.cache/air_jax).')
flags.mark_flags_as_required(['workdir'])


def run_config(task: str, model: str, seed: int, smoke: bool, num_train_steps, data_dir: str,
               ema_decay: float):
  config = multi_mnist_config.get_config('smoke' if smoke else None)
  config.data.train_counts = TASKS[task]['train_counts']
  # The periodic evaluation during training also tracks the unseen count (a curve in history.jsonl
  # and the log; nothing is chosen by it: the table uses the last step).
  config.data.eval_counts = tuple(sorted(set(TASKS[task]['train_counts']) | set(TASKS[task]['unseen_counts'])))
  config.ema_decay = ema_decay
  config.model.update(MODELS[model])
  config.seed = seed
  config.data.data_dir = data_dir
  if num_train_steps is not None:
    config.num_train_steps = num_train_steps
  return config


def evaluate_counts(config, params, eval_step, counts, num_eval: int, mesh) -> dict:
  """Count accuracy and confusion of params on held-out scenes (MNIST test digits) of `counts`."""
  digits = mnist_lib.load_mnist(config.data.data_dir or None)
  scenes = multi_mnist.MultiMNIST(digits.test_images, digits.test_labels, counts=counts,
                                  num_examples=num_eval, seed=config.data.eval_seed + 1000,
                                  canvas_size=config.data.canvas_size, digit_size=config.data.digit_size)
  cache_dir = pathlib.Path(config.data.data_dir or mnist_lib.default_data_dir()) / 'scenes'
  source = sources.materialise_cached(scenes, cache_dir, 'test')
  result = evaluation.evaluate(eval_step, params, source, config.eval_batch_size,
                               jax.random.key(config.seed), config.model.max_steps, ('steps', 'counts'), mesh)
  return dict(count_accuracy=result['count_accuracy'], confusion=result['confusion'].tolist())


def run_one(root: pathlib.Path, task: str, model: str, seed: int, log) -> dict:
  """Trains (or resumes, or skips when finished) one run and evaluates it; cached in result.json."""
  config = run_config(task, model, seed, _SMOKE.value, _NUM_TRAIN_STEPS.value, _DATA_DIR.value,
                      _EMA_DECAY.value)
  workdir = root / f'{task}_{model}_seed{seed}'
  checks.check_resumable(workdir, config)  # a run of another config in this workdir is an error
  result_path = workdir / 'result.json'
  if result_path.exists():
    result = json.loads(result_path.read_text())
    if result['num_train_steps'] == config.num_train_steps and result['num_eval'] == _NUM_EVAL.value:
      log(f'{workdir.name}: finished earlier, reusing its result')
      return result
  latest = checkpoints.Checkpointer(workdir).latest_step() if workdir.exists() else None
  if latest != config.num_train_steps:
    log(f'{workdir.name}: training {"from step " + str(latest) if latest else "from scratch"}')
    train.train_and_evaluate(config, str(workdir), log=lambda s: log(f'  [{workdir.name}] {s}'))
  result = dict(task=task, model=model, seed=seed, num_train_steps=config.num_train_steps,
                ema_decay=config.ema_decay, num_eval=_NUM_EVAL.value,
                train_counts=list(TASKS[task]['train_counts']), unseen_counts=list(TASKS[task]['unseen_counts']))
  mesh = parallel.make_mesh()
  models = models_lib.build(config)
  params, eval_step = evaluation.restore_model_params(workdir, models), steps.make_eval_step(models, mesh)
  for split in ('unseen', 'train'):
    result[split] = evaluate_counts(config, params, eval_step, TASKS[task][f'{split}_counts'],
                                    _NUM_EVAL.value, mesh)
  result_path.write_text(json.dumps(result, indent=1))
  return result


def table(results) -> str:
  lines = ['| task | model | seed | train counts | unseen count | accuracy on unseen | accuracy on train counts | paper (unseen) |',
           '|---|---|---|---|---|---|---|---|']
  for r in results:
    lines.append(f'| {r["task"]} | {NAMES[r["model"]]} | {r["seed"]} | {r["train_counts"]} | '
                 f'{r["unseen_counts"]} | {r["unseen"]["count_accuracy"]:.1%} | '
                 f'{r["train"]["count_accuracy"]:.1%} | {paper_figure(r["task"], r["model"])} |')
  decays = sorted({r.get('ema_decay', 0.0) for r in results})
  lines.append('')
  lines.append('Parameters evaluated: ' + ', '.join(
      f'EMA with decay {d}' if d else 'the last step\'s' for d in decays) + '.')
  lines.append('')
  for r in results:
    lines.append(f'{r["task"]} {NAMES[r["model"]]} seed {r["seed"]}, unseen counts {r["unseen_counts"]}:')
    lines.append(metrics.format_confusion(np.asarray(r['unseen']['confusion'])))
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr)
    sys.exit(1)
  logging.set_verbosity(logging.WARNING)
  unknown = [t for t in _TASKS.value if t not in TASKS] + [m for m in _MODELS.value if m not in MODELS]
  if unknown:
    print(f'error: unknown tasks/models {unknown}; tasks: {list(TASKS)}, models: {list(MODELS)}', file=sys.stderr)
    sys.exit(1)
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    print(f'error: --seeds must be integers, got {_SEEDS.value}', file=sys.stderr)
    sys.exit(1)
  if _NUM_EVAL.value <= 0 or (_NUM_TRAIN_STEPS.value is not None and _NUM_TRAIN_STEPS.value <= 0):
    print('error: --num_eval and --num_train_steps must be positive', file=sys.stderr)
    sys.exit(1)
  root = pathlib.Path(_WORKDIR.value)
  if root.exists() and not root.is_dir():
    print(f'error: --workdir {root} exists and is not a directory', file=sys.stderr)
    sys.exit(1)
  root.mkdir(parents=True, exist_ok=True)
  log = lambda s: print(s, flush=True)
  runs = [(task, model, seed) for task in _TASKS.value for model in _MODELS.value for seed in seeds]
  progress = metrics.ProgressPrinter('strong generalisation runs', log, every=0)  # rate and ETA
  try:
    results = []
    for task, model, seed in runs:
      results.append(run_one(root, task, model, seed, log))
      progress(len(results), len(runs))
  except (ValueError, mnist_lib.MnistUnavailableError) as e:
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)
    sys.exit(1)
  text = table(results)
  (root / 'strong_generalization.md').write_text(text + '\n')
  (root / 'strong_generalization.json').write_text(json.dumps(results, indent=1))
  print(text)


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
