"""The 2D scene kind: Multi-MNIST digits, each explained by a window and a learned appearance code.

Per step (after the core's z_pres_i):
    z_where_i ~ N(loc, scale)   (s, x, y): a window of side 0.1 + 0.9 sigmoid(s) centred at (x, y)
    z_what_i  ~ N(loc, scale)   of the glimpse read through the window at z_where_i
    object_i  = write(decode(z_what_i), z_where_i)
    canvas   += z_pres_i * object_i                       (composition 'sum')
    canvas   += z_pres_i * object_i * (1 - canvas)         (composition 'union')
'union' makes canvas = 1 - prod_i (1 - z_pres_i object_i), the ink of the union of the objects,
close to how Multi-MNIST composes digits (pixelwise max of near-binary digits): two half-strength
copies of one digit no longer add up to it. Both latents are continuous (reparameterised); priors
p(z_where) = N(objective.z_where_prior_loc, objective.z_where_prior_scale), p(z_what) = N(0, I).
"""

import jax
import jax.numpy as jnp

from air_jax import evaluators as evaluators_lib
from air_jax import glimpse
from air_jax import modules
from air_jax import objectives
from air_jax.data import mnist as mnist_lib
from air_jax.data import multi_mnist
from air_jax.scenes import base

COMPOSITIONS = ('sum', 'union')
SPLITS = ('train', 'validation', 'test')


@evaluators_lib.register('multi_mnist_layout', count_only=True)
def accuracy_by_layout(scenes, inferred, max_count):
  """accuracy_by_layout: count accuracy by the nearest pair's distance and over scenes holding a 1
  (multi_mnist.accuracy_by_layout), from the scenes' digit boxes and labels."""
  return dict(accuracy_by_layout=multi_mnist.accuracy_by_layout(
      scenes['count'], inferred['count'], scenes['boxes'], scenes['labels']))


