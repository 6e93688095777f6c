"""Pictures of what AIR infers, as host arrays for PNG files and TensorBoard.

One row per image: the input and the reconstruction (drawn as its parts, each step's object in that
step's colour), each with every present step's window drawn in that step's colour (absent steps are
not drawn) and the inferred count above; then, per step, the
glimpse the encoder read from the window and the patch the decoder drew into it, framed in the
step's colour (left blank for absent steps).

Drawing (`to_rgb`, `draw_boxes`, `grid`, `save_png`) is numpy and PIL on host arrays; `Pictures`
runs a run's models with q's modes (one jit-compiled forward pass) and draws its grid, what it
holds chosen by the scene kind (3D: each object's box and shape instead of glimpses and patches). The command that
writes them for a trained workdir is air_jax.visualize.
"""
import pathlib
from typing import Dict, Optional, Sequence, Tuple

import jax
import numpy as np

from air_jax.data import sources

# Step i's colour is COLOURS[i % len(COLOURS)] (distinct on black and on grey).
COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (255, 225, 25))
BACKGROUND = (48, 48, 48)  # between and behind cells, so a black image stands out
TEXT_COLOUR = (235, 235, 235)
PAD = 4          # pixels between cells
TEXT = 12        # height of the header line and of each row's caption
FRAME = 2        # width of a glimpse's or patch's frame
SUMMARY_IMAGES = 8  # images in the grid that training writes to TensorBoard at every evaluation


def colour(step: int) -> Tuple[int, int, int]:
  return COLOURS[step % len(COLOURS)]


def to_rgb(images: np.ndarray, scale: int = 1) -> np.ndarray:
  """Greyscale [..., H, W] (uint8 0-255 or float 0-1) -> uint8 [..., H*scale, W*scale, 3]."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
  if scale != 1:
    images = np.repeat(np.repeat(images, scale, axis=-2), scale, axis=-1)
  return np.repeat(images[..., None], 3, axis=-1)


def _round(v: float) -> int:
  return int(np.floor(v + 0.5))


def box_outline(box: Sequence[float], scale: int = 1) -> Tuple[int, int, int, int]:
  """(top, left, height, width) in canvas pixels -> the outline's first and last pixel rows and
  columns (r0, c0, r1, c1) on a picture `scale` times larger (pixel i spans [i, i + 1))."""
  top, left, height, width = (float(v) * scale for v in box)
  return _round(top), _round(left), _round(top + height) - 1, _round(left + width) - 1


def draw_boxes(rgb: np.ndarray, boxes: np.ndarray, present: np.ndarray, scale: int = 1,
               thickness: int = 1) -> np.ndarray:
  """A copy of rgb [h, w, 3] uint8 with the outline of each present box [N, 4] (canvas pixels) in
  its step's colour; steps with present [N] false are not drawn. Sides outside the picture are not
  drawn (a window hanging over the edge shows as an open box)."""
  rgb = np.array(rgb, copy=True)
  h, w = rgb.shape[:2]
  for i, (box, on) in enumerate(zip(np.asarray(boxes), np.asarray(present))):
    if not on:
      continue
    r0, c0, r1, c1 = box_outline(box, scale)
    if r1 < r0 or c1 < c0:
      continue
    rows = slice(max(r0, 0), min(r1, h - 1) + 1)
    cols = slice(max(c0, 0), min(c1, w - 1) + 1)
    for k in range(thickness):
      for r in (r0 + k, r1 - k):
        if 0 <= r < h:
          rgb[r, cols] = colour(i)
      for c in (c0 + k, c1 - k):
        if 0 <= c < w:
          rgb[rows, c] = colour(i)
  return rgb


def _resize_nearest(image: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
  rows = np.arange(shape[0]) * image.shape[0] // shape[0]
  cols = np.arange(shape[1]) * image.shape[1] // shape[1]
  return image[rows[:, None], cols[None, :]]


def _framed(image: np.ndarray, shape: Tuple[int, int], step: int) -> np.ndarray:
  """A glimpse or patch [G, G] scaled to a cell of `shape`, framed in the step's colour."""
  rgb = to_rgb(_resize_nearest(np.asarray(image), shape))
  rgb[:FRAME], rgb[-FRAME:], rgb[:, :FRAME], rgb[:, -FRAME:] = (colour(step),) * 4
  return rgb


def coloured_parts(parts: np.ndarray, present: np.ndarray, scale: int = 1) -> np.ndarray:
  """parts [N, H, W] (0-1), present [N] -> uint8 [H*scale, W*scale, 3]: sum over present steps i
  of part_i x colour(i), clipped to [0, 255]."""
  parts = np.asarray(parts, np.float32) * np.asarray(present, np.float32)[:, None, None]
  colours = np.array([colour(i) for i in range(len(parts))], np.float32)
  rgb = np.round(np.clip(np.einsum('nhw,nc->hwc', parts, colours), 0.0, 255.0)).astype(np.uint8)
  return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def column_titles(num_steps: int, with_glimpses: bool, with_patches: bool) -> list:
  titles = ['input', 'reconstruction']
  for i in range(num_steps):
    titles += [f'glimpse {i + 1}'] * with_glimpses + [f'patch {i + 1}'] * with_patches
  return titles


