"""The spatially parallel inference core (config.model.inference 'parallel'), as in SPACE (Lin et
al., 2020): a grid of G x G cells over the image, each deciding at once whether it holds an object.

    F   = phi(x)                    strided convolutions (model.image_conv_features), [B, h, w, C]
    f_c = F resized to G x G        (bilinear), the feature vector of cell c
    h_c = relu(W [f_c, e_c] + b)    e_c: the cell's centre (x, y) in [-1, 1]
    z_pres_c  ~ Bernoulli(sigmoid(logit(h_c)))     independently (relaxed with a cores.Relaxation)
    object_c  ~ q(object | h_c, x)  placed in cell c (scenes.base.Cell): its centre is the cell's
                                    centre plus half the cell's side times a latent offset u ~ N(0, 1)
    canvas    = the scene kind's drawing of the present cells' objects.
Slot c is cell c in row-major order (the top row first, each row left to right), N = G^2 slots
(ParallelOptions.slots: air_jax.models.build sets model.max_steps to it). Every slot is sampled
(active = 1), and a scene's count is the number of present slots (cores.count_of). The object
model is the recurrent core's (the kind's predict, sample and draw, their modules under 'step'),
and so are the objective, evaluation and the tools.

model.cell_order says how the cells decide:
  'parallel'  all at once, as above (SPACE); each cell's own credit (sequential False: a cell's
              decision changes only the likelihood and its own terms);
  'raster'    one after the other in slot order, as SPAIR's raster scan, each also reading what is
              left to explain around it, as DAIR:
                  r_c = x - canvas_<c  (the image less the cells before c), pooled to K x K pixels
                                       per cell (K = CONTEXT_PIXELS), the 3 x 3 cells around c
                  h_c = relu(W' [relu(W [f_c, e_c] + b), r_c] + b')
              so a cell whose neighbour drew its digit sees nothing left and can switch off; a
              cell's decision changes every later cell's input (sequential credit, as recurrent).

model.cell_reach R > 0: each cell reads its glimpse from, and draws its object into, a square crop
of the canvas R cells wide centred on the cell (CellCrops; glimpse.Frame), and 'raster' takes its
residual from that crop, so a cell costs O((R H / G)^2) pixels instead of O(H W) (SPAIR's local
objects). The same model as R = 0 (the whole canvas) wherever each window, with a pixel of
bilinear margin (half a patch pixel for the write), lies inside its crop; ink beyond the crop is
not drawn and image beyond it not read.
"""
import dataclasses
import functools
import math
from typing import ClassVar, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from air_jax import glimpse
from air_jax import modules
from air_jax import objectives
from air_jax.cores import CoreOutput, Relaxation
from air_jax.scenes import base

CELL_ORDERS = ('parallel', 'raster')
CONTEXT_PIXELS = 4  # 'raster': the residual's pixels per cell side that a cell reads around it


