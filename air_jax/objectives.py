"""The ELBO and its gradient estimator: reparameterisation for continuous object latents,
REINFORCE with NVIL variance reduction for the discrete ones (z_pres, and a scene kind's discrete
object latents such as the 3D shape identity).

Per image, with m_i = z_pres_{i-1} (step i was sampled) and z_i = z_pres_i:
    ELBO = log N(x; canvas, sigma^2 I)
           - sum_i m_i KL(Bern(q_i) || Bern(prior))
           - sum_i z_i KL_obj_i,   KL_obj_i = sum over the scene kind's object latents of KL(q || p)
(2D: KL_obj = KL(q(z_where) || p(z_where)) + KL(q(z_what) || p(z_what)); 3D: identity and pose).
All KLs are analytic given the sampled past (Rao-Blackwellised). The discrete decisions of step i
(z_pres_i, and its object's discrete latents) can only change the likelihood and the terms of
later steps, so their learning signal (credit assignment) is
    l_i = log p(x | z) - sum_{j >= i} z_j KL_obj_j - sum_{j > i} m_j KL_pres_j.
NVIL variance reduction: with running mean mu_i and standard deviation sd_i of l_i (centring and
scaling), a learned baseline b_i(x, z_<i) is regressed on the normalised signal
    t_i = (l_i - mu_i) / s_i,   s_i = max(1, sd_i),
and the advantage is put back in nats before it weights the score:
    a_i = s_i (t_i - b_i) = l_i - (mu_i + s_i b_i),
    surrogate = -sum_i m_i stop_gradient(a_i) [log q(z_pres_i) + z_i log q(d_i)],
with d_i the discrete object latents of step i (none in 2D).
Why nats: q(z_pres) also gets pathwise gradients in nats (its analytic KL). Dividing only the score
term by sd_i (~300 nats early on) would shrink it ~300-fold against that KL, and the KL then
switches every object off (measured: p(z_pres) on 2-digit images 0.88 -> 0.01 in 600 steps).
"""
import math
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp

from air_jax.cores import CoreOutput


def normal_log_prob(x: jax.Array, loc: jax.Array, scale: float | jax.Array) -> jax.Array:
  """Elementwise log N(x; loc, scale^2)."""
  return -0.5 * jnp.square((x - loc) / scale) - jnp.log(scale) - 0.5 * math.log(2 * math.pi)


def normal_kl(q_loc, q_scale, p_loc, p_scale) -> jax.Array:
  """Elementwise KL(N(q_loc, q_scale^2) || N(p_loc, p_scale^2))."""
  ratio = jnp.square(q_scale / p_scale)
  return 0.5 * (ratio + jnp.square((q_loc - p_loc) / p_scale) - 1.0 - jnp.log(ratio))


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """log Bern(x; sigmoid(logits)), stable for large |logits|."""
  return x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)


def bernoulli_kl(q_logits: jax.Array, p_prob: float | jax.Array) -> jax.Array:
  """KL(Bern(sigmoid(q_logits)) || Bern(p_prob))."""
  q = jax.nn.sigmoid(q_logits)
  return (q * (jax.nn.log_sigmoid(q_logits) - jnp.log(p_prob))
          + (1.0 - q) * (jax.nn.log_sigmoid(-q_logits) - jnp.log1p(-p_prob)))


def categorical_kl_uniform(logits: jax.Array) -> jax.Array:
  """KL(Cat(softmax(logits)) || Uniform(K)) = sum_k q_k log q_k + log K over the last axis."""
  log_q = jax.nn.log_softmax(logits, axis=-1)
  return (jnp.exp(log_q) * log_q).sum(-1) + math.log(logits.shape[-1])


def categorical_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """log Cat(x; softmax(logits)) for integer x [...] and logits [..., K]."""
  log_q = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(log_q, x[..., None].astype(jnp.int32), axis=-1)[..., 0]