def cell_position(row: int, column: int, cell_shape: Tuple[int, int]) -> Tuple[int, int]:
  """(y, x) of the top-left pixel of a cell of the grid."""
  return (TEXT + PAD + row * (TEXT + cell_shape[0] + PAD) + TEXT,
          PAD + column * (cell_shape[1] + PAD))


def grid_shape(rows: int, columns: int, cell_shape: Tuple[int, int]) -> Tuple[int, int]:
  """(height, width) of a grid of rows x columns cells."""
  return (TEXT + PAD + rows * (TEXT + cell_shape[0] + PAD), PAD + columns * (cell_shape[1] + PAD))


def grid(images: np.ndarray, canvas: np.ndarray, z_pres: np.ndarray, boxes: np.ndarray,
         glimpses: Optional[np.ndarray] = None, patches: Optional[np.ndarray] = None,
         true_counts: Optional[np.ndarray] = None, scale: int = 2,
         step_labels: Optional[Sequence[Sequence[str]]] = None,
         parts: Optional[np.ndarray] = None) -> np.ndarray:
  """The picture of a batch: uint8 [height, width, 3] (see grid_shape and cell_position).

  images, canvas [B, H, W] (0-1 or uint8); z_pres [B, N] (> 0.5: present; the count is the
  number of present slots, whichever they are: the parallel core's cells); boxes [B, N, 4]
  (top, left, height, width in canvas pixels, as glimpse.boxes); glimpses [B, N, G, G] and
  patches [B, N, P, P] (optional columns); true_counts [B] (optional, shown beside the count);
  step_labels [B][N] (optional: what each present step inferred, e.g. a shape, after the count);
  parts [B, N, H, W] (optional: each step's object on the canvas, 0-1): the reconstruction is then
  drawn as its parts, each in its step's colour (sum_i part_i colour_i, clipped)."""
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  images, canvas = np.asarray(images), np.asarray(canvas)
  present = np.asarray(z_pres) > 0.5
  batch, num_steps = present.shape
  cell = (images.shape[1] * scale, images.shape[2] * scale)
  titles = column_titles(num_steps, glimpses is not None, patches is not None)
  picture = np.empty(grid_shape(batch, len(titles), cell) + (3,), np.uint8)
  picture[...] = BACKGROUND

  def paste(row, column, rgb):
    y, x = cell_position(row, column, cell)
    picture[y:y + cell[0], x:x + cell[1]] = rgb

  counts = present.sum(axis=1)  # the present slots (cores.count_of), in any order of the slots
  for b in range(batch):
    on = present[b]
    paste(b, 0, draw_boxes(to_rgb(images[b], scale), boxes[b], on, scale))
    reconstruction = to_rgb(canvas[b], scale) if parts is None else coloured_parts(parts[b], on, scale)
    paste(b, 1, draw_boxes(reconstruction, boxes[b], on, scale))
    column = 2
    for i in range(num_steps):
      for stack in (glimpses, patches):
        if stack is None:
          continue
        if on[i]:
          paste(b, column, _framed(stack[b, i], cell, i))
        column += 1

  image = Image.fromarray(picture)
  draw = ImageDraw.Draw(image)
  font = ImageFont.load_default()
  for column, title in enumerate(titles):
    _, x = cell_position(0, column, cell)
    draw.text((x, PAD // 2), title, fill=TEXT_COLOUR, font=font)
  for b in range(batch):
    y, x = cell_position(b, 0, cell)
    caption = f'count {counts[b]}' + ('' if true_counts is None or true_counts[b] < 0
                                           else f' (true {int(true_counts[b])})')
    if step_labels is not None:
      caption += ': ' + ' '.join(str(step_labels[b][i]) for i in np.flatnonzero(present[b]))
    draw.text((x, y - TEXT), caption, fill=TEXT_COLOUR, font=font)
  return np.asarray(image)


def save_png(picture: np.ndarray, path) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.asarray(picture, np.uint8)).save(pathlib.Path(path), format='PNG', optimize=True)


class Pictures:
  """pictures(model params, images [B, H, W], true_counts [B] or None) -> grid uint8 [h, w, 3] of
  what a run's models (air_jax.models.build) infer with q's modes: the scene kind says what is
  drawn (SceneKind.picture_arrays inside the compiled forward pass, grid_arguments on the host).
  The forward pass is compiled once per batch shape (make one Pictures and reuse it)."""

  def __init__(self, models, scale: int = 2):
    self.scale, self.scene = scale, models.scene

    def arrays(params, images):
      images = sources.to_unit_interval(images)
      out = models.core.apply({'params': params}, images, use_mode=True)
      return models.scene.picture_arrays(out, images, params)

    self._arrays = jax.jit(arrays)

  def latents(self, params, images) -> Dict[str, np.ndarray]:
    """The scene kind's picture_arrays of images, on the host."""
    return jax.device_get(self._arrays(params, np.asarray(images)))

  def __call__(self, params, images, true_counts=None) -> np.ndarray:
    images = np.asarray(images)
    return grid(images, true_counts=true_counts, scale=self.scale,
                **self.scene.grid_arguments(self.latents(params, images)))


def png_path_problem(path) -> Optional[str]:
  """What stops a picture being written to path (a *.png in an existing folder), or None."""
  path = pathlib.Path(path)
  if path.suffix.lower() != '.png':
    return f'the picture is a PNG file: name it *.png, got {path}'
  if path.is_dir():
    return f'{path} is a directory'
  if not path.parent.is_dir():
    return f'no such directory: {path.parent}'
  return None
