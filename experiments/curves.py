"""Summarise training runs from their history.jsonl: steps and train time to 95% / 98% held-out
count accuracy, the final and best accuracy, and the accuracy curve (markdown).

    python experiments/curves.py runs/s0 runs/s1 runs/s2 [--thresholds=0.95,0.98] [--plot=curves.png]

--plot also draws each run's held-out ELBO and count accuracy against training time (matplotlib).
"""
import json
import pathlib
import sys

from absl import app
from absl import flags

from air_jax import launch
from air_jax import metrics

_THRESHOLDS = flags.DEFINE_list('thresholds', ['0.95', '0.98'], 'Accuracies to report the first crossing of.')
_PLOT = flags.DEFINE_string('plot', '', 'A .png to draw the held-out ELBO and count accuracy curves into.')


def main(argv):
  workdirs = [pathlib.Path(a) for a in argv[1:]]
  if not workdirs:
    print('error: name one or more training workdirs', file=sys.stderr)
    sys.exit(1)
  thresholds = [float(t) for t in _THRESHOLDS.value]
  from air_jax import pictures  # pylint: disable=g-import-not-at-top
  problem = _PLOT.value and pictures.png_path_problem(_PLOT.value)
  if problem:
    print(f'error: --plot: {problem}', file=sys.stderr)
    sys.exit(1)
  try:
    rows = [dict(workdir=str(w), **metrics.summarise_count_accuracy(w, thresholds)) for w in workdirs]
  except (OSError, ValueError, KeyError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  head = ' | '.join(f'to {t:.0%} (step, train s)' for t in thresholds)
  print(f'| run | {head} | final (step) | best |')
  print('|---' * (len(thresholds) + 3) + '|')
  for r in rows:
    cells = ' | '.join('not reached' if r['crossings'][t] is None else
                       f'{r["crossings"][t][0]}, {r["crossings"][t][1]:.0f} s' for t in thresholds)
    print(f'| {r["workdir"]} | {cells} | {r["final_accuracy"]:.2%} ({r["final_step"]}) | {r["best_accuracy"]:.2%} |')
  for r in rows:
    print(f'\n{r["workdir"]}: ' + ', '.join(f'{s}: {a:.1%} ({t:.0f}s)' for s, t, a in r['curve']))
  if _PLOT.value:
    metrics.plot_evaluations(workdirs, _PLOT.value, [('elbo', 'held-out ELBO (nats)'),
                                                     ('count_accuracy', 'held-out count accuracy')])
    print(f'wrote {_PLOT.value}')
  print(json.dumps([{k: v for k, v in r.items() if k != 'curve'} for r in rows]), file=sys.stderr)


if __name__ == '__main__':
  app.run(main, flags_parser=launch.parse_flags)
