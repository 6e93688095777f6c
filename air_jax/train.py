"""The train loop of every scene kind: train_and_evaluate.

Data flows one way: the scene kind's sources -> batch (images uint8 or float in [0, 1], counts) ->
train_step(state, images, counts, root_key) -> metrics / checkpoints / evaluations. Killed, it resumes from its latest checkpoint
and loses nothing (the batch order and the step keys are functions of the step).
"""
import pathlib
import time
from typing import Any, Callable, Dict

import jax
import ml_collections
import numpy as np

from air_jax import checkpoints
from air_jax import distributed
from air_jax import evaluation
from air_jax import metrics as metrics_lib
from air_jax import models as models_lib
from air_jax import parallel
from air_jax import pictures as pictures_lib
from air_jax import scenes
from air_jax import steps
from air_jax.configs import checks
from air_jax.data import pipeline


class NonFiniteError(FloatingPointError):
  """Too many train steps in a row had a non-finite loss or gradient."""


def resolved(config: ml_collections.ConfigDict, mesh) -> ml_collections.ConfigDict:
  """A copy of config with its references resolved and batch_size the global batch:
  per_device_batch_size x devices when that is set (> 0)."""
  config = config.copy_and_resolve_references()
  if config.per_device_batch_size > 0:
    config.batch_size = config.per_device_batch_size * mesh.devices.size
  return config


def check_nonfinite(state: steps.TrainState, config: ml_collections.ConfigDict, checkpointer, log) -> None:
  """Logs skipped (non-finite) steps; raises NonFiniteError once config.max_nonfinite_in_a_row
  steps in a row were skipped, leaving the last checkpoint (which never holds them) in place."""
  total, in_a_row = (int(x) for x in jax.device_get((state.nonfinite_steps, state.nonfinite_in_a_row)))
  if in_a_row >= config.max_nonfinite_in_a_row:
    checkpointer.close()
    raise NonFiniteError(
        f'stopped at step {int(state.step)}: the last {in_a_row} steps had a non-finite loss or gradient '
        f'({total} in all) and were skipped; the latest checkpoint (step {checkpointer.latest_step()}) '
        'holds the last good state. Lower config.learning_rate or check the data.')
  if total:
    log(f'step {int(state.step)}: {total} step(s) skipped so far (non-finite loss or gradient), '
        f'{in_a_row} of them just now')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, log=print,
                       mesh=None, stop_when: Callable[[Dict[str, Any]], bool] | None = None) -> Dict[str, Any]:
  """Trains from scratch or resumes from the latest checkpoint in workdir; returns final metrics.
  The batch is sharded over `mesh` (default: every device). stop_when(evaluation) -> True ends the
  run after that evaluation, with a checkpoint of that step (e.g. a target accuracy reached)."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  models = models_lib.build(resolved(config, mesh))  # validates the config, once
  config = models.config
  parallel.check_divisible(config.batch_size, mesh, 'batch_size')
  parallel.check_divisible(config.eval_batch_size, mesh, 'eval_batch_size')
  workdir = pathlib.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f'workdir {workdir} exists and is not a directory')
  checks.check_resumable(workdir, config)
  scene = models.scene
  train_source, eval_source = scene.sources(log)  # bad data fail here, before the workdir is written
  if len(train_source) < config.batch_size:
    raise ValueError(f'config.batch_size={config.batch_size} exceeds the {len(train_source)} training examples')
  workdir.mkdir(parents=True, exist_ok=True)
  lead = distributed.is_lead()  # the one process (of several) that writes summaries and history
  if lead:
    metrics_lib.save_config(config, workdir)

  init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
  state = steps.create_train_state(models, init_key, mesh)
  checkpointer = checkpoints.Checkpointer(workdir, config.max_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
    log(f'resumed from the checkpoint at step {int(state.step)}')
  start_step = int(state.step)

  train_step = steps.make_train_step(models, mesh)
  eval_step = steps.make_eval_step(models, mesh, config.eval_importance_samples)
  pictures = pictures_lib.Pictures(models)  # a grid of the first held-out scenes at every evaluation
  picture_scenes = eval_source.__getitems__(range(min(pictures_lib.SUMMARY_IMAGES, len(eval_source))))
  processes = f' in {jax.process_count()} processes' if jax.process_count() > 1 else ''
  log(f'{mesh.devices.size} device(s) ({jax.devices()[0].platform}){processes}, global batch {config.batch_size}')
  writer = metrics_lib.SummaryWriter(workdir, writes=lead)
  history = metrics_lib.History(workdir, resume_step=start_step, writes=lead)
  max_count = scenes.max_count(config)
  batches = pipeline.train_batches(train_source, config.batch_size, config.data.train_seed, start_step)
  local = parallel.process_slice(config.batch_size)  # this process's share of each global batch

  train_seconds = history.train_seconds()
  interval_start, interval_steps = time.time(), 0
  result: Dict[str, Any] = {}
  for step in range(start_step, config.num_train_steps):
    batch = next(batches)
    batch = parallel.put_batch({k: batch[k][local] for k in ('image', 'count')}, mesh)
    state, step_metrics = train_step(state, batch['image'], batch['count'], train_key)
    interval_steps += 1
    done, stop = step + 1, False
    if done % config.log_every_steps == 0 or done == config.num_train_steps:
      step_metrics = jax.device_get(step_metrics)  # waits for the step: timing below is honest
      elapsed = time.time() - interval_start
      train_seconds += elapsed
      step_metrics['steps_per_second'] = interval_steps / elapsed
      step_metrics['images_per_second'] = interval_steps * config.batch_size / elapsed
      check_nonfinite(state, config, checkpointer, log)
      writer.scalars(done, step_metrics)
      log(metrics_lib.progress_line(done, config.num_train_steps, step_metrics, train_seconds))
      interval_start, interval_steps = time.time(), 0
    if done % config.eval_every_steps == 0 or done == config.num_train_steps:
      pause = time.time()
      result = evaluation.evaluate(eval_step, steps.eval_params(state, config), eval_source, config.eval_batch_size,
                                   jax.random.fold_in(eval_key, done), max_count, scene.all_evaluators(), mesh)
      writer.scalars(done, {f'eval/{name}': v for name, v in result.items() if isinstance(v, float)})
      writer.image(done, 'eval/pictures',
                   pictures(steps.eval_params(state, config), picture_scenes['image'], picture_scenes['count']))
      history.append(dict(kind='eval', step=done, train_seconds=round(train_seconds, 2),
                          **{name: np.asarray(v).tolist() for name, v in result.items()}))
      log(f'eval step {done}: ' + metrics_lib.format_evaluation(result, f'(train time {train_seconds:.0f}s)'))
      interval_start += time.time() - pause  # evaluation time is not training time
      stop = stop_when is not None and stop_when(result)
    if done % config.checkpoint_every_steps == 0 or done == config.num_train_steps or stop:
      check_nonfinite(state, config, checkpointer, log)
      checkpointer.save(done, state)
      history.append(dict(kind='checkpoint', step=done, train_seconds=round(train_seconds, 2)))
    if stop:
      log(f'stopped at step {done}: stop_when is met')
      break
  checkpointer.close()
  writer.close()
  return dict(step=int(state.step), **result)
