"""z_pres gradient estimators side by side: each variant of the config over seeds, one run after the
other (each resumable), then per run the figures of issue 37's table. Writes <output>.json and .md.

    python experiments/estimators.py --workdir=runs/estimators --variants=nvil,concrete,vimco \\
        --seeds=0,1,2,3,4 --output=docs/results/estimators_table  # beside the page estimators.md
    python experiments/estimators.py ... --config.num_train_steps=3000     # any config override
    python experiments/estimators.py --combine=docs/results/a.json,docs/results/b.json \\
        --output=docs/results/estimators_table  # one table of runs other commands wrote, no training

Variants (VARIANTS): the estimator ('nvil', 'concrete', 'vimco'; 'vimco_held': VIMCO with q(z_pres)
held for its first steps) and the published setting
('nvil_prior_0.01': a fixed z_pres prior of 0.01, as the PyTorch AIR whose bound is 636.8 nats).
Per run (<workdir>/<variant>/seed<k>; killed, it resumes; finished, its figures are read from its
figures.json): the loop's held-out curve (first evaluation at >= 95% and
>= 98%, final accuracy, accuracy by layout: the close pairs), the importance-weighted bounds L_K
(--num_samples) on --num_images held-out scenes, the count accuracy on --num_images validation
scenes (MNIST train digits never trained on: where a default is chosen), and the variance of the
gradient of the z_pres head's logit column (its last layer's weights into the logit and bias) over
--gradient_keys draws on a fixed batch of 64 validation scenes, at the run's last parameters. The page opens with
each variant's summary over its seeds (summarize), then a row per run.
"""
import json
import pathlib

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from air_jax import checkpoints
from air_jax import evaluate
from air_jax import infer
from air_jax import launch
from air_jax import loss as loss_lib
from air_jax import metrics
from air_jax import steps
from air_jax import train
from air_jax.configs import multi_mnist as multi_mnist_config
from air_jax.data import sources

VARIANTS = {
    'nvil': {},
    'concrete': {'objective.z_pres_estimator': 'concrete'},
    'vimco': {'objective.z_pres_estimator': 'vimco'},
    # VIMCO with q(z_pres) held near 0.95 for the first 1,000 steps: plain VIMCO reads every pair
    # of digits as one object (docs/results/estimators.md); held, the windows learn first.
    'vimco_held': {'objective.z_pres_estimator': 'vimco', 'model.z_pres_logit_bias': 3.0,
                   'objective.z_pres_freeze_steps': 1000},
    'nvil_prior_0.01': {'objective.z_pres_prior': 0.01, 'objective.z_pres_prior_start': 0.01,
                        'objective.z_pres_prior_anneal_steps': 0},
}
_CONFIG = launch.define_config_file('config', multi_mnist_config.__file__, 'Config file (get_config), as train.py.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the runs: <workdir>/<variant>/seed<k> (not with --combine).')
_VARIANTS = flags.DEFINE_list('variants', ['nvil', 'concrete', 'vimco'], f'Any of {list(VARIANTS)}.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'config.seed of each run.')
_NUM_SAMPLES = flags.DEFINE_string('num_samples', '1,100,1000', 'K of the bounds L_K (each divides the largest).')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 1000, 'Held-out scenes for the bounds; validation scenes for the count.')
_GRADIENT_KEYS = flags.DEFINE_integer('gradient_keys', 200, 'Draws for the gradient variance.')
_OUTPUT = flags.DEFINE_string('output', None, 'Path without suffix: writes <output>.json and <output>.md.')
_COMBINE = flags.DEFINE_list('combine', [], 'JSON files this command wrote: their runs into one table, nothing trained.')
flags.mark_flags_as_required(['output'])
THRESHOLDS = (0.95, 0.98)


def variant_config(base, variant: str):
  config = base.copy_and_resolve_references()
  for dotted, value in VARIANTS[variant].items():
    section, name = dotted.split('.')
    config[section][name] = value
  return config


