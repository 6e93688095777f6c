"""KLs, ELBO terms and credit assignment, running signal moments, the REINFORCE surrogate."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax.configs import multi_mnist as multi_mnist_config
from air_jax.scenes import multi_mnist
from air_jax import objectives
from air_jax.cores import CoreOutput


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


class TestNormal:

  def test_log_prob(self):
    x, loc, scale = 0.7, -0.2, 1.5
    expected = -0.5 * ((x - loc) / scale) ** 2 - math.log(scale * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(objectives.normal_log_prob(jnp.float32(x), loc, scale), expected, rtol=1e-6)

  def test_kl_closed_form(self):
    rng = np.random.default_rng(0)
    q_loc, p_loc = rng.normal(size=(2, 5))
    q_scale, p_scale = rng.uniform(0.2, 2.0, size=(2, 5))
    expected = (np.log(p_scale / q_scale) + (q_scale ** 2 + (q_loc - p_loc) ** 2) / (2 * p_scale ** 2) - 0.5)
    np.testing.assert_allclose(objectives.normal_kl(q_loc, q_scale, p_loc, p_scale), expected, rtol=1e-5)
    np.testing.assert_allclose(objectives.normal_kl(q_loc, q_scale, q_loc, q_scale), 0.0, atol=1e-6)

  def test_kl_monte_carlo(self):
    q_loc, q_scale, p_loc, p_scale = 0.5, 0.7, -0.3, 1.3
    x = q_loc + q_scale * jax.random.normal(jax.random.key(0), (200_000,))
    log_ratio = np.asarray(objectives.normal_log_prob(x, q_loc, q_scale)
                           - objectives.normal_log_prob(x, p_loc, p_scale), np.float64)
    stderr = log_ratio.std() / math.sqrt(len(log_ratio))
    kl = float(objectives.normal_kl(q_loc, q_scale, p_loc, p_scale))
    assert kl > 0.1
    assert abs(log_ratio.mean() - kl) < 4 * stderr


class TestBernoulli:

  @pytest.mark.parametrize('p', [0.01, 0.3, 0.9])
  def test_kl_closed_form(self, p):
    logits = np.array([-6.0, -1.0, 0.0, 0.4, 3.0])
    q = sigmoid(logits)
    expected = q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))
    actual = objectives.bernoulli_kl(jnp.asarray(logits, jnp.float32), p)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(actual) >= -1e-6)

  def test_kl_extreme_logits_finite(self):
    kl = objectives.bernoulli_kl(jnp.array([-100.0, 100.0]), 0.01)
    chex.assert_tree_all_finite(kl)
    np.testing.assert_allclose(kl, [-math.log(0.99), -math.log(0.01)], rtol=1e-4)

  def test_log_prob_stable(self):
    logits = jnp.array([100.0, 100.0, -100.0, -100.0, 0.0])
    x = jnp.array([1.0, 0.0, 1.0, 0.0, 1.0])
    log_prob = objectives.bernoulli_log_prob(x, logits)
    chex.assert_tree_all_finite(log_prob)
    np.testing.assert_allclose(log_prob, [0.0, -100.0, -100.0, 0.0, math.log(0.5)], atol=1e-5)
    grads = jax.grad(lambda l: objectives.bernoulli_log_prob(x, l).sum())(logits)
    chex.assert_tree_all_finite(grads)

  def test_log_prob_matches_direct(self):
    logits = np.array([-2.0, 0.3, 1.7])
    for x in (0.0, 1.0):
      expected = x * np.log(sigmoid(logits)) + (1 - x) * np.log(1 - sigmoid(logits))
      np.testing.assert_allclose(objectives.bernoulli_log_prob(jnp.full(3, x), jnp.asarray(logits)),
                                 expected, rtol=1e-5)


def hand_output(seed=0):
  """CoreOutput for B=3 images, N=3 steps, D=2: counts 2, 1 and 0 (all 3 present for none)."""
  rng = np.random.default_rng(seed)
  b, n, d, h, w = 3, 3, 2, 4, 5
  z_pres = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32)
  active = np.concatenate([np.ones((b, 1), np.float32), z_pres[:, :-1]], axis=1)
  f32 = lambda *shape, low=-1.0, high=1.0: rng.uniform(low, high, size=shape).astype(np.float32)
  objects = f32(b, n, h, w, low=0.0)
  out = CoreOutput(
      z_pres_logits=f32(b, n, low=-3, high=3), z_pres=z_pres, active=active,
      objects=dict(z_where_loc=f32(b, n, 3), z_where_scale=f32(b, n, 3, low=0.1, high=1.5),
                   z_where=f32(b, n, 3), z_what_loc=f32(b, n, d),
                   z_what_scale=f32(b, n, d, low=0.1, high=1.5), z_what=f32(b, n, d), image=objects),
      canvas=(z_pres[:, :, None, None] * objects).sum(1), hidden=f32(b, n, 4), image_features=f32(b, 16))
  images = f32(b, h, w, low=0.0)
  return jax.tree.map(jnp.asarray, out), jnp.asarray(images)


PRIOR = dict(likelihood_scale=0.3, z_pres_prior=0.2)
WHERE_PRIOR = dict(z_where_prior_loc=(0.1, 0.0, -0.2), z_where_prior_scale=(0.5, 1.0, 2.0))


def terms_of(out, images, **options):
  """objectives.elbo_terms with the 2D scene kind's object KLs under WHERE_PRIOR (options: e.g.
  likelihood_blur)."""
  config = multi_mnist_config.get_config()
  config.objective.update(WHERE_PRIOR)
  return objectives.elbo_terms(out, images, **PRIOR, object_kls=multi_mnist.Scene(config).object_kls(out),
                               **options)


def np_log_likelihood(images, canvas):
  """sum over pixels of log N(images; canvas, 0.3^2), in float64."""
  resid = (np.asarray(images, np.float64) - np.asarray(canvas, np.float64)) / 0.3
  return (-0.5 * resid ** 2 - math.log(0.3 * math.sqrt(2 * math.pi))).sum((1, 2))


def np_normal_kl(q_loc, q_scale, p_loc, p_scale):
  q_loc, q_scale = np.asarray(q_loc, np.float64), np.asarray(q_scale, np.float64)
  return np.log(p_scale / q_scale) + (q_scale ** 2 + (q_loc - p_loc) ** 2) / (2 * p_scale ** 2) - 0.5


@pytest.fixture(scope='module')
def case():
  out, images = hand_output()
  return out, images, terms_of(out, images)


class TestElboTerms:

  def test_shapes(self, case):
    out, _, terms = case
    chex.assert_shape([terms.log_likelihood, terms.elbo], (3,))
    chex.assert_shape([terms.kl_pres, terms.kl_objects['where'], terms.kl_objects['what'], terms.learning_signal], (3, 3))

  def test_log_likelihood(self, case):
    out, images, terms = case
    np.testing.assert_allclose(terms.log_likelihood, np_log_likelihood(images, out.canvas), rtol=1e-5)

  @pytest.mark.parametrize('sd', [0.5, 2.0])
  def test_blurred_log_likelihood_is_of_both_images_blurred_by_hand(self, case, sd):
    """likelihood_blur = sd: log N(K x K^T; K canvas K^T, sigma^2), K the zero-padded Gaussian
    kernel (K_ik = N(i - k; 0, sd^2), built here by loops)."""
    out, images, _ = case
    def blur(x):
      kernel = lambda d: math.exp(-0.5 * (d / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
      x = np.asarray(x, np.float64)
      y = np.zeros_like(x)
      for b in range(x.shape[0]):
        for i in range(x.shape[1]):
          for j in range(x.shape[2]):
            for k in range(x.shape[1]):
              for l in range(x.shape[2]):
                y[b, i, j] += kernel(i - k) * kernel(j - l) * x[b, k, l]
      return y
    terms = terms_of(out, images, likelihood_blur=sd)
    np.testing.assert_allclose(terms.log_likelihood, np_log_likelihood(blur(images), blur(out.canvas)), rtol=1e-5)

  def test_masking(self, case):
    out, _, terms = case
    active, z_pres = np.asarray(out.active), np.asarray(out.z_pres)
    q = sigmoid(np.asarray(out.z_pres_logits, np.float64))
    p = PRIOR['z_pres_prior']
    kl_pres = q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))
    np.testing.assert_allclose(terms.kl_pres, active * kl_pres, rtol=1e-4, atol=1e-6)
    kl_where = np_normal_kl(out.objects['z_where_loc'], out.objects['z_where_scale'], np.array(WHERE_PRIOR['z_where_prior_loc']),
                            np.array(WHERE_PRIOR['z_where_prior_scale'])).sum(-1)
    np.testing.assert_allclose(terms.kl_objects['where'], z_pres * kl_where, rtol=1e-4, atol=1e-6)
    kl_what = np_normal_kl(out.objects['z_what_loc'], out.objects['z_what_scale'], 0.0, 1.0).sum(-1)
    np.testing.assert_allclose(terms.kl_objects['what'], z_pres * kl_what, rtol=1e-4, atol=1e-6)
    # Steps never sampled (m_i = 0) cost nothing; absent objects cost no continuous KL.
    assert np.all(np.asarray(terms.kl_pres)[active == 0] == 0)
    assert np.all(np.asarray(terms.kl_objects['where'])[z_pres == 0] == 0)
    assert np.all(np.asarray(terms.kl_objects['what'])[z_pres == 0] == 0)
    assert np.all(np.asarray(terms.kl_pres)[active == 1] > 0)

  def test_elbo(self, case):
    _, _, terms = case
    expected = terms.log_likelihood - (terms.kl_pres + terms.kl_objects['where'] + terms.kl_objects['what']).sum(-1)
    np.testing.assert_allclose(terms.elbo, expected, rtol=1e-6)

  def test_learning_signal_credit_assignment(self, case):
    out, _, terms = case
    ll = np.asarray(terms.log_likelihood, np.float64)
    kl_pres, kl_where, kl_what = (np.asarray(t, np.float64) for t in (
        terms.kl_pres, terms.kl_objects['where'], terms.kl_objects['what']))
    b, n = kl_pres.shape
    expected = np.zeros((b, n))
    for k in range(b):
      for i in range(n):
        expected[k, i] = (ll[k] - sum(kl_where[k, j] + kl_what[k, j] for j in range(i, n))
                          - sum(kl_pres[k, j] for j in range(i + 1, n)))
    np.testing.assert_allclose(terms.learning_signal, expected, rtol=1e-5, atol=1e-4)

  def test_learning_signal_has_no_gradient(self):
    out, images = hand_output(1)
    def total_signal(canvas):
      return terms_of(out._replace(canvas=canvas), images).learning_signal.sum()
    np.testing.assert_array_equal(jax.grad(total_signal)(out.canvas), 0.0)


class TestSignalStats:

  def test_initial_moments(self):
    mean, sd = objectives.SignalStats.zeros(4).moments()
    np.testing.assert_array_equal(mean, np.zeros(4))
    np.testing.assert_array_equal(sd, np.ones(4))

  def test_bias_corrected_ema(self):
    decay, rng = 0.9, np.random.default_rng(0)
    stats = objectives.SignalStats.zeros(3)
    # Step 2 never has an active example: it must stay at its initial (0, 1).
    masks = [np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0]], np.float32),
             np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]], np.float32),
             np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], np.float32)]  # step 1 unseen
    m, sq, w = np.zeros(3), np.zeros(3), np.zeros(3)
    for mask in masks:
      signal = rng.normal(-100.0, 10.0, size=mask.shape).astype(np.float32)
      stats = stats.update(jnp.asarray(signal), jnp.asarray(mask), decay)
      for i in range(3):
        rows = mask[:, i] > 0
        if rows.any():
          values = signal[rows, i].astype(np.float64)
          m[i] = decay * m[i] + (1 - decay) * values.mean()
          sq[i] = decay * sq[i] + (1 - decay) * (values ** 2).mean()
          w[i] = decay * w[i] + (1 - decay)
    mean, sd = stats.moments()
    seen = w > 0
    np.testing.assert_allclose(np.asarray(mean)[seen], (m / np.where(seen, w, 1))[seen], rtol=1e-5)
    expected_sd = np.sqrt(sq[seen] / w[seen] - (m[seen] / w[seen]) ** 2)
    np.testing.assert_allclose(np.asarray(sd)[seen], expected_sd, rtol=2e-3)
    np.testing.assert_allclose(stats.weight, w, rtol=1e-6)
    assert not seen[2]
    assert float(mean[2]) == 0.0 and float(sd[2]) == 1.0
    assert float(stats.weight[2]) == 0.0

  def test_masked_step_unchanged(self):
    stats = objectives.SignalStats.zeros(2).update(jnp.array([[5.0, 7.0]]), jnp.array([[1.0, 1.0]]), 0.5)
    again = stats.update(jnp.array([[100.0, 100.0]]), jnp.array([[1.0, 0.0]]), 0.5)
    assert float(again.mean[1]) == float(stats.mean[1])
    assert float(again.second_moment[1]) == float(stats.second_moment[1])
    assert float(again.weight[1]) == float(stats.weight[1])
    assert float(again.mean[0]) != float(stats.mean[0])

  def test_single_update_is_exact(self):
    signal = jnp.array([[1.0], [3.0]])
    mean, sd = objectives.SignalStats.zeros(1).update(signal, jnp.ones((2, 1)), 0.99).moments()
    np.testing.assert_allclose(mean, [2.0], rtol=1e-5)
    np.testing.assert_allclose(sd, [1.0], rtol=1e-3)

  def test_normalised_signal(self):
    stats = objectives.SignalStats.zeros(2).update(
        jnp.array([[10.0, 1.0], [30.0, 1.2]]), jnp.ones((2, 2)), 0.9)
    target, scale = objectives.normalised_signal(jnp.array([[40.0, 2.0]]), stats)
    np.testing.assert_allclose(scale, [10.0, 1.0], rtol=1e-3)  # sd 10 and max(1, sd 0.1)
    np.testing.assert_allclose(target, [[2.0, 0.9]], rtol=1e-3)


class TestReinforce:
  """Bernoulli(sigmoid(theta)) with reward f(1) = 3, f(0) = -1: d/dtheta E[f] = sigmoid'(theta) * 4."""
  THETA, F1, F0, SAMPLES = 0.3, 3.0, -1.0, 200_000

  def per_sample_grads(self, baseline):
    p = sigmoid(self.THETA)
    z = jax.random.bernoulli(jax.random.key(0), p, (self.SAMPLES, 1)).astype(jnp.float32)
    advantage = jnp.where(z > 0, self.F1, self.F0) - baseline
    active = jnp.ones_like(z)

    def mean_surrogate(theta, z, advantage, active):
      log_prob = objectives.bernoulli_log_prob(z, jnp.full(z.shape, theta))
      return objectives.reinforce_surrogate(log_prob, advantage, active).mean()

    grad_of_mean = float(jax.grad(mean_surrogate)(jnp.float32(self.THETA), z, advantage, active))
    per_sample = jax.vmap(jax.grad(mean_surrogate), in_axes=(None, 0, 0, 0))(
        jnp.float32(self.THETA), z[:, None], advantage[:, None], active[:, None])
    per_sample = np.asarray(per_sample, np.float64)
    np.testing.assert_allclose(per_sample.mean(), grad_of_mean, rtol=1e-3, atol=1e-5)
    return per_sample

  def true_surrogate_grad(self):
    p = sigmoid(self.THETA)
    return -p * (1 - p) * (self.F1 - self.F0)

  @pytest.mark.parametrize('baseline', [0.0, 1.0, 100.0])
  def test_unbiased(self, baseline):
    grads = self.per_sample_grads(baseline)
    stderr = grads.std() / math.sqrt(len(grads))
    assert abs(grads.mean() - self.true_surrogate_grad()) < 4 * stderr

  def test_baseline_reduces_variance(self):
    p = sigmoid(self.THETA)
    expected_f = p * self.F1 + (1 - p) * self.F0
    var_good = self.per_sample_grads(expected_f).var()
    var_zero = self.per_sample_grads(0.0).var()
    var_far = self.per_sample_grads(100.0).var()
    # Exactly: var = p (1 - p) (g(1) - g(0))^2 = 0.086 with b = E[f], 0.121 with b = 0.
    assert var_good < 0.8 * var_zero
    assert var_zero < var_far

  def test_no_gradient_through_advantage_and_inactive_steps(self):
    log_prob = jnp.array([[-0.1, -0.7, -2.0]])
    active = jnp.array([[1.0, 1.0, 0.0]])
    advantage = jnp.array([[2.0, -3.0, 5.0]])
    value = objectives.reinforce_surrogate(log_prob, advantage, active)
    np.testing.assert_allclose(value, [-(2.0 * -0.1 + -3.0 * -0.7)], rtol=1e-6)
    g_log_prob, g_adv = jax.grad(lambda lp, a: objectives.reinforce_surrogate(lp, a, active).sum(),
                                 argnums=(0, 1))(log_prob, advantage)
    np.testing.assert_allclose(g_log_prob, [[-2.0, 3.0, 0.0]])
    np.testing.assert_array_equal(g_adv, 0.0)


