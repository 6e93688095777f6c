"""Importance-weighted bounds on log p(x) (Burda et al. 2016) and the count read from the weights.

With z_1..z_K full draws from q(z | x) (z_pres, the objects' continuous and discrete latents),
    log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)
    L_K     = E[log (1/K) sum_k w_k] <= log p(x),
L_1 is the ELBO and L_K rises with K toward log p(x). Per image, with m_i = the slot was sampled
(cores.CoreOutput.active) and z_i = z_pres_i,
    log p(z) - log q(z | x) = sum_i m_i [log Bern(z_i; prior) - log Bern(z_i; q_i)]
                              + sum_i z_i r_i,
r_i = log p(v_i) - log q(v_i | ...) of slot i's sampled object latents (SceneKind.object_log_ratio).
The likelihood is the objective's (log_likelihood: with likelihood_blur > 0, of the blurred image).

From S draws per image, L_K is estimated for each K dividing S by the mean over the S / K disjoint
groups of K (one group at K = S). The posterior of the count is the weights' share per count,
p(count = c | x) ~ sum_k w_k [count_k = c] / sum_k w_k.
"""
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from air_jax import cores
from air_jax import objectives
from air_jax import parallel
from air_jax.data import sources


def log_weight_of(models, out: cores.CoreOutput, images: jax.Array, prior: float | jax.Array) -> jax.Array:
  """log w [B] of the draw `out` of the core on images [B, H, W] in [0, 1] (differentiable)."""
  objective = models.config.objective
  log_px = objectives.log_likelihood(images, out.canvas, objective.likelihood_scale, objective.likelihood_blur)
  prior_logit = jnp.log(prior) - jnp.log1p(-prior)
  pres = out.active * (objectives.bernoulli_log_prob(out.z_pres, prior_logit)
                       - objectives.bernoulli_log_prob(out.z_pres, out.z_pres_logits))
  objects = out.z_pres * models.scene.object_log_ratio(out)
  return log_px + (pres + objects).sum(-1)


def log_weight(models, params, images: jax.Array, key: jax.Array, prior: float | jax.Array):
  """(log w [B], count [B]) of one draw z ~ q(z | x) per image (images [B, H, W] in [0, 1])."""
  out = models.core.apply({'params': params}, images, rngs={'sample': key})
  return log_weight_of(models, out, images, prior), cores.count_of(out.z_pres)


def importance_bound(models, params, images: jax.Array, key: jax.Array, prior: float | jax.Array, draws: int,
                     draw_limit: int = 50) -> jax.Array:
  """[B] log (1/K) sum_k w_k of K = draws draws per image (traceable: the eval step's), computed in
  chunks of draws_per_call(draws, draw_limit) draws (lax.map) so memory does not grow with K."""
  per_call = draws_per_call(draws, draw_limit)
  keys = jax.random.split(key, draws).reshape(draws // per_call, per_call)

  def chunk(chunk_keys):
    log_w, _ = jax.vmap(lambda k: log_weight(models, params, images, k, prior))(chunk_keys)
    return jax.nn.logsumexp(log_w, 0)

  return jax.nn.logsumexp(jax.lax.map(chunk, keys), 0) - jnp.log(draws)


def make_log_weights_fn(models, draws: int, mesh=None):
  """(params, images [B, H, W] uint8 or float in [0, 1], key) -> (log w [B, draws], count [B, draws]),
  compiled once: `draws` draws per image (vmapped), the batch sharded over the mesh's 'data' axis.
  The z_pres prior is config.objective.z_pres_prior (the end of its anneal), as in the eval step."""
  prior = float(models.config.objective.z_pres_prior)

  def log_weights(params, images, key):
    images = sources.to_unit_interval(images)
    one = lambda k: log_weight(models, params, images, k, prior)
    log_w, count = jax.vmap(one)(jax.random.split(key, draws))  # [draws, B]
    return log_w.T, count.T

  mesh = mesh if mesh is not None else parallel.make_mesh()
  data, same = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  return jax.jit(log_weights, in_shardings=(same, data, same), out_shardings=data)


def bound(log_w: np.ndarray, k: int) -> np.ndarray:
  """[M, S] log weights -> [M] estimates of L_k per image: the mean over the S // k disjoint groups
  of k draws of log (1/k) sum_group w (k divides S)."""
  m, s = log_w.shape
  if not 0 < k <= s or s % k:
    raise ValueError(f'{k} samples do not divide {s} draws')
  groups = log_w.astype(np.float64).reshape(m, s // k, k)
  top = groups.max(-1, keepdims=True)
  return (np.log(np.exp(groups - top).mean(-1)) + top[..., 0]).mean(-1)


def count_posterior(log_w: np.ndarray, counts: np.ndarray, max_count: int) -> np.ndarray:
  """[M, S] log weights and the draws' counts -> [M, max_count + 1] p(count = c | x), the
  self-normalised importance weights summed per count."""
  weights = np.exp(log_w - log_w.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  one_hot = np.arange(max_count + 1)[None, None] == np.clip(counts, 0, max_count)[..., None]
  return (weights[..., None] * one_hot).sum(1)


def summarise(log_w: np.ndarray, num_samples: Sequence[int], true_counts: np.ndarray | None = None,
              ) -> Dict[str, Dict]:
  """{str(K): {'mean', 'standard_error' (over images), 'per_count' {c: mean over images of true
  count c} (given true_counts, all known)}} of the L_K estimates for each K in num_samples."""
  figures = {}
  for k in num_samples:
    per_image = bound(log_w, k)
    entry = dict(mean=float(per_image.mean()),
                 standard_error=float(per_image.std(ddof=1) / np.sqrt(len(per_image))) if len(per_image) > 1 else 0.0)
    if true_counts is not None:
      entry['per_count'] = {str(c): float(per_image[true_counts == c].mean()) for c in np.unique(true_counts)}
    figures[str(k)] = entry
  return figures


def draws_per_call(draws: int, limit: int) -> int:
  """The most draws one compiled call takes: the largest divisor of `draws` up to `limit`."""
  return max(d for d in range(1, min(draws, limit) + 1) if draws % d == 0)


def draw_log_weights(models, params, images: np.ndarray, draws: int, key: jax.Array,
                     batch_size: int = 100, draw_limit: int = 50, mesh=None, log=None):
  """(log w [M, draws], count [M, draws]) for images [M, H, W]: one compiled function of
  batch_size images x draws_per_call(draws, draw_limit) draws, called over batches and chunks of
  draws (memory bounded by that product). log(message): progress after each batch of images."""
  if draws <= 0:
    raise ValueError(f'the number of draws must be positive, got {draws}')
  devices = jax.device_count()
  batch_size = -(-batch_size // devices) * devices  # padded batches split evenly over devices
  per_call = draws_per_call(draws, draw_limit)
  log_weights = make_log_weights_fn(models, per_call, mesh)

  def batch(chunk, start):
    parts = [jax.device_get(log_weights(params, chunk, jax.random.fold_in(jax.random.fold_in(key, start), j)))
             for j in range(draws // per_call)]
    if log:
      log(f'importance weights: {min(start + batch_size, len(images))}/{len(images)} images x {draws} draws')
    return tuple(np.concatenate(p, axis=1) for p in zip(*parts))

  return parallel.map_padded(batch, images, batch_size)
