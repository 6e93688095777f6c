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
"""
import dataclasses
from typing import ClassVar, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

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
    return cls(grid_size=model.grid_size, cell_hidden=int(model.cell_hidden),
               image_conv_features=tuple(int(f) for f in model.image_conv_features),
               cell_order=str(model.cell_order), matmul_dtype=str(model.matmul_dtype))

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
  def __call__(self, h, images, centres, half_size, temperature, learn_z_pres):
    logit, head = self.scene.predict(h)
    present = objectives.draw_z_pres(logit, lambda: self.make_rng('sample'), self.use_mode, self.relaxed,
                                     self.straight_through, temperature, learn_z_pres)
    sample_key = None if self.use_mode else (lambda: self.make_rng('sample'))
    objects, _ = self.scene.sample(head, images, sample_key, base.Cell(centres, half_size))
    return logit, present, objects


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

  @nn.compact
  def __call__(self, canvas, cell_inputs, images, temperature, learn_z_pres):
    h_cell, centre, index = cell_inputs
    scene = self.scene
    context = residual_context(images, scene.canvas_image(canvas), index, self.options.grid_size)
    h = nn.relu(modules.Dense(self.options.cell_hidden, dtype=jnp.dtype(self.options.matmul_dtype),
                              name='context_state')(jnp.concatenate([h_cell, context], -1)))
    logit, head = scene.predict(h)
    present = objectives.draw_z_pres(logit, lambda: self.make_rng('sample'), self.use_mode, self.relaxed,
                                     self.straight_through, temperature, learn_z_pres)
    sample_key = None if self.use_mode else (lambda: self.make_rng('sample'))
    objects, _ = scene.sample(head, images, sample_key, base.Cell(centre, 1.0 / self.options.grid_size))
    canvas = scene.draw(canvas, objects, present)
    return canvas, (logit, present, objects, h)


class ParallelCore(nn.Module):
  """images [B, H, W] in [0, 1] -> CoreOutput over G^2 cell slots (the module docstring)."""
  options: ParallelOptions
  scene: base.SceneKind  # the run's scene kind (scene.cells: it places objects in cells)
  needs_cells: ClassVar[bool] = True  # scene.sample places each object in its cell

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
    if options.cell_order == 'raster':
      steps = nn.scan(RasterStep, variable_broadcast='params', split_rngs={'params': False, 'sample': True},
                      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cells)
      step = steps(options, scene, use_mode, relaxed=relaxed, straight_through=straight_through, name='step')
      canvas, (logit, z_pres, objects, h) = step(scene.empty_canvas(images),
                                                 (by_slot(h), by_slot(centres), jnp.arange(cells)),
                                                 images, temperature, learn)
      logit, z_pres, objects, h = by_slot((logit, z_pres, objects, h))
    else:
      step = CellStep(scene, use_mode, relaxed=relaxed, straight_through=straight_through, name='step')
      flat = lambda x: x.reshape((batch * cells,) + x.shape[2:])
      logit, present, objects = step(flat(h), jnp.repeat(images, cells, axis=0), flat(centres), 1.0 / grid,
                                     temperature, learn)
      per_cell = lambda x: x.reshape((batch, cells) + x.shape[1:])
      logit, z_pres, objects = per_cell(logit), per_cell(present), jax.tree.map(per_cell, objects)

      def draw(canvas, slot):  # the kind's drawing, one slot after the other
        slot_objects, slot_z_pres = slot
        return scene.draw(canvas, slot_objects, slot_z_pres), None

      canvas, _ = jax.lax.scan(draw, scene.empty_canvas(images), by_slot((objects, z_pres)))
    sample_key = None if use_mode else (lambda: self.make_rng('sample'))
    canvas = scene.render(canvas, objects, z_pres, sample_key)
    return CoreOutput(z_pres_logits=logit, z_pres=z_pres, active=jnp.ones_like(z_pres), objects=objects,
                      canvas=canvas, hidden=h, image_features=feature_map.reshape(batch, -1))
