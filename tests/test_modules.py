"""modules.matmul: float32 is a plain matmul; bfloat16 rounds the operands of y and dx, not dW's g.
modules.Baseline: an MLP on [f, h_i] whose first layer projects f once per image."""
import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import modules
from air_jax import models as models_lib
from tests import helpers


def rounded(a):
  return a.astype(jnp.bfloat16).astype(jnp.float32)


@pytest.fixture(scope='module')
def operands():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 5, 7)), jnp.float32)  # two batch axes, as in the baseline
  kernel = jnp.asarray(rng.normal(size=(7, 4)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
  return x, kernel, cotangent


def products(x, kernel, cotangent, dtype):
  y, vjp = jax.vjp(lambda x, kernel: modules.matmul(x, kernel, dtype), x, kernel)
  return (y,) + vjp(cotangent)


def test_float32_is_a_plain_matmul(operands):
  x, kernel, cotangent = operands
  y, dx, dkernel = products(x, kernel, cotangent, jnp.float32)
  np.testing.assert_allclose(y, x @ kernel, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(dx, cotangent @ kernel.T, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(dkernel, jnp.einsum('abk,abn->kn', x, cotangent), rtol=1e-6, atol=1e-6)


def test_bfloat16_rounds_operands_of_the_forward_and_input_gradient(operands):
  """y = x~ W~, dx = g~ W~^T, dW = x~^T g with float32 results (~: rounded to bfloat16)."""
  x, kernel, cotangent = operands
  y, dx, dkernel = products(x, kernel, cotangent, jnp.bfloat16)
  assert y.dtype == dx.dtype == dkernel.dtype == jnp.float32
  x_, kernel_, cotangent_ = rounded(x), rounded(kernel), rounded(cotangent)
  np.testing.assert_allclose(y, x_ @ kernel_, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, cotangent_ @ kernel_.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dkernel, jnp.einsum('abk,abn->kn', x_, cotangent), rtol=1e-5, atol=1e-5)
  # The rounding is really there, and only where stated.
  assert not np.allclose(dx, cotangent @ kernel.T, rtol=1e-6, atol=1e-6)
  assert not np.allclose(dkernel, jnp.einsum('abk,abn->kn', x_, cotangent_), rtol=1e-6, atol=1e-6)


def dot_operand_dtypes(fn, *args):
  """Operand dtypes of every dot_general in fn's jaxpr, nested calls and scans included."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        found.append(tuple(v.aval.dtype for v in eqn.invars))
      for param in eqn.params.values():
        for sub in param if isinstance(param, (list, tuple)) else [param]:
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            walk(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def test_bfloat16_products_never_mix_dtypes(operands):
  """Forward and dx products are bf16 x bf16, dW is f32 x f32: none is an f32 x bf16 product,
  which XLA would silently compute in float32."""
  x, kernel, _ = operands
  grad = jax.grad(lambda x, kernel: jnp.sum(modules.matmul(x, kernel, jnp.bfloat16) ** 2), argnums=(0, 1))
  names = sorted(tuple(d.name for d in pair) for pair in dot_operand_dtypes(grad, x, kernel))
  assert names == [('bfloat16', 'bfloat16')] * 2 + [('float32', 'float32')], names


def test_bfloat16_model_has_the_float32_parameter_tree():
  """A bfloat16 model's parameters (and so its checkpoints) are the float32 model's; its gradients
  are float32 and no product of its forward and backward pass mixes float32 with bfloat16."""
  images = jnp.zeros((2, 50, 50), jnp.float32)
  trees = {}
  for dtype in ('float32', 'bfloat16'):
    config = helpers.smoke_config('')
    config.model.matmul_dtype = dtype
    trees[dtype] = jax.eval_shape(models_lib.build(config).core.init,
                                  {'params': jax.random.key(0), 'sample': jax.random.key(1)}, images)
  assert jax.tree.structure(trees['float32']) == jax.tree.structure(trees['bfloat16'])
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype == jnp.float32,
                                          trees['float32'], trees['bfloat16'])))

  config = helpers.smoke_config('')
  config.model.matmul_dtype = 'bfloat16'
  air = models_lib.build(config).core
  params = air.init({'params': jax.random.key(0), 'sample': jax.random.key(1)}, images)['params']
  loss = lambda params: jnp.sum(air.apply({'params': params}, images, rngs={'sample': jax.random.key(2)}).canvas)
  grads = jax.grad(loss)(params)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  products = dot_operand_dtypes(jax.grad(loss), params)
  assert all(a == b for a, b in products), products  # no mixed f32 x bf16 product
  assert sum(a == jnp.bfloat16 for a, _ in products) >= 18, products  # 9 dense layers: y and dx


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_baseline_is_an_mlp_on_the_image_features_and_each_hidden_state(dtype):
  """b_i = relu([f, h_i] W + c) w + d with W = [W_f; W_h], though f is projected once per image;
  no gradient reaches f or h. (bfloat16, batch 8: the shape at which slicing one [f, h] kernel
  crashed XLA:CPU, WORKSPACE.md session 8.)"""
  rng = np.random.default_rng(1)
  features = jnp.asarray(rng.normal(size=(8, 12)), jnp.float32)
  hidden = jnp.asarray(rng.normal(size=(8, 3, 5)), jnp.float32)
  net = modules.Baseline(hidden=6, dtype=jnp.dtype(dtype))
  params = net.init(jax.random.key(0), features, hidden)['params']
  noise = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  params = jax.tree.map(lambda p, n: p + 0.1 * n, params, noise)  # nonzero biases, so each one counts
  layer = lambda name: params[name]['dense']
  kernel = jnp.concatenate([layer('image_layer')['kernel'], layer('hidden_layer')['kernel']])
  inputs = jnp.concatenate([jnp.broadcast_to(features[:, None], (8, 3, 12)), hidden], axis=-1)
  operand = rounded if dtype == 'bfloat16' else (lambda a: a)  # what each product sees
  first = jax.nn.relu(operand(inputs) @ operand(kernel) + layer('hidden_layer')['bias'])
  expected = (operand(first) @ operand(layer('output_layer')['kernel']) + layer('output_layer')['bias'])[..., 0]
  np.testing.assert_allclose(net.apply({'params': params}, features, hidden), expected, rtol=1e-4, atol=1e-4)

  loss = lambda params, features, hidden: jnp.sum(net.apply({'params': params}, features, hidden) ** 2)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, features, hidden)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads[0]))
  assert not np.any(grads[1]) and not np.any(grads[2])


def test_baseline_first_layer_is_initialised_as_one_lecun_normal_kernel():
  """W_f and W_h have the variance 1 / (F + L) of one LeCun-normal kernel on [f, h_i]."""
  params = modules.Baseline(hidden=200).init(jax.random.key(0), jnp.zeros((1, 1024)),
                                             jnp.zeros((1, 3, 256)))['params']
  for name in ('image_layer', 'hidden_layer'):
    np.testing.assert_allclose(np.std(params[name]['dense']['kernel']), (1024 + 256) ** -0.5, rtol=0.05)


@pytest.mark.parametrize('size', [(9, 12), (16, 15)])  # odd and even sides: both 'SAME' paddings
def test_the_strided_convolution_and_its_gradient_are_laxs(size):
  """modules.conv3x3_stride2: lax's convolution forward, its own (tap by tap) gradient backward."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2,) + size + (3,)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(2, -(-size[0] // 2), -(-size[1] // 2), 4)), jnp.float32)
  by_lax = lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(modules.conv3x3_stride2(x, kernel), by_lax(x, kernel), rtol=1e-6)
  loss = lambda conv: lambda x, k: (jnp.tanh(conv(x, k)) * weights).sum()
  ours, expected = jax.grad(loss(modules.conv3x3_stride2), (0, 1))(x, kernel), jax.grad(loss(by_lax), (0, 1))(x, kernel)
  for a, b in zip(ours, expected):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_conv_features_keep_nn_convs_parameters():
  """ConvFeatures' layers are named and initialised as nn.Conv's were: earlier checkpoints load."""

  class WithFlaxConvs(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = x[..., None]
      for size in (4, 6):
        x = nn.relu(nn.Conv(size, (3, 3), strides=2)(x))
      return x.reshape(x.shape[0], -1)

  images = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 20, 20)), jnp.float32)
  ours = modules.ConvFeatures((4, 6)).init(jax.random.key(3), images)
  theirs = WithFlaxConvs().init(jax.random.key(3), images)
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  np.testing.assert_allclose(modules.ConvFeatures((4, 6)).apply(ours, images), WithFlaxConvs().apply(theirs, images),
                             rtol=1e-6)
