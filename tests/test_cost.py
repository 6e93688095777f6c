"""experiments/cost.py: a row of the cost table (here the parallel core in raster order, tiny) with its time, FLOPs and
memory, into the JSON and the page; bad flags are one line."""
import json
import subprocess
import sys

from tests import helpers


def run_cost(*flags):
  return subprocess.run([sys.executable, 'experiments/cost.py', *flags], cwd=helpers.REPO, env=helpers.subprocess_env(),
                        capture_output=True, text=True, timeout=600)


def test_a_smoke_row_lands_in_the_table(tmp_path):
  output = tmp_path / 'cost'
  run = run_cost('--smoke', '--variants=parallel_raster', '--objects=5', '--canvases=40', '--batch_size=8', '--steps=1',
                 '--repeats=1', f'--output={output}')
  assert run.returncode == 0, run.stderr[-3000:]
  (row,) = json.loads(output.with_suffix('.json').read_text())['rows']
  # 40 px gives 3 x 3 cells of ~12.5 px (and 5 objects need 3 x 3)
  assert (row['variant'], row['objects'], row['slots'], row['canvas']) == ('parallel_raster', 5, 9, 40)
  assert row['steps_per_second'] > 0 and row['flops_per_step'] > 0 and row['step_memory_bytes'] > 0
  assert '| parallel_raster | 9 | 40 |' in output.with_suffix('.md').read_text()
  helpers.assert_one_error_line(run_cost('--variants=spair', f'--output={output}'), (), '--variants')
  helpers.assert_one_error_line(run_cost('--canvases=30', f'--output={output}'), (), 'over 35')
