"""Differentiable axis-aligned glimpses: a spatial transformer without rotation.

`z_where = (s, x, y)`. The window's side, as a fraction of the canvas side, is
    w = w_min + (w_max - w_min) * sigmoid(s)      (positive and bounded: no division by ~0),
and its centre is (x, y) in normalised canvas coordinates ([-1, 1] spans the canvas; x is
horizontal, y vertical). A glimpse point g in [-1, 1]^2 lies at canvas point c = w * g + (x, y).

Bilinear sampling with zero padding along one axis is a matrix of triangle-kernel weights
    K[a, i] = max(0, 1 - |p_a - i|),
where p_a is the fractional source pixel that target pixel a lands on (pixel centres at
(2i + 1) / n - 1, as `align_corners=False`). With no rotation the 2-D sampler factorises, so
both directions are two small batched products:
    read:  glimpse = K_y  @ image @ K_x^T        K: [G, H] (image -> glimpse)
    write: canvas  = K'_y @ patch @ K'_x^T       K': [H, G] (the inverse transform)
A row of K has at most two nonzero taps, so `read` takes K_y @ image as a blend of two gathered
image rows per glimpse row (the image needs no gradient; 4% faster train step on CPU than the
matmul, measured); `write` keeps both matmuls (its patches need gradients, and a gather's
gradient is a scatter: no faster, measured).

Both may work on a crop of the canvas instead (a Frame: the crop's centre c_f and its side f as a
fraction of the canvas side): the window becomes w / f wide at (c - c_f) / f in the crop's own
coordinates, so a window inside the crop (with a pixel of bilinear margin) samples the same pixels
as on the whole canvas, and what lies outside the crop is not read (zeros) or not written.
"""
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

WINDOW_MIN = 0.1
WINDOW_MAX = 1.0


class Frame(NamedTuple):
  """A square crop of the canvas: its centre (x, y) [B, 2] in the canvas's coordinates and its side
  as a fraction of the canvas side."""
  centre: jax.Array
  side: float


def window_size(s: jax.Array, w_min: float = WINDOW_MIN, w_max: float = WINDOW_MAX) -> jax.Array:
  """w = w_min + (w_max - w_min) * sigmoid(s): window side as a fraction of the canvas side."""
  return w_min + (w_max - w_min) * jax.nn.sigmoid(s)


def window_logit(w: jax.Array, w_min: float = WINDOW_MIN, w_max: float = WINDOW_MAX) -> jax.Array:
  """The s with window_size(s) = w, for w in (w_min, w_max): log((w - w_min) / (w_max - w))."""
  return jnp.log((w - w_min) / (w_max - w))


def _pixel_centres(n: int) -> jax.Array:
  """Normalised coordinates of the centres of n pixels: (2i + 1) / n - 1."""
  return (2.0 * jnp.arange(n, dtype=jnp.float32) + 1.0) / n - 1.0


def _to_pixels(c: jax.Array, n: int) -> jax.Array:
  """Fractional pixel index of normalised coordinate c on an axis of n pixels."""
  return ((c + 1.0) * n - 1.0) / 2.0


def _triangle_kernel(positions: jax.Array, n: int) -> jax.Array:
  """Bilinear weights [..., P, n] = max(0, 1 - |position - i|) for source pixels i < n."""
  return jax.nn.relu(1.0 - jnp.abs(positions[..., None] - jnp.arange(n, dtype=positions.dtype)))


def _window(z_where: jax.Array, frame: Optional[Frame]):
  """The window's side w [B, 1] and centre x, y [B, 1] in the image's coordinates: the canvas's,
  or the crop's when frame is given."""
  w, x, y = window_size(z_where[:, 0])[:, None], z_where[:, 1:2], z_where[:, 2:3]
  if frame is None:
    return w, x, y
  return w / frame.side, (x - frame.centre[:, :1]) / frame.side, (y - frame.centre[:, 1:]) / frame.side


def _read_positions(z_where: jax.Array, image_shape: Tuple[int, int], glimpse_shape: Tuple[int, int],
                    frame: Optional[Frame] = None) -> Tuple[jax.Array, jax.Array]:
  """Fractional image pixels that the glimpse's rows [B, Gh] and columns [B, Gw] land on."""
  w, x, y = _window(z_where, frame)
  cy = w * _pixel_centres(glimpse_shape[0]) + y
  cx = w * _pixel_centres(glimpse_shape[1]) + x
  return _to_pixels(cy, image_shape[0]), _to_pixels(cx, image_shape[1])


