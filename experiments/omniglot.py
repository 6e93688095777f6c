"""Omniglot: does explaining a character as a sequence of parts buy a better held-out bound?

Trains AIR with up to 4 steps (air_jax/configs/omniglot.py) and, for the same training time, the
same network held to 1 step (model.max_steps = 1: a VAE that reads and writes through one window).
Both train on the train archive's characters and are measured on the held-out archive's (other
alphabets): the ELBO, the reconstruction's mean squared error, the mean number of steps used and
their distribution (q's modes).

    python experiments/omniglot.py --workdir=/tmp/omniglot                      # the shipped sample
    python experiments/omniglot.py --workdir=/tmp/omniglot --omniglot_dir=DIR   # DIR/images_background.zip,
                                                                                # DIR/images_evaluation.zip
    python experiments/omniglot.py --workdir=/tmp/o --smoke                     # tiny, end to end

Each run is a train workdir <workdir>/<run> (killed, it resumes from its checkpoint; the 1-step run
trains in chunks until its training time reaches the 4-step run's); each finished run's held-out
figures are cached in <workdir>/<run>/result.json. Writes <workdir>/omniglot.{md,json},
<workdir>/omniglot.png (held-out characters, their reconstructions as parts in each step's colour,
each step's glimpse and patch) and <workdir>/omniglot_curves.png (held-out ELBO and steps used
against training time).
"""
import json
import pathlib

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from air_jax import evaluation
from air_jax import infer
from air_jax import launch
from air_jax import metrics
from air_jax import pictures
from air_jax import scenes
from air_jax import steps
from air_jax import train
from air_jax.configs import omniglot as omniglot_config

RUNS = {'air_4_steps': 4, 'air_1_step': 1}  # run -> model.max_steps
FULL_ARCHIVES = ('images_background.zip', 'images_evaluation.zip')
PICTURE_CHARACTERS = 8
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the runs, the table and the picture go.')
_STEPS = flags.DEFINE_integer('num_train_steps', 10_000, 'Training steps of the 4-step model.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every_steps', 1_000, 'Steps between held-out evaluations '
                                   '(and checkpoints; the 1-step run trains in chunks of this many).')
