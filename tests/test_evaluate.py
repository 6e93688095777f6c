"""`python -m air_jax.evaluate` (importance-weighted bounds of a trained run), infer's weighted count
and the bound the training loop's evaluations can report, on the tiny trained smoke run."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from air_jax import evaluate
from air_jax import infer
from air_jax import metrics
from air_jax import models as models_lib
from air_jax import steps
from air_jax.data import multi_mnist
from tests import helpers


def run_cli(*args, cwd=helpers.REPO):
  return subprocess.run([sys.executable, '-m', 'air_jax.evaluate', *args], cwd=cwd,
                        env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def workdir(smoke_run):
  return smoke_run[0]


def test_bounds_on_the_held_out_split(workdir):
  result = evaluate.run(workdir, '4,1,2', num_images=6, batch_size=4, log=lambda _: None)
  assert result['num_images'] == 6 and result['draws'] == 4 and result['checkpoint_step'] == 4
  means = [result['bounds'][k]['mean'] for k in ('1', '2', '4')]
  assert means[0] <= means[1] <= means[2], means  # the same draws, grouped: Jensen
  assert all(np.isfinite(result['bounds'][k]['standard_error']) for k in ('1', '2', '4'))
  assert set(result['bounds']['4']['per_count']) <= {'0', '1', '2'}
  assert 0 <= result['count_accuracy_mode'] <= 1 and 0 <= result['count_accuracy_weights'] <= 1
  for reading in ('mode', 'weights'):
    assert {'confusion', 'accuracy_by_layout'} <= set(result['count_readings'][reading])


def test_each_reading_of_the_count_is_scored_against_the_truth(scene_batch):
  scene = models_lib.build(helpers.smoke_config('')).scene
  scenes = {k: v[:8] for k, v in scene_batch.items()}
  true = scenes['count']
  wrong = (true + 1) % 3
  weights = np.where(np.arange(8) < 2, wrong, true)  # the first two read wrong
  readings = evaluate.count_readings(scene, scenes, dict(mode=true, weights=weights), True, max_count=3)
  assert readings['mode']['count_accuracy'] == 1.0 and readings['weights']['count_accuracy'] == 0.75
  np.testing.assert_array_equal(readings['weights']['confusion'], metrics.confusion_matrix(true, weights, 3))
  assert readings['weights']['accuracy_by_layout'] == multi_mnist.accuracy_by_layout(
      true, weights, scenes['boxes'], scenes['labels'])
  assert 'steps_used' not in readings['mode']  # 'steps' reads more than the count
  without_truth = evaluate.count_readings(scene, {'count': true}, dict(weights=weights), False, max_count=3)
  assert set(without_truth['weights']) == {'count_accuracy', 'confusion'}


def test_another_split_and_bad_ones(workdir, scene_batch, tmp_path):
  result = evaluate.run(workdir, '2', num_images=4, batch_size=4, log=lambda _: None, split='validation')
  assert result['images'] == 'the first 4 scenes of the validation split' and result['num_images'] == 4
  models = infer.load_models(workdir)
  scenes, _, with_truth = evaluate.evaluation_scenes(models, None, 4, 'validation')
  np.testing.assert_array_equal(scenes['image'], models.scene.scenes('validation').__getitems__(range(4))['image'])
  assert with_truth and not np.array_equal(scenes['image'], evaluate.evaluation_scenes(models, None, 4)[0]['image'])
  with pytest.raises(infer.InputError, match='tset'):
    evaluate.run(workdir, '2', num_images=4, split='tset')
  np.savez(tmp_path / 'in.npz', images=scene_batch['image'][:2])
  with pytest.raises(infer.InputError, match='--split and --images'):
    evaluate.run(workdir, '2', images_path=tmp_path / 'in.npz', split='test')


def test_bad_input_is_one_line(workdir, tmp_path):
  for text in ('0,10', '3,10', 'ten', ''):
    with pytest.raises(infer.InputError, match='--num_samples'):
      evaluate.run(workdir, text)
  with pytest.raises(infer.InputError, match='--num_images'):
    evaluate.run(workdir, '1', num_images=0)
  (tmp_path / 'config.json').write_text((workdir / 'config.json').read_text())
  with pytest.raises(infer.InputError, match='no checkpoint'):
    evaluate.run(tmp_path, '1', num_images=2)
  process = run_cli(f'--workdir={workdir}', '--num_samples=5,10,3')
  helpers.assert_one_error_line(process, (), '--num_samples', returncode=1)


def test_cli_on_images_writes_json(workdir, scene_batch, tmp_path):
  path = tmp_path / 'in.npz'
  np.savez(path, images=scene_batch['image'][:5], counts=scene_batch['count'][:5])
  process = run_cli(f'--workdir={workdir}', f'--images={path}', '--num_samples=1,3', '--batch_size=4',
                    f'--output={tmp_path / "out.json"}')
  assert process.returncode == 0, process.stderr[-3000:]
  result = json.loads((tmp_path / 'out.json').read_text())
  assert result['num_images'] == 5 and set(result['bounds']) == {'1', '3'} and 'count_accuracy_weights' in result
  assert 'accuracy_by_layout' not in result['count_readings']['weights']  # no boxes in an npz
  assert 'L_3' in process.stdout and 'count accuracy' in process.stdout


def test_infer_weighted_count(workdir, scene_batch, tmp_path):
  path = tmp_path / 'in.npz'
  np.savez(path, images=scene_batch['image'][:5])
  result = infer.run(workdir, path, tmp_path / 'out.npz', count_samples=6)
  np.testing.assert_allclose(result['count_posterior'].sum(-1), 1, atol=1e-5)
  np.testing.assert_array_equal(result['count_weighted'], result['count_posterior'].argmax(-1))
  with np.load(tmp_path / 'out.npz') as saved:
    assert saved['count_posterior'].shape == (5, 4)  # counts 0-2 and max_steps 3
  with pytest.raises(infer.InputError, match='count_samples'):
    infer.run(workdir, path, tmp_path / 'out.npz', count_samples=-1)


def test_evaluation_reports_the_bound_when_asked(scene_batch):
  config = helpers.smoke_config('', eval_importance_samples=5)
  models = models_lib.build(config)
  params = steps.init_state(models, jax.random.key(0)).params['model']
  eval_step = steps.make_eval_step(models, importance_samples=config.eval_importance_samples)
  out = eval_step(params, scene_batch['image'][:8], jax.random.key(1))
  assert out['importance_bound'].shape == (8,) and np.isfinite(out['importance_bound']).all()

  assert helpers.smoke_config('').eval_importance_samples == 0  # off unless asked (test_train: the eval step then)
  line = metrics.format_evaluation(dict(elbo=1.0, importance_bound=2.0, reconstruction_mse=0.0, mean_steps=1.0,
                                        steps_used=[1.0]))
  assert 'importance bound 2.0' in line
