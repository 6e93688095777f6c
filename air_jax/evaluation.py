"""Evaluation of a model on a held-out source, and restoring the model parameters to evaluate."""
from typing import Any, Dict, Sequence

import jax
import numpy as np

from air_jax import checkpoints
from air_jax import evaluators as evaluators_lib
from air_jax import parallel
from air_jax import steps
from air_jax.data import pipeline


def evaluate(eval_step, params, source, batch_size: int, key: jax.Array, max_count: int,
             evaluators: Sequence[str], mesh=None) -> Dict[str, Any]:
  """Over a random-access source: the mean ELBO (and importance_bound, where the eval step gives
  it), the mean squared error of the reconstruction (the canvas of q's modes), and the figures of the named air_jax.evaluators (SceneKind.all_evaluators)."""
  if not len(source):
    raise ValueError('the evaluation source has no examples')
  mesh = mesh if mesh is not None else parallel.make_mesh()
  scenes, inferred = [], []
  for i, batch in enumerate(pipeline.eval_batches(source, batch_size)):
    run = lambda images: eval_step(params, parallel.put_batch({'image': images[parallel.process_slice(batch_size)]},
                                                               mesh)['image'], jax.random.fold_in(key, i))
    inferred.append(parallel.run_padded(run, batch['image'], batch_size, to_host=parallel.to_host))
    scenes.append({k: v for k, v in batch.items() if k != 'image'})
  scenes = {k: np.concatenate([s[k] for s in scenes]) for k in scenes[0]}
  inferred = {k: np.concatenate([r[k] for r in inferred]) for k in inferred[0]}
  result = dict(elbo=float(inferred['elbo'].mean()), reconstruction_mse=float(inferred['reconstruction_mse'].mean()))
  if 'importance_bound' in inferred:  # config.eval_importance_samples > 0
    result['importance_bound'] = float(inferred['importance_bound'].mean())
  result.update(evaluators_lib.run(evaluators, scenes, inferred, max_count))
  return result


def restore_model_params(workdir, models):
  """Model params to evaluate (eval_params) of the latest checkpoint in an existing
  <workdir>/checkpoints, or None if it has none; restored against shapes from jax.eval_shape
  (nothing is initialised or written)."""
  checkpointer = checkpoints.Checkpointer(workdir, create=False)
  try:
    if checkpointer.latest_step() is None:
      return None
    target = jax.eval_shape(lambda: steps.init_state(models, jax.random.key(0))).params['model']
    return checkpointer.restore_params(target, subtree='ema_params' if steps.uses_ema(models.config) else 'params/model')
  finally:
    checkpointer.close()