def relaxed_bernoulli(logits: jax.Array, key: jax.Array, temperature: float | jax.Array,
                      straight_through: bool = False) -> jax.Array:
  """A Concrete (Gumbel-sigmoid) draw (Maddison et al. 2017; Jang et al. 2017) of Bern(sigmoid(logits)):
      z = sigmoid((logits + log u - log(1 - u)) / temperature),   u ~ U(0, 1),
  differentiable in logits; as temperature -> 0 it becomes the hard draw 1[logits + log u -
  log(1 - u) > 0] ~ Bern(sigmoid(logits)). straight_through: that hard value forward, z's
  gradient backward (z_hard + (z - stop_gradient(z)))."""
  noise = jax.random.logistic(key, logits.shape, logits.dtype)
  relaxed = jax.nn.sigmoid((logits + noise) / temperature)
  if not straight_through:
    return relaxed
  hard = (logits + noise > 0).astype(relaxed.dtype)
  return hard + (relaxed - jax.lax.stop_gradient(relaxed))  # exactly hard forward


def draw_z_pres(logit: jax.Array, key_fn, use_mode: bool, relaxed: bool, straight_through: bool,
                temperature: float | jax.Array, learn_z_pres: bool | jax.Array) -> jax.Array:
  """A slot's z_pres from its logit, as every core draws it: q's mode 1[logit > 0] (use_mode), a
  relaxed_bernoulli draw whose gradient reaches the logit only where learn_z_pres (relaxed: the
  'concrete' estimator in training), else a Bernoulli(sigmoid(logit)) draw. key_fn() gives a key."""
  if use_mode:
    return (logit > 0).astype(jnp.float32)
  if relaxed:
    held = jnp.where(learn_z_pres, logit, jax.lax.stop_gradient(logit))
    return relaxed_bernoulli(held, key_fn(), temperature, straight_through)
  return jax.random.bernoulli(key_fn(), jax.nn.sigmoid(logit)).astype(jnp.float32)


class ELBOTerms(NamedTuple):
  log_likelihood: jax.Array  # [B]
  kl_pres: jax.Array         # [B, N], already masked by m_i
  kl_objects: dict           # name -> [B, N] the scene kind's object KLs, already masked by z_i
  elbo: jax.Array            # [B]
  learning_signal: jax.Array  # [B, N] l_i (no gradient flows through it)


def blur_matrix(size: int, sd: float) -> jax.Array:
  """[size, size] rows of a Gaussian kernel of `sd` pixels (zero padding): K @ x @ K^T blurs x."""
  offsets = jnp.arange(size)[:, None] - jnp.arange(size)[None, :]
  return jnp.exp(-0.5 * jnp.square(offsets / sd)) / (sd * math.sqrt(2 * math.pi))


def log_likelihood(images: jax.Array, canvas: jax.Array, scale: float, blur: float = 0.0) -> jax.Array:
  """log N(K x K^T; K canvas K^T, scale^2 I) summed over pixels, K the blur_matrix of `blur`
  pixels (none when 0). images [B, H, W], canvas [B, ..., H, W] -> [B, ...]."""
  images = images.reshape(images.shape[:1] + (1,) * (canvas.ndim - 3) + images.shape[1:])
  if blur > 0:
    rows, cols = (blur_matrix(n, blur) for n in images.shape[-2:])
    images, canvas = (jnp.einsum('ij,...jk,lk->...il', rows, x, cols) for x in (images, canvas))
  return normal_log_prob(images, canvas, scale).sum(axis=(-2, -1))