class TestEnumerated:
  """Cat(softmax(l)) over K = 3 with known f: d E[f] / d l_k = q_k (f_k - sum_j q_j f_j)."""

  def test_gradient_is_the_exact_expectation_and_reinforces_mean(self):
    logits = jnp.array([[[0.2, -0.5, 1.0], [0.0, 0.3, -0.2]]])  # [B=1, N=2, K=3]
    f = jnp.array([[[10.0, -2.0, 4.0], [1.0, 7.0, -3.0]]])
    present = jnp.array([[1.0, 0.0]])  # the second step is absent: no gradient
    grad = jax.grad(lambda l: objectives.enumerated_surrogate(jax.nn.softmax(l), f, present).sum())(logits)
    q = np.asarray(jax.nn.softmax(logits))
    expected = -q * (np.asarray(f) - (q * np.asarray(f)).sum(-1, keepdims=True))
    np.testing.assert_allclose(grad[0, 0], expected[0, 0], rtol=1e-5)
    np.testing.assert_array_equal(grad[0, 1], 0.0)
    # The same as the mean of the score-function estimate over many draws (what REINFORCE estimates).
    draws = jax.random.categorical(jax.random.key(0), logits[0, 0], shape=(100_000,))
    score = lambda l, k: -jnp.asarray(f)[0, 0, k] * jax.nn.log_softmax(l)[k]
    reinforce = np.asarray(jax.vmap(jax.grad(score), in_axes=(None, 0))(logits[0, 0], draws))
    np.testing.assert_allclose(reinforce.mean(0), expected[0, 0], atol=4 * reinforce.std(0).max() / np.sqrt(len(draws)))

  def test_alternatives_get_no_gradient(self):
    probs = jnp.full((1, 1, 3), 1 / 3)
    grad = jax.grad(lambda f: objectives.enumerated_surrogate(probs, f, jnp.ones((1, 1))).sum())(jnp.ones((1, 1, 3)))
    np.testing.assert_array_equal(grad, 0.0)


