"""AIR / DAIR forward pass on the smoke config: shapes, z_pres structure, the canvas."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import models as models_lib
from tests import helpers

B = 8


def make_forward(difference_input=False, z_pres_logit_bias=0.0):
  """jit (params, images, key) -> CoreOutput; logit bias 0 so both z_pres values occur often."""
  config = helpers.smoke_config('')
  config.model.difference_input = difference_input
  config.model.z_pres_logit_bias = z_pres_logit_bias
  air = models_lib.build(config).core
  return config, jax.jit(lambda params, images, key: air.apply({'params': params}, images,
                                                               rngs={'sample': key}))


@pytest.fixture(scope='module')
def setup(init_smoke, scene_batch):
  config, forward = make_forward()
  params = init_smoke(jax.random.key(0)).params['model']
  images = jnp.asarray(scene_batch['image'][:B], jnp.float32) / 255.0
  outputs = [forward(params, images, jax.random.key(k)) for k in range(4)]
  return config, forward, params, images, outputs


def test_output_shapes(setup):
  config, _, _, _, outputs = setup
  n, d, l = config.model.max_steps, config.model.z_what_size, config.model.lstm_size
  out = outputs[0]
  chex.assert_shape([out.z_pres_logits, out.z_pres, out.active], (B, n))
  chex.assert_shape([out.objects['z_where_loc'], out.objects['z_where_scale'], out.objects['z_where']], (B, n, 3))
  chex.assert_shape([out.objects['z_what_loc'], out.objects['z_what_scale'], out.objects['z_what']], (B, n, d))
  chex.assert_shape(out.objects['image'], (B, n, 50, 50))
  chex.assert_shape(out.canvas, (B, 50, 50))
  chex.assert_shape(out.hidden, (B, n, l))
  chex.assert_shape(out.image_features, (B, 4 * l))
  chex.assert_tree_all_finite(out)


def test_z_pres_is_a_cumulative_product(setup):
  outputs = setup[-1]
  z_pres = np.stack([np.asarray(o.z_pres) for o in outputs])
  active = np.stack([np.asarray(o.active) for o in outputs])
  assert set(np.unique(z_pres)) <= {0.0, 1.0}
  assert np.all(np.diff(z_pres, axis=-1) <= 0)  # once 0, always 0
  np.testing.assert_array_equal(active[..., 0], 1.0)
  np.testing.assert_array_equal(active[..., 1:], z_pres[..., :-1])
  counts = z_pres.sum(-1)
  assert len(np.unique(counts)) >= 3  # the check saw stopping at different steps


def test_canvas_is_sum_of_present_objects(setup):
  for out in setup[-1]:
    expected = (out.z_pres[:, :, None, None] * out.objects['image']).sum(1)
    np.testing.assert_allclose(out.canvas, expected, atol=1e-5)
  out = setup[-1][0]
  # Objects are not masked: an absent step still decodes ink, which the canvas leaves out.
  absent_ink = (np.asarray(out.z_pres) == 0) & (np.asarray(out.objects['image']).max(axis=(2, 3)) > 0.05)
  assert absent_ink.any()
  assert not np.allclose(out.canvas, out.objects['image'].sum(1), atol=1e-3)


def test_union_canvas_is_one_minus_product_of_complements(setup):
  """composition='union': canvas = 1 - prod_i (1 - z_pres_i objects_i), in [0, 1], and below the
  sum where present objects overlap."""
  config, _, params, images, _ = setup
  config = config.copy_and_resolve_references()
  config.model.composition = 'union'
  air = models_lib.build(config).core
  overlapped = False
  for k in range(4):
    out = air.apply({'params': params}, images, rngs={'sample': jax.random.key(k)})
    drawn = np.asarray(out.z_pres)[:, :, None, None] * np.asarray(out.objects['image'])
    np.testing.assert_allclose(out.canvas, 1.0 - np.prod(1.0 - drawn, axis=1), atol=1e-5)
    assert 0.0 <= float(out.canvas.min()) and float(out.canvas.max()) <= 1.0
    overlap = np.sort(drawn, axis=1)[:, -2]  # second-largest ink per pixel: > 0 where two overlap
    if (overlap > 0.05).any():
      overlapped = True
      assert np.all(np.asarray(out.canvas) <= drawn.sum(1) + 1e-6)
      assert (drawn.sum(1) - np.asarray(out.canvas)).max() > 1e-3
  assert overlapped  # the check saw overlapping objects


def test_unknown_composition_is_refused():
  config = helpers.smoke_config('')
  config.model.composition = 'max'
  with pytest.raises(ValueError, match='composition'):
    models_lib.build(config).core.init({'params': jax.random.key(0), 'sample': jax.random.key(1)},
                                     jnp.zeros((2, 50, 50)))


def test_scales_positive_and_samples_differ(setup):
  out0, out1 = setup[-1][:2]
  assert np.all(np.asarray(out0.objects['z_where_scale']) > 0) and np.all(np.asarray(out0.objects['z_what_scale']) > 0)
  assert not np.allclose(out0.objects['z_what'][:, 0], out1.objects['z_what'][:, 0])
  np.testing.assert_allclose(out0.objects['z_where_loc'][:, 0], out1.objects['z_where_loc'][:, 0], atol=1e-6)  # same q_1


def test_same_key_same_sample(setup):
  _, forward, params, images, outputs = setup
  again = forward(params, images, jax.random.key(0))
  chex.assert_trees_all_close(again, outputs[0], atol=0, rtol=0)


def test_image_features(setup):
  _, _, params, images, outputs = setup
  expected = images.reshape(B, -1) @ params['image_kernel'] + params['image_bias']
  np.testing.assert_allclose(outputs[0].image_features, expected, atol=1e-5)


def test_modes(setup):
  config, _, params, images, _ = setup
  air = models_lib.build(config).core
  out = jax.jit(lambda p, x: air.apply({'params': p}, x, use_mode=True))(params, images)
  expected = np.cumprod(np.asarray(out.z_pres_logits) > 0, axis=1)
  np.testing.assert_array_equal(out.z_pres, expected)
  np.testing.assert_array_equal(out.objects['z_where'], out.objects['z_where_loc'])
  np.testing.assert_array_equal(out.objects['z_what'], out.objects['z_what_loc'])


def test_dair_runs_and_differs(setup):
  """DAIR feeds x - canvas: step 1 (blank canvas) matches AIR, later steps differ once drawn."""
  _, air_forward, params, images, _ = setup
  _, dair_forward = make_forward(difference_input=True)
  for k in range(3):
    key = jax.random.key(100 + k)
    air, dair = air_forward(params, images, key), dair_forward(params, images, key)
    chex.assert_tree_all_finite(dair)
    chex.assert_trees_all_equal_shapes(air, dair)
    np.testing.assert_allclose(dair.hidden[:, 0], air.hidden[:, 0], atol=1e-6)
    np.testing.assert_array_equal(dair.z_pres[:, 0], air.z_pres[:, 0])
    drew = np.asarray(air.z_pres[:, 0]) == 1
    assert drew.any()
    gap = np.abs(np.asarray(dair.hidden[:, 1]) - np.asarray(air.hidden[:, 1])).max(-1)
    assert np.all(gap[drew] > 1e-4)
    # An image with nothing drawn at step 1 keeps a blank canvas: DAIR == AIR all the way.
    np.testing.assert_allclose(dair.hidden[~drew], air.hidden[~drew], atol=1e-6)



def test_memoryless_dair_step_depends_only_on_the_residual(scene_batch):
  """With model.memoryless, step 2 of a run on x infers exactly what step 1 infers on the
  residual x - canvas_1 it was given: no memory of earlier steps enters (z_what, whose glimpse
  is cut from x itself, aside)."""
  config = helpers.smoke_config('')
  config.model.difference_input = True
  config.model.memoryless = True
  air = models_lib.build(config).core
  images = jnp.asarray(scene_batch['image'][:B], jnp.float32) / 255.0
  params = air.init({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images)['params']
  assert 'recurrent_gates' not in params['step'] and 'latent_gates' not in params['step']
  forward = jax.jit(lambda x: air.apply({'params': params}, x, use_mode=True,
                                        mutable='intermediates'))
  out, state = forward(images)
  residual = state['intermediates']['step']['encoder_input'][0][1]  # step 2's input
  assert np.abs(np.asarray(residual - images)).max() > 1e-3  # step 1 drew something
  again, _ = forward(residual)
  np.testing.assert_allclose(out.hidden[:, 1], again.hidden[:, 0], atol=1e-5)
  np.testing.assert_allclose(out.z_pres_logits[:, 1], again.z_pres_logits[:, 0], atol=1e-4)
  np.testing.assert_allclose(out.objects['z_where_loc'][:, 1], again.objects['z_where_loc'][:, 0], atol=1e-5)


def test_memoryless_needs_dair():
  config = helpers.smoke_config('')
  config.model.memoryless = True
  with pytest.raises(ValueError, match='difference_input'):
    models_lib.build(config).core.init({'params': jax.random.key(0), 'sample': jax.random.key(1)},
                                     jnp.zeros((2, 50, 50)))


def test_z_pres_logit_bound_keeps_q_away_from_0_and_1(setup):
  """logit = L tanh(a / L): with a huge initial bias a ~ 50, the logit is just under L (q < 1, so
  z_pres = 0 keeps being sampled), and unbounded it would be ~50."""
  _, _, params, images, _ = setup
  for bound in (0.0, 2.0):
    config, forward = make_forward(z_pres_logit_bias=50.0)
    config.model.z_pres_logit_bound = bound
    air = models_lib.build(config).core
    out = air.apply({'params': params}, images, rngs={'sample': jax.random.key(0)})
    logits = np.asarray(out.z_pres_logits)
    if bound:
      assert np.all(np.abs(logits) <= bound) and logits.min() > 1.9
    else:
      assert logits.min() > 40


@pytest.fixture(scope='module')
def many_samples(setup):
  """Latents of 2,048 samples of q for the 8 images (z_pres logit bias 1: q(z_pres) ~ 0.7, so a
  sampler that read the logit with the wrong sign would be seen), [K, B, ...] numpy arrays."""
  config, _, params, images, _ = setup
  config = config.copy_and_resolve_references()
  config.model.z_pres_logit_bias = 1.0
  air = models_lib.build(config).core

  def latents(key):
    out = air.apply({'params': params}, images, rngs={'sample': key})
    latents = {k: getattr(out, k) for k in ('z_pres_logits', 'z_pres', 'active')}
    return dict(latents, **{k: out.objects[k] for k in ('z_where', 'z_where_loc', 'z_where_scale',
                                                        'z_what', 'z_what_loc', 'z_what_scale')})

  run = jax.jit(jax.vmap(latents))
  parts = [run(jax.random.split(jax.random.key(seed), 512)) for seed in range(4)]
  return {k: np.concatenate([np.asarray(p[k], np.float64) for p in parts]) for k in parts[0]}


def presence_z_score(samples, probability):
  """sum over sampled steps of (z_i - p_i) / sqrt(sum p_i (1 - p_i)): ~N(0, 1) if z_i ~ Bern(p_i)."""
  active = samples['active'] > 0
  present = (samples['z_pres'] > 0)[active]
  p = probability[active]
  return (present - p).sum() / np.sqrt((p * (1 - p)).sum())


def test_z_pres_sampled_with_probability_sigmoid_logit(many_samples):
  """A frequency test per step: at every sampled step, z_pres_i = 1 with probability
  sigmoid(logit_i) (the logit depends on the sample's earlier latents, so it is taken per sample)."""
  logits = many_samples['z_pres_logits']
  for i in range(logits.shape[-1]):
    step = {k: v[..., i] for k, v in many_samples.items() if v.ndim == 3}  # [K, B] per step
    assert step['active'].sum() > 1000, i
    assert abs(presence_z_score(step, 1 / (1 + np.exp(-step['z_pres_logits'])))) < 4.5, i
  # Step 1's logit is the same in every sample: each image's frequency, one by one.
  first = 1 / (1 + np.exp(-logits[0, :, 0]))
  frequency = many_samples['z_pres'][:, :, 0].mean(0)
  assert np.all(np.abs(frequency - first) < 4.5 * np.sqrt(first * (1 - first) / len(logits))), (frequency, first)
  assert np.all(np.abs(logits[..., 0] - logits[0, :, 0]) < 1e-5)
  # The test tells such a sampler from one with the logit's sign flipped or a fair coin.
  probability = 1 / (1 + np.exp(-logits))
  assert abs(presence_z_score(many_samples, 1 - probability)) > 20
  assert abs(presence_z_score(many_samples, np.full_like(probability, 0.5))) > 20


def test_continuous_latents_are_loc_plus_scale_times_standard_normal(many_samples):
  """(z - loc) / scale of z_where and z_what is N(0, 1) noise: right mean and spread (so the scale
  multiplies the noise), a normal shape, and independent across images, steps and latents."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  noise = {name: (many_samples[name] - many_samples[f'{name}_loc']) / many_samples[f'{name}_scale']
           for name in ('z_where', 'z_what')}
  for name, eps in noise.items():
    values = eps.ravel()
    assert abs(values.mean()) < 5 / np.sqrt(len(values)), name
    assert abs(values.std() - 1) < 5 / np.sqrt(2 * len(values)), name
    assert stats.kstest(values, 'norm').pvalue > 1e-4, name
    # The spread check tells this from a sampler that dropped the scale (z = loc + noise).
    unscaled = (many_samples[name] - many_samples[f'{name}_loc']).ravel()
    assert abs(unscaled.std() - 1) > 0.1, name
  where, what = noise['z_where'], noise['z_what']  # [K, B, N, 3], [K, B, N, D]
  pairs = {'images 0 and 1': (where[:, 0, 0, 0], where[:, 1, 0, 0]),
           'steps 1 and 2': (where[:, 0, 0, 0], where[:, 0, 1, 0]),
           'z_where and z_what': (where[:, 0, 0, 0], what[:, 0, 0, 0]),
           'z_where coordinates': (where[:, 0, 0, 0], where[:, 0, 0, 1])}
  for pair, (a, b) in pairs.items():
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(len(a)), pair


def by_hand_conv_features(params, images):
  """modules.ConvFeatures by lax: 3x3 stride-2 'SAME' convolutions + ReLU, flattened."""
  x = jnp.asarray(images)[..., None]
  for k in range(len(params)):
    layer = params[f'Conv_{k}']
    x = jax.lax.conv_general_dilated(x, layer['kernel'], (2, 2), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = jnp.maximum(x + layer['bias'], 0.0)
  return x.reshape(len(x), -1)


def test_convolutional_image_encoder(scene_batch):
  """image_conv_features: the image's gates are W phi(x) + b with phi the convolutions; in
  memoryless DAIR each step's LSTM state is the LSTM cell from zeros on W phi(x - canvas_<i) + b."""
  config = helpers.smoke_config('')
  config.model.image_conv_features = (4, 6)
  config.model.difference_input = config.model.memoryless = True
  air = models_lib.build(config).core
  images = jnp.asarray(scene_batch['image'][:B], jnp.float32) / 255.0
  variables = air.init({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images)
  params = variables['params']
  chex.assert_shape(params['image_kernel'], (13 * 13 * 6, 4 * config.model.lstm_size))
  out, state = air.apply({'params': params}, images, rngs={'sample': jax.random.key(2)},
                         mutable='intermediates')
  gates_of = lambda x: by_hand_conv_features(params['image_conv'], x) @ params['image_kernel'] + params['image_bias']
  np.testing.assert_allclose(out.image_features, gates_of(images), atol=1e-5)
  encoder_inputs = state['intermediates']['step']['encoder_input'][0]  # [N, B, H, W]
  for i in range(config.model.max_steps):
    i_gate, _, g_gate, o_gate = np.split(np.asarray(gates_of(encoder_inputs[i])), 4, axis=-1)
    sigmoid = lambda a: 1 / (1 + np.exp(-a))
    expected = sigmoid(o_gate) * np.tanh(sigmoid(i_gate) * np.tanh(g_gate))
    np.testing.assert_allclose(out.hidden[:, i], expected, atol=1e-5)
  assert not np.allclose(encoder_inputs[1], encoder_inputs[0])  # the check saw a drawn canvas


def test_bad_image_conv_features_are_refused():
  config = helpers.smoke_config('')
  config.model.image_conv_features = (4, 0)
  with pytest.raises(ValueError, match='image_conv_features must be a tuple of positive ints'):
    models_lib.build(config).core.init({'params': jax.random.key(0), 'sample': jax.random.key(1)},
                                jnp.zeros((2, 50, 50)))
