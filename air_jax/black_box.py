"""A black-box renderer as a differentiable JAX function: host callback forward, finite-difference VJP.

The renderer is a host function of M scenes of up to K objects, each with P pose coordinates:
    host_render(ids int32 [M, K], poses float32 [M, K, P], present float32 [M, K]) -> float32 [M, H, W].
`make_render(host_render, ...)` returns render(ids, poses, present, key) -> images [B, H, W], one
`jax.pure_callback` in the forward pass (so a step that uses it is still one jit-compiled function),
with a `jax.custom_vjp` whose backward pass estimates, for the cotangent image g [B, H, W],
    v = d <g, render(p)> / d p                                       (per image b, [K, P])
from renders of perturbed poses, with steps h [P] per coordinate and directions u in [K, P]:
    d_u = (<g, render(p + h*u)> - <g, render(p - h*u)>) / 2          (= h*u . v + O(h^3))
  central differences: one u = e_(k, p) per coordinate of each present object,  v_(k, p) = d_u / h_p
                       (2 K P renders per image; exact for quadratics)
  SPSA: S directions u_s with entries +-1 (Rademacher) on the present objects,
        v = (1/S) sum_s d_(u_s) u_s / h       (2 S renders per image whatever K P is; unbiased for
        quadratics since E[u u^T] = I, variance from the other coordinates' cross terms).
Absent objects get no perturbation and no gradient; ids and present get none.
"""
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ('central', 'spsa')


def perturbation_directions(present: jax.Array, num_coordinates: int, method: str,
                            key: jax.Array, num_directions: int = 1) -> jax.Array:
  """Directions u [B, Q, K, P]: central, Q = K P unit vectors (zero for absent objects); SPSA,
  Q = num_directions Rademacher vectors masked by present [B, K]."""
  batch, objects = present.shape
  if method == 'central':
    eye = jnp.eye(objects * num_coordinates).reshape(objects * num_coordinates, objects, num_coordinates)
    return eye[None] * present[:, None, :, None]
  signs = jax.random.rademacher(key, (batch, num_directions, objects, num_coordinates), jnp.float32)
  return signs * present[:, None, :, None]


def gradient_from_differences(differences: jax.Array, directions: jax.Array, steps: jax.Array,
                              method: str) -> jax.Array:
  """v [B, K, P] from d_u [B, Q] and the directions u [B, Q, K, P] (see the module docstring)."""
  weight = 1.0 if method == 'central' else 1.0 / directions.shape[1]
  return weight * jnp.einsum('bq,bqkp->bkp', differences, directions) / steps


def host_differences(host_render: Callable, ids, poses, present, directions, steps, cotangent):
  """d_u [B, Q] = (<g, R(p + h u)> - <g, R(p - h u)>) / 2 on the host; u = 0 costs no render."""
  ids, poses, present, directions, steps, cotangent = (
      np.asarray(a) for a in (ids, poses, present, directions, steps, cotangent))
  batch, num = directions.shape[:2]
  which = np.argwhere(np.abs(directions).reshape(batch, num, -1).max(-1) > 0)  # [R, 2] (b, q)
  differences = np.zeros((batch, num), np.float32)
  if len(which):
    b, q = which[:, 0], which[:, 1]
    shift = steps * directions[b, q]
    images = host_render(np.concatenate([ids[b], ids[b]]), np.concatenate([poses[b] + shift, poses[b] - shift]),
                         np.concatenate([present[b], present[b]]))
    plus, minus = images[:len(b)], images[len(b):]
    differences[b, q] = 0.5 * np.einsum('rhw,rhw->r', plus - minus, cotangent[b].astype(np.float32))
  return differences


def make_render(host_render: Callable, image_shape: Sequence[int], *, method: str = 'central',
                steps: Sequence[float], num_directions: int = 1):
  """render(ids [B, K] int32, poses [B, K, P], present [B, K], key) -> [B, H, W] float32 with a
  finite-difference VJP with respect to poses (method 'central' or 'spsa', step h = steps [P])."""
  if method not in METHODS:
    raise ValueError(f'finite-difference method must be one of {METHODS}, got {method!r}')
  steps_array = np.asarray(steps, np.float32)
  if steps_array.ndim != 1 or not np.all(steps_array > 0):
    raise ValueError(f'finite-difference steps must be positive, one per pose coordinate, got {list(steps)}')
  height, width = image_shape

  def forward(ids, poses, present):
    shape = jax.ShapeDtypeStruct((ids.shape[0], height, width), jnp.float32)
    callback = lambda i, p, m: np.asarray(host_render(np.asarray(i), np.asarray(p), np.asarray(m)), np.float32)
    return jax.pure_callback(callback, shape, ids, poses, present, vmap_method='sequential')

  @jax.custom_vjp
  def render(ids, poses, present, key):
    del key
    return forward(ids, poses, present)

  def render_fwd(ids, poses, present, key):
    return forward(ids, poses, present), (ids, poses, present, key)

  def render_bwd(residuals, cotangent):
    ids, poses, present, key = residuals
    if poses.shape[-1] != len(steps_array):
      raise ValueError(f'poses have {poses.shape[-1]} coordinates, steps {len(steps_array)}')
    directions = perturbation_directions(present, poses.shape[-1], method, key, num_directions)
    shape = jax.ShapeDtypeStruct(directions.shape[:2], jnp.float32)
    differences = jax.pure_callback(functools.partial(host_differences, host_render), shape, ids, poses,
                                    present, directions, steps_array, cotangent, vmap_method='sequential')
    return None, gradient_from_differences(differences, directions, jnp.asarray(steps_array), method), None, None

  render.defvjp(render_fwd, render_bwd)
  return render
