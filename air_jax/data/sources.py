"""Random-access sources of scenes (len / getitem / getitems of {'image' uint8 [H, W], 'count', ...}),
held in memory and cached on disk, and the checks and conversions every kind's data shares."""
import os
import pathlib
import tempfile
from typing import Dict, Sequence

import numpy as np


class UnavailableError(Exception):
  """A kind's data or renderer cannot be had here (missing file or system library, no network);
  the message says what is missing and how to get it. Launchers print it as one line."""


def to_unit_interval(images):
  """uint8 0..255 -> float32 0..1; floats pass through as float32 (numpy or jax arrays)."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return images.astype(np.float32)


def check_counts(name: str, counts: Sequence[int], max_steps: int | None = None) -> None:
  """Raises ValueError unless counts is a non-empty set of counts >= 0 (and at most max_steps)."""
  counts = tuple(counts)
  if not counts or min(counts) < 0:
    raise ValueError(f'{name} must be a non-empty set of counts >= 0, got {counts}')
  if max_steps is not None and max(counts) > max_steps:
    raise ValueError(f'{name}={counts} has more objects than config.model.max_steps={max_steps} '
                     'steps can represent')


def stack_examples(examples) -> Dict[str, np.ndarray]:
  """List of per-example dicts -> dict of stacked arrays."""
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class InMemory:
  """A random-access source held as stacked arrays (e.g. composed scenes, or an npz)."""

  def __init__(self, arrays: Dict[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f'arrays must have one length, got {lengths}')
    self.arrays = arrays

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    return {k: v[index] for k, v in self.arrays.items()}

  def __getitems__(self, indices) -> Dict[str, np.ndarray]:
    indices = np.asarray(indices)
    return {k: v[indices] for k, v in self.arrays.items()}


def materialise(source, progress=None, chunk: int = 256) -> InMemory:
  """Composes (or renders) every example of a source once, `chunk` at a time through its
  __getitems__, and keeps them in memory."""
  chunks = []
  for start in range(0, len(source), chunk):
    chunks.append(source.__getitems__(range(start, min(start + chunk, len(source)))))
    if progress is not None:
      progress(start + len(chunks[-1]['image']), len(source))
  return InMemory({k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]})


def materialise_cached(scenes, cache_dir, split: str, progress=None) -> InMemory:
  """materialise(scenes), read from / written to <cache_dir>/<scenes.cache_name(split)> (atomic
  write); scenes: any random-access source with a cache_name (MultiMNIST, Shapes3D)."""
  path = pathlib.Path(cache_dir) / scenes.cache_name(split)
  if path.exists():
    with np.load(path) as f:
      return InMemory({k: f[k] for k in f.keys()})
  source = materialise(scenes, progress)
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix='.tmp', delete=False) as f:
    np.savez(f, **source.arrays)
  os.chmod(f.name, 0o644)
  os.replace(f.name, path)
  return source
