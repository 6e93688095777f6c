"""The inference-core seam (air_jax.cores, air_jax.models): the count read from any core's output
(its present slots, wherever they are: the parallel core's cells),
and a core plugged in through models.CORES reaching the eval and train steps unchanged."""
import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import cores
from air_jax import models as models_lib
from air_jax import steps
from tests import helpers


def test_count_is_the_present_slots():
  z_pres = jnp.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [0.9, 0.6, 0.4], [0.2, 0.7, 0.4]])
  np.testing.assert_array_equal(cores.count_of(z_pres), [2, 2, 2, 3, 2, 1])


class FixedCore(nn.Module):
  """A stand-in core whose q's modes are given: z_pres per slot, 2D objects at the canvas centre."""
  z_pres: tuple
  z_what_size: int
  sequential: ClassVar[bool] = False

  @nn.compact
  def __call__(self, images, use_mode=False):
    batch, slots = images.shape[0], len(self.z_pres)
    scale = self.param('scale', nn.initializers.ones, ())
    z_pres = jnp.broadcast_to(jnp.asarray(self.z_pres, jnp.float32), (batch, slots))
    where = jnp.zeros((batch, slots, 3)) * scale
    what = jnp.zeros((batch, slots, self.z_what_size))
    objects = dict(z_where_loc=where, z_where_scale=jnp.ones_like(where), z_where=where,
                   z_what_loc=what, z_what_scale=jnp.ones_like(what), z_what=what)
    return cores.CoreOutput(z_pres_logits=4 * (2 * z_pres - 1), z_pres=z_pres, active=jnp.ones_like(z_pres),
                            objects=objects, canvas=jnp.zeros_like(images), hidden=jnp.zeros((batch, slots, 4)),
                            image_features=jnp.zeros((batch, 8)))


@pytest.fixture(scope='module')
def fixed_models():
  """Smoke models whose core says present, absent, present for every image."""
  models = models_lib.build(helpers.smoke_config(''))
  return dataclasses.replace(models, core=FixedCore((1.0, 0.0, 1.0), models.config.model.z_what_size))


def test_eval_step_counts_the_present_slots(fixed_models, scene_batch):
  params = fixed_models.core.init(jax.random.key(0), jnp.zeros((1, 50, 50)))['params']
  out = steps.make_eval_step(fixed_models)(params, scene_batch['image'][:8], jax.random.key(1))
  np.testing.assert_array_equal(out['count'], np.full(8, 2))  # present, absent, present: 2


def test_train_step_metrics_count_the_present_slots(fixed_models, scene_batch):
  state = steps.init_state(fixed_models, jax.random.key(0))
  counts = np.full(8, 2, np.int32)
  _, metrics = steps.make_train_step(fixed_models)(state, scene_batch['image'][:8], counts, jax.random.key(1))
  assert float(metrics['count']) == 2.0 and float(metrics['train_count_accuracy']) == 1.0


def test_unknown_inference_core_is_one_clear_error():
  config = helpers.smoke_config('')
  config.model.inference = 'parallel_cells'
  with pytest.raises(ValueError, match=r"config.model.inference must be one of \('recurrent', 'parallel'\)"):
    models_lib.build(config)