@dataclasses.dataclass(frozen=True)
class ParallelOptions:
  """The parallel core's settings (config.model), checked once by from_config."""
  grid_size: int            # G: cells per side, G^2 slots
  cell_hidden: int          # size of each cell's state h_c
  image_conv_features: Tuple[int, ...]  # phi's convolution widths (at least one)
  cell_order: str           # 'parallel' or 'raster' (the module docstring)
  matmul_dtype: str
  cell_reach: int = 0       # cells per side of each cell's crop (CellCrops); 0: the whole canvas

  @classmethod
  def from_config(cls, model: ml_collections.ConfigDict) -> 'ParallelOptions':
    """Raises ValueError naming an invalid setting of config.model's."""
    if not (isinstance(model.grid_size, int) and model.grid_size > 0):
      raise ValueError(f'config.model.grid_size must be a positive int (cells per side), got {model.grid_size!r}')
    if not model.cell_hidden > 0:
      raise ValueError(f'config.model.cell_hidden must be positive, got {model.cell_hidden}')
    modules.check_conv_features('model.image_conv_features', model.image_conv_features)
    if not model.image_conv_features:
      raise ValueError("config.model.image_conv_features must name at least one convolution for the "
                       "'parallel' core (its cells read a feature map), e.g. (32, 64)")
    if model.cell_order not in CELL_ORDERS:
      raise ValueError(f'config.model.cell_order must be one of {CELL_ORDERS}, got {model.cell_order!r}')
    reach = model.get('cell_reach', 0)
    if isinstance(reach, bool) or not (isinstance(reach, int) and reach >= 0):
      raise ValueError(f'config.model.cell_reach must be an int >= 0 (cells per side of each cell\'s crop; '
                       f'0: the whole canvas), got {reach!r}')
    return cls(grid_size=model.grid_size, cell_hidden=int(model.cell_hidden),
               image_conv_features=tuple(int(f) for f in model.image_conv_features),
               cell_order=str(model.cell_order), matmul_dtype=str(model.matmul_dtype), cell_reach=reach)

  @property
  def slots(self) -> int:
    return self.grid_size ** 2


def cell_centres(grid_size: int) -> jax.Array:
  """[G^2, 2] (x, y) centres of the cells in [-1, 1] coordinates, row-major (slot order)."""
  centres = (2.0 * jnp.arange(grid_size, dtype=jnp.float32) + 1.0) / grid_size - 1.0
  y, x = jnp.meshgrid(centres, centres, indexing='ij')
  return jnp.stack([x.ravel(), y.ravel()], axis=-1)


class CellStep(nn.Module):
  """Every cell's z_pres and object at once (cells flattened into the batch): the scene kind's
  predict and sample, whose submodules live in this module's scope, as in the recurrent step."""
  scene: base.SceneKind
  use_mode: bool
  relaxed: bool = False
  straight_through: bool = False

  @nn.compact
  def __call__(self, h, images, centres, half_size, temperature, learn_z_pres, frame=None):
    """images: each cell's [B G^2, H, W], or its crop (frame, a glimpse.Frame)."""
    logit, head = self.scene.predict(h)
    present = objectives.draw_z_pres(logit, lambda: self.make_rng('sample'), self.use_mode, self.relaxed,
                                     self.straight_through, temperature, learn_z_pres)
    sample_key = None if self.use_mode else (lambda: self.make_rng('sample'))
    objects, _ = self.scene.sample(head, images, sample_key, base.Cell(centres, half_size, frame))
    return logit, present, objects


@functools.lru_cache(maxsize=None)
def resize_matrix(size_out: int, size_in: int) -> np.ndarray:
  """[size_out, size_in]: jax.image.resize(x, ..., 'linear') along one axis is this matrix times x."""
  with jax.ensure_compile_time_eval():
    return np.asarray(jax.image.resize(jnp.eye(size_in, dtype=jnp.float32), (size_out, size_in), 'linear'))


