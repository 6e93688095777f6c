"""The recurrent inference core (config.model.inference 'recurrent'): AIR and DAIR, one object per step.

At step i = 1..N the LSTM reads the image (AIR) or the image minus the canvas of the steps < i
(DAIR) together with the previous step's latents, then
    z_pres_i  ~ Bernoulli(sigmoid(logit_i)) * z_pres_{i-1}     (once 0, always 0; relaxed with a
                                                                cores.Relaxation)
    objects_i ~ q(object latents | h_i, image)                 (the scene kind's)
    canvas    = the scene kind's drawing of the objects with z_pres = 1 so far.
What an object is, how it is drawn and what the final rendering of the scene is belong to the scene
kind (2D Multi-MNIST: z_where and z_what, a learned decoder written through the glimpse; 3D: a shape
identity and a pose, rendered by MuJoCo). The core owns the LSTM, the z_pres decisions and their
order.
In AIR the image's share of the LSTM gates, W phi(x) + b, is the same at every step and is
computed once per image; DAIR projects its per-step input x - canvas_<i with the same phi, W and b.
phi is the pixels themselves (model.image_conv_features = (), the paper's encoder) or a stack of
strided convolutions (modules.ConvFeatures; the 3D default: a linear map of the pixels cannot read
an object's rotation). Each step
sows its encoder input (x or x - canvas_<i) into the 'intermediates' collection.
With model.memoryless (DAIR only) the LSTM starts every step from a zero state and does not see
the previous latents: each step infers the next object from x - canvas_<i alone.
"""
import dataclasses
from typing import Callable, ClassVar, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from air_jax import modules
from air_jax import objectives
from air_jax.cores import CoreOutput, Relaxation
from air_jax.scenes import base


@dataclasses.dataclass(frozen=True)
class RecurrentOptions:
  """The recurrent core's settings (config.model), checked once by from_config."""
  max_steps: int            # N: one more than the most objects, so the core can say "stop"
  lstm_size: int
  difference_input: bool    # DAIR: the LSTM reads the image minus the canvas so far
  memoryless: bool          # DAIR only: no LSTM memory of earlier steps
  image_conv_features: Tuple[int, ...]  # phi: () = the pixels; else strided convolutions' widths
  matmul_dtype: str         # 'float32' or 'bfloat16' (modules.matmul)

  @classmethod
  def from_config(cls, model: ml_collections.ConfigDict) -> 'RecurrentOptions':
    """Raises ValueError naming an invalid setting or combination of config.model's."""
    if not model.lstm_size > 0:
      raise ValueError(f'config.model.lstm_size must be positive, got {model.lstm_size}')
    modules.check_conv_features('model.image_conv_features', model.image_conv_features)
    if model.memoryless and not model.difference_input:
      raise ValueError('config.model.memoryless needs config.model.difference_input=True (DAIR): '
                       'in AIR every step would see the same image and infer the same object')
    return cls(max_steps=int(model.max_steps), lstm_size=int(model.lstm_size),
               difference_input=bool(model.difference_input), memoryless=bool(model.memoryless),
               image_conv_features=tuple(int(f) for f in model.image_conv_features),
               matmul_dtype=str(model.matmul_dtype))

  @property
  def slots(self) -> int:
    return self.max_steps

  @property
  def dtype(self) -> jnp.dtype:
    return jnp.dtype(self.matmul_dtype)


