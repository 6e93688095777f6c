"""Training batches from any random-access source (len / getitem, optionally getitems).

The batch at training step t is a pure function of (seed, t): epoch e = t // steps_per_epoch
uses the permutation `default_rng([seed, e])`, and step t takes its slice. A run resumed at step
t therefore sees exactly the batches an uninterrupted run would have seen.
"""
from typing import Dict, Iterator

import numpy as np

from air_jax.data.sources import stack_examples


def batch_indices(step: int, batch_size: int, num_examples: int, seed: int) -> np.ndarray:
  """Indices of the examples of the batch at `step` (the last partial batch of an epoch is dropped)."""
  steps_per_epoch = num_examples // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {batch_size} exceeds the {num_examples} examples of the source')
  epoch, position = divmod(int(step), steps_per_epoch)
  permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return permutation[position * batch_size:(position + 1) * batch_size]


def get_batch(source, indices) -> Dict[str, np.ndarray]:
  """Stacked examples at indices, through the source's getitems when it has one."""
  if hasattr(source, '__getitems__'):
    batch = source.__getitems__(list(indices))
    if isinstance(batch, dict):
      return batch
    return stack_examples(batch)
  return stack_examples([source[int(i)] for i in indices])


def train_batches(source, batch_size: int, seed: int, start_step: int = 0) -> Iterator[Dict[str, np.ndarray]]:
  """Endless batches for steps start_step, start_step + 1, ..."""
  step = start_step
  while True:
    yield get_batch(source, batch_indices(step, batch_size, len(source), seed))
    step += 1


def eval_batches(source, batch_size: int) -> Iterator[Dict[str, np.ndarray]]:
  """One pass in order; the last batch may be short."""
  for start in range(0, len(source), batch_size):
    yield get_batch(source, range(start, min(start + batch_size, len(source))))
