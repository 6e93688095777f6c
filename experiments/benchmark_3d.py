"""3D speed: MuJoCo renders/s (1 and 2 render processes) and the 3D train step (step time, renders
per step, the share of the step spent rendering), central differences against SPSA, AIR and DAIR.

    python experiments/benchmark_3d.py                 # batch 32, the shapes_3d config
    python experiments/benchmark_3d.py --steps=5 --batch_size=8 --renders=200   # quick

Renders: `--renders` random 0-3 object scenes rendered by a RenderPool of 1 and 2 processes (a
renderer each, the images sent back through pipes).
Steps: `--steps` train steps after one compiling step; render share = the RenderPool's wall time
inside the steps / the steps' wall time.
Estimators: on one fixed batch of `--batch_size` scenes of 0-3 objects, each object's pose moved
off its true one (x, y by N(0, 0.05^2) m, theta by N(0, 0.3^2)), the gradient of the training
likelihood log N(blur(x); blur(render(pose)), sigma^2) with respect to every pose coordinate, from
central differences (the reference) and from SPSA with 1, 4 and 16 directions over `--repeats`
keys: the relative mean squared error E|g_spsa - g_central|^2 / |g_central|^2 (per image, then
averaged), the same of the mean of the draws (MSE / repeats if SPSA is unbiased, more if biased)
and renders per image.
"""
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from air_jax import benchmarking
from air_jax import black_box
from air_jax import objectives
from air_jax import steps as steps_lib
from air_jax import models as models_lib
from air_jax.configs import shapes_3d as shapes_3d_config
from air_jax.data import shapes_3d

_BATCH = flags.DEFINE_integer('batch_size', 32, 'Train batch.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed train steps per setting.')
_RENDERS = flags.DEFINE_integer('renders', 1000, 'Scenes per renders/s measurement.')
_REPEATS = flags.DEFINE_integer('repeats', 64, 'SPSA draws per setting in the estimator comparison.')
_SETTINGS = flags.DEFINE_list('settings', ['air:central', 'air:spsa', 'dair:central'],
                              'model:gradient pairs to time.')


def time_steps(model: str, gradient: str, batch_size: int, num_steps: int):
  config = shapes_3d_config.get_config()
  config.model.difference_input = model == 'dair'
  config.objective.gradient = gradient
  config.batch_size = batch_size
  models = models_lib.build(config)
  source = models.scene.scenes('train')
  batch = source.__getitems__(range(batch_size))
  state = steps_lib.init_state(models, jax.random.key(0))
  train_step = steps_lib.make_train_step(models)
  start = time.perf_counter()
  state, metrics = train_step(state, batch['image'], batch['count'], jax.random.key(1))
  jax.block_until_ready(metrics)
  compile_seconds = time.perf_counter() - start
  state, metrics = train_step(state, batch['image'], batch['count'], jax.random.key(1))  # state sharding settles
  jax.block_until_ready(metrics)
  pool = models.scene.pool
  renders, render_seconds = pool.renders, pool.seconds
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = train_step(state, batch['image'], batch['count'], jax.random.key(1))
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / num_steps
  return dict(step_seconds=seconds, compile_seconds=compile_seconds,
              renders_per_step=(pool.renders - renders) / num_steps,
              render_share=(pool.seconds - render_seconds) / num_steps / seconds,
              mean_count=float(np.mean(batch['count'])))


def estimator_variance(batch_size: int, repeats: int, seed: int = 0):
  """{method: figures} of pose-gradient estimators on one fixed batch (see the module docstring)."""
  config = shapes_3d_config.get_config()
  world, objective = shapes_3d.World(), config.objective
  shape, truth, present = benchmarking.random_scenes(world, batch_size, seed)
  pool = shapes_3d.RenderPool(world, world.max_objects, 2)
  images = pool(shape, truth, present)
  noise = np.random.default_rng(seed + 1).normal(size=truth.shape) * np.array([0.05, 0.05, 0.3])
  poses = (truth + noise * present[..., None]).astype(np.float32)
  size = world.image_size

  def gradient(method, num_directions, key):
    render = black_box.make_render(pool, (size, size), method=method, num_directions=num_directions,
                                   steps=(objective.position_step, objective.position_step, objective.rotation_step))
    log_likelihood = lambda p: objectives.log_likelihood(
        jnp.asarray(images), render(shape, p, present.astype(np.float32), key), objective.likelihood_scale,
        objective.likelihood_blur).sum()
    return np.asarray(jax.grad(log_likelihood)(jnp.asarray(poses)))

  reference = gradient('central', 1, jax.random.key(0))
  norm = np.square(reference).sum((1, 2))
  has_objects = norm > 0
  rows = {'central': dict(renders_per_image=2 * 3 * present.sum(1).mean(), relative_mse=0.0,
                          relative_mse_of_mean=0.0)}
  for directions in (1, 4, 16):
    draws = np.stack([gradient('spsa', directions, jax.random.key(100 + r)) for r in range(repeats)])
    error = np.square(draws - reference[None]).sum((2, 3))  # [R, B]
    bias = np.square(draws.mean(0) - reference).sum((1, 2))
    rows[f'spsa x{directions}'] = dict(
        renders_per_image=2 * directions * has_objects.mean(),
        relative_mse=float((error.mean(0)[has_objects] / norm[has_objects]).mean()),
        relative_mse_of_mean=float((bias[has_objects] / norm[has_objects]).mean()))
  pool.close()
  return rows


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  world = shapes_3d.World()
  print(f'MuJoCo renders/s at {world.image_size}x{world.image_size}, {_RENDERS.value} scenes of 0-3 objects, '
        f'LP_NUM_THREADS={os.environ.get("LP_NUM_THREADS", "(unset)")}:')
  for name, rate in benchmarking.renders_per_second(world, _RENDERS.value).items():
    print(f'  {name:>14}: {rate:7.0f} renders/s')
  print(f'train step, batch {_BATCH.value}, {jax.device_count()} device(s):')
  for setting in _SETTINGS.value:
    model, gradient = setting.split(':')
    r = time_steps(model, gradient, _BATCH.value, _STEPS.value)
    print(f'  {model:>4} {gradient:>7}: {r["step_seconds"]:.3f} s/step, {r["renders_per_step"]:.0f} renders/step, '
          f'render share {r["render_share"]:.0%} (compile {r["compile_seconds"]:.0f}s; mean count {r["mean_count"]:.2f})')
  print(f'pose-gradient estimators on one batch of {_BATCH.value} (relative to central differences; '
        f'SPSA over {_REPEATS.value} draws):')
  for name, r in estimator_variance(_BATCH.value, _REPEATS.value).items():
    print(f'  {name:>10}: {r["renders_per_image"]:5.1f} renders/image, relative MSE {r["relative_mse"]:8.3f}, '
          f'of the {_REPEATS.value}-draw mean {r["relative_mse_of_mean"]:.4f}')


if __name__ == '__main__':
  app.run(main)