class RecurrentStep(nn.Module):
  """One attend-infer-repeat step, scanned over N steps with parameters shared. The scene kind's
  predict / sample / draw create their submodules in this module's scope."""
  options: RecurrentOptions
  scene: base.SceneKind  # the run's scene kind
  use_mode: bool  # True: take q's modes (evaluation); False: sample
  image_features: Callable[[jax.Array], jax.Array]  # phi: images [B, H, W] -> [B, F] (shared with the core)
  relaxed: bool = False           # draw z_pres relaxed (cores.Relaxation; its arrays come as call arguments)
  straight_through: bool = False

  @nn.compact
  def __call__(self, carry, images, image_gates, image_kernel, image_bias, temperature, learn_z_pres):
    options, scene = self.options, self.scene
    h, c, z_pres, feedback, canvas = carry

    dtype = options.dtype
    if options.difference_input:  # DAIR: what the canvas so far leaves unexplained
      encoder_input = images - scene.canvas_image(canvas)
      image_gates = modules.matmul(self.image_features(encoder_input), image_kernel, dtype) + image_bias
    else:  # AIR: the image itself, projected once per image by the caller
      encoder_input = images
    self.sow('intermediates', 'encoder_input', encoder_input)
    gates = image_gates
    if options.memoryless:  # DAIR: step i is a function of x - canvas_<i alone
      h, c = jnp.zeros_like(h), jnp.zeros_like(c)
    else:
      gates += modules.Dense(4 * options.lstm_size, use_bias=False, dtype=dtype, name='latent_gates')(
          jnp.concatenate([z_pres[:, None], feedback], axis=-1))
      gates += modules.Dense(4 * options.lstm_size, use_bias=False, dtype=dtype, name='recurrent_gates')(h)
    i_gate, f_gate, g_gate, o_gate = jnp.split(gates, 4, axis=-1)
    c = nn.sigmoid(f_gate + 1.0) * c + nn.sigmoid(i_gate) * jnp.tanh(g_gate)
    h = nn.sigmoid(o_gate) * jnp.tanh(c)

    logit, head = scene.predict(h)
    present = objectives.draw_z_pres(logit, lambda: self.make_rng('sample'), self.use_mode, self.relaxed,
                                     self.straight_through, temperature, learn_z_pres)
    active = z_pres
    new_z_pres = present * active
    sample_key = None if self.use_mode else (lambda: self.make_rng('sample'))
    objects, feedback = scene.sample(head, images, sample_key)
    canvas = scene.draw(canvas, objects, new_z_pres)

    carry = (h, c, new_z_pres, feedback, canvas)
    return carry, dict(z_pres_logits=logit, z_pres=new_z_pres, active=active, objects=objects, hidden=h)


class RecurrentCore(nn.Module):
  """images [B, H, W] in [0, 1] -> CoreOutput (N = options.max_steps slots, one per step; z_pres is
  a cumulative product, so present steps come first). Randomness comes from the 'sample' stream."""
  options: RecurrentOptions
  scene: base.SceneKind  # the run's scene kind
  sequential: ClassVar[bool] = True  # step i's decisions change every later step (objectives.elbo_terms)
  needs_cells: ClassVar[bool] = False

  @staticmethod
  def check_scene(options: RecurrentOptions, scene: base.SceneKind) -> None:
    """Any scene kind's images fit (its options were checked by RecurrentOptions.from_config)."""

  @nn.compact
  def __call__(self, images: jax.Array, use_mode: bool = False, relaxation: Relaxation | None = None) -> CoreOutput:
    options = self.options
    chex.assert_rank(images, 3)
    batch = images.shape[0]
    image_features = modules.ConvFeatures(options.image_conv_features, name='image_conv')
    features = image_features(images)  # once per image
    image_kernel = self.param('image_kernel', nn.initializers.lecun_normal(),
                              (features.shape[-1], 4 * options.lstm_size))
    image_bias = self.param('image_bias', nn.initializers.zeros, (4 * options.lstm_size,))
    image_gates = modules.matmul(features, image_kernel, options.dtype) + image_bias

    steps = nn.scan(RecurrentStep, variable_broadcast='params', variable_axes={'intermediates': 0},
                    split_rngs={'params': False, 'sample': True},
                    in_axes=(nn.broadcast,) * 6, length=options.max_steps, unroll=options.max_steps)
    zeros = lambda *shape: jnp.zeros((batch,) + shape, images.dtype)
    carry = (zeros(options.lstm_size), zeros(options.lstm_size), jnp.ones((batch,), images.dtype),
             zeros(self.scene.feedback_size), self.scene.empty_canvas(images))
    relaxed = relaxation is not None and not use_mode
    temperature, learn = (relaxation.temperature, relaxation.learn) if relaxed else (1.0, True)
    step = steps(options, self.scene, use_mode, image_features, relaxed=relaxed,
                 straight_through=relaxed and relaxation.straight_through, name='step')
    carry, per_step = step(carry, images, image_gates, image_kernel, image_bias,
                           jnp.asarray(temperature, jnp.float32), jnp.asarray(learn))
    per_step = jax.tree.map(lambda v: jnp.moveaxis(v, 0, 1), per_step)  # [N, B, ...] -> [B, N, ...]
    sample_key = None if use_mode else (lambda: self.make_rng('sample'))
    canvas = self.scene.render(carry[-1], per_step['objects'], per_step['z_pres'], sample_key)
    return CoreOutput(canvas=canvas, image_features=image_gates, **per_step)
