"""AIR and DAIR: one forward pass of the recurrent inference network and the renderer.

At step i = 1..N the LSTM reads the image (AIR) or the image minus the canvas rendered by steps < i
(DAIR) together with the previous step's latents, then
    z_pres_i  ~ Bernoulli(sigmoid(logit_i)) * z_pres_{i-1}     (once 0, always 0)
    z_where_i ~ N(loc, scale)                                  (reparameterised)
    z_what_i  ~ N(loc, scale) of the glimpse read at z_where_i  (reparameterised)
    canvas   += z_pres_i * write(decode(z_what_i), z_where_i)          (composition 'sum')
    canvas   += z_pres_i * write(...) * (1 - canvas)                    (composition 'union')
'union' makes canvas = 1 - prod_i (1 - z_pres_i object_i), the ink of the union of the objects,
close to how Multi-MNIST composes digits (pixelwise max of near-binary digits): two half-strength
copies of one digit no longer add up to it.
In AIR the image's share of the LSTM gates, W x + b, is the same at every step and is computed
once per image; DAIR projects its per-step input x - canvas_<i with the same W and b. Each step
sows its encoder input (x or x - canvas_<i) into the 'intermediates' collection.
With model.memoryless (DAIR only) the LSTM starts every step from a zero state and does not see
the previous latents: each step infers the next object from x - canvas_<i alone.
"""
from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from air_jax import glimpse
from air_jax import modules


class AIROutput(NamedTuple):
  """Per-step latents and the rendering; shapes use B images, N steps, D = z_what size."""
  z_pres_logits: jax.Array  # [B, N] logit of q(z_pres_i = 1 | ...)
  z_pres: jax.Array         # [B, N] 1 while objects are present (cumulative product of samples)
  active: jax.Array         # [B, N] z_pres_{i-1}: step i was sampled at all
  z_where_loc: jax.Array    # [B, N, 3]
  z_where_scale: jax.Array  # [B, N, 3]
  z_where: jax.Array        # [B, N, 3]
  z_what_loc: jax.Array     # [B, N, D]
  z_what_scale: jax.Array   # [B, N, D]
  z_what: jax.Array         # [B, N, D]
  objects: jax.Array        # [B, N, H, W] each step's decoded object on the canvas (not masked)
  canvas: jax.Array         # [B, H, W] the composition ('sum' or 'union') of z_pres_i * objects_i
  hidden: jax.Array         # [B, N, L] LSTM state that step i's latents were predicted from
  image_features: jax.Array  # [B, 4L] the image's share of the LSTM gates, W x + b


def matmul_dtype(cfg: ml_collections.ConfigDict) -> jnp.dtype:
  """The dtype matmuls run in: config model.matmul_dtype, 'float32' (default) or 'bfloat16'."""
  name = cfg.get('matmul_dtype', 'float32')
  if name not in ('float32', 'bfloat16'):
    raise ValueError(f"config.model.matmul_dtype must be 'float32' or 'bfloat16', got {name!r}")
  return jnp.dtype(name)


COMPOSITIONS = ('sum', 'union')


