"""experiments/curves.py on hand-written histories: the first crossings, the table, the plot, and
one line for a run without count accuracies."""
import json
import subprocess
import sys

from tests import helpers


def write_history(workdir, records):
  workdir.mkdir(parents=True)
  (workdir / 'history.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))


def test_crossings_table_and_plot(tmp_path):
  evals = [(500, 30.0, 0.90, 100.0), (1000, 60.0, 0.96, 150.0), (1500, 90.0, 0.985, 160.0)]
  write_history(tmp_path / 'run_a', [dict(kind='eval', step=s, train_seconds=t, count_accuracy=a, elbo=e)
                                     for s, t, a, e in evals])
  write_history(tmp_path / 'run_b', [dict(kind='eval', step=500, train_seconds=20.0, count_accuracy=0.5, elbo=90.0)])
  command = [sys.executable, 'experiments/curves.py', str(tmp_path / 'run_a'), str(tmp_path / 'run_b'),
             f'--plot={tmp_path / "curves.png"}']
  run = subprocess.run(command, cwd=helpers.REPO, env=helpers.subprocess_env(), capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  row_a = next(line for line in run.stdout.splitlines() if line.startswith(f'| {tmp_path / "run_a"} |'))
  assert '| 1000, 60 s | 1500, 90 s | 98.50% (1500) | 98.50% |' in row_a
  assert 'not reached' in next(line for line in run.stdout.splitlines() if line.startswith(f'| {tmp_path / "run_b"}'))
  assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_a_run_without_counts_is_one_line(tmp_path):
  write_history(tmp_path / 'omniglot', [dict(kind='eval', step=2, train_seconds=1.0, elbo=-3.0, mean_steps=2.0)])
  run = subprocess.run([sys.executable, 'experiments/curves.py', str(tmp_path / 'omniglot')], cwd=helpers.REPO,
                       env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)
  helpers.assert_one_error_line((run.returncode, run.stderr), (), 'has no count accuracy to summarise')
