"""Held-out metrics as plug-ins, looked up by name (as big_vision's evaluators).

An evaluator reads the held-out scenes' fields (everything a source gives but the image: count,
and the kind's truth such as boxes and labels) and what the eval step inferred of them (count,
z_pres_prob, the scene kind's summary) and returns named figures:

    evaluator(scenes: {name: [M, ...]}, inferred: {name: [M, ...]}, max_count: int) -> {name: value}

'steps' and 'counts' serve every kind (SceneKind.all_evaluators says which run); a kind registers
its own in its module with @register (Multi-MNIST's accuracy by layout, 3D's matched objects).
An evaluator registered count_only reads no inferred field but the count: any reading of the count
can be scored with it (air_jax.evaluate scores the count of the importance weights beside q's mode).
"""
from typing import Any, Callable, Dict, Sequence, Set

import numpy as np

from air_jax import metrics

Evaluator = Callable[[Dict[str, np.ndarray], Dict[str, np.ndarray], int], Dict[str, Any]]
REGISTRY: Dict[str, Evaluator] = {}
COUNT_ONLY: Set[str] = set()  # the names of evaluators that read only inferred['count']


def register(name: str, count_only: bool = False):
  """Decorator: registers an evaluator under name (a name is registered once); count_only: it
  reads no inferred field but 'count'."""
  def add(evaluator: Evaluator) -> Evaluator:
    if name in REGISTRY:
      raise ValueError(f'an evaluator named {name!r} is registered already')
    REGISTRY[name] = evaluator
    if count_only:
      COUNT_ONLY.add(name)
    return evaluator
  return add


def run(names: Sequence[str], scenes: Dict[str, np.ndarray], inferred: Dict[str, np.ndarray],
        max_count: int) -> Dict[str, Any]:
  """The figures of the named evaluators, merged."""
  result = {}
  for name in names:
    if name not in REGISTRY:
      raise ValueError(f'no evaluator named {name!r} (registered: {sorted(REGISTRY)})')
    result.update(REGISTRY[name](scenes, inferred, max_count))
  return result


@register('steps')
def steps_used(scenes, inferred, max_count):
  """steps_used [max_count + 1]: the share of images whose modes use c steps; mean_steps."""
  predicted = inferred['count']
  return dict(steps_used=np.bincount(np.clip(predicted, 0, max_count), minlength=max_count + 1) / len(predicted),
              mean_steps=float(predicted.mean()))


@register('counts', count_only=True)
def count_accuracy(scenes, inferred, max_count):
  """count_accuracy and the confusion [max_count + 1]^2 (row: true count) against the scenes' counts."""
  true, predicted = scenes['count'], inferred['count']
  if (true < 0).any():
    raise ValueError('the evaluation source has unknown counts (-1): its scene kind reports the steps used only')
  return dict(count_accuracy=float((predicted == true).mean()),
              confusion=metrics.confusion_matrix(true, predicted, max_count))