_OMNIGLOT_DIR = flags.DEFINE_string('omniglot_dir', '', f'A folder holding the full archives {FULL_ARCHIVES} '
                                    '(train on the first, evaluate on the second); default: the shipped sample.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'Cache of preprocessed characters (default ~/.cache/air_jax).')
_SMOKE = flags.DEFINE_bool('smoke', False, 'A tiny model and a few steps: the pipeline end to end.')
flags.mark_flags_as_required(['workdir'])


def run_config(run: str):
  config = omniglot_config.get_config('smoke' if _SMOKE.value else None)
  config.data.data_dir = _DATA_DIR.value
  if _OMNIGLOT_DIR.value:
    config.data.archive_dir = _OMNIGLOT_DIR.value
    config.data.train_archive, config.data.eval_archive = FULL_ARCHIVES
  if not _SMOKE.value:
    config.num_train_steps = _STEPS.value
    config.eval_every_steps = config.checkpoint_every_steps = _EVAL_EVERY.value
  config.model.max_steps = RUNS[run]
  return config


def trained(workdir: pathlib.Path) -> tuple:
  """(steps, training seconds) of a workdir's latest checkpoint, (0, 0.0) before the first."""
  records = [r for r in metrics.read_history(workdir) if r.get('kind') == 'checkpoint']
  return (records[-1]['step'], records[-1]['train_seconds']) if records else (0, 0.0)


def train_for(config, workdir: pathlib.Path, seconds: float, first_chunk: int, log) -> None:
  """Trains (resuming) until the run's training time reaches `seconds`: a first chunk of
  first_chunk steps, then as many steps as its measured speed says are left (again while it falls
  short). Each chunk's first interval includes its compilation: a few seconds against the other run."""
  while True:
    step, spent = trained(workdir)
    if step and spent >= seconds:
      return
    more = first_chunk if not step else max(1, int(np.ceil((seconds - spent) * step / max(spent, 1e-9))))
    config.num_train_steps = step + more
    log(f'{workdir.name}: training to step {config.num_train_steps} ({spent:.0f} of {seconds:.0f} s so far)')
    train.train_and_evaluate(config, str(workdir), log=log)
    if trained(workdir)[0] <= step:
      raise ValueError(f'{workdir}: training to step {config.num_train_steps} left its history at step '
                       f'{trained(workdir)[0]}; its checkpoints and history.jsonl disagree: use a new workdir')


def held_out_figures(workdir: pathlib.Path) -> dict:
  """The latest checkpoint's held-out ELBO, reconstruction error and steps used (evaluation.evaluate)."""
  models = infer.load_models(workdir)
  config = models.config
  params = infer.load_params(workdir, models)
  _, eval_source = models.scene.sources(log=lambda s: None)
  result = evaluation.evaluate(steps.make_eval_step(models), params, eval_source, config.eval_batch_size,
                               jax.random.key(config.seed + 1), scenes.max_count(config),
                               models.scene.all_evaluators())
  return dict(elbo=result['elbo'], reconstruction_mse=result['reconstruction_mse'],
              mean_steps=result['mean_steps'], steps_used=result['steps_used'].tolist(),
              num_eval=len(eval_source))


def markdown(results: dict) -> str:
  most = max(len(r['steps_used']) for r in results.values())
  lines = ['| run | train steps | train time (s) | held-out ELBO (nats) | reconstruction MSE | mean steps | '
           + ' | '.join(f'{c} steps' for c in range(most)) + ' |',
           '|---|---|---|---|---|---|' + '---|' * most]
  for run, r in results.items():
    used = [f'{share:.1%}' for share in r['steps_used']] + [''] * (most - len(r['steps_used']))
    lines.append(f'| {run} | {r["steps"]:,} | {r["train_seconds"]:.0f} | {r["elbo"]:.1f} | '
                 f'{r["reconstruction_mse"]:.4f} | {r["mean_steps"]:.2f} | ' + ' | '.join(used) + ' |')
  return '\n'.join(lines) + '\n'


def picture(workdir: pathlib.Path, path: pathlib.Path) -> None:
  """The model's picture of PICTURE_CHARACTERS held-out characters spread over the archive."""
  models = infer.load_models(workdir)
  source = models.scene.scenes(models.scene.eval_split)
  chosen = source.__getitems__(np.linspace(0, len(source) - 1, PICTURE_CHARACTERS).round().astype(int))
  grid = pictures.Pictures(models, scale=3)(infer.load_params(workdir, models), chosen['image'])
  pictures.save_png(grid, path)


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    launch.fail(f'unexpected arguments {argv[1:]}')
  root = pathlib.Path(_WORKDIR.value)
  if root.exists() and not root.is_dir():
    launch.fail(f'--workdir {root} exists and is not a directory')
  root.mkdir(parents=True, exist_ok=True)
  log = lambda s: print(s, flush=True)
  results = {}
  try:
    for run in RUNS:
      workdir, path = root / run, root / run / 'result.json'
      if not path.exists():
        log(f'== {run}')
        config = run_config(run)
        if run == 'air_4_steps':
          train.train_and_evaluate(config, str(workdir), log=log)
        else:  # the same training time as the 4-step model
          first = min(config.eval_every_steps, results['air_4_steps']['steps'])
          train_for(config, workdir, results['air_4_steps']['train_seconds'], first, log)
        step, seconds = trained(workdir)
        path.write_text(json.dumps(dict(held_out_figures(workdir), run=run, max_steps=RUNS[run], steps=step,
                                        train_seconds=seconds), indent=1))
      results[run] = json.loads(path.read_text())
    picture(root / 'air_4_steps', root / 'omniglot.png')
    metrics.plot_evaluations([root / run for run in RUNS], root / 'omniglot_curves.png',
                             [('elbo', 'held-out ELBO (nats)'), ('mean_steps', "mean steps used (q's modes)")])
  except (ValueError, FileNotFoundError, train.NonFiniteError) as e:
    launch.fail(str(e))
  (root / 'omniglot.json').write_text(json.dumps(results, indent=1))
  (root / 'omniglot.md').write_text(markdown(results))
  log(markdown(results))
  log(f'wrote {root / "omniglot.md"}, {root / "omniglot.json"}, {root / "omniglot.png"}, '
      f'{root / "omniglot_curves.png"}')


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
