"""Evaluation of a model on a held-out source, and restoring the model parameters to evaluate."""
from typing import Any, Dict

import jax
import ml_collections
import numpy as np

from air_jax import checkpoints
from air_jax import metrics as metrics_lib
from air_jax import parallel
from air_jax import steps
from air_jax.data import pipeline


def evaluate(eval_step, params, source, batch_size: int, key: jax.Array,
             max_count: int, mesh=None) -> Dict[str, Any]:
  """Count accuracy, per-count confusion and mean ELBO over a random-access source."""
  mesh = mesh if mesh is not None else parallel.make_mesh()
  predicted, true, elbos = [], [], []
  for i, batch in enumerate(pipeline.eval_batches(source, batch_size)):
    n = len(batch['image'])
    images = batch['image']
    if n < batch_size:  # pad the last batch: one compiled shape
      images = np.concatenate([images, np.zeros((batch_size - n,) + images.shape[1:], images.dtype)])
    images = parallel.put_batch({'image': images[parallel.process_slice(batch_size)]}, mesh)['image']
    result = parallel.to_host(eval_step(params, images, jax.random.fold_in(key, i)))
    predicted.append(result['count'][:n])
    elbos.append(result['elbo'][:n])
    true.append(batch['count'])
  predicted, true = np.concatenate(predicted), np.concatenate(true)
  return dict(count_accuracy=float((predicted == true).mean()), elbo=float(np.concatenate(elbos).mean()),
              confusion=metrics_lib.confusion_matrix(true, predicted, max_count))


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
