"""Train one config on several seeds, one after the other, and write the table of its held-out
count accuracy: the published figures of a run come from here.

    python experiments/seeds.py --workdir=runs/seeds --seeds=0,1,2,3,4 \\
        --output=docs/results/multi_mnist_seeds          # writes .json and .md
    python experiments/seeds.py --config=air_jax/configs/images.py --config.data.train_path=... ...

Each seed trains in <workdir>/seed<k> (resumed if it was stopped; a finished one is only read), so
the command can be killed and rerun. Per seed: the first evaluation at >= 95, 97, 98 and 99% (step
and training seconds), whether the accuracy stayed >= 98% after, the final accuracy, the confusion
(and the accuracy per true count), ELBO and the kind's other figures (Multi-MNIST: accuracy by
layout). The JSON also records the command, the commit, the machine and the date.
"""
import json
import pathlib

from absl import app
from absl import flags
from absl import logging

from air_jax import launch
from air_jax import metrics
from air_jax import train
from air_jax.configs import multi_mnist as multi_mnist_config
from air_jax.data import sources

_CONFIG = launch.define_config_file('config', multi_mnist_config.__file__, 'Config file (get_config), as train.py.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the runs: <workdir>/seed<k>.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'config.seed of each run.')
_OUTPUT = flags.DEFINE_string('output', None, 'Path without suffix: writes <output>.json and <output>.md.')
flags.mark_flags_as_required(['workdir', 'output'])
THRESHOLDS = (0.95, 0.97, 0.98, 0.99)


def markdown(rows, command: str, record: dict) -> str:
  lines = [f'Command: `{command}`', '', f'Commit {record["commit"]}, {record["machine"]}, {record["date"]}.', '']
  if all('final_accuracy' in r for r in rows):
    lines += ['| seed | ' + ' | '.join(f'to {t:.0%} (step, train s)' for t in THRESHOLDS) +
              ' | lowest after 98% | final | train s (all) | ELBO |', '|---' * (len(THRESHOLDS) + 5) + '|']
    cell = lambda c: 'not reached' if c is None else f'{c[0]:,}, {c[1]:.0f} s'
    for r in rows:
      low = '' if r['lowest_after_98'] is None else f'{r["lowest_after_98"]:.4f}'
      crossings = ' | '.join(cell(r['crossings'].get(str(t))) for t in THRESHOLDS)
      lines.append(f'| {r["seed"]} | {crossings} | {low} | '
                   f'{r["final_accuracy"]:.4f} | {r["train_seconds"]:.0f} | {r["elbo"]:.1f} |')
    counts = [c for c in range(len(rows[0]['confusion'])) if sum(rows[0]['confusion'][c])]
    lines += ['', 'Final accuracy per true count (scenes): the rows of the confusion in the JSON.', '',
              '| seed | ' + ' | '.join(f'{c} ({sum(rows[0]["confusion"][c])})' for c in counts) + ' |',
              '|---' * (len(counts) + 1) + '|']
    for r in rows:
      lines.append(f'| {r["seed"]} | ' + ' | '.join(f'{r["confusion"][c][c] / sum(r["confusion"][c]):.3f}'
                                                   for c in counts) + ' |')
    layouts = [r for r in rows if 'accuracy_by_layout' in r]
    if layouts:
      names = list(layouts[0]['accuracy_by_layout'])
      lines += ['', '| seed | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
      for r in layouts:
        lines.append(f'| {r["seed"]} | ' + ' | '.join(f'{a:.3f} ({n})' for a, n in
                                                      (r['accuracy_by_layout'][k] for k in names)) + ' |')
  else:
    lines += ['| seed | final step | train s | ELBO | reconstruction MSE | mean steps |', '|---|---|---|---|---|---|']
    for r in rows:
      lines.append(f'| {r["seed"]} | {r["final_step"]:,} | {r["train_seconds"]:.0f} | {r["elbo"]:.1f} | '
                   f'{r["reconstruction_mse"]:.5f} | {r["mean_steps"]:.2f} |')
  return '\n'.join(lines) + '\n'


def main(argv):
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax, XLA) would drown progress
  if len(argv) > 1:
    launch.fail(f'unexpected arguments {argv[1:]}')
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    launch.fail(f'--seeds must be comma-separated integers, got {",".join(_SEEDS.value)}')
  output = pathlib.Path(_OUTPUT.value)
  if not output.parent.is_dir():
    launch.fail(f'--output: no such directory: {output.parent}')
  root = pathlib.Path(_WORKDIR.value)
  rows = []
  for seed in seeds:
    config = _CONFIG.value.copy_and_resolve_references()
    config.seed = seed
    workdir = root / f'seed{seed}'
    print(f'seed {seed}: {workdir}', flush=True)
    try:
      train.train_and_evaluate(config, str(workdir), log=lambda line: print('  ' + line, flush=True))
    except (ValueError, FileNotFoundError, train.NonFiniteError, sources.UnavailableError) as e:
      launch.fail(str(e))
    rows.append(metrics.run_summary(workdir, seed, THRESHOLDS))
  record = dict(launch.provenance('python experiments/seeds.py'),
                config=json.loads(_CONFIG.value.to_json_best_effort()), runs=rows)
  command = record['command']
  page = markdown(rows, command, record)
  wrote = launch.write_results(_OUTPUT.value, record, page)
  print(page)
  print(wrote)


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
