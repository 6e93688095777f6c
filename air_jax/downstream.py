"""Downstream tasks on Multi-MNIST scenes (Eslami et al. 2016, Sec. 3.1.2, "representational power").

Two tasks, labelled from a scene's digit labels [B, M] (padded with -1) and ink boxes [B, M, 4] =
(top, left, height, width):
  sum    the sum of the digits present: 0 for an empty scene; classes 0 .. 9 M.
  order  1 if the digits, read left to right, are in ascending order, else 0. "Left to right" sorts
         digits by the horizontal centre of their ink box (left + width / 2; ties by the vertical
         centre). "Ascending" is non-decreasing: equal digits (3, 3) count as ascending. Scenes with
         0 or 1 digits are trivially ascending (1).

Classifiers, all trained with AdamW on the same labelled scenes and the task labels only:
  SlotClassifier       on AIR's per-step latents (q's modes). AIR's step order is arbitrary, so
                       `slot_features` sorts the slots by z_where's x (left to right), absent steps
                       last and zeroed; one MLP shared by the slots embeds each [z_pres, z_where,
                       z_what], and an MLP head reads the concatenated embeddings.
  DigitSlotClassifier  the same sorted slots; the shared MLP gives each present slot a distribution
                       over the digits 0-9, and the task's answer is computed from those exactly:
                       the sum's distribution is their convolution (permutation invariant), the
                       probability of "ascending" a pass over the slots left to right.
  CNN                  a small conv net on the 50x50 pixels.
"""
import functools
import time
from typing import Callable, Dict, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from air_jax import parallel
from air_jax.data import sources

TASKS = ('sum', 'order')


def num_classes(task: str, max_objects: int) -> int:
  if task == 'sum':
    return 9 * max_objects + 1
  if task == 'order':
    return 2
  raise ValueError(f'unknown task {task!r}: use one of {TASKS}')