def elbo_terms(out: CoreOutput, images: jax.Array, *, likelihood_scale: float,
               z_pres_prior: float | jax.Array, object_kls: dict, likelihood_blur: float = 0.0,
               sequential: bool = True) -> ELBOTerms:
  """Single-sample ELBO terms of `out` for images [B, H, W] in [0, 1]; object_kls: name -> [B, N]
  per-step KL of each object latent (unmasked; a scene kind's `object_kls(out)`).
  sequential (the recurrent core): slot i's decisions also change the later slots, whose terms
  join its learning signal (the module docstring); False (the parallel core, whose slots are
  inferred independently given the image): l_i = log p(x | z) - z_i KL_obj_i, its own terms only.
  likelihood_blur > 0: the likelihood is of the image blurred by a Gaussian of that many pixels,
  log N(K x K^T; K canvas K^T, sigma^2 I): an object that misses the one it should explain still
  overlaps it once both are blurred, so a black-box renderer's finite differences see the way."""
  log_px = log_likelihood(images, out.canvas, likelihood_scale, likelihood_blur)
  kl_pres = out.active * bernoulli_kl(out.z_pres_logits, z_pres_prior)
  kl_objects = {name: out.z_pres * kl for name, kl in object_kls.items()}
  kl_object = sum(kl_objects.values())
  elbo = log_px - (kl_pres + kl_object).sum(-1)

  if sequential:
    reverse_cumsum = lambda x: jnp.flip(jnp.cumsum(jnp.flip(x, -1), -1), -1)
    later_kl_pres = reverse_cumsum(kl_pres) - kl_pres  # sum_{j > i}
    signal = log_px[:, None] - reverse_cumsum(kl_object) - later_kl_pres
  else:
    signal = log_px[:, None] - kl_object
  return ELBOTerms(log_px, kl_pres, kl_objects, elbo, jax.lax.stop_gradient(signal))


@flax.struct.dataclass
class SignalStats:
  """Bias-corrected exponential moving moments of the learning signal, one per step."""
  mean: jax.Array          # [N] uncorrected EMA of l_i
  second_moment: jax.Array  # [N] uncorrected EMA of l_i^2
  weight: jax.Array        # [N] 1 - decay^(number of updates): the bias correction

  @classmethod
  def zeros(cls, num_steps: int) -> 'SignalStats':
    zeros = lambda: jnp.zeros((num_steps,), jnp.float32)  # three buffers: the step donates them
    return cls(zeros(), zeros(), zeros())

  def moments(self):
    """(mean, standard deviation) after bias correction; (0, 1) before any update."""
    w = jnp.maximum(self.weight, 1e-8)
    mean = jnp.where(self.weight > 0, self.mean / w, 0.0)
    var = jnp.where(self.weight > 0, self.second_moment / w - jnp.square(mean), 1.0)
    return mean, jnp.sqrt(jnp.maximum(var, 0.0))

  def update(self, signal: jax.Array, mask: jax.Array, decay: float) -> 'SignalStats':
    """Folds in the masked batch moments of signal [B, N]; steps with no active example stay."""
    count = mask.sum(0)
    seen = count > 0
    batch_mean = (signal * mask).sum(0) / jnp.maximum(count, 1.0)
    batch_sq = (jnp.square(signal) * mask).sum(0) / jnp.maximum(count, 1.0)
    ema = lambda old, new: jnp.where(seen, decay * old + (1 - decay) * new, old)
    return SignalStats(ema(self.mean, batch_mean), ema(self.second_moment, batch_sq),
                       ema(self.weight, 1.0))


def normalised_signal(signal: jax.Array, stats: SignalStats):
  """(t_i, s_i): t_i = (l_i - mu_i) / s_i, the baseline's regression target, and s_i = max(1, sd_i)."""
  mean, sd = stats.moments()
  scale = jnp.maximum(sd, 1.0)
  return (signal - mean) / scale, scale


def reinforce_surrogate(discrete_log_prob: jax.Array, advantage: jax.Array,
                        active: jax.Array) -> jax.Array:
  """Per-image surrogate whose gradient is the score-function term of -ELBO:
  -sum_i m_i stop_gradient(a_i) grad log q(discrete decisions of step i). Inputs [B, N] -> [B]."""
  return -(active * jax.lax.stop_gradient(advantage) * discrete_log_prob).sum(-1)