class TestWake:
  """The inclusive KL to p = softmax(w): d/dl_k sum_k -p_k log q_k = q_k - p_k, and it does not
  vanish where the ELBO's does (q_k ~ 0 on the best k)."""

  def test_gradient_is_q_minus_the_posterior(self):
    logits = jnp.array([[[8.0, -8.0, 0.0], [0.0, 0.3, -0.2]]])  # step 1: q(k=1) ~ 1e-7
    log_weights = jnp.array([[[0.0, 9.6, 0.0], [1.0, 7.0, -3.0]]])  # k=1 is 9.6 nats better
    present = jnp.array([[1.0, 0.0]])
    grad = jax.grad(lambda l: objectives.wake_surrogate(l, log_weights, present).sum())(logits)
    q, p = (np.asarray(jax.nn.softmax(x)) for x in (logits, log_weights))
    np.testing.assert_allclose(grad[0, 0], q[0, 0] - p[0, 0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(grad[0, 1], 0.0)
    assert grad[0, 0, 1] < -0.9  # pushes q toward the best shape at full strength
    elbo = jax.grad(lambda l: objectives.enumerated_surrogate(jax.nn.softmax(l), log_weights, present).sum())(logits)
    assert abs(float(elbo[0, 0, 1])) < 1e-4  # where the ELBO's gradient has vanished
    weights_grad = jax.grad(lambda w: objectives.wake_surrogate(logits, w, present).sum())(log_weights)
    np.testing.assert_array_equal(weights_grad, 0.0)