@dataclasses.dataclass(frozen=True)
class CellCrops:
  """Each cell's square crop of a canvas of `canvas` px per side with G cells per side: `side` px
  (ceil(reach x the cell's side)), centred on the cell to the nearest pixel, cut from the canvas
  padded by `pad` px of zeros. origins [G^2, 2]: each crop's top-left (row, column) in the padded
  canvas; frame_centres [G^2, 2]: its centre (x, y) in the canvas's [-1, 1] coordinates; context
  [G K + 2K, canvas + 2 pad]: the 'raster' residual's resize (resize_matrix, K = CONTEXT_PIXELS
  rows of zeros and `pad` columns of zeros around), whose rows of a cell's 3 x 3 cells read only
  its crop (checked when built with residual=True, for the raster order)."""
  canvas: int
  grid_size: int
  side: int
  pad: int
  origins: np.ndarray
  frame_centres: np.ndarray
  context: np.ndarray

  @classmethod
  @functools.lru_cache(maxsize=None)
  def build(cls, canvas: int, grid_size: int, reach: int, residual: bool = True) -> 'CellCrops':
    cell = canvas / grid_size
    side = math.ceil(reach * cell - 1e-6)
    starts = np.round((np.arange(grid_size) + 0.5) * cell - side / 2).astype(np.int64)  # in the canvas
    pad = int(max(0, -starts.min(), starts.max() + side - canvas))
    rows, columns = np.meshgrid(starts, starts, indexing='ij')
    origins = np.stack([rows.ravel(), columns.ravel()], -1) + pad
    centre = lambda start: (2.0 * start + side) / canvas - 1.0
    frame_centres = np.stack([centre(columns.ravel()), centre(rows.ravel())], -1).astype(np.float32)
    k = CONTEXT_PIXELS
    context = np.pad(resize_matrix(grid_size * k, canvas), ((k, k), (pad, pad)))
    for index, start in enumerate(starts + pad if residual else ()):  # cells index-1..index+1 read only the crop
      band = context[index * k:(index + 3) * k]
      if np.abs(band[:, :start]).sum() + np.abs(band[:, start + side:]).sum() > 0:
        raise ValueError(f'config.model.cell_reach {reach} is too small for a {canvas} px canvas of {grid_size} '
                         f'cells per side: a cell\'s residual reads beyond its crop (4 is enough)')
    return cls(canvas, grid_size, side, pad, origins, frame_centres, context)

  def cut(self, padded: jax.Array, index) -> jax.Array:
    """[B, side, side]: cell `index`'s crop of a padded canvas [B, canvas + 2 pad, ...]."""
    row, column = jnp.asarray(self.origins)[index]
    return jax.lax.dynamic_slice(padded, (0, row, column), (padded.shape[0], self.side, self.side))

  def paste(self, padded: jax.Array, crop: jax.Array, index) -> jax.Array:
    """The padded canvas with cell `index`'s crop replaced by crop."""
    row, column = jnp.asarray(self.origins)[index]
    return jax.lax.dynamic_update_slice(padded, crop, (0, row, column))

  def frame(self, index, batch: int) -> glimpse.Frame:
    return glimpse.Frame(jnp.broadcast_to(jnp.asarray(self.frame_centres)[index], (batch, 2)), self.side / self.canvas)

  def residual_context(self, residual_crop: jax.Array, index) -> jax.Array:
    """[B, (3K)^2]: residual_context of a canvas whose cell `index`'s crop is residual_crop (exact:
    the resize's rows of the 3 x 3 cells around the cell read only the crop)."""
    k, (row, column) = CONTEXT_PIXELS, jnp.asarray(self.origins)[index]
    context = jnp.asarray(self.context)
    a_y = jax.lax.dynamic_slice(context, ((index // self.grid_size) * k, row), (3 * k, self.side))
    a_x = jax.lax.dynamic_slice(context, ((index % self.grid_size) * k, column), (3 * k, self.side))
    return jnp.einsum('ph,bhw,qw->bpq', a_y, residual_crop, a_x).reshape(residual_crop.shape[0], -1)

  def padded(self, canvas: jax.Array) -> jax.Array:
    return jnp.pad(canvas, ((0, 0), (self.pad, self.pad), (self.pad, self.pad)))

  def unpadded(self, padded: jax.Array) -> jax.Array:
    return padded[:, self.pad:self.pad + self.canvas, self.pad:self.pad + self.canvas]


def crops_of(options: ParallelOptions, image_shape) -> CellCrops | None:
  """The cells' crops (options.cell_reach > 0) for images of image_shape (H, H), or None (the
  whole canvas). Raises ValueError for a canvas that is not square or a reach too small."""
  if not options.cell_reach:
    return None
  height, width = image_shape
  if height != width:
    raise ValueError(f'config.model.cell_reach needs a square canvas, got {height}x{width}: set it to 0')
  return CellCrops.build(height, options.grid_size, options.cell_reach, options.cell_order == 'raster')


def residual_context(images, canvas_image, cell, grid_size: int) -> jax.Array:
  """[B, (3K)^2]: x - canvas pooled to K pixels per cell side (K = CONTEXT_PIXELS, zero beyond
  the image), the 3 x 3 cells around cell index `cell` (row-major), flattened."""
  batch, k = images.shape[0], CONTEXT_PIXELS
  pooled = jax.image.resize(images - canvas_image, (batch, grid_size * k, grid_size * k), 'linear')
  pooled = jnp.pad(pooled, ((0, 0), (k, k), (k, k)))
  row, column = cell // grid_size, cell % grid_size
  return jax.lax.dynamic_slice(pooled, (0, row * k, column * k), (batch, 3 * k, 3 * k)).reshape(batch, -1)


class RasterStep(nn.Module):
  """One cell of the raster order (scanned over the slots): its state from its features and the
  residual around it, then its z_pres and object (the kind's predict and sample) drawn on the
  canvas the later cells read."""
  options: ParallelOptions
  scene: base.SceneKind
  use_mode: bool
  relaxed: bool = False
  straight_through: bool = False
  pad: int = 0  # the crops' padding of images and canvas (options.cell_reach > 0)

  @nn.compact
  def __call__(self, canvas, cell_inputs, images, temperature, learn_z_pres):
    """canvas and images: [B, H, W], or padded by the crops' pad when options.cell_reach > 0."""
    h_cell, centre, index = cell_inputs
    scene, half_size = self.scene, 1.0 / self.options.grid_size
    side = images.shape[1] - 2 * self.pad
    crops = crops_of(self.options, (side, side))
    if crops is None:
      context = residual_context(images, scene.canvas_image(canvas), index, self.options.grid_size)
      cell = base.Cell(centre, half_size)
    else:
      images, whole, canvas = crops.cut(images, index), canvas, crops.cut(canvas, index)
      context = crops.residual_context(images - scene.canvas_image(canvas), index)
      cell = base.Cell(centre, half_size, crops.frame(index, images.shape[0]))
    h = nn.relu(modules.Dense(self.options.cell_hidden, dtype=jnp.dtype(self.options.matmul_dtype),
                              name='context_state')(jnp.concatenate([h_cell, context], -1)))
    logit, head = scene.predict(h)
    present = objectives.draw_z_pres(logit, lambda: self.make_rng('sample'), self.use_mode, self.relaxed,
                                     self.straight_through, temperature, learn_z_pres)
    sample_key = None if self.use_mode else (lambda: self.make_rng('sample'))
    objects, _ = scene.sample(head, images, sample_key, cell)
    canvas = scene.draw(canvas, objects, present)
    if crops is not None:
      canvas = crops.paste(whole, canvas, index)
    return canvas, (logit, present, objects, h)


class ParallelCore(nn.Module):
  """images [B, H, W] in [0, 1] -> CoreOutput over G^2 cell slots (the module docstring)."""
  options: ParallelOptions
  scene: base.SceneKind  # the run's scene kind (scene.cells: it places objects in cells)
  needs_cells: ClassVar[bool] = True  # scene.sample places each object in its cell

  @staticmethod
  def check_scene(options: ParallelOptions, scene: base.SceneKind) -> None:
    """Raises ValueError if the cells' crops (options.cell_reach) do not fit the kind's images."""
    crops_of(options, scene.image_shape)

  @property
  def sequential(self) -> bool:
    """'raster': a cell's decision changes the later cells' inputs (objectives.elbo_terms)."""
    return self.options.cell_order == 'raster'

  @nn.compact
  def __call__(self, images: jax.Array, use_mode: bool = False, relaxation: Relaxation | None = None) -> CoreOutput:
    options, scene = self.options, self.scene
    chex.assert_rank(images, 3)
    batch, grid = images.shape[0], options.grid_size
    cells = grid * grid
    feature_map = modules.ConvFeatures(options.image_conv_features, flatten=False, name='image_conv')(images)
    feature_map = jax.image.resize(feature_map, (batch, grid, grid, feature_map.shape[-1]), 'linear')
    centres = jnp.broadcast_to(cell_centres(grid), (batch, cells, 2))
    cell_input = jnp.concatenate([feature_map.reshape(batch, cells, -1), centres], -1)
    h = nn.relu(modules.Dense(options.cell_hidden, dtype=jnp.dtype(options.matmul_dtype), name='cell_state')(cell_input))

    relaxed = relaxation is not None and not use_mode
    temperature, learn = (relaxation.temperature, relaxation.learn) if relaxed else (1.0, True)
    temperature, learn = jnp.asarray(temperature, jnp.float32), jnp.asarray(learn)
    straight_through = relaxed and relaxation.straight_through
    by_slot = lambda tree: jax.tree.map(lambda v: jnp.moveaxis(v, 1, 0), tree)  # [B, N, ...] <-> [N, B, ...]
    crops = crops_of(options, images.shape[1:])
    padded = (lambda x: x) if crops is None else crops.padded
    unpadded = (lambda x: x) if crops is None else crops.unpadded
    if options.cell_order == 'raster':
      steps = nn.scan(RasterStep, variable_broadcast='params', split_rngs={'params': False, 'sample': True},
                      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cells)
      step = steps(options, scene, use_mode, relaxed=relaxed, straight_through=straight_through,
                   pad=0 if crops is None else crops.pad, name='step')
      canvas, (logit, z_pres, objects, h) = step(padded(scene.empty_canvas(images)),
                                                 (by_slot(h), by_slot(centres), jnp.arange(cells)),
                                                 padded(images), temperature, learn)
      logit, z_pres, objects, h = by_slot((logit, z_pres, objects, h))
    else:
      step = CellStep(scene, use_mode, relaxed=relaxed, straight_through=straight_through, name='step')
      flat = lambda x: x.reshape((batch * cells,) + x.shape[2:])
      if crops is None:
        cell_images, frame = jnp.repeat(images, cells, axis=0), None
      else:  # [B, cells, side, side] -> [B cells, side, side]
        whole = padded(images)
        cell_images = flat(jnp.stack([crops.cut(whole, c) for c in range(cells)], axis=1))
        frame = glimpse.Frame(flat(jnp.broadcast_to(jnp.asarray(crops.frame_centres), (batch, cells, 2))),
                              crops.side / crops.canvas)
      logit, present, objects = step(flat(h), cell_images, flat(centres), 1.0 / grid, temperature, learn, frame)
      per_cell = lambda x: x.reshape((batch, cells) + x.shape[1:])
      logit, z_pres, objects = per_cell(logit), per_cell(present), jax.tree.map(per_cell, objects)

      def draw(canvas, slot):  # the kind's drawing, one slot after the other (in its crop)
        slot_objects, slot_z_pres, index = slot
        if crops is None:
          return scene.draw(canvas, slot_objects, slot_z_pres), None
        return crops.paste(canvas, scene.draw(crops.cut(canvas, index), slot_objects, slot_z_pres), index), None

      canvas, _ = jax.lax.scan(draw, padded(scene.empty_canvas(images)),
                               by_slot((objects, z_pres)) + (jnp.arange(cells),))
    canvas = unpadded(canvas)
    sample_key = None if use_mode else (lambda: self.make_rng('sample'))
    canvas = scene.render(canvas, objects, z_pres, sample_key)
    return CoreOutput(z_pres_logits=logit, z_pres=z_pres, active=jnp.ones_like(z_pres), objects=objects,
                      canvas=canvas, hidden=h, image_features=feature_map.reshape(batch, -1))
