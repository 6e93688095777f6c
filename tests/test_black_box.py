"""The finite-difference renderer op (air_jax.black_box) and the 3D gradient estimators: central
differences match the derivative of the same host function, SPSA is unbiased on a quadratic,
absent objects cost no render, a real MuJoCo render's estimated gradient points to the true pose,
and the identity's score-function term is unbiased."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import black_box
from air_jax import objectives

SIZE = 12


def blob_render(ids, poses, present):
  """A smooth toy renderer: object k a Gaussian blob at (x, y) (pixels), width 2 + ids, brightness
  1 + 0.5 sin(theta). [M, K], [M, K, 3], [M, K] -> [M, SIZE, SIZE]."""
  ids, poses, present = np.asarray(ids), np.asarray(poses, np.float64), np.asarray(present)
  rows, cols = np.mgrid[:SIZE, :SIZE]
  width = 2.0 + ids[..., None, None]
  blobs = np.exp(-((rows - poses[..., 0, None, None]) ** 2 + (cols - poses[..., 1, None, None]) ** 2)
                 / (2 * width ** 2)) * (1 + 0.5 * np.sin(poses[..., 2, None, None]))
  return (present[..., None, None] * blobs).sum(1).astype(np.float32)


def numerical_vjp(host, ids, poses, present, cotangent, eps=1e-3):
  """d <g, host(p)> / d p by float64 central differences of the host function itself."""
  poses = np.asarray(poses, np.float64)
  grad = np.zeros_like(poses)
  for index in np.ndindex(poses.shape):
    plus, minus = poses.copy(), poses.copy()
    plus[index] += eps
    minus[index] -= eps
    grad[index] = ((host(ids, plus, present) - host(ids, minus, present)) * cotangent).sum() / (2 * eps)
  return grad


def toy_inputs(seed=0):
  rng = np.random.default_rng(seed)
  ids = np.array([[0, 1, 2], [1, 0, 0]], np.int32)
  poses = np.stack([rng.uniform(3, 9, (2, 3)), rng.uniform(3, 9, (2, 3)), rng.uniform(-3, 3, (2, 3))], -1)
  present = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  cotangent = rng.normal(size=(2, SIZE, SIZE)).astype(np.float32)
  return ids, poses.astype(np.float32), present, cotangent


def vjp_of(render, ids, poses, present, cotangent, key):
  return jax.grad(lambda p: (render(ids, p, present, key) * cotangent).sum())(jnp.asarray(poses))


def test_forward_is_the_host_render():
  ids, poses, present, _ = toy_inputs()
  render = black_box.make_render(blob_render, (SIZE, SIZE), steps=(0.01, 0.01, 0.01))
  np.testing.assert_allclose(jax.jit(render)(ids, poses, present, jax.random.key(0)),
                             blob_render(ids, poses, present), rtol=1e-6)


def test_central_differences_match_the_derivative_of_the_callback():
  ids, poses, present, cotangent = toy_inputs()
  render = black_box.make_render(blob_render, (SIZE, SIZE), method='central', steps=(0.01, 0.01, 0.01))
  estimate = np.asarray(jax.jit(vjp_of, static_argnums=0)(render, ids, poses, present, cotangent, jax.random.key(0)))
  exact = numerical_vjp(blob_render, ids, poses, present, cotangent)
  assert np.abs(exact[present > 0]).max() > 1.0  # a real gradient, not a vacuous match
  np.testing.assert_allclose(estimate, exact, rtol=2e-2, atol=2e-2)
  assert np.all(estimate[present == 0] == 0)  # absent objects: no gradient
  # A wrong sign, a wrong step (h counted twice) or swapped coordinates would not match.
  assert not np.allclose(estimate, -exact, rtol=2e-2, atol=2e-2)
  assert not np.allclose(estimate[..., [1, 0, 2]], exact, rtol=2e-2, atol=2e-2)


def test_absent_objects_cost_no_render():
  calls = []
  def counting(ids, poses, present):
    calls.append(len(ids))
    return blob_render(ids, poses, present)
  ids, poses, present, cotangent = toy_inputs()
  render = black_box.make_render(counting, (SIZE, SIZE), method='central', steps=(0.01, 0.01, 0.01))
  vjp_of(render, ids, poses, present, cotangent, jax.random.key(0))
  # forward: 2 scenes; backward: 2 renders per coordinate of the 3 present objects.
  assert calls == [2, 2 * 3 * 3], calls


def quadratic_render(ids, poses, present):
  """Pixels quadratic in the poses: x = A p + (p^T Q p) c with fixed A, Q, c."""
  del ids
  rng = np.random.default_rng(7)
  flat = (np.asarray(poses, np.float64) * np.asarray(present)[..., None]).reshape(len(poses), -1)
  a = rng.normal(size=(SIZE * SIZE, flat.shape[1]))
  q = rng.normal(size=(flat.shape[1], flat.shape[1]))
  c = rng.normal(size=SIZE * SIZE)
  quadratic = np.einsum('mi,ij,mj->m', flat, q, flat)
  return (flat @ a.T + quadratic[:, None] * c).reshape(len(poses), SIZE, SIZE).astype(np.float32)


def test_spsa_is_unbiased_on_a_quadratic():
  ids, poses, present, cotangent = toy_inputs(1)
  steps = (0.05, 0.05, 0.1)
  exact = numerical_vjp(quadratic_render, ids, poses, present, cotangent)
  spsa = black_box.make_render(quadratic_render, (SIZE, SIZE), method='spsa', steps=steps, num_directions=1)
  grad = jax.jit(jax.vmap(lambda key: vjp_of(spsa, ids, poses, present, cotangent, key)))
  samples = np.asarray(grad(jax.random.split(jax.random.key(0), 2000)), np.float64)
  mean, error = samples.mean(0), samples.std(0) / np.sqrt(len(samples))
  on = present > 0
  assert np.all(error[on] > 0)  # each sample is noisy ...
  z = (mean - exact)[on] / error[on]
  assert np.abs(z).max() < 4.5, z  # ... and their mean is the exact gradient
  assert np.all(samples[:, present == 0] == 0)
  # Central differences are exact on a quadratic (up to float32 rendering).
  central = black_box.make_render(quadratic_render, (SIZE, SIZE), method='central', steps=steps)
  np.testing.assert_allclose(vjp_of(central, ids, poses, present, cotangent, jax.random.key(0)), exact,
                             rtol=1e-3, atol=1e-2 * np.abs(exact).max())
  # The check has power: SPSA with a wrong scale (directions not divided out) is seen.
  assert np.abs((2 * mean - exact)[on] / (2 * error[on])).max() > 4.5


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match='method must be one of'):
    black_box.make_render(blob_render, (SIZE, SIZE), method='forward', steps=(0.1,))
  with pytest.raises(ValueError, match='steps must be positive'):
    black_box.make_render(blob_render, (SIZE, SIZE), steps=(0.1, 0.0, 0.1))


def test_identity_score_function_term_is_unbiased():
  """E over identity ~ Cat(softmax(l)) of the gradient of the surrogate that air_jax.loss builds
  (reinforce_surrogate of z_i log q(identity_i), advantage f(identity) - b) is the exact gradient
  of E_q[f(identity)] = sum_k softmax(l)_k f_k; a flipped advantage is seen."""
  logits = jnp.array([0.3, -0.5, 1.1])
  f = jnp.array([2.0, -1.0, 0.5])
  exact = jax.grad(lambda l: (jax.nn.softmax(l) * f).sum())(logits)

  def estimate(key, sign=1.0):
    identity = jax.random.categorical(key, logits)
    def surrogate(l):
      log_prob = objectives.categorical_log_prob(identity[None, None], l[None, None])
      advantage = sign * (f[identity] - 0.7)[None, None]  # any baseline independent of the sample
      return objectives.reinforce_surrogate(log_prob, advantage, jnp.ones((1, 1))).sum()
    return -jax.grad(surrogate)(logits)  # the surrogate is minimised: its negative gradient ascends

  keys = jax.random.split(jax.random.key(0), 20000)
  samples = np.asarray(jax.jit(jax.vmap(estimate))(keys), np.float64)
  mean, error = samples.mean(0), samples.std(0) / np.sqrt(len(samples))
  assert np.abs((mean - exact) / error).max() < 4.5
  flipped = np.asarray(jax.jit(jax.vmap(lambda k: estimate(k, -1.0)))(keys), np.float64).mean(0)
  assert np.abs((flipped - exact) / error).max() > 10


@pytest.fixture(scope='module')
def mujoco_scene():
  from air_jax.data import shapes_3d  # pylint: disable=g-import-not-at-top
  world = shapes_3d.World(counts=(1,))
  return world, shapes_3d.shared_pool(world, 1, 1)


@pytest.mark.parametrize('method', ['central', 'spsa'])
def test_real_render_gradient_points_to_the_true_pose(mujoco_scene, method):
  """A cube rendered off its true pose in one coordinate: the estimated gradient of the squared
  error (both estimators, the steps of configs/shapes_3d.py) points away from the true pose, so a
  move against it, half-way along that coordinate, lowers the error."""
  world, pool = mujoco_scene
  ids, present = np.zeros((1, 1), np.int32), np.ones((1, 1), np.float32)
  truth = np.array([[[0.1, -0.05, 0.4]]], np.float32)
  target = pool(ids, truth, present)
  render = black_box.make_render(pool, (world.image_size,) * 2, method=method, steps=(0.03, 0.03, 0.15),
                                 num_directions=4)
  error = lambda p: jnp.square(render(ids, p, present, jax.random.key(1)) - target).sum()
  for coordinate, offset in ((0, 0.08), (1, -0.08), (2, 0.3)):
    start = truth.copy()
    start[..., coordinate] += offset
    grad = np.asarray(jax.grad(error)(jnp.asarray(start)))[0, 0]
    assert grad[coordinate] * offset > 0, (coordinate, grad)  # uphill is away from the truth
    moved = start.copy()
    moved[..., coordinate] -= np.sign(grad[coordinate]) * abs(offset) / 2
    assert float(error(moved)) < float(error(start))