def logit_column(model_params) -> jax.Array:
  """The parameters only q(z_pres)'s logit reads: the head's last layer's logit kernel column and bias."""
  layer = model_params['step']['pres_where']['MLP_0']['Dense_1']['dense']
  return jnp.concatenate([layer['kernel'][:, 0], layer['bias'][:1]])


def gradient_variance(models, workdir, images, keys: int) -> dict:
  """Over `keys` draws of the loss's gradient on images, at the latest training state: the summed
  variance of the logit column's gradient, and the squared norm of its mean."""
  target = jax.eval_shape(lambda: steps.init_state(models, jax.random.key(0)))
  checkpointer = checkpoints.Checkpointer(workdir, create=False)
  state = checkpointer.restore(target)
  checkpointer.close()
  loss_fn = loss_lib.make_loss_fn(models)
  prior = steps.z_pres_prior_at(state.step, models.config.objective)
  temperature = steps.concrete_temperature_at(state.step, models.config.objective)
  images = sources.to_unit_interval(images)

  def one(key):
    grads = jax.grad(lambda p: loss_fn(p, state.signal_stats, images, key, prior, temperature=temperature)[0])(state.params)
    return logit_column(grads['model'])

  draws = np.asarray(jax.jit(lambda k: jax.lax.map(one, k, batch_size=10))(jax.random.split(jax.random.key(0), keys)),
                     np.float64)  # 10 gradients at a time
  return dict(variance=float(draws.var(0).sum()), mean_squared_norm=float(np.square(draws.mean(0)).sum()))


def figures_of() -> dict:
  """The flags a run's figures depend on (cached figures of other flags are computed again)."""
  return dict(num_samples=_NUM_SAMPLES.value, num_images=_NUM_IMAGES.value, gradient_keys=_GRADIENT_KEYS.value)


def run_figures(variant: str, seed: int, config, workdir: pathlib.Path, log) -> dict:
  """Trains (or resumes) the run, then its figures; a finished run's are read from <workdir>/figures.json."""
  cached = workdir / 'figures.json'
  if cached.exists():
    row = json.loads(cached.read_text())
    if row.get('figures_of') == figures_of():
      log('  finished earlier: ' + str(cached))
      return row
  train.train_and_evaluate(config, str(workdir), log=lambda line: log('  ' + line))
  row = dict(metrics.run_summary(workdir, seed, THRESHOLDS), variant=variant)
  row.pop('curve', None)
  bounds = evaluate.run(workdir, _NUM_SAMPLES.value, num_images=_NUM_IMAGES.value, log=lambda _: None)
  row['bounds'] = bounds['bounds']
  row['count_accuracy_weights'] = bounds.get('count_accuracy_weights')
  models = infer.load_models(workdir)
  validation = models.scene.scenes('validation')
  scenes = validation.__getitems__(range(min(_NUM_IMAGES.value, len(validation))))
  params = infer.load_params(workdir, models)
  inferred = infer.infer(models, params, sources.to_unit_interval(scenes['image']))
  row['validation_accuracy'] = float((inferred['count'] == scenes['count']).mean())
  row['gradient'] = gradient_variance(models, workdir, scenes['image'][:64], _GRADIENT_KEYS.value)
  row['figures_of'] = figures_of()
  row = json.loads(json.dumps(row, default=lambda x: np.asarray(x).tolist()))
  cached.write_text(json.dumps(row, indent=1))
  return row


