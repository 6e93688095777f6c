"""Representational power (Eslami et al. 2016, Sec. 3.1.2): downstream tasks on AIR's latents vs a
CNN on pixels, across label budgets.

    python experiments/downstream.py --workdir=runs/downstream --air_workdir=runs/downstream_air
    python experiments/downstream.py --workdir=/tmp/ds --smoke          # tiny, for tests

Tasks (air_jax/downstream.py): the sum of the digits, and whether the digits are in ascending
(non-decreasing) order left to right (0 or 1 digit: ascending). Models: `air` (an MLP head) and
`air_digits` (a per-slot digit head) on AIR's per-step latents (q's modes, sorted left to right by
z_where's x, standardised with statistics of the unlabelled pool), and `cnn` on the 50x50 pixels.
All train on the same labelled scenes with the same optimiser and steps: for seed s, the first
`budget` scenes of a seed-s permutation of AIR's own training scenes (MNIST train digits; AIR saw
them without labels), so a seed's subsets are nested across budgets. All are scored on `num_eval`
held-out scenes of MNIST test digits (the AIR config's counts, scene seed eval_seed + 5000).

Without --air_workdir an AIR is trained (or resumed) in <workdir>/air with the default config.
Each finished (model, task, budget, seed) is cached in <workdir>/runs/*.json and reused when its
settings match, so an interrupted sweep resumes. The table goes to stdout and
<workdir>/downstream.{md,json}, the plot to <workdir>/downstream.png. --smoke: the smoke AIR (2
steps), budgets 4 and 8, one seed, 3 classifier steps, 16 held-out scenes, unless flags say otherwise.
"""
import dataclasses
import json
import pathlib
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from air_jax import evaluation
from air_jax import checkpoints
from air_jax import configs
from air_jax import downstream
from air_jax import launch
from air_jax import metrics
from air_jax import train
from air_jax import models as models_lib
from air_jax.configs import multi_mnist as multi_mnist_config
from air_jax.data import mnist as mnist_lib
from air_jax.data import multi_mnist
from air_jax.data import sources

MODELS = ('air', 'air_digits', 'cnn')  # AIR latents + MLP head, + per-digit head; CNN on pixels
MODEL_NAMES = {'air': 'AIR + MLP', 'air_digits': 'AIR + digit head', 'cnn': 'CNN'}
EVAL_SEED_OFFSET = 5000  # held-out downstream scenes: a scene seed AIR's evaluation never used

_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the table, the plot and the per-run results go.')
_AIR_WORKDIR = flags.DEFINE_string('air_workdir', '', 'A trained AIR (experiments/train.py workdir); '
                                   'default: train one (or resume it) in <workdir>/air.')
_BUDGETS = flags.DEFINE_list('budgets', ['10', '100', '1000', '10000'], 'Numbers of labelled scenes.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds: labelled subset, init and batch order.')
_CNN_LARGEST_SEEDS = flags.DEFINE_integer(
    'cnn_largest_budget_seeds', 0, '> 0: the CNN runs only the first this many seeds at the largest '
    'budget (its costliest runs; the AIR heads are cheap and run every seed).')
_TASKS = flags.DEFINE_list('tasks', list(downstream.TASKS), f'Any of {list(downstream.TASKS)}.')
_MODELS = flags.DEFINE_list('models', list(MODELS), f'Any of {list(MODELS)}.')
_NUM_EVAL = flags.DEFINE_integer('num_eval', 5000, 'Held-out scenes (MNIST test digits).')
_NUM_STEPS = flags.DEFINE_integer('num_steps', 3000, 'Classifier training steps (AdamW, cosine decay), '
                                  'at least; see --min_epochs.')
