"""experiments/device_check.py --quick: the whole prepared GPU check at tiny sizes on the CPU (4 fake
devices: the training run goes through the data-parallel mesh), and its refusals."""
import json
import subprocess
import sys

from tests import helpers


def run_check(*flags):
  return subprocess.run([sys.executable, 'experiments/device_check.py', *flags], cwd=helpers.REPO,
                        env=helpers.subprocess_env(), capture_output=True, text=True, timeout=600)


def test_quick_check_reports_every_part(tmp_path, mnist_dir):
  output = tmp_path / 'report.json'
  run = run_check('--quick', f'--data_dir={mnist_dir}', f'--output={output}', f'--workdir={tmp_path / "train"}',
                  '--crowded_cores=recurrent_dense,parallel_at_once')  # one of each core: the suite's time
  assert run.returncode == 0, run.stderr[-3000:]
  report = json.loads(output.read_text())
  assert report['backend'] == 'cpu' and len(report['devices']) == 4
  rows = report['train_step']
  assert [(r['precision'], r['batch_size']) for r in rows] == [('float32', 8), ('bfloat16', 8)]
  assert all(r['images_per_second'] > 0 and r['compile_seconds'] > 0 and r['flops_per_step'] > 0 for r in rows)
  training = report['training']
  assert training['batch_size'] == 8 and training['learning_rate'] == 3e-3  # --train_learning_rate's default
  # 6 smoke steps cannot count: no early stop, both targets unreached, an evaluation every 2 steps.
  assert training['steps'] == 6 and [s for s, _, _ in training['curve']] == [2, 4, 6]
  assert training['crossings'] == {'0.97': None, '0.98': None}
  assert [r['core'] for r in report['crowded_step']] == ['recurrent_dense', 'parallel_at_once']
  assert all(r['batch_size'] == 8 and r['images_per_second'] > 0 for r in report['crowded_step'])
  crowded = report['crowded_training']  # task (b), 6 smoke steps: 97% not reached
  assert crowded['core'] == 'recurrent_dense' and crowded['steps'] == 6 and crowded['crossings'] == {'0.97': None}
  assert report['renders']['renders_per_second']['1 process(es)'] > 0
  assert 'to 98%: not reached' in run.stdout and 'train step (synthetic batches' in run.stdout


def test_refusals_are_one_line(tmp_path, mnist_dir):
  helpers.assert_one_error_line(run_check('--quick', f'--data_dir={tmp_path}'), (), 'no mnist.npz in',
                                'downloads nothing')
  helpers.assert_one_error_line(run_check('--quick', f'--data_dir={mnist_dir}', '--precisions=float16'),
                                (), '--precisions takes float32 and/or bfloat16')
  helpers.assert_one_error_line(run_check('--quick', f'--data_dir={mnist_dir}', '--batch_sizes=8,x'),
                                (), '--batch_sizes and --render_processes take integers')
  helpers.assert_one_error_line(run_check('--quick', f'--data_dir={mnist_dir}', '--crowded_cores=recurrent,parallel_raster'),
                                (), "--crowded_cores: unknown ['recurrent']")
  output = tmp_path / 'missing' / 'report.json'
  helpers.assert_one_error_line(run_check('--quick', f'--data_dir={mnist_dir}', f'--output={output}'),
                                output, 'does not exist')
