"""Multi-MNIST scenes: MNIST digits (28x28, or resized to digit_size) at random, non-overlapping
positions on a blank canvas.

Example i of a `MultiMNIST(seed=s)` depends only on (s, i): its random stream is
`numpy.random.default_rng([s, i])`. The number of digits is uniform over `counts`; digits are
placed by rejection sampling so that their ink bounding boxes do not intersect. Each example
carries `image` uint8 [H, W], `count` int32, and per digit (padded with -1 up to `max_objects`)
`boxes` int32 [max_objects, 4] = (top, left, height, width) of the ink in canvas pixels and
`labels` int32 [max_objects].
"""
import hashlib
from typing import Dict, Sequence

import numpy as np

from air_jax.data import sources

DIGIT_SIZE = 28
MAX_PLACEMENT_TRIES = 200  # positions tried per digit before new digits are drawn
MAX_DRAWS = 1000           # draws of digits per example before the layout is declared impossible
COMPOSER_VERSION = 1  # bump when the composing rule changes: names the cached scene files


def resize_digits(digits: np.ndarray, size: int) -> np.ndarray:
  """uint8 [N, S, S] -> uint8 [N, size, size], each digit resampled bilinearly (antialiased when
  shrinking: Pillow's resize)."""
  if size == digits.shape[1]:
    return digits
  from PIL import Image  # Pillow: a dependency of matplotlib's
  return np.stack([np.asarray(Image.fromarray(d).resize((size, size), Image.Resampling.BILINEAR))
                   for d in digits])