class Scene(base.SceneKind):
  """Multi-MNIST: objects {z_where_loc, z_where_scale, z_where [.., 3], z_what_loc, z_what_scale,
  z_what [.., D], image [.., H, W] (the decoded object on the canvas, before z_pres; on the crop
  the core passed, for a Cell with a frame)}."""

  name = 'multi_mnist'
  evaluators = ('multi_mnist_layout',)
  cells = True

  @property
  def image_shape(self):
    return (self.data.canvas_size, self.data.canvas_size)

  @property
  def feedback_size(self):
    return 3 + self.model.z_what_size

  def check(self) -> None:
    model = self.model
    for name in ('z_what_size', 'glimpse_size', 'patch_size'):
      if not model[name] > 0:
        raise ValueError(f'config.model.{name} must be positive, got {model[name]}')
    if model.composition not in COMPOSITIONS:
      raise ValueError(f'config.model.composition must be one of {COMPOSITIONS}, got {model.composition!r}')
    if not self.objective.boundary_penalty >= 0:
      raise ValueError(f'config.objective.boundary_penalty must be >= 0, got {self.objective.boundary_penalty}')
    if self.boundary_penalty and not 0 < self.objective.boundary_width < model.patch_size / 2:
      raise ValueError(f'config.objective.boundary_width must be in (0, patch_size / 2 = {model.patch_size / 2}) '
                       f'pixels of the patch, got {self.objective.boundary_width}')
    if self.eval_split not in SPLITS[1:]:
      raise ValueError(f"config.data.eval_split must be 'validation' or 'test', got {self.eval_split!r}")

  @property
  def boundary_penalty(self) -> float:
    return float(self.objective.boundary_penalty)

  @property
  def eval_split(self) -> str:
    """config.data.eval_split: 'test' (held-out test digits), or 'validation' (MNIST train digits
    held out of training) to choose settings on."""
    return self.data.eval_split

  # --- inside the core's step ---
  def predict(self, h):
    logit, where_loc, where_scale = modules.PresWhereHead(
        self.model.predictor_hidden, self.model.z_pres_logit_bias, dtype=self.dtype,
        logit_bound=self.model.z_pres_logit_bound, name='pres_where')(h)
    return logit, (where_loc, where_scale)

  def sample(self, head, images, key_fn, cell=None):
    cfg, dtype = self.model, self.dtype
    where_loc, where_scale = head
    latent = where_loc if key_fn is None else where_loc + where_scale * jax.random.normal(key_fn(), where_loc.shape)
    cell_objects, frame = {}, None
    if cell is None:
      z_where = latent
    else:  # (s, u): the window's centre is the cell's centre + half_size u
      z_where = jnp.concatenate([latent[:, :1], cell.centre + cell.half_size * latent[:, 1:]], -1)
      cell_objects, frame = dict(z_where_offset=latent), cell.frame
    glimpses = glimpse.read(images, z_where, (cfg.glimpse_size, cfg.glimpse_size), frame)
    what_loc, what_scale = modules.ObjectEncoder(cfg.encoder_hidden, cfg.z_what_size, dtype=dtype,
                                                 name='object_encoder')(glimpses)
    z_what = what_loc if key_fn is None else what_loc + what_scale * jax.random.normal(key_fn(), what_loc.shape)
    patches = self.decoder(name='object_decoder')(z_what)
    if self.boundary_penalty:  # the patch's border ink is penalised (object_kls)
      cell_objects['patch'] = patches
    objects = dict(z_where_loc=where_loc, z_where_scale=where_scale, z_where=z_where,
                   z_what_loc=what_loc, z_what_scale=what_scale, z_what=z_what,
                   image=glimpse.write(patches, z_where, images.shape[1:], frame), **cell_objects)
    return objects, jnp.concatenate([z_where, z_what], axis=-1)

  def decoder(self, name=None) -> modules.ObjectDecoder:
    cfg = self.model
    return modules.ObjectDecoder(cfg.decoder_hidden, cfg.patch_size, cfg.decoder_bias,
                                 dtype=self.dtype, name=name)

  def draw(self, canvas, objects, z_pres):
    drawn = z_pres[:, None, None] * objects['image']
    if self.model.composition == 'union':  # 1 - (1 - canvas)(1 - drawn); all in [0, 1]
      return canvas + drawn * (1.0 - canvas)
    return canvas + drawn

  # --- the objective ---
  def where_latent_and_prior(self, objects):
    """(the sampled z_where latent, its prior's loc and scale): z_where ~ N(objective.z_where_prior_*)
    or, for objects placed in cells, (s, u) with the same prior on s and N(0, 1) on the offset u."""
    loc = jnp.asarray(self.objective.z_where_prior_loc, jnp.float32)
    scale = jnp.asarray(self.objective.z_where_prior_scale, jnp.float32)
    if 'z_where_offset' in objects:  # the core placed the objects in cells (base.Cell)
      return objects['z_where_offset'], loc.at[1:].set(0.0), scale.at[1:].set(1.0)
    return objects['z_where'], loc, scale

  def border_ink(self, patches):
    """[...] boundary_penalty * the summed intensity of decoded patches [..., P, P] within
    objective.boundary_width pixels of the patch's edge (SPACE's boundary loss, Lin et al. 2020):
    an object cut by its window has ink at the cut, a whole one inside its window has none, so
    neighbouring cells of the parallel core do not split one digit between them."""
    size, width = patches.shape[-1], self.objective.boundary_width
    inside = (jnp.arange(size) >= width) & (jnp.arange(size) < size - width)
    band = 1.0 - (inside[:, None] & inside[None, :]).astype(patches.dtype)
    return self.boundary_penalty * (patches * band).sum((-2, -1))

  def object_kls(self, out):
    """KL of z_where and z_what to their priors, and with objective.boundary_penalty > 0 the
    border-ink penalty ('boundary', a prior term -log p up to a constant)."""
    objects = out.objects
    _, where_loc, where_scale = self.where_latent_and_prior(objects)
    kls = dict(
        where=objectives.normal_kl(objects['z_where_loc'], objects['z_where_scale'], where_loc, where_scale).sum(-1),
        what=objectives.normal_kl(objects['z_what_loc'], objects['z_what_scale'], 0.0, 1.0).sum(-1))
    if self.boundary_penalty:
      kls['boundary'] = self.border_ink(objects['patch'])
    return kls

  def object_log_ratio(self, out):
    objects = out.objects
    log_ratio = lambda x, loc, scale, p_loc, p_scale: (
        objectives.normal_log_prob(x, p_loc, p_scale) - objectives.normal_log_prob(x, loc, scale)).sum(-1)
    where, where_loc, where_scale = self.where_latent_and_prior(objects)
    ratio = (log_ratio(where, objects['z_where_loc'], objects['z_where_scale'], where_loc, where_scale)
             + log_ratio(objects['z_what'], objects['z_what_loc'], objects['z_what_scale'], 0.0, 1.0))
    return ratio - self.border_ink(objects['patch']) if self.boundary_penalty else ratio

  def summary(self, objects):
    """What evaluation and inference report of q's modes: z_where [B, N, 3], boxes [B, N, 4] (the
    windows in pixels, glimpse.boxes) and z_what [B, N, D]."""
    return dict(z_where=objects['z_where'], boxes=glimpse.boxes(objects['z_where'], self.image_shape),
                z_what=objects['z_what'])

  # --- data and pictures ---
  def scenes(self, split: str):
    """The unmaterialised scenes of 'train' (MNIST train digits less the last data.validation_digits),
    'validation' (those last train digits: never in a training scene) or 'test' (test digits)."""
    if split not in SPLITS:
      raise ValueError(f'a Multi-MNIST split is one of {SPLITS}, got {split!r}')
    data = self.data
    digits = mnist_lib.load_mnist(data.data_dir or None)
    images, labels = digits.split('test' if split == 'test' else 'train')
    if split != 'test':
      if not 0 < data.validation_digits < len(images):
        raise ValueError(f'config.data.validation_digits must be between 1 and {len(images) - 1} (the MNIST '
                         f'train digits less one), got {data.validation_digits}')
      first_held_out = len(images) - data.validation_digits
      part = slice(first_held_out, None) if split == 'validation' else slice(0, first_held_out)
      images, labels = images[part], labels[part]
    counts, num, seed = ((data.train_counts, data.num_train, data.train_seed) if split == 'train'
                         else (data.eval_counts, data.num_eval, data.eval_seed))
    return multi_mnist.MultiMNIST(images, labels, counts=counts, num_examples=num, seed=seed,
                                  canvas_size=data.canvas_size, digit_size=data.digit_size)

  def picture_arrays(self, out, images, params):
    """canvas, z_pres, boxes, and per step the glimpse read at z_where [B, N, G, G], the decoded
    patch [B, N, P, P] and the object on the canvas [B, N, H, W] (parts)."""
    cfg = self.model
    batch, steps = out.z_pres.shape
    z_where = out.objects['z_where']
    size = (cfg.glimpse_size, cfg.glimpse_size)
    glimpses = jnp.stack([glimpse.read(images, z_where[:, i], size) for i in range(steps)], axis=1)
    patches = self.decoder().apply({'params': params['step']['object_decoder']},
                                   out.objects['z_what'].reshape(batch * steps, -1))
    patches = patches.reshape(batch, steps, cfg.patch_size, cfg.patch_size)
    # Each object on the whole canvas (a core drawing in crops keeps only the crop in objects['image']).
    parts = jnp.stack([glimpse.write(patches[:, i], z_where[:, i], images.shape[1:]) for i in range(steps)], axis=1)
    return dict(canvas=out.canvas, z_pres=out.z_pres, boxes=glimpse.boxes(z_where, images.shape[1:]),
                glimpses=glimpses, patches=patches, parts=parts)

  def grid_arguments(self, arrays):
    return {k: arrays[k] for k in ('canvas', 'z_pres', 'boxes', 'glimpses', 'patches', 'parts')}
