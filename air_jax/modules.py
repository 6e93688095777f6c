"""Small Flax modules: MLPs, the object encoder/decoder, the z_pres/z_where head, the baseline."""
import functools
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SCALE_FLOOR = 1e-4  # lower bound on every posterior standard deviation


def matmul(x: jax.Array, kernel: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """x [..., K] @ kernel [K, N] -> float32 [..., N], with the products in `dtype`.

  float32: a plain matmul. bfloat16 (mixed precision): the forward product and the backward
  product that carries the gradient on to x take bfloat16 operands and accumulate in float32;
  the weight gradient is taken from the float32 cotangent:
      y = x~ W~,   dx = g~ W~^T,   dW = x~^T g          (~: rounded to bfloat16).
  Parameters, gradients and everything between the matmuls stay float32. Rounding g in dW as
  well made 2 of 3 seeds of the default run miss 98% count accuracy at 4,000 steps (5 of 5 reach
  it as written, as in float32; docs/results/throughput.md). Plain autodiff of a bfloat16 matmul
  would give f32 x bf16 backward products, which XLA:CPU computes in float32."""
  x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)
  if jnp.dtype(dtype) == jnp.float32:
    return jnp.matmul(x, kernel)
  return _rounded_matmul(x, kernel, jnp.dtype(dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rounded_matmul(x, kernel, dtype):
  return _rounded_matmul_fwd(x, kernel, dtype)[0]


def _rounded_matmul_fwd(x, kernel, dtype):
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  return jnp.matmul(x, kernel, preferred_element_type=jnp.float32), (x, kernel)


def _rounded_matmul_bwd(dtype, residuals, g):
  x, kernel = residuals
  batch_axes = tuple(range(x.ndim - 1))
  dx = jnp.matmul(g.astype(dtype), kernel.T, preferred_element_type=jnp.float32)
  dkernel = jnp.tensordot(x.astype(jnp.float32), g, axes=(batch_axes, batch_axes))
  return dx, dkernel


_rounded_matmul.defvjp(_rounded_matmul_fwd, _rounded_matmul_bwd)


class Dense(nn.Module):
  """nn.Dense (float32 parameters, float32 result) whose products run in `dtype`: see matmul."""
  features: int
  use_bias: bool = True
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    def dot_general(lhs, rhs, dimension_numbers, precision=None):
      assert dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())) and precision is None
      return matmul(lhs, rhs, self.dtype)

    return nn.Dense(self.features, use_bias=self.use_bias, kernel_init=self.kernel_init,
                    bias_init=self.bias_init, dtype=jnp.float32, param_dtype=jnp.float32,
                    dot_general=dot_general, name='dense')(x)


class MLP(nn.Module):
  """ReLU MLP; the last layer is linear with `output_bias` as its initial bias."""
  features: Sequence[int]
  output_bias: float = 0.0
  dtype: jnp.dtype = jnp.float32  # matmul dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for size in self.features[:-1]:
      x = nn.relu(Dense(size, dtype=self.dtype)(x))
    return Dense(self.features[-1], bias_init=nn.initializers.constant(self.output_bias),
                 dtype=self.dtype)(x)