def summarize(rows) -> list:
  """Per variant, in order of first appearance, over its runs: how many reached 98%, the steps to
  95% and 98% (of those that did), and the mean (with min and max) of the final test accuracy, the
  validation accuracy, the close pairs' accuracy and each bound; the median gradient variance."""
  spread = lambda values: dict(mean=float(np.mean(values)), min=float(np.min(values)), max=float(np.max(values)))
  summaries = []
  for variant in dict.fromkeys(r['variant'] for r in rows):
    runs = [r for r in rows if r['variant'] == variant]
    steps_to = lambda t: [r['crossings'][t][0] for r in runs if r['crossings'][t] is not None]
    close = [r['accuracy_by_layout']['nearest pair 10-15 px'][0] for r in runs
             if 'nearest pair 10-15 px' in r.get('accuracy_by_layout', {})]
    summaries.append(dict(
        variant=variant, seeds=[r['seed'] for r in runs], reached_98=len(steps_to('0.98')),
        steps_to_95=steps_to('0.95'), steps_to_98=steps_to('0.98'),
        final_accuracy=spread([r['final_accuracy'] for r in runs]),
        validation_accuracy=spread([r['validation_accuracy'] for r in runs]),
        close_pairs=spread(close) if close else None,
        bounds={k: spread([r['bounds'][k]['mean'] for r in runs]) for k in runs[0]['bounds']},
        gradient_variance_median=float(np.median([r['gradient']['variance'] for r in runs]))))
  return summaries


def markdown(rows, record) -> str:
  ks = list(rows[0]['bounds']) if rows else []
  lines = [f'Command: `{record["command"]}`', '', f'Commit {record["commit"]}, {record["machine"]}, {record["date"]}.', '']
  if record.get('sources'):
    lines += ['Runs read from: ' + ', '.join(f'`{path}`' for path in record['sources']) + '.', '']
  span = lambda s: f'{s["mean"]:.4f} ({s["min"]:.4f}-{s["max"]:.4f})'
  steps = lambda values: f'{min(values):,}-{max(values):,}' if values else 'none'
  lines += ['| variant | seeds at 98% | to 95% (steps) | to 98% (steps) | final (test) | validation | close pairs 10-15 px | '
            + ' | '.join(f'L_{k}' for k in ks) + ' | z_pres grad variance (median) |', '|---' * (8 + len(ks)) + '|']
  for s in record['summary']:
    lines.append(f'| {s["variant"]} | {s["reached_98"]} of {len(s["seeds"])} | {steps(s["steps_to_95"])} | '
                 f'{steps(s["steps_to_98"])} | {span(s["final_accuracy"])} | {span(s["validation_accuracy"])} | '
                 + (f'{s["close_pairs"]["mean"]:.3f} ({s["close_pairs"]["min"]:.3f}-{s["close_pairs"]["max"]:.3f})'
                    if s['close_pairs'] else '') + ' | '
                 + ' | '.join(f'{s["bounds"][k]["mean"]:.1f}' for k in ks) + f' | {s["gradient_variance_median"]:.3g} |')
  lines += ['', '(Means over the seeds, min-max in brackets; bounds in nats.) Each run:', '',
            '| variant | seed | to 95% (step, s) | to 98% (step, s) | final | close pairs 10-15 px | validation | '
            + ' | '.join(f'L_{k}' for k in ks) + ' | z_pres grad variance | train s |',
            '|---' * (9 + len(ks)) + '|']
  cell = lambda c: 'not reached' if c is None else f'{c[0]:,}, {c[1]:.0f}'
  for r in rows:
    close = r.get('accuracy_by_layout', {}).get('nearest pair 10-15 px')
    lines.append(f'| {r["variant"]} | {r["seed"]} | {cell(r["crossings"]["0.95"])} | {cell(r["crossings"]["0.98"])} | '
                 f'{r["final_accuracy"]:.4f} | ' + (f'{close[0]:.3f} ({close[1]})' if close else '') +
                 f' | {r["validation_accuracy"]:.4f} | '
                 + ' | '.join(f'{r["bounds"][k]["mean"]:.1f} +- {r["bounds"][k]["standard_error"]:.1f}' for k in ks)
                 + f' | {r["gradient"]["variance"]:.3g} | {r["train_seconds"]:.0f} |')
  return '\n'.join(lines) + '\n'


def train_variants(root: pathlib.Path, seeds) -> list:
  """Each variant of --variants over seeds, one run after the other: their rows (run_figures)."""
  log = lambda line: print(line, flush=True)
  rows = []
  for variant in _VARIANTS.value:
    for seed in seeds:
      config = variant_config(_CONFIG.value, variant)
      config.seed = seed
      workdir = root / variant / f'seed{seed}'
      log(f'{variant}, seed {seed}: {workdir}')
      try:
        rows.append(run_figures(variant, seed, config, workdir, log))
      except (ValueError, FileNotFoundError, train.NonFiniteError, sources.UnavailableError) as e:
        launch.fail(str(e))
  return rows


