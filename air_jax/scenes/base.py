"""The seam every scene kind plugs into: SceneKind.

An inference core (air_jax.cores: the recurrent AIR/DAIR core, one object per step) decides, per
slot i of N, z_pres_i and the hidden state h_i an object is read from; the scene kind says what an
object is (its latents and their q and p), how objects become an image, and where its data come
from. One object is the same code in every core: `predict(h)` and `sample(head, images, key_fn)`
run inside the core's step module (the submodules they create are the step's), then `draw` puts
the object on the canvas carried between steps, and `render` makes the likelihood's mean.

A kind is built once per run from the validated config (air_jax.models.build) and passed down; its
constructor raises ValueError naming a bad setting. Subclasses implement the abstract members;
the others are no-ops that fit a kind with continuous object latents drawn on a pixel canvas.
Kinds whose data have no true object counts (Omniglot) set has_counts False: their examples carry
count -1 and evaluation reports the steps used instead of a count accuracy.
"""
import abc
import pathlib
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from air_jax import metrics
from air_jax.data import mnist
from air_jax.data import sources

Objects = Dict[str, jax.Array]  # an object's latents by name: [B, ...] per step, [B, N, ...] stacked
KeyFn = Optional[Callable[[], jax.Array]]  # None: q's modes; else returns a fresh key per call


class Cell(NamedTuple):
  """Where a spatially parallel core's slot looks (air_jax.cores.parallel): a cell of a grid over
  the image, in the kind's position coordinates. Its object's position is the centre plus
  half_size times a latent offset u whose prior is N(0, 1) (the kind's KLs read the offset)."""
  centre: jax.Array  # [B, 2]
  half_size: float   # half the cell's side
  # The crop of the canvas around the cell that the core passes as the images (and as the canvas
  # to draw on), in the kind's position coordinates (a glimpse.Frame for 2D); None: the whole canvas.
  frame: Any = None


