"""experiments/estimators.py: a variant of the config (the published fixed prior) over a seed, into
one table with the bounds, the validation count and the gradient variance (the estimators
themselves: test_z_pres_estimators.py)."""
import json
import subprocess
import sys

from tests import helpers


def test_a_variant_smoke_run_writes_the_table(tmp_path, mnist_dir):
  output = tmp_path / 'table'
  command = [sys.executable, str(helpers.REPO / 'experiments' / 'estimators.py'), f'--workdir={tmp_path / "runs"}',
             '--variants=nvil_prior_0.01', '--seeds=0', '--num_samples=1,2', '--num_images=8', '--gradient_keys=2',
             f'--output={output}', f'--config={helpers.REPO / "air_jax" / "configs" / "multi_mnist.py"}:smoke',
             f'--config.data.data_dir={mnist_dir}']
  run = subprocess.run(command, capture_output=True, text=True, env=helpers.subprocess_env(), timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  record = json.loads(output.with_suffix('.json').read_text())
  (row,) = record['runs']
  assert row['variant'] == 'nvil_prior_0.01' and row['final_step'] == 4 and set(row['bounds']) == {'1', '2'}
  assert row['bounds']['1']['mean'] <= row['bounds']['2']['mean']  # the same draws, grouped
  assert 0 <= row['validation_accuracy'] <= 1 and row['gradient']['variance'] > 0
  config = json.loads((tmp_path / 'runs' / 'nvil_prior_0.01' / 'seed0' / 'config.json').read_text())
  assert config['objective']['z_pres_prior'] == 0.01 and config['objective']['z_pres_prior_anneal_steps'] == 0
  assert '| nvil_prior_0.01 | 0 |' in output.with_suffix('.md').read_text()
  bad = subprocess.run(command[:3] + ['--variants=reinforce', f'--output={output}'], capture_output=True, text=True,
                       env=helpers.subprocess_env(), timeout=600)
  helpers.assert_one_error_line(bad, (), '--variants', returncode=1)
  (summary,) = record['summary']
  assert summary['variant'] == 'nvil_prior_0.01' and summary['seeds'] == [0]
  assert summary['final_accuracy']['mean'] == row['final_accuracy']

  # --combine: the finished runs of results files into one table, nothing trained.
  combined = tmp_path / 'combined'
  combine = command[:2] + [f'--combine={output}.json', f'--output={combined}']
  run = subprocess.run(combine, capture_output=True, text=True, env=helpers.subprocess_env(), timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert json.loads(combined.with_suffix('.json').read_text())['runs'] == [row]
  assert f'| nvil_prior_0.01 | {summary["reached_98"]} of 1 |' in combined.with_suffix('.md').read_text()
  twice = subprocess.run(command[:2] + [f'--combine={output}.json,{output}.json', f'--output={combined}'],
                         capture_output=True, text=True, env=helpers.subprocess_env(), timeout=600)
  helpers.assert_one_error_line(twice, (), 'more than once', returncode=1)
  other = json.loads(output.with_suffix('.json').read_text())  # another seed, another likelihood
  other['runs'][0]['seed'], other['config']['objective']['likelihood_scale'] = 1, 0.2
  (tmp_path / 'other.json').write_text(json.dumps(other))
  unlike = subprocess.run(command[:2] + [f'--combine={output}.json,{tmp_path / "other.json"}', f'--output={combined}'],
                          capture_output=True, text=True, env=helpers.subprocess_env(), timeout=600)
  helpers.assert_one_error_line(unlike, (), 'different configs (objective.likelihood_scale)', returncode=1)