def check_options(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming an invalid combination of model options (config.model)."""
  if cfg.get('composition', 'sum') not in COMPOSITIONS:
    raise ValueError(f'config.model.composition must be one of {COMPOSITIONS}, got '
                     f'{cfg.composition!r}')
  if not cfg.get('z_pres_logit_bound', 0.0) >= 0:
    raise ValueError('config.model.z_pres_logit_bound must be >= 0 (0: unbounded), got '
                     f'{cfg.z_pres_logit_bound}')
  if cfg.get('memoryless', False) and not cfg.difference_input:
    raise ValueError('config.model.memoryless needs config.model.difference_input=True (DAIR): '
                     'in AIR every step would see the same image and infer the same object')


class AIRStep(nn.Module):
  """One attend-infer-repeat step, scanned over N steps with parameters shared."""
  config: ml_collections.ConfigDict
  use_mode: bool  # True: take q's modes (evaluation); False: sample

  @nn.compact
  def __call__(self, carry, images, image_gates, image_kernel, image_bias):
    cfg = self.config
    h, c, z_pres, z_where, z_what, canvas = carry
    batch = images.shape[0]

    dtype = matmul_dtype(cfg)
    if cfg.difference_input:  # DAIR: what the canvas so far leaves unexplained
      encoder_input = images - canvas
      image_gates = modules.matmul(encoder_input.reshape(batch, -1), image_kernel, dtype) + image_bias
    else:  # AIR: the image itself, projected once per image by the caller
      encoder_input = images
    self.sow('intermediates', 'encoder_input', encoder_input)
    gates = image_gates
    if cfg.get('memoryless', False):  # DAIR: step i is a function of x - canvas_<i alone
      h, c = jnp.zeros_like(h), jnp.zeros_like(c)
    else:
      gates += modules.Dense(4 * cfg.lstm_size, use_bias=False, dtype=dtype, name='latent_gates')(
          jnp.concatenate([z_pres[:, None], z_where, z_what], axis=-1))
      gates += modules.Dense(4 * cfg.lstm_size, use_bias=False, dtype=dtype, name='recurrent_gates')(h)
    i_gate, f_gate, g_gate, o_gate = jnp.split(gates, 4, axis=-1)
    c = nn.sigmoid(f_gate + 1.0) * c + nn.sigmoid(i_gate) * jnp.tanh(g_gate)
    h = nn.sigmoid(o_gate) * jnp.tanh(c)

    logit, where_loc, where_scale = modules.PresWhereHead(
        cfg.predictor_hidden, cfg.z_pres_logit_bias, dtype=dtype,
        logit_bound=cfg.get('z_pres_logit_bound', 0.0), name='pres_where')(h)
    if self.use_mode:
      present = (logit > 0).astype(jnp.float32)
      new_z_where = where_loc
    else:
      present = jax.random.bernoulli(self.make_rng('sample'), nn.sigmoid(logit)).astype(jnp.float32)
      new_z_where = where_loc + where_scale * jax.random.normal(self.make_rng('sample'), where_loc.shape)
    active = z_pres
    new_z_pres = present * active

    glimpses = glimpse.read(images, new_z_where, (cfg.glimpse_size, cfg.glimpse_size))
    what_loc, what_scale = modules.ObjectEncoder(cfg.encoder_hidden, cfg.z_what_size, dtype=dtype,
                                                 name='object_encoder')(glimpses)
    if self.use_mode:
      new_z_what = what_loc
    else:
      new_z_what = what_loc + what_scale * jax.random.normal(self.make_rng('sample'), what_loc.shape)
    patches = modules.ObjectDecoder(cfg.decoder_hidden, cfg.patch_size, cfg.decoder_bias,
                                    dtype=dtype, name='object_decoder')(new_z_what)
    objects = glimpse.write(patches, new_z_where, images.shape[1:])
    drawn = new_z_pres[:, None, None] * objects
    if cfg.get('composition', 'sum') == 'union':  # 1 - (1 - canvas)(1 - drawn); all in [0, 1]
      canvas = canvas + drawn * (1.0 - canvas)
    else:
      canvas = canvas + drawn

    carry = (h, c, new_z_pres, new_z_where, new_z_what, canvas)
    outputs = dict(z_pres_logits=logit, z_pres=new_z_pres, active=active,
                   z_where_loc=where_loc, z_where_scale=where_scale, z_where=new_z_where,
                   z_what_loc=what_loc, z_what_scale=what_scale, z_what=new_z_what,
                   objects=objects, hidden=h)
    return carry, outputs


class AIR(nn.Module):
  """images [B, H, W] in [0, 1] -> AIROutput. Randomness comes from the 'sample' stream."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, images: jax.Array, use_mode: bool = False) -> AIROutput:
    cfg = self.config
    check_options(cfg)
    chex.assert_rank(images, 3)
    batch, height, width = images.shape
    image_kernel = self.param('image_kernel', nn.initializers.lecun_normal(),
                              (height * width, 4 * cfg.lstm_size))
    image_bias = self.param('image_bias', nn.initializers.zeros, (4 * cfg.lstm_size,))
    # once per image
    image_gates = modules.matmul(images.reshape(batch, -1), image_kernel, matmul_dtype(cfg)) + image_bias

    steps = nn.scan(AIRStep, variable_broadcast='params', variable_axes={'intermediates': 0},
                    split_rngs={'params': False, 'sample': True},
                    in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                    length=cfg.max_steps, unroll=cfg.max_steps)
    zeros = lambda *shape: jnp.zeros((batch,) + shape, images.dtype)
    carry = (zeros(cfg.lstm_size), zeros(cfg.lstm_size), jnp.ones((batch,), images.dtype),
             zeros(3), zeros(cfg.z_what_size), zeros(height, width))
    carry, per_step = steps(cfg, use_mode, name='step')(carry, images, image_gates, image_kernel,
                                                       image_bias)
    per_step = {k: jnp.moveaxis(v, 0, 1) for k, v in per_step.items()}  # [N, B, ...] -> [B, N, ...]
    return AIROutput(canvas=carry[-1], image_features=image_gates, **per_step)