def vimco_surrogate(log_w: jax.Array, discrete_log_q: jax.Array) -> jax.Array:
  """Per-image surrogate whose gradient is VIMCO's estimate (Mnih and Rezende 2016) of -grad L_K,
  L_K = log (1/K) sum_k w_k, from K draws: log_w [K, B] (differentiable: reparameterised latents
  and log q of the discrete ones inside) and discrete_log_q [K, B], log q of draw k's discrete
  decisions. Draw k's score is weighted by its own share of the bound, with the leave-one-out
  baseline L_K(w_k replaced by the geometric mean of the others):
      -[L_K + sum_k stop_gradient(L_K - L_K^{-k}) log q(discrete_k)]."""
  k = log_w.shape[0]
  if k < 2:
    raise ValueError(f'VIMCO needs at least 2 draws per image, got {k}')
  bound = jax.nn.logsumexp(log_w, 0) - math.log(k)
  fixed = jax.lax.stop_gradient(log_w)
  others = (fixed.sum(0, keepdims=True) - fixed) / (k - 1)  # [K, B] mean of the other draws' log w
  swapped = jnp.where(jnp.eye(k, dtype=bool)[:, :, None], others[:, None], fixed[None])  # [k, j, B]
  leave_one_out = jax.nn.logsumexp(swapped, 1) - math.log(k)  # [K, B]
  signal = jax.lax.stop_gradient(bound)[None] - leave_one_out
  return -(bound + (signal * discrete_log_q).sum(0))


class Enumerated(NamedTuple):
  """A scene kind's categorical object latent d_i summed over its K values (scene.enumerated_discrete).
  logits [B, N, K] of q(d_i); canvases [B, N, K, H, W] (no gradient), the scene with d_i = k;
  log_ratio [B, N, K], log p(v_ik) - log q(v_ik | k) of the latents drawn for d_i = k (the rotation);
  inclusive: learn q(d_i) by the inclusive KL (wake_surrogate) instead of the ELBO
  (enumerated_surrogate)."""
  logits: jax.Array
  canvases: jax.Array
  log_ratio: jax.Array
  inclusive: bool


def wake_surrogate(logits: jax.Array, log_weights: jax.Array, present: jax.Array) -> jax.Array:
  """Per-image surrogate whose gradient is that of sum_i z_i KL(p(d_i | x, rest) || q(d_i)),
  the inclusive KL (the wake update of reweighted wake-sleep, Bornschein and Bengio 2015),
  p(d_i = k | x, rest) = softmax_k(log_weights_ik), log_weights_ik = log p(x | d_i = k, rest)
  + log p(v_ik) - log q(v_ik | k): -sum_i z_i sum_k p_ik log q_ik. Its gradient on the logits,
  q_ik - p_ik, does not vanish when q puts no mass on the best k (the ELBO's, q_ik (f_ik - E_q f),
  does). logits, log_weights [B, N, K], present [B, N] -> [B]."""
  posterior = jax.nn.softmax(jax.lax.stop_gradient(log_weights), -1)
  return -(present * (posterior * jax.nn.log_softmax(logits, -1)).sum(-1)).sum(-1)


def enumerated_surrogate(probs: jax.Array, alternatives: jax.Array, present: jax.Array) -> jax.Array:
  """Per-image surrogate whose gradient is the local-expectation gradient of -ELBO with respect to
  a categorical object latent d_i ~ Cat(probs_i) (Titsias and Lazaro-Gredilla, 2015):
      -sum_i z_i sum_k grad q_ik (f_ik - sum_k' q_ik' f_ik'),
  f_ik = log p(x | d_i = k, everything else as sampled) (`alternatives`, no gradient): the
  expectation over d_i is summed exactly instead of scored from one draw. probs, alternatives
  [B, N, K], present [B, N] -> [B]."""
  alternatives = jax.lax.stop_gradient(alternatives)
  centred = alternatives - (jax.lax.stop_gradient(probs) * alternatives).sum(-1, keepdims=True)
  return -(present * (probs * centred).sum(-1)).sum(-1)
