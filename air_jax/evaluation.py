"""Evaluation of a model on a held-out source, and restoring the model parameters to evaluate."""
from typing import Any, Dict

import jax
import ml_collections
import numpy as np

from air_jax import checkpoints
from air_jax import metrics as metrics_lib
from air_jax import parallel
from air_jax import steps
from air_jax.data import multi_mnist
from air_jax.data import pipeline


def evaluate(eval_step, params, source, batch_size: int, key: jax.Array,
             max_count: int, mesh=None) -> Dict[str, Any]:
  """Over a random-access source: the mean ELBO, the mean squared error of the reconstruction (the
  canvas of q's modes), the inferred counts' distribution (steps_used [max_count + 1]: the share
  of images whose modes use c steps; mean_steps) and, where the source's counts are known (>= 0),
  the count accuracy and the per-count confusion; for sources of digit layouts (boxes and labels:
  Multi-MNIST) also accuracy_by_layout (multi_mnist.accuracy_by_layout: by the nearest pair's
  distance, and scenes holding a 1)."""
  if not len(source):
    raise ValueError('the evaluation source has no examples')
  mesh = mesh if mesh is not None else parallel.make_mesh()
  predicted, true, elbos, errors, layouts = [], [], [], [], []
  for i, batch in enumerate(pipeline.eval_batches(source, batch_size)):
    n = len(batch['image'])
    images = batch['image']
    if n < batch_size:  # pad the last batch: one compiled shape
      images = np.concatenate([images, np.zeros((batch_size - n,) + images.shape[1:], images.dtype)])
    images = parallel.put_batch({'image': images[parallel.process_slice(batch_size)]}, mesh)['image']
    result = parallel.to_host(eval_step(params, images, jax.random.fold_in(key, i)))
    predicted.append(result['count'][:n])
    elbos.append(result['elbo'][:n])
    errors.append(result['reconstruction_mse'][:n])
    true.append(batch['count'])
    if 'boxes' in batch and 'labels' in batch:
      layouts.append((batch['boxes'], batch['labels']))
  predicted, true = np.concatenate(predicted), np.concatenate(true)
  steps_used = np.bincount(np.clip(predicted, 0, max_count), minlength=max_count + 1) / len(predicted)
  result = dict(elbo=float(np.concatenate(elbos).mean()), reconstruction_mse=float(np.concatenate(errors).mean()),
                mean_steps=float(predicted.mean()), steps_used=steps_used)
  if (true >= 0).all():
    result.update(count_accuracy=float((predicted == true).mean()),
                  confusion=metrics_lib.confusion_matrix(true, predicted, max_count))
    if layouts:
      boxes, labels = (np.concatenate(parts) for parts in zip(*layouts))
      result['accuracy_by_layout'] = multi_mnist.accuracy_by_layout(true, predicted, boxes, labels)
  elif (true >= 0).any():
    raise ValueError('the evaluation source mixes known counts (>= 0) with unknown ones (-1)')
  return result


def restore_model_params(workdir, config: ml_collections.ConfigDict):
  """Model params to evaluate (eval_params) of the latest checkpoint in an existing
  <workdir>/checkpoints, or None if it has none; restored against shapes from jax.eval_shape
  (nothing is initialised or written)."""
  checkpointer = checkpoints.Checkpointer(workdir, create=False)
  try:
    if checkpointer.latest_step() is None:
      return None
    target = jax.eval_shape(lambda: steps.init_state(config, jax.random.key(0))).params['model']
    return checkpointer.restore_params(target, subtree='ema_params' if steps.uses_ema(config) else 'params/model')
  finally:
    checkpointer.close()
