"""configs/crowded.py: the crowded tasks (a) 0-3 digits on 50x50, (b) 0-5 on 80x80, (c) 0-9 on
128x128 are valid configs of the one 2D model, each with a slot per digit plus one and the
default's 35 px prior window (the composer's layouts: test_data.py's test_layout); task (c) trains,
resumes and infers with the parallel core (cells in raster order, the default). The recurrent
core on (c) unrolls 10 steps: compiling them takes about a minute, so its run on (c) is the
experiment's."""
import numpy as np
import pytest

from air_jax import glimpse
from air_jax import infer
from air_jax import models as models_lib
from air_jax import train
from air_jax.configs import crowded
from air_jax.configs import multi_mnist


@pytest.mark.parametrize('task, canvas, most, grid', [('a', 50, 3, 4), ('b', 80, 5, 6), ('c', 128, 9, 10)])
def test_each_task_is_a_valid_config_of_its_canvas_and_counts(task, canvas, most, grid):
  for arg in (task, task + ',smoke'):
    config = models_lib.build(crowded.get_config(arg)).config
    assert config.data.canvas_size == canvas and config.model.max_steps == most + 1
    assert config.model.grid_size == grid  # the parallel core's cells: about 12.5 px, as the default's 4 x 4 on 50 px
    assert tuple(config.data.train_counts) == tuple(config.data.eval_counts) == tuple(range(most + 1))
    window = float(glimpse.window_size(np.float32(config.objective.z_where_prior_loc[0]))) * canvas
    np.testing.assert_allclose(window, crowded.WINDOW_PIXELS, atol=0.01)
    assert len(config.model.image_conv_features) == 2  # convolutions: the projection ignores the canvas area
  default = multi_mnist.get_config()
  np.testing.assert_allclose(crowded.get_config('a').objective.z_where_prior_loc, default.objective.z_where_prior_loc,
                             atol=0.01)  # (a) is the default's canvas: the same prior window


@pytest.mark.parametrize('arg', [None, 'd', 'c,tiny', 'c,smoke,smoke', 'c,recurrent_dense,parallel_raster'])
def test_an_unknown_task_is_refused(arg):
  with pytest.raises(ValueError, match='use a task of'):
    crowded.get_config(arg)


@pytest.mark.parametrize('arg, inference, conv, order', [
    ('b,recurrent_dense', 'recurrent', (), None), ('b,smoke,recurrent_conv', 'recurrent', (8, 16), None),
    ('c,parallel_raster', 'parallel', (32, 64), 'raster'), ('a,parallel_at_once,smoke', 'parallel', (8, 16), 'parallel')])
def test_a_core_is_named_after_the_task(arg, inference, conv, order):
  config = crowded.get_config(arg)
  assert config.model.inference == inference and tuple(config.model.image_conv_features) == conv
  assert order is None or config.model.cell_order == order
  assert config.model.max_steps == crowded.TASKS[arg[0]][1] + 1
  assert config.model.cell_reach == (0 if arg[0] == 'a' else crowded.CELL_REACH)  # crops where smaller than the canvas


def test_task_c_trains_resumes_and_infers_with_the_parallel_core(tmp_path, mnist_dir):
  config = crowded.get_config('c,parallel_raster,smoke')
  config.data.data_dir = str(mnist_dir)
  config.model.grid_size, config.model.cell_hidden = 3, 16  # 9 cells (the real run's 10 x 10: 100)
  config.num_train_steps = 2
  train.train_and_evaluate(config, str(tmp_path), log=lambda line: None)
  config.num_train_steps = 4
  lines = []
  result = train.train_and_evaluate(config, str(tmp_path), log=lines.append)
  assert 'resumed from the checkpoint at step 2' in lines and result['step'] == 4
  assert result['confusion'].shape == (10, 10)  # true and inferred counts 0-9
  models = infer.load_models(tmp_path)
  images = np.asarray(models.scene.scenes('test').__getitems__(range(3))['image'])
  assert images.shape == (3, 128, 128)
  inferred = infer.infer(models, infer.load_params(tmp_path, models), images)
  assert inferred['boxes'].shape == (3, 9, 4) and inferred['count'].shape == (3,)


def test_the_window_prior_needs_a_canvas_larger_than_its_window():
  assert np.isfinite(crowded.window_prior_logit(50))
  with pytest.raises(ValueError, match="too small for the prior's 35 px window"):
    crowded.window_prior_logit(30)