def left_to_right(labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """Digit labels [B, M] reordered left to right by their boxes' centres; padding (-1) last."""
  labels, boxes = np.asarray(labels), np.asarray(boxes, np.float64)
  present = labels >= 0
  centre_x = boxes[..., 1] + boxes[..., 3] / 2.0
  centre_y = boxes[..., 0] + boxes[..., 2] / 2.0
  key_x = np.where(present, centre_x, np.inf)
  key_y = np.where(present, centre_y, np.inf)
  order = np.lexsort((key_y, key_x), axis=-1)  # last key is primary: x, then y
  return np.take_along_axis(labels, order, axis=-1)


def digit_sum(labels: np.ndarray) -> np.ndarray:
  """labels [B, M] (padded with -1) -> int32 [B]: the sum of the digits present."""
  labels = np.asarray(labels)
  return np.where(labels >= 0, labels, 0).sum(-1).astype(np.int32)


def ascending(labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """labels [B, M], boxes [B, M, 4] -> int32 [B]: 1 if the digits left to right never decrease
  (0- and 1-digit scenes: 1)."""
  ordered = left_to_right(labels, boxes)
  both = (ordered[..., :-1] >= 0) & (ordered[..., 1:] >= 0)  # adjacent pairs of present digits
  return np.all(~both | (ordered[..., 1:] >= ordered[..., :-1]), axis=-1).astype(np.int32)


def task_labels(task: str, labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  if task == 'sum':
    return digit_sum(labels)
  if task == 'order':
    return ascending(labels, boxes)
  raise ValueError(f'unknown task {task!r}: use one of {TASKS}')


def slot_features(z_pres: jax.Array, z_where: jax.Array, z_what: jax.Array) -> jax.Array:
  """AIR latents -> per-slot features [B, N, 1 + 3 + D] = [z_pres, z_where, z_what], present slots
  sorted left to right by z_where's x, absent slots last and all zeros."""
  chex.assert_rank([z_pres, z_where, z_what], [2, 3, 3])
  present = z_pres > 0
  order = jnp.argsort(jnp.where(present, z_where[..., 1], jnp.inf), axis=-1, stable=True)
  slots = jnp.concatenate([z_pres[..., None], z_where, z_what], axis=-1)
  slots = jnp.where(present[..., None], slots, 0.0)
  return jnp.take_along_axis(slots, order[..., None], axis=1)


def make_encoder(models, batch_size: int = 500):
  """-> encode(params, uint8 images [B, H, W], progress=None) -> float32 slot features
  [B, N, 1 + 3 + D] from AIR's modes (compiled once, for batches padded to batch_size);
  models: air_jax.models.build of the AIR run's config."""

  @jax.jit
  def features(params, batch):
    out = models.core.apply({'params': params}, sources.to_unit_interval(batch), use_mode=True)
    return slot_features(out.z_pres, out.objects['z_where'], out.objects['z_what'])

  def encode(params, images: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    def chunk_features(chunk, start):
      if progress is not None:
        progress(min(start + batch_size, len(images)), len(images))
      return features(params, chunk)
    return parallel.map_padded(chunk_features, images, batch_size)

  return encode


class Standardizer:
  """Per-feature mean and scale of present slots (fitted on unlabelled latents); absent slots stay 0."""

  def __init__(self, slots: np.ndarray):
    present = slots[..., 0] > 0
    rows = slots[present] if present.any() else slots.reshape(-1, slots.shape[-1])
    self.mean = rows.mean(0)
    self.scale = np.maximum(rows.std(0), 1e-3)
    self.mean[0], self.scale[0] = 0.0, 1.0  # z_pres stays 0 / 1

  def __call__(self, slots: np.ndarray) -> np.ndarray:
    present = slots[..., :1] > 0
    return np.where(present, (slots - self.mean) / self.scale, 0.0).astype(np.float32)


class SlotClassifier(nn.Module):
  """slots [B, N, F] (sorted left to right, absent slots zero) -> logits [B, num_classes]: one MLP
  shared by all slots embeds each present slot; a head reads the concatenated embeddings (slot
  order = left to right)."""
  num_classes: int
  hidden: int = 256

  @nn.compact
  def __call__(self, slots: jax.Array) -> jax.Array:
    chex.assert_rank(slots, 3)
    present = (slots[..., :1] > 0).astype(slots.dtype)
    h = nn.relu(nn.Dense(self.hidden, name='slot_1')(slots))
    h = nn.relu(nn.Dense(self.hidden, name='slot_2')(h)) * present
    h = h.reshape(h.shape[0], -1)
    h = nn.relu(nn.Dense(self.hidden, name='head_1')(h))
    return nn.Dense(self.num_classes, name='head_2')(h)


def sum_distribution(digit_probs: jax.Array, present: jax.Array) -> jax.Array:
  """P(sum of the present slots' digits = s), s = 0 .. 9 N, for independent per-slot digits.
  digit_probs [B, N, 10], present [B, N] in {0, 1} -> [B, 9 N + 1]."""
  batch, steps, _ = digit_probs.shape
  dist = jnp.zeros((batch, 9 * steps + 1)).at[:, 0].set(1.0)
  for i in range(steps):
    added = sum(digit_probs[:, i, d, None] * jnp.roll(dist, d, axis=-1) for d in range(10))  # no wrap:
    dist = present[:, i, None] * added + (1.0 - present[:, i, None]) * dist  # sums stay <= 9 (i + 1)
  return dist


def ascending_probability(digit_probs: jax.Array, present: jax.Array) -> jax.Array:
  """P(the present slots' digits, in slot order, never decrease) for independent per-slot digits
  (0 or 1 present slots: 1). digit_probs [B, N, 10], present [B, N] -> [B]."""
  none = jnp.ones(digit_probs.shape[0])          # P(no digit yet)
  last = jnp.zeros(digit_probs.shape[::2])       # P(non-decreasing so far and the last digit is v)
  for i in range(digit_probs.shape[1]):
    below = none[:, None] + jnp.cumsum(last, axis=-1)  # P(ok so far and the last digit <= v)
    m = present[:, i, None]
    last = m * digit_probs[:, i] * below + (1.0 - m) * last
    none = (1.0 - m[:, 0]) * none
  return none + last.sum(-1)


class DigitSlotClassifier(nn.Module):
  """slots [B, N, F] (sorted left to right, absent slots zero) -> logits [B, num_classes] through
  per-object digits: one MLP shared by all slots gives each present slot a distribution over the
  digits 0-9, and the task's answer is computed from those exactly (assuming independent slots):
  'sum' convolves them (order-free), 'order' runs through the slots left to right. Trained on task
  labels only; the logits are log-probabilities."""
  task: str
  num_classes: int
  hidden: int = 256

  @nn.compact
  def __call__(self, slots: jax.Array) -> jax.Array:
    chex.assert_rank(slots, 3)
    present = (slots[..., 0] > 0).astype(jnp.float32)
    h = nn.relu(nn.Dense(self.hidden, name='slot_1')(slots))
    h = nn.relu(nn.Dense(self.hidden, name='slot_2')(h))
    digit_probs = nn.softmax(nn.Dense(10, name='digit')(h))
    if self.task == 'sum':
      dist = sum_distribution(digit_probs, present)[:, :self.num_classes]
      return jnp.log(jnp.maximum(dist, 1e-12))
    if self.task == 'order':
      p = jnp.clip(ascending_probability(digit_probs, present), 1e-12, 1.0 - 1e-7)
      return jnp.stack([jnp.log1p(-p), jnp.log(p)], axis=-1)
    raise ValueError(f'unknown task {self.task!r}: use one of {TASKS}')


class CNN(nn.Module):
  """uint8 or [0, 1] images [B, H, W] -> logits [B, num_classes]: strided convolutions (5x5 then
  3x3, stride 2, ReLU; 50x50 -> 25 -> 13 -> 7), then a hidden dense layer. Strides, not max pools,
  keep it cheap enough for the sweep on a CPU (measured: ~2.2x faster per step than 3x3 convs with
  2x2 pools and channels (8, 16, 32))."""
  num_classes: int
  channels: Sequence[int] = (16, 32, 64)
  hidden: int = 256

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    chex.assert_rank(images, 3)
    x = sources.to_unit_interval(images)[..., None]
    for i, c in enumerate(self.channels):
      x = nn.relu(nn.Conv(c, (5, 5) if i == 0 else (3, 3), strides=2, name=f'conv_{i}')(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, name='hidden')(x))
    return nn.Dense(self.num_classes, name='logits')(x)


def make_optimizer(num_steps: int, learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
  """AdamW with the learning rate cosine-decayed to 0 over num_steps (no early stopping needed)."""
  return optax.adamw(optax.cosine_decay_schedule(learning_rate, num_steps), weight_decay=weight_decay)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _train_step(module: nn.Module, hparams: tuple, params, opt_state, x, y):
  """One AdamW step on the mean softmax cross-entropy. Static (module, hparams): runs of the same
  classifier and batch shape share one compiled step."""
  def loss_fn(p):
    return optax.softmax_cross_entropy_with_integer_labels(module.apply({'params': p}, x), y).mean()
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = make_optimizer(*hparams).update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, static_argnums=0)
def _argmax(module: nn.Module, params, x):
  return jnp.argmax(module.apply({'params': params}, x), -1)


def fit(module: nn.Module, inputs: np.ndarray, targets: np.ndarray, *, num_steps: int,
        batch_size: int, learning_rate: float, weight_decay: float, seed: int):
  """Trains module on (inputs, targets) for num_steps AdamW steps (softmax cross-entropy); batches
  of min(batch_size, n) walk through shuffled epochs. Returns (params, mean loss of about the last
  epoch)."""
  n = len(inputs)
  if n == 0 or len(targets) != n:
    raise ValueError(f'fit needs as many targets as inputs (> 0), got {n} and {len(targets)}')
  batch = min(batch_size, n)
  hparams = (int(num_steps), float(learning_rate), float(weight_decay))
  params = module.init(jax.random.key(seed), inputs[:1])['params']
  opt_state = make_optimizer(*hparams).init(params)
  rng = np.random.default_rng(seed)
  order, position, losses = rng.permutation(n), 0, []
  for _ in range(num_steps):
    if position + batch > n:
      order, position = rng.permutation(n), 0
    index = order[position:position + batch]
    position += batch
    params, opt_state, loss = _train_step(module, hparams, params, opt_state, inputs[index], targets[index])
    losses.append(loss)
  tail = max(1, n // batch)
  return params, float(np.mean(jax.device_get(losses[-tail:])))


def predict(module: nn.Module, params, inputs: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """Argmax class of each input, int32 [B] (every batch padded to batch_size: one compiled shape)."""
  return parallel.map_padded(lambda chunk, _: _argmax(module, params, chunk), inputs, batch_size).astype(np.int32)


def train_and_score(module: nn.Module, train_inputs: np.ndarray, train_targets: np.ndarray,
                    eval_inputs: np.ndarray, eval_targets: np.ndarray, eval_counts: np.ndarray,
                    **fit_args) -> Dict[str, float]:
  """fit, then accuracy on the held-out set, overall and per digit count."""
  start = time.time()
  params, train_loss = fit(module, train_inputs, train_targets, **fit_args)
  correct = predict(module, params, eval_inputs) == eval_targets
  train_correct = predict(module, params, train_inputs) == train_targets
  result = dict(accuracy=float(correct.mean()), train_accuracy=float(train_correct.mean()),
                train_loss=train_loss, seconds=round(time.time() - start, 1))
  for count in np.unique(eval_counts):
    result[f'accuracy_count{int(count)}'] = float(correct[eval_counts == count].mean())
  return result