class SceneKind(abc.ABC):
  """What a kind of scene brings; see the module docstring. Shapes use B images and N slots."""

  name: str = ''                  # the config.scene_kind that selects it
  making_sources: str = 'composing'  # what progress lines call making the cached sources
  has_counts: bool = True         # the data carry true object counts
  evaluators: Tuple[str, ...] = ()  # the kind's own air_jax.evaluators, after 'steps' and 'counts'
  # Object latents all reparameterised and the rendering differentiable in z_pres: the 'concrete'
  # and 'vimco' z_pres estimators apply (air_jax.loss).
  relaxable: bool = True
  # sample places an object within a Cell: the spatially parallel core applies (air_jax.cores).
  cells: bool = False

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model, self.objective, self.data = config.model, config.objective, config.data
    self.dtype = jnp.dtype(config.model.matmul_dtype)  # of the dense products (modules.matmul)
    self.check()

  @classmethod
  def resolved(cls, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """config with the settings the kind derives from its data filled in (changed in place and
    returned), so the config a run saves reproduces it anywhere: none here."""
    return config

  # --- what the core and the loop read ---
  @property
  @abc.abstractmethod
  def image_shape(self) -> Tuple[int, int]:
    """(H, W) of the kind's images."""

  @property
  @abc.abstractmethod
  def feedback_size(self) -> int:
    """Size of the vector of a step's latents that the core reads at the next step."""

  def check(self) -> None:
    """Raises ValueError naming a bad setting of the kind (called once, by the constructor)."""

  @property
  def eval_split(self) -> str:
    """The split the loop evaluates on (a kind with a validation split reads config.data.eval_split)."""
    return 'test'

  def all_evaluators(self) -> Tuple[str, ...]:
    """The names of the air_jax.evaluators a held-out evaluation runs."""
    return ('steps',) + (('counts',) if self.has_counts else ()) + tuple(self.evaluators)

  # --- one object, inside the core's step ---
  @abc.abstractmethod
  def predict(self, h: jax.Array) -> Tuple[jax.Array, Any]:
    """h [B, L] -> (z_pres logit [B], the object head's outputs for sample)."""

  @abc.abstractmethod
  def sample(self, head: Any, images: jax.Array, key_fn: KeyFn, cell: Cell | None = None) -> Tuple[Objects, jax.Array]:
    """-> (object latents {name: [B, ...]}, feedback [B, feedback_size]); with a Cell (kinds with
    cells True), the object's position is the cell's centre plus half its side times an offset."""

  def empty_canvas(self, images: jax.Array) -> Any:
    """The canvas before any object: zeros like images [B, H, W]."""
    return jnp.zeros_like(images)

  @abc.abstractmethod
  def draw(self, canvas: Any, objects: Objects, z_pres: jax.Array) -> Any:
    """The canvas with a step's objects drawn where z_pres [B] is 1."""

  def canvas_image(self, canvas: Any) -> jax.Array:
    """The canvas as an image [B, H, W] (what DAIR subtracts from the input)."""
    return canvas

  def render(self, canvas: Any, objects: Objects, z_pres: jax.Array, key_fn: KeyFn) -> jax.Array:
    """The likelihood's mean [B, H, W] from the final canvas and every slot's objects [B, N, ...]:
    the canvas itself, where the steps drew it."""
    return canvas

  # --- the objective ---
  @abc.abstractmethod
  def object_kls(self, out) -> Dict[str, jax.Array]:
    """{name: [B, N]} per-slot KL (and prior penalty) terms of the object latents, unmasked."""

  @abc.abstractmethod
  def object_log_ratio(self, out) -> jax.Array:
    """[B, N] log p(v_i) - log q(v_i | ...) of each slot's sampled object latents v_i, unmasked (with
    the prior penalties object_kls adds, as -log p): the importance weights' share of the objects
    (air_jax.bounds). Its expectation under q is minus the sum of object_kls."""

  def discrete_log_prob(self, out) -> jax.Array:
    """[B, N] log q of each slot's sampled discrete object latents (scored by REINFORCE): none."""
    return jnp.zeros_like(out.z_pres)

  def hold_discrete(self, objects: Objects) -> Objects:
    """objects with q(discrete object latents)'s parameters behind a stop-gradient: none to hold."""
    return objects

  def enumerated_discrete(self, out, learn) -> Any:
    """objectives.Enumerated: discrete object latents whose expectation the loss sums over their
    values instead of scoring them; None: the kind has none."""
    return None

  @abc.abstractmethod
  def summary(self, objects: Objects) -> Dict[str, jax.Array]:
    """What evaluation and inference report of q's modes, {name: [B, N, ...]}."""

  # --- data ---
  @abc.abstractmethod
  def scenes(self, split: str):
    """The unmaterialised random-access source of a split ('train', or an eval split) of
    {'image' [H, W] uint8 (or float in [0, 1]), 'count' int32 (-1: unknown), ...}, with a
    cache_name(split) where the default sources() caches it."""

  def cache_dir(self) -> pathlib.Path:
    return pathlib.Path(self.data.data_dir or mnist.default_data_dir()) / 'scenes'

  def sources(self, log=print) -> Tuple[sources.InMemory, sources.InMemory]:
    """(train, eval split) in memory, each made once and cached under cache_dir()."""
    made = []
    for split in ('train', self.eval_split):
      scenes = self.scenes(split)
      start = time.time()
      progress = metrics.ProgressPrinter(f'{self.making_sources} {split} scenes', log)
      made.append(sources.materialise_cached(scenes, self.cache_dir(), split, progress=progress))
      counts = f' (counts {tuple(scenes.counts)})' if hasattr(scenes, 'counts') else ''
      log(f'{len(scenes)} {split} scenes{counts} ready in {time.time() - start:.1f}s')
    return made[0], made[1]

  # --- pictures (air_jax.pictures.Pictures) ---
  def picture_arrays(self, out, images: jax.Array, params) -> Dict[str, jax.Array]:
    """Inside the compiled forward pass of q's modes: the arrays a picture needs, at least canvas
    [B, H, W] and z_pres [B, N] (and boxes [B, N, 4] in pixels, unless grid_arguments makes them)."""
    return dict(canvas=out.canvas, z_pres=out.z_pres, **self.summary(out.objects))

  def grid_arguments(self, arrays: Dict[str, Any]) -> Dict[str, Any]:
    """On the host: picture_arrays -> the keyword arguments of air_jax.pictures.grid (canvas,
    z_pres, boxes, and optionally glimpses, patches, parts, step_labels)."""
    return {k: arrays[k] for k in ('canvas', 'z_pres', 'boxes')}