def ink_boxes(digits: np.ndarray) -> np.ndarray:
  """Tight boxes of nonzero pixels. digits: uint8 [N, S, S] -> int32 [N, 4] (top, left, h, w)."""
  rows, cols = digits.any(axis=2), digits.any(axis=1)
  def span(mask):
    first = mask.argmax(axis=1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    return first, last - first + 1
  top, height = span(rows)
  left, width = span(cols)
  return np.stack([top, left, height, width], axis=1).astype(np.int32)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Whether boxes (top, left, height, width) share any pixel; a, b: [..., 4], broadcast."""
  apart = ((a[..., 0] + a[..., 2] <= b[..., 0]) | (b[..., 0] + b[..., 2] <= a[..., 0])
           | (a[..., 1] + a[..., 3] <= b[..., 1]) | (b[..., 1] + b[..., 3] <= a[..., 1]))
  return ~apart


class MultiMNIST:
  """Random-access source of Multi-MNIST scenes (len / getitem / getitems). digit_size: the side
  (px) the 28x28 MNIST digits are resized to before composing (21 is about Pyro's Multi-MNIST,
  whose digits are shrunk ~1.3x)."""

  def __init__(self, digits: np.ndarray, labels: np.ndarray, *, counts: Sequence[int] = (0, 1, 2),
               num_examples: int, seed: int, canvas_size: int = 50, max_objects: int | None = None,
               digit_size: int = DIGIT_SIZE):
    counts = tuple(int(c) for c in counts)
    sources.check_counts('counts', counts)
    if not 4 <= digit_size <= 4 * DIGIT_SIZE:
      raise ValueError(f'digit_size must be between 4 and {4 * DIGIT_SIZE} px, got {digit_size}')
    if canvas_size < digit_size:
      raise ValueError(f'canvas_size must be at least {digit_size}, got {canvas_size} (digits of {digit_size} px)')
    if digits.ndim != 3 or digits.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE) or digits.dtype != np.uint8:
      raise ValueError(f'digits must be uint8 [N, 28, 28], got {digits.dtype} {digits.shape}')
    if num_examples <= 0:
      raise ValueError(f'num_examples must be positive, got {num_examples}')
    self.digit_size = int(digit_size)
    self.digits, self.labels = resize_digits(digits, self.digit_size), np.asarray(labels, np.int32)
    self.digits_digest = hashlib.sha1(self.digits.tobytes() + self.labels.tobytes()).hexdigest()[:10]
    self.ink = ink_boxes(self.digits)
    self.counts, self.num_examples, self.seed = counts, int(num_examples), int(seed)
    self.canvas_size = int(canvas_size)
    self.max_objects = max(counts) if max_objects is None else int(max_objects)
    if self.max_objects < max(counts):
      raise ValueError(f'max_objects={self.max_objects} is below the largest count {max(counts)}')

  def __len__(self) -> int:
    return self.num_examples

  def _place(self, rng: np.random.Generator, count: int):
    """Digit indices and frame corners whose ink boxes are pairwise disjoint.

    Per digit, up to MAX_PLACEMENT_TRIES corners are tried in order, the first that fits is taken.
    They are drawn at once and checked together; the generator is then rewound and advanced by
    exactly the tries used, so the stream (and every scene) is that of drawing one try at a time."""
    span = self.canvas_size - self.digit_size + 1
    for _ in range(MAX_DRAWS):
      chosen = rng.integers(0, len(self.digits), size=count)
      corners, placed = [], []
      for d in chosen:
        state = rng.bit_generator.state
        tries = rng.integers(0, span, size=(MAX_PLACEMENT_TRIES, 2))
        boxes = np.concatenate([tries + self.ink[d, :2], np.broadcast_to(self.ink[d, 2:], tries.shape)], 1)
        fits = ~boxes_overlap(boxes[:, None], np.asarray(placed).reshape(-1, 4)).any(axis=1)
        first = int(fits.argmax()) if fits.any() else MAX_PLACEMENT_TRIES - 1
        rng.bit_generator.state = state
        rng.integers(0, span, size=(first + 1, 2))  # consume exactly the tries made
        if not fits[first]:
          break  # this digit does not fit beside the others: draw new digits
        corners.append(tries[first])
        placed.append(boxes[first].astype(np.int32))
      if len(placed) == count:
        return chosen, corners, placed
    raise ValueError(f'could not place {count} digits without overlap on a {self.canvas_size}x'
                     f'{self.canvas_size} canvas in {MAX_DRAWS} draws: use fewer digits or a larger canvas')

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(f'index {index} out of range for {self.num_examples} examples')
    rng = np.random.default_rng([self.seed, index])
    count = self.counts[rng.integers(len(self.counts))]
    chosen, corners, placed = self._place(rng, count)
    image = np.zeros((self.canvas_size, self.canvas_size), np.uint8)
    boxes = np.full((self.max_objects, 4), -1, np.int32)
    labels = np.full((self.max_objects,), -1, np.int32)
    for k, (d, (top, left), box) in enumerate(zip(chosen, corners, placed)):
      window = image[top:top + self.digit_size, left:left + self.digit_size]
      np.maximum(window, self.digits[d], out=window)
      boxes[k], labels[k] = box, self.labels[d]
    return dict(image=image, count=np.int32(count), boxes=boxes, labels=labels)

  def __getitems__(self, indices: Sequence[int]) -> Dict[str, np.ndarray]:
    return sources.stack_examples([self[i] for i in indices])

  def cache_name(self, split: str) -> str:
    return cache_name(self, split)


# Bins (px) of the distance between the ink-box centres of a scene's two nearest digits.
PAIR_DISTANCE_BINS = (0, 10, 15, 20, 25, np.inf)


def nearest_pair_distance(boxes: np.ndarray) -> np.ndarray:
  """boxes int [B, K, 4] (top, left, h, w; -1 rows absent) -> float [B]: the distance (px) between
  the ink-box centres of each scene's two nearest digits; inf with fewer than two."""
  boxes = np.asarray(boxes, np.float64)
  centres = boxes[..., :2] + boxes[..., 2:] / 2  # [B, K, 2]
  present = boxes[..., 2] > 0
  distance = np.linalg.norm(centres[:, :, None] - centres[:, None, :], axis=-1)
  distance[~(present[:, :, None] & present[:, None, :])] = np.inf
  distance[:, np.arange(boxes.shape[1]), np.arange(boxes.shape[1])] = np.inf
  return distance.min(axis=(1, 2)) if boxes.shape[1] > 1 else np.full(len(boxes), np.inf)


def accuracy_by_layout(true, predicted, boxes, labels) -> Dict[str, tuple]:
  """Count accuracy by what a scene holds: {'nearest pair LO-HI px': (accuracy, scenes)} over the
  scenes with >= 2 digits, by nearest_pair_distance in PAIR_DISTANCE_BINS, and {'holding a 1':
  (accuracy, scenes)}; groups with no scene are left out."""
  correct = np.asarray(true) == np.asarray(predicted)
  distance = nearest_pair_distance(boxes)
  groups = {}
  for lo, hi in zip(PAIR_DISTANCE_BINS[:-1], PAIR_DISTANCE_BINS[1:]):
    groups[f'nearest pair {lo}-{hi} px'] = (distance >= lo) & (distance < hi)
  groups['holding a 1'] = (np.asarray(labels) == 1).any(axis=1)
  return {name: (float(correct[mask].mean()), int(mask.sum())) for name, mask in groups.items() if mask.any()}


def cache_name(scenes: MultiMNIST, split: str) -> str:
  """File name that pins down every example of `scenes` (digits from MNIST's `split`)."""
  counts = '_'.join(map(str, scenes.counts))
  return (f'multi_mnist_v{COMPOSER_VERSION}_{split}_counts{counts}_n{scenes.num_examples}'
          f'_seed{scenes.seed}_canvas{scenes.canvas_size}_max{scenes.max_objects}'
          f'_digits{scenes.digits_digest}.npz')