_MIN_EPOCHS = flags.DEFINE_float('min_epochs', 10.0, 'More steps where needed for this many passes over '
                                 'the labelled scenes: steps = max(num_steps, min_epochs * n / batch).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Classifier batch (at most the labelled set).')
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 1e-3, 'Peak classifier learning rate.')
_WEIGHT_DECAY = flags.DEFINE_float('weight_decay', 1e-4, 'AdamW weight decay.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny AIR, data and classifiers: the pipeline end to end.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'MNIST cache folder (default: the AIR config\'s, '
                                'else $AIR_JAX_DATA_DIR or ~/.cache/air_jax).')
flags.mark_flags_as_required(['workdir'])


@dataclasses.dataclass(frozen=True)
class Options:
  """The sweep's settings: the flags, with --smoke's small defaults for flags not given."""
  budgets: tuple
  seeds: tuple
  cnn_largest_budget_seeds: int
  tasks: tuple
  models: tuple
  num_eval: int
  num_steps: int
  min_epochs: float
  batch_size: int
  learning_rate: float
  weight_decay: float
  smoke: bool
  data_dir: str
  air_workdir: str

  def classifier(self, budget: int) -> dict:
    """fit's arguments for `budget` labelled scenes (the same for every model)."""
    epochs_steps = int(np.ceil(self.min_epochs * budget / min(self.batch_size, budget)))
    return dict(num_steps=max(self.num_steps, epochs_steps), batch_size=self.batch_size,
                learning_rate=self.learning_rate, weight_decay=self.weight_decay)


class UsageError(ValueError):
  """Bad flags or inputs; the message says what is wrong."""


def options_from_flags() -> Options:
  smoke = _SMOKE.value
  value = lambda flag, small: small if smoke and not flag.present else flag.value
  for name, values, allowed in (('tasks', _TASKS.value, downstream.TASKS), ('models', _MODELS.value, MODELS)):
    bad = [v for v in values if v not in allowed]
    if bad or not values:
      raise UsageError(f'--{name}: unknown or empty {bad}; choose from {list(allowed)}')
  try:
    budgets = sorted({int(b) for b in value(_BUDGETS, ['4', '8'])})
    seeds = [int(s) for s in value(_SEEDS, ['0'])]
  except ValueError:
    raise UsageError(f'--budgets and --seeds must be integers, got {_BUDGETS.value} and {_SEEDS.value}')
  if not budgets or budgets[0] <= 0 or not seeds or len(set(seeds)) != len(seeds):
    raise UsageError('--budgets must be positive integers and --seeds distinct integers')
  options = Options(budgets=tuple(budgets), seeds=tuple(seeds), cnn_largest_budget_seeds=_CNN_LARGEST_SEEDS.value,
                    tasks=tuple(_TASKS.value), models=tuple(_MODELS.value),
                    num_eval=value(_NUM_EVAL, 16), num_steps=value(_NUM_STEPS, 3), min_epochs=value(_MIN_EPOCHS, 0.0),
                    batch_size=value(_BATCH_SIZE, 4), learning_rate=_LEARNING_RATE.value,
                    weight_decay=_WEIGHT_DECAY.value, smoke=smoke, data_dir=_DATA_DIR.value,
                    air_workdir=_AIR_WORKDIR.value)
  if options.min_epochs < 0:
    raise UsageError(f'--min_epochs must be >= 0, got {options.min_epochs}')
  for name in ('num_eval', 'num_steps', 'batch_size', 'learning_rate'):
    if not getattr(options, name) > 0:
      raise UsageError(f'--{name} must be positive, got {getattr(options, name)}')
  return options


def load_air(air_workdir: pathlib.Path):
  """(config, params, checkpoint step) of a trained AIR workdir; UsageError if it is not one.
  Only the model's params are restored (evaluation.restore_model_params), not the whole train state."""
  if not air_workdir.is_dir():
    raise UsageError(f'--air_workdir: no such directory: {air_workdir}')
  if not (air_workdir / 'config.json').is_file():
    raise UsageError(f'--air_workdir: {air_workdir} has no config.json: not a training workdir')
  config = configs.with_defaults(metrics.load_config(air_workdir))
  step = None
  if (air_workdir / 'checkpoints').is_dir():
    checkpointer = checkpoints.Checkpointer(air_workdir, create=False)
    step = checkpointer.latest_step()
    checkpointer.close()
  if step is None:
    raise UsageError(f'--air_workdir: {air_workdir} has no checkpoint yet')
  return config, evaluation.restore_model_params(air_workdir, models_lib.build(config)), step


def trained_air(options: Options, root: pathlib.Path, log):
  """(workdir, config, params, step) of the AIR to use: --air_workdir, or one trained (or resumed)
  in <root>/air with the default config (smoke: the smoke config, 2 steps)."""
  if options.air_workdir:
    air_dir = pathlib.Path(options.air_workdir)
  else:
    air_dir = root / 'air'
    config = multi_mnist_config.get_config('smoke' if options.smoke else None)
    config.data.data_dir = options.data_dir
    if options.smoke:
      config.num_train_steps = 2
    done = (air_dir / 'checkpoints').is_dir() and load_air(air_dir)[2] == config.num_train_steps
    if not done:
      log(f'training AIR in {air_dir} ({config.num_train_steps} steps)')
      train.train_and_evaluate(config, str(air_dir), log=lambda s: log(f'  [air] {s}'))
  config, params, step = load_air(air_dir)
  if options.data_dir:
    config.data.data_dir = options.data_dir
  return air_dir, config, params, step


def scene_sets(config, num_eval: int):
  """(labelled pool, held-out scenes) as dicts of arrays: AIR's own training scenes (MNIST train
  digits), and num_eval fresh scenes of MNIST test digits with the same counts."""
  data = config.data
  digits = mnist_lib.load_mnist(data.data_dir or None)
  cache_dir = pathlib.Path(data.data_dir or mnist_lib.default_data_dir()) / 'scenes'
  pool = multi_mnist.MultiMNIST(digits.train_images, digits.train_labels, counts=data.train_counts,
                                num_examples=data.num_train, seed=data.train_seed,
                                canvas_size=data.canvas_size, digit_size=data.digit_size)
  held_out = multi_mnist.MultiMNIST(digits.test_images, digits.test_labels, counts=data.train_counts,
                                    num_examples=num_eval, seed=data.eval_seed + EVAL_SEED_OFFSET,
                                    canvas_size=data.canvas_size, max_objects=pool.max_objects,
                                    digit_size=data.digit_size)
  return (sources.materialise_cached(pool, cache_dir, 'train').arrays,
          sources.materialise_cached(held_out, cache_dir, 'test').arrays)


def make_module(model: str, task: str, max_objects: int, smoke: bool):
  classes = downstream.num_classes(task, max_objects)
  hidden = 8 if smoke else 256
  if model == 'air':
    return downstream.SlotClassifier(classes, hidden=hidden)
  if model == 'air_digits':
    return downstream.DigitSlotClassifier(task, classes, hidden=hidden)
  return downstream.CNN(classes, channels=(4, 4), hidden=hidden) if smoke else downstream.CNN(classes)


def planned_runs(options: Options):
  """(seed, budget, task, model) in the order they run: a seed's whole curve before the next seed."""
  largest = options.budgets[-1]
  for seed in options.seeds:
    for budget in options.budgets:
      for task in options.tasks:
        for model in options.models:
          if (model == 'cnn' and options.cnn_largest_budget_seeds > 0 and budget == largest
              and seed not in options.seeds[:options.cnn_largest_budget_seeds]):
            continue
          yield seed, budget, task, model


def run_sweep(options: Options, root: pathlib.Path, log):
  """Trains and scores every planned run not cached with the same settings; (results, held-out)."""
  air_dir, config, params, air_step = trained_air(options, root, log)
  pool, held_out = scene_sets(config, options.num_eval)
  if options.budgets[-1] > len(pool['image']):
    raise UsageError(f'--budgets: {options.budgets[-1]} labelled scenes asked for; AIR\'s training '
                     f'scenes (the labelled pool) number {len(pool["image"])}')
  log(f'AIR {air_dir} at step {air_step}; labelled pool {len(pool["image"])} scenes, '
      f'held out {len(held_out["image"])}')
  run_dir = root / 'runs'
  run_dir.mkdir(parents=True, exist_ok=True)
  runs, pending = [], []
  for seed, budget, task, model in planned_runs(options):
    settings = dict(model=model, task=task, budget=budget, seed=seed, air_workdir=str(air_dir.absolute()),
                    air_step=air_step, num_eval=options.num_eval, smoke=options.smoke, **options.classifier(budget))
    path = run_dir / f'{model}_{task}_n{budget}_seed{seed}.json'
    cached = json.loads(path.read_text()) if path.exists() else None
    runs.append((path, settings, cached if cached and cached['settings'] == settings else None))
    pending += [settings] if runs[-1][2] is None else []
  log(f'{len(runs) - len(pending)} of {len(runs)} runs finished earlier; {len(pending)} to run')

  slots = {}
  if any(s['model'].startswith('air') for s in pending):
    start = time.time()
    encoder = downstream.make_encoder(models_lib.build(config), batch_size=min(500, len(pool['image'])))
    encode = lambda images, what: encoder(params, images, metrics.ProgressPrinter(f'encoding {what}', log))
    pool_slots = encode(pool['image'], 'the pool')
    standardize = downstream.Standardizer(pool_slots)  # statistics of unlabelled latents
    slots = dict(pool=standardize(pool_slots), held_out=standardize(encode(held_out['image'], 'held-out')))
    inferred = (pool_slots[..., 0] > 0).sum(-1)
    log(f'encoded in {time.time() - start:.0f}s; AIR count accuracy on the pool '
        f'{np.mean(inferred == pool["count"]):.4f}')

  max_objects = pool['labels'].shape[1]
  results = []
  for path, settings, cached in runs:
    if cached is None:
      seed, budget, task, model = (settings[k] for k in ('seed', 'budget', 'task', 'model'))
      index = np.sort(np.random.default_rng(seed).permutation(len(pool['image']))[:budget])  # nested
      train_targets = downstream.task_labels(task, pool['labels'][index], pool['boxes'][index])
      eval_targets = downstream.task_labels(task, held_out['labels'], held_out['boxes'])
      if model.startswith('air'):
        train_inputs, eval_inputs = slots['pool'][index], slots['held_out']
      else:
        train_inputs, eval_inputs = pool['image'][index], held_out['image']
      score = downstream.train_and_score(
          make_module(model, task, max_objects, options.smoke), train_inputs, train_targets,
          eval_inputs, eval_targets, held_out['count'], seed=seed, **options.classifier(budget))
      cached = dict(settings=settings, **score)
      path.write_text(json.dumps(cached, indent=1))
      log(f'{MODEL_NAMES[model]:<16} {task:<5} n={budget:<6} seed {seed}: held-out accuracy '
          f'{score["accuracy"]:.4f} (train {score["train_accuracy"]:.3f}, {score["seconds"]:.0f}s)')
    results.append(cached)
  return results, held_out


SUBSETS = {'all': 'accuracy', 'two_digits': 'accuracy_count2'}  # table key -> per-run result key


def summarise(results) -> list:
  """One row per (task, model, budget): seeds, and for all held-out scenes ('all') and the 2-digit
  ones ('two_digits') the mean, std, min and max accuracy over seeds."""
  rows = {}
  for r in results:
    s = r['settings']
    rows.setdefault((s['task'], s['model'], s['budget']), []).append(r)
  table = []
  for (task, model, budget), runs in sorted(rows.items()):
    row = dict(task=task, model=model, budget=budget, seeds=len(runs))
    for subset, key in SUBSETS.items():
      acc = np.array([r[key] for r in runs if key in r])
      if len(acc):
        row[subset] = dict(mean=float(acc.mean()), std=float(acc.std()), min=float(acc.min()),
                           max=float(acc.max()))
    table.append(row)
  return table


def majority_baselines(held_out) -> dict:
  """Held-out accuracy of always answering the most common class (overall, and on 2-digit scenes)."""
  out = {}
  for task in downstream.TASKS:
    targets = downstream.task_labels(task, held_out['labels'], held_out['boxes'])
    two = targets[held_out['count'] == 2]
    out[task] = dict(all=float(np.bincount(targets).max() / len(targets)),
                     two_digits=float(np.bincount(two).max() / len(two)) if len(two) else float('nan'))
  return out


def markdown(table, baselines) -> str:
  """Held-out accuracy per (budget; task, model): all scenes, then 2-digit scenes only."""
  budgets = sorted({r['budget'] for r in table})
  tasks = [t for t in downstream.TASKS if any(r['task'] == t for r in table)]
  models = [m for m in MODELS if any(r['model'] == m for r in table)]
  cell = {(r['task'], r['model'], r['budget']): r for r in table}
  header = '| labelled scenes | ' + ' | '.join(f'{t}: {MODEL_NAMES[m]}' for t in tasks for m in models) + ' |'
  rule = '|---|' + '---|' * (len(tasks) * len(models))
  lines = []
  for subset, title in (('all', 'All held-out scenes (0-2 digits)'),
                        ('two_digits', '2-digit held-out scenes only (where both tasks are hard)')):
    lines += [f'{title}: accuracy, mean ± std over seeds (number of seeds).', '', header, rule]
    for b in budgets:
      values = []
      for t in tasks:
        for m in models:
          stats = cell.get((t, m, b), {}).get(subset)
          values.append(f'{stats["mean"]:.1%} ± {stats["std"]:.1%} ({cell[t, m, b]["seeds"]})' if stats else '')
      lines.append(f'| {b:,} | ' + ' | '.join(values) + ' |')
    lines.append('| majority class | ' + ' | '.join(
        f'{baselines[t][subset]:.1%}' for t in tasks for _ in models) + ' |')
    lines.append('')
  return '\n'.join(lines[:-1])


STYLES = {'air': ('tab:blue', 'o', 'AIR latents + MLP head'),
          'air_digits': ('tab:green', '^', 'AIR latents + digit head'),
          'cnn': ('tab:orange', 's', 'CNN on pixels')}
TITLES = {'sum': 'sum of the digits', 'order': 'digits in ascending order (left to right)'}
SUBSET_TITLES = {'all': 'all held-out scenes', 'two_digits': '2-digit held-out scenes'}


def plot(table, baselines, path: pathlib.Path, note: str = '') -> None:
  """PNG (matplotlib): held-out accuracy vs labelled scenes (log scale); columns: tasks, rows: all
  scenes and 2-digit scenes; one line per model (mean over seeds, bars min..max); the majority
  class and 95% dashed."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  tasks = [t for t in downstream.TASKS if any(r['task'] == t for r in table)]
  subsets = [s for s in SUBSETS if any(s in r for r in table)]
  budgets = sorted({r['budget'] for r in table})
  figure, axes = plt.subplots(len(subsets), len(tasks), figsize=(5.6 * len(tasks), 3.8 * len(subsets)),
                              squeeze=False)
  for row, subset in enumerate(subsets):
    for k, task in enumerate(tasks):
      ax, rows = axes[row][k], [r for r in table if r['task'] == task and subset in r]
      for model, (colour, marker, label) in STYLES.items():
        series = sorted((r for r in rows if r['model'] == model), key=lambda r: r['budget'])
        if not series:
          continue
        mean = np.array([r[subset]['mean'] for r in series])
        spread = np.array([[m - r[subset]['min'], r[subset]['max'] - m] for m, r in zip(mean, series)]).T
        ax.errorbar([r['budget'] for r in series], mean, yerr=spread, color=colour, marker=marker,
                    capsize=3, linewidth=2, label=label)
      ax.axhline(0.95, color='black', linestyle='--', linewidth=1, label='95%')
      if np.isfinite(baselines[task][subset]):  # nan where the held-out set has no such scenes
        ax.axhline(baselines[task][subset], color='grey', linestyle='--', linewidth=1, label='majority class')
      ax.set_xscale('log')
      ax.set_xticks(budgets, [f'{b:,}' for b in budgets])
      ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
      ax.set_ylim(top=1.0)
      ax.grid(True, color='0.9')
      ax.set_title(f'{TITLES[task]}: {SUBSET_TITLES[subset]}', fontsize=10)
      ax.set_xlabel('labelled training scenes (log scale)')
  handles, labels = axes[0][0].get_legend_handles_labels()
  figure.legend(handles, labels, loc='lower center', ncol=len(labels), frameon=False)
  figure.text(0.01, 0.005, note, fontsize=8, color='0.35')
  figure.tight_layout(rect=(0, 0.07, 1, 1))
  figure.savefig(path, dpi=100)
  plt.close(figure)


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr)
    sys.exit(1)
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax, XLA) would drown progress
  log = lambda s: print(s, flush=True)
  root = pathlib.Path(_WORKDIR.value)
  try:
    if root.exists() and not root.is_dir():
      raise UsageError(f'--workdir {root} exists and is not a directory')
    options = options_from_flags()
    root.mkdir(parents=True, exist_ok=True)
    results, held_out = run_sweep(options, root, log)
  except (ValueError, FileNotFoundError, mnist_lib.MnistUnavailableError) as e:
    print('error: ' + ' '.join(str(e).split()), file=sys.stderr)  # one line, whatever e holds
    sys.exit(1)
  table = summarise(results)
  baselines = majority_baselines(held_out)
  text = markdown(table, baselines)
  (root / 'downstream.md').write_text(text + '\n')
  (root / 'downstream.json').write_text(json.dumps(dict(table=table, majority=baselines, runs=results), indent=1))
  plot(table, baselines, root / 'downstream.png',
       note=f'held-out accuracy on {options.num_eval:,} scenes of MNIST test digits: mean over seeds, '
       'bars min..max; the AIR was trained on the unlabelled scenes the labelled ones are drawn from')
  print(text)
  print(f'wrote {root / "downstream.md"}, {root / "downstream.json"}, {root / "downstream.png"}')


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