ROW_KEYS = ('variant', 'seed', 'crossings', 'final_accuracy', 'validation_accuracy', 'bounds', 'gradient',
            'train_seconds', 'figures_of')
IGNORED_CONFIG_KEYS = ('seed', 'data.data_dir')  # the base config's seed (each run sets its own); where MNIST lies


def flat(tree, prefix='') -> dict:
  """{'section.name': value} of a nested dict."""
  items = {}
  for name, value in tree.items():
    items.update(flat(value, f'{prefix}{name}.') if isinstance(value, dict) else {f'{prefix}{name}': value})
  return items


def combined_rows(paths) -> list:
  """The runs of results files this command wrote (training mode), after checking that they can
  share a table: every row whole, no (variant, seed) twice, the figures computed alike, and the
  files' base configs equal wherever both set a value. Ends the program with one line otherwise."""
  rows, configs = [], []
  for path in paths:
    try:
      record = json.loads(pathlib.Path(path).read_text())
      rows += record['runs']
      configs.append((path, flat(record['config'])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      launch.fail(f'--combine: {path} is not a results file of this command\'s training mode ({type(e).__name__}: {e})')
    missing = [key for row in record['runs'] for key in ROW_KEYS if not isinstance(row, dict) or key not in row]
    if missing:
      launch.fail(f'--combine: {path} has runs without {sorted(set(missing))}')
  runs = [(r['variant'], r['seed']) for r in rows]
  repeated = sorted({run for run in runs if runs.count(run) > 1})
  if repeated:
    launch.fail(f'--combine: the files hold these (variant, seed) runs more than once: {repeated}')
  figures = {json.dumps(r['figures_of'], sort_keys=True) for r in rows}
  if len(figures) > 1:
    launch.fail(f'--combine: the runs\' figures were computed with different flags: {sorted(figures)}')
  (first, reference), *others = configs
  for path, config in others:
    differ = sorted(key for key in set(reference) & set(config)
                    if reference[key] != config[key] and key not in IGNORED_CONFIG_KEYS)
    if differ:
      launch.fail(f'--combine: {path} and {first} were run with different configs ({", ".join(differ)})')
  return rows


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    launch.fail(f'unexpected arguments {argv[1:]}')
  launch.require_choices('variants', _VARIANTS.value, VARIANTS)
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    launch.fail(f'--seeds must be comma-separated integers, got {",".join(_SEEDS.value)}')
  try:
    evaluate.parse_num_samples(_NUM_SAMPLES.value)
  except infer.InputError as e:
    launch.fail(str(e))
  for flag in (_NUM_IMAGES, _GRADIENT_KEYS):
    if flag.value <= 0:
      launch.fail(f'--{flag.name} must be positive, got {flag.value}')
  output = pathlib.Path(_OUTPUT.value)
  if not output.parent.is_dir():
    launch.fail(f'--output: no such directory: {output.parent}')
  if _COMBINE.value:
    if _WORKDIR.value:
      launch.fail('--combine reads finished runs from their JSON files: give it without --workdir')
    rows = combined_rows(_COMBINE.value)
    record = dict(launch.provenance('python experiments/estimators.py'), sources=list(_COMBINE.value), runs=rows)
  else:
    if not _WORKDIR.value:
      launch.fail('--workdir is required (the runs\' folder), unless --combine names finished results')
    rows = train_variants(pathlib.Path(_WORKDIR.value), seeds)
    record = dict(launch.provenance('python experiments/estimators.py'),
                  config=json.loads(_CONFIG.value.to_json_best_effort()), runs=rows)
  record['summary'] = summarize(rows)
  page = markdown(rows, record)
  wrote = launch.write_results(_OUTPUT.value, record, page)
  print(page)
  print(wrote)


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
