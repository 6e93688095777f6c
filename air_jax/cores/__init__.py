"""Inference cores: how a scene's latents are inferred from an image, the seam each core plugs into.

A core is a Flax module built from config.model (config.model.inference names it; air_jax.models
holds the registry) and the run's scene kind (air_jax.scenes.base.SceneKind):

    core.apply({'params': p}, images [B, H, W] in [0, 1], use_mode=False, relaxation=None,
               rngs={'sample': key}) -> CoreOutput

over N object slots. It decides each slot's z_pres and the hidden state the scene kind reads the
slot's object from (SceneKind.predict / sample), and draws the objects through the kind
(draw / render). The objective, the loss, the steps, evaluation and the tools read CoreOutput only.
A scene's count is the number of present slots (count_of); the recurrent core's present slots come
first (once absent, always absent), the parallel core's are cells anywhere on its grid. A core's
attribute `sequential` says whether slot i's decisions change the later slots (recurrent, and the
parallel core's raster order) or only the likelihood and its own terms (parallel cells deciding at
once): the learning signal's credit assignment
(objectives.elbo_terms). With a Relaxation (the 'concrete' z_pres estimator, training
only) a core draws each z_pres from the relaxed Bernoulli (objectives.relaxed_bernoulli) instead:
z_pres, active and the canvas are then continuous in the z_pres logits.

Cores: 'recurrent' (air_jax.cores.recurrent: AIR and DAIR, one object per step) and 'parallel'
(air_jax.cores.parallel: a grid of cells inferred at once, as SPACE, or in raster order, as SPAIR).
"""
from typing import Dict, NamedTuple

import jax
import jax.numpy as jnp


class CoreOutput(NamedTuple):
  """Per-slot decisions and the rendering; shapes use B images and N slots."""
  z_pres_logits: jax.Array  # [B, N] logit of q(z_pres_i = 1 | ...)
  z_pres: jax.Array         # [B, N] 1 while objects are present
  active: jax.Array         # [B, N] 1 where slot i's z_pres was sampled at all (recurrent: z_pres_{i-1})
  objects: Dict[str, jax.Array]  # [B, N, ...] each slot's object latents (the scene kind's names)
  canvas: jax.Array         # [B, H, W] the rendering of the present objects: the likelihood's mean
  hidden: jax.Array         # [B, N, L] the state each slot's latents were predicted from
  image_features: jax.Array  # [B, F] the core's features of the whole image, which the NVIL baseline reads
                            # (recurrent: the image's share of the LSTM gates, W phi(x) + b, F = 4 lstm_size)


class Relaxation(NamedTuple):
  """How a core draws z_pres for the Concrete estimator (objectives.relaxed_bernoulli)."""
  temperature: jax.Array   # [] > 0
  learn: jax.Array         # [] bool: False holds the draw's gradient to the z_pres logits
  straight_through: bool   # True: the hard value forward, the relaxed gradient backward


def count_of(z_pres: jax.Array) -> jax.Array:
  """[B, N] -> int32 [B]: the present slots (z_pres > 0.5), the scene's count. (The recurrent
  core's z_pres never rises again along the slots, so these are the slots before the first absent.)"""
  return (z_pres > 0.5).sum(-1).astype(jnp.int32)