def read_kernels(z_where: jax.Array, image_shape: Tuple[int, int],
                 glimpse_shape: Tuple[int, int]) -> Tuple[jax.Array, jax.Array]:
  """Sampling matrices image -> glimpse: K_y [B, Gh, H], K_x [B, Gw, W] (read computes
  K_y @ image @ K_x^T)."""
  py, px = _read_positions(z_where, image_shape, glimpse_shape)
  return _triangle_kernel(py, image_shape[0]), _triangle_kernel(px, image_shape[1])


def write_kernels(z_where: jax.Array, glimpse_shape: Tuple[int, int], canvas_shape: Tuple[int, int],
                  frame: Optional[Frame] = None) -> Tuple[jax.Array, jax.Array]:
  """Sampling matrices glimpse -> canvas (inverse transform): K'_y [B, H, Gh], K'_x [B, W, Gw]."""
  w, x, y = _window(z_where, frame)
  gy = (_pixel_centres(canvas_shape[0]) - y) / w
  gx = (_pixel_centres(canvas_shape[1]) - x) / w
  return (_triangle_kernel(_to_pixels(gy, glimpse_shape[0]), glimpse_shape[0]),
          _triangle_kernel(_to_pixels(gx, glimpse_shape[1]), glimpse_shape[1]))


def _neighbours(positions: jax.Array, n: int):
  """The two nonzero entries of each row of _triangle_kernel(positions, n), as taps into an axis of
  n pixels zero-padded by one on each side: (padded index of pixel floor(p), its weight
  1 - frac(p), the next pixel's weight frac(p)); both weights are 0 when neither pixel is inside."""
  below = jnp.floor(positions)
  frac = positions - below
  below = below.astype(jnp.int32)
  inside = (below >= -1) & (below <= n - 1)
  return (jnp.clip(below + 1, 0, n), jnp.where(inside, 1.0 - frac, 0.0),
          jnp.where(inside, frac, 0.0))


def read(images: jax.Array, z_where: jax.Array, glimpse_shape: Tuple[int, int],
         frame: Optional[Frame] = None) -> jax.Array:
  """Cuts windows out of images. images: [B, H, W] (the canvas, or its crop `frame`), z_where:
  [B, 3] in the canvas's coordinates -> glimpses [B, Gh, Gw].

  Each row of K_y has two taps, so K_y @ image blends two gathered image rows (the image needs no
  gradient; the taps carry it to z_where); K_x stays a batched matmul."""
  height, width = images.shape[1:]
  py, px = _read_positions(z_where, (height, width), glimpse_shape, frame)
  row, upper, lower = _neighbours(py, height)  # [B, Gh]
  padded = jnp.pad(images, ((0, 0), (1, 1), (0, 0)))
  # row is clipped into the padded range: no out-of-bounds fill (and its select pass) is needed
  take = lambda index: jnp.take_along_axis(padded, index[..., None], axis=1, mode='promise_in_bounds')
  rows = upper[..., None] * take(row) + lower[..., None] * take(row + 1)
  return jnp.einsum('bgw,bhw->bgh', rows, _triangle_kernel(px, width))


def write(patches: jax.Array, z_where: jax.Array, canvas_shape: Tuple[int, int],
          frame: Optional[Frame] = None) -> jax.Array:
  """Pastes patches into their windows. patches: [B, Gh, Gw], z_where: [B, 3] in the canvas's
  coordinates -> [B, H, W]: the canvas, or its crop `frame` of that shape."""
  k_y, k_x = write_kernels(z_where, patches.shape[1:], canvas_shape, frame)
  return jnp.einsum('bhg,bwg->bhw', jnp.einsum('bha,bag->bhg', k_y, patches), k_x)


def boxes(z_where: jax.Array, canvas_shape: Tuple[int, int]) -> jax.Array:
  """Windows in canvas pixels. z_where: [..., 3] -> [..., 4] = (top, left, height, width)."""
  w = window_size(z_where[..., 0])
  height, width = canvas_shape
  top = (z_where[..., 2] - w + 1.0) / 2.0 * height
  left = (z_where[..., 1] - w + 1.0) / 2.0 * width
  return jnp.stack([top, left, w * height, w * width], axis=-1)