def gaussian_params(x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """Splits [..., 2D] into (loc, scale = softplus(.) + floor), each [..., D]."""
  loc, raw_scale = jnp.split(x, 2, axis=-1)
  return loc, nn.softplus(raw_scale) + SCALE_FLOOR


def check_conv_features(field: str, features) -> None:
  """Raises ValueError unless `features` (config field `field`) is a tuple of positive ints."""
  if not all(isinstance(size, int) and size > 0 for size in features):
    raise ValueError(f'config.{field} must be a tuple of positive ints (() = no convolutions), '
                     f'got {features!r}')


def _same_pads(size: int) -> Tuple[int, Tuple[int, int]]:
  """A 3x3 stride-2 'SAME' convolution along an axis of `size`: (output size, (pad before, after))."""
  out = -(-size // 2)
  total = max((out - 1) * 2 + 3 - size, 0)
  return out, (total // 2, total - total // 2)


def _conv3x3_stride2(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@jax.custom_vjp
def conv3x3_stride2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [B, H, W, C] * kernel [3, 3, C, F] -> [B, ceil(H/2), ceil(W/2), F]: the 'SAME' convolution
  of stride 2 (lax.conv_general_dilated). Its gradient is written as nine taps: with x~ the padded
  input and x~_t its stride-2 view at tap t = (dy, dx),
      dkernel[t] = x~_t^T g,      dx~ = sum_t (g kernel[t]^T placed on x~_t's pixels),
  matmuls and interior pads that XLA's CPU backend runs faster than its convolution transposes
  (the convolutional recurrent core's train step on 128 px: 1.46x; docs/results/crowded.md).
  Reverse mode only (a custom_vjp: no jax.jvp through it); StridedConv uses it on the CPU only."""
  return _conv3x3_stride2(x, kernel)


def _conv_forward(x, kernel):
  return _conv3x3_stride2(x, kernel), (x, kernel)


def _conv_backward(residuals, g):
  x, kernel = residuals
  (out_h, (top, bottom)), (out_w, (left, right)) = _same_pads(x.shape[1]), _same_pads(x.shape[2])
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  height, width = padded.shape[1:3]
  tap = lambda a, dy, dx: a[:, dy:dy + 2 * out_h - 1:2, dx:dx + 2 * out_w - 1:2]
  taps = [(dy, dx) for dy in range(3) for dx in range(3)]
  dkernel = jnp.stack([jnp.einsum('bhwc,bhwf->cf', tap(padded, dy, dx), g) for dy, dx in taps]).reshape(kernel.shape)
  zero = jnp.zeros((), x.dtype)
  dpadded = sum(jax.lax.pad(jnp.einsum('bhwf,cf->bhwc', g, kernel[dy, dx]), zero,
                            ((0, 0, 0), (dy, height - dy - (2 * out_h - 1), 1), (dx, width - dx - (2 * out_w - 1), 1),
                             (0, 0, 0)))
                for dy, dx in taps)
  return dpadded[:, top:top + x.shape[1], left:left + x.shape[2]], dkernel


conv3x3_stride2.defvjp(_conv_forward, _conv_backward)


class StridedConv(nn.Module):
  """nn.Conv(features, (3, 3), strides=2) with the same parameters (kernel [3, 3, C, F], lecun
  normal; bias [F], zeros): through conv3x3_stride2 on the CPU, lax's own gradient elsewhere
  (accelerators' convolution gradients were not measured against it)."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
    conv = conv3x3_stride2 if jax.default_backend() == 'cpu' else _conv3x3_stride2
    return conv(x, kernel) + bias


class ConvFeatures(nn.Module):
  """images [B, H, W] -> features [B, F]: 3x3 convolutions of stride 2, each followed by a ReLU,
  flattened (F = features[-1] * ceil(H / 2^k) * ceil(W / 2^k) for k layers; features () = the
  pixels flattened, no parameters); flatten False: the feature map [B, h, w, C]. Runs in float32."""
  features: Sequence[int]
  flatten: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images[..., None]
    for index, size in enumerate(self.features):
      x = nn.relu(StridedConv(size, name=f'Conv_{index}')(x))  # nn.Conv's names: checkpoints load
    return x.reshape(x.shape[0], -1) if self.flatten else x


def scale_bias(initial_scale: float) -> float:
  """The raw-scale bias b with softplus(b) + SCALE_FLOOR = initial_scale (gaussian_params's scale
  of a zero output); 0.0 (softplus(0) + floor = 0.69 + floor) when initial_scale is 0."""
  return float(np.log(np.expm1(initial_scale - SCALE_FLOOR))) if initial_scale > 0 else 0.0


class PresWhereHead(nn.Module):
  """h [B, L] -> q(z_pres) logit [B], q(where) loc [B, D] and scale [B, D] (2D: z_where, D = 3;
  3D: the floor position, D = 2).

  With logit_bound L > 0 the logit is L tanh(a / L): q(z_pres) stays within sigmoid(+-L), so
  every decision keeps being explored and neither its score nor its KL gradient vanishes.
  initial_scale > 0: q(where)'s standard deviation starts there (0: at softplus(0) + floor)."""
  hidden: int
  z_pres_logit_bias: float
  dtype: jnp.dtype = jnp.float32
  logit_bound: float = 0.0
  where_size: int = 3
  initial_scale: float = 0.0

  @nn.compact
  def __call__(self, h: jax.Array):
    out = MLP([self.hidden, 1 + 2 * self.where_size], dtype=self.dtype)(h)
    logit = out[:, 0] + self.z_pres_logit_bias
    if self.logit_bound > 0:
      logit = self.logit_bound * jnp.tanh(logit / self.logit_bound)
    loc, raw_scale = jnp.split(out[:, 1:], 2, axis=-1)
    loc, scale = gaussian_params(jnp.concatenate([loc, raw_scale + scale_bias(self.initial_scale)], -1))
    return logit, loc, scale


class ObjectEncoder(nn.Module):
  """Glimpse [B, G, G] -> q(z_what) loc and scale, each [B, D]."""
  hidden: int
  z_what_size: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, glimpse: jax.Array):
    out = MLP([self.hidden, 2 * self.z_what_size], dtype=self.dtype)(glimpse.reshape(glimpse.shape[0], -1))
    return gaussian_params(out)


class ObjectDecoder(nn.Module):
  """z_what [B, D] -> patch [B, P, P] = sigmoid(MLP(z_what)); initial logit bias `output_bias`
  (about -2: a new object starts almost blank)."""
  hidden: int
  patch_size: int
  output_bias: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z_what: jax.Array) -> jax.Array:
    logits = MLP([self.hidden, self.patch_size ** 2], output_bias=self.output_bias, dtype=self.dtype)(z_what)
    return nn.sigmoid(logits).reshape(-1, self.patch_size, self.patch_size)


class Baseline(nn.Module):
  """NVIL's input-dependent baseline b_i(x, z_<i), in units of the normalised learning signal.

  It reads the encoder's features without changing them (stop-gradient): the image's projection
  f = image_features [B, F] (computed once per image anyway) and the LSTM state h_i = hidden [B, N, L]
  from which step i's latents were predicted -> [B, N]:
      b_i = relu(f W_f + h_i W_h + c) w + d = relu([f, h_i] W + c) w + d,   W = [W_f; W_h],
  a ReLU MLP on [f, h_i] whose first layer projects f once per image rather than once per step
  (W_f and W_h initialised as the two row blocks of one LeCun-normal kernel W)."""
  hidden: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, image_features: jax.Array, hidden_states: jax.Array) -> jax.Array:
    image_features, hidden_states = jax.lax.stop_gradient((image_features, hidden_states))
    fan_in = image_features.shape[-1] + hidden_states.shape[-1]
    block_init = lambda x: nn.initializers.variance_scaling(x.shape[-1] / fan_in, 'fan_in',
                                                            'truncated_normal')
    per_image = Dense(self.hidden, use_bias=False, dtype=self.dtype,
                      kernel_init=block_init(image_features), name='image_layer')(image_features)
    per_step = Dense(self.hidden, dtype=self.dtype, kernel_init=block_init(hidden_states),
                     name='hidden_layer')(hidden_states)
    x = nn.relu(per_image[:, None, :] + per_step)
    return Dense(1, dtype=self.dtype, name='output_layer')(x)[..., 0]
