"""experiments/seeds.py: several seeds of one config, one after the other, into one table."""
import json
import subprocess
import sys

from tests import helpers


def test_two_smoke_seeds_write_the_table(tmp_path, mnist_dir):
  output = tmp_path / 'table_lr_0.5'  # a dot in the name: the suffixes are appended, not swapped
  command = [sys.executable, str(helpers.REPO / 'experiments' / 'seeds.py'), f'--workdir={tmp_path / "runs"}',
             '--seeds=0,1', f'--output={output}', f'--config={helpers.REPO / "air_jax" / "configs" / "multi_mnist.py"}:smoke',
             f'--config.data.data_dir={mnist_dir}']
  run = subprocess.run(command, capture_output=True, text=True, env=helpers.subprocess_env(), timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  record = json.loads((tmp_path / 'table_lr_0.5.json').read_text())
  assert [r['seed'] for r in record['runs']] == [0, 1]
  assert record['command'].startswith('python experiments/seeds.py --workdir=') and record['config']['seed'] == 0
  for row in record['runs']:
    assert row['final_step'] == 4 and 0 <= row['final_accuracy'] <= 1 and set(row['crossings']) == {'0.95', '0.97', '0.98', '0.99'}
    assert sum(map(sum, row['confusion'])) == 16  # the smoke config's 16 held-out scenes
  table = (tmp_path / 'table_lr_0.5.md').read_text()
  assert '| seed | to 95% (step, train s) | to 97% (step, train s) |' in table
  assert 'Final accuracy per true count' in table
  assert table.count('\n| 0 |') == 3  # accuracy, per-count and layout rows
  # Rerun: the finished runs are read, not trained again.
  again = subprocess.run(command, capture_output=True, text=True, env=helpers.subprocess_env(), timeout=600)
  assert again.returncode == 0 and 'step 2/4' not in again.stdout
