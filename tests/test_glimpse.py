"""Glimpse read/write: identity windows, pixel-aligned crops, boxes, gradients."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from air_jax import glimpse

BIG_S = 30.0  # window_size(30) == 1 to float precision (window_size < 1 for every finite s)
HALF_S = math.log((0.5 - 0.1) / 0.9 / (1 - (0.5 - 0.1) / 0.9))  # window_size(HALF_S) == 0.5


def smooth_image(shape, phase=0.0):
  rows, cols = np.mgrid[:shape[0], :shape[1]]
  return (0.5 + 0.3 * np.sin(0.4 * rows + phase) * np.cos(0.3 * cols - phase)
          + 0.1 * np.cos(0.17 * rows * cols / shape[1]))


class TestWindowSize:

  def test_bounds_and_values(self):
    s = jnp.array([-1e3, -5.0, HALF_S, 0.0, 5.0, BIG_S, 1e3])
    w = np.asarray(glimpse.window_size(s))
    assert np.all(w >= glimpse.WINDOW_MIN) and np.all(w <= glimpse.WINDOW_MAX)
    assert np.all(np.diff(w) >= 0)
    np.testing.assert_allclose(w[[0, 2, 3, 5]], [0.1, 0.5, 0.55, 1.0], atol=1e-6)

  def test_window_logit_is_its_inverse(self):
    np.testing.assert_allclose(glimpse.window_logit(0.5), HALF_S, rtol=1e-6)
    w = jnp.array([0.11, 0.3, 0.55, 0.99])
    np.testing.assert_allclose(glimpse.window_size(glimpse.window_logit(w)), w, rtol=1e-5)


class TestIdentityWindow:
  """A full-canvas window centred at (0, 0) with glimpse shape == image shape is the identity."""
  SHAPE = (20, 30)  # not square: catches a swapped x/y axis

  def z_where(self, batch=2):
    return jnp.tile(jnp.array([[BIG_S, 0.0, 0.0]], jnp.float32), (batch, 1))

  def test_kernels_are_identity(self):
    k_y, k_x = glimpse.read_kernels(self.z_where(), self.SHAPE, self.SHAPE)
    np.testing.assert_allclose(k_y, np.broadcast_to(np.eye(20), (2, 20, 20)), atol=1e-5)
    np.testing.assert_allclose(k_x, np.broadcast_to(np.eye(30), (2, 30, 30)), atol=1e-5)
    k_y, k_x = glimpse.write_kernels(self.z_where(), self.SHAPE, self.SHAPE)
    np.testing.assert_allclose(k_y, np.broadcast_to(np.eye(20), (2, 20, 20)), atol=1e-5)
    np.testing.assert_allclose(k_x, np.broadcast_to(np.eye(30), (2, 30, 30)), atol=1e-5)

  def test_read_and_write_reproduce(self):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2,) + self.SHAPE).astype(np.float32)
    out = glimpse.read(jnp.asarray(images), self.z_where(), self.SHAPE)
    assert out.shape == (2,) + self.SHAPE
    np.testing.assert_allclose(out, images, atol=1e-5)
    np.testing.assert_allclose(glimpse.write(jnp.asarray(images), self.z_where(), self.SHAPE),
                               images, atol=1e-5)


def test_read_equals_matrix_form():
  """read (row gather) == K_y @ image @ K_x^T from read_kernels, values and z_where gradients,
  for windows inside, across the border of and far outside the image."""
  rng = np.random.default_rng(3)
  images = jnp.asarray(rng.uniform(size=(64, 20, 24)).astype(np.float32))
  z_where = jnp.asarray(np.concatenate([rng.uniform(-3, 3, (64, 1)), rng.uniform(-2.5, 2.5, (64, 2))],
                                       axis=1).astype(np.float32))
  weights = jnp.asarray(rng.normal(size=(64, 8, 6)).astype(np.float32))

  def matrix_form(z):
    k_y, k_x = glimpse.read_kernels(z, (20, 24), (8, 6))
    return jnp.einsum('bgi,bij,bhj->bgh', k_y, images, k_x)

  out = glimpse.read(images, z_where, (8, 6))
  assert float(jnp.abs(out).sum(axis=(1, 2)).min()) == 0.0 and float(jnp.abs(out).max()) > 0.5
  np.testing.assert_allclose(out, matrix_form(z_where), atol=1e-5)
  loss = lambda f: jax.grad(lambda z: jnp.sum(f(z) * weights))
  np.testing.assert_allclose(loss(lambda z: glimpse.read(images, z, (8, 6)))(z_where),
                             loss(matrix_form)(z_where), rtol=1e-4, atol=1e-4)


class TestPixelAlignedWindow:
  """Canvas 50x60, glimpse 25x30, w = 0.5: glimpse pixel (a, b) lands exactly on canvas pixel
  (a + 12.5 + 25 y, b + 15 + 30 x). With y = 0.18, x = 0.1 that is (a + 17, b + 18)."""
  CANVAS, GLIMPSE = (50, 60), (25, 30)
  TOP, LEFT = 17, 18

  def z_where(self):
    return jnp.array([[HALF_S, 0.1, 0.18]], jnp.float32)

  def test_box(self):
    np.testing.assert_allclose(glimpse.boxes(self.z_where(), self.CANVAS),
                               [[self.TOP, self.LEFT, 25, 30]], atol=1e-4)

  def test_read_is_a_crop(self):
    image = np.random.default_rng(1).uniform(size=(1,) + self.CANVAS).astype(np.float32)
    crop = image[:, self.TOP:self.TOP + 25, self.LEFT:self.LEFT + 30]
    np.testing.assert_allclose(glimpse.read(jnp.asarray(image), self.z_where(), self.GLIMPSE), crop,
                               atol=1e-5)

  def test_write_read_restores_covered_region(self):
    image = np.random.default_rng(2).uniform(size=(1,) + self.CANVAS).astype(np.float32)
    z_where = self.z_where()
    restored = np.asarray(glimpse.write(glimpse.read(jnp.asarray(image), z_where, self.GLIMPSE),
                                        z_where, self.CANVAS))
    top, left, height, width = np.round(np.asarray(glimpse.boxes(z_where, self.CANVAS))[0]).astype(int)
    inside = np.zeros(self.CANVAS, bool)
    inside[top:top + height, left:left + width] = True
    assert inside.sum() == 25 * 30
    np.testing.assert_allclose(restored[0][inside], image[0][inside], atol=1e-5)
    np.testing.assert_allclose(restored[0][~inside], 0.0, atol=1e-5)


@pytest.mark.parametrize('z_where', [(0.0, 0.2, -0.4), (-1.5, -0.6, 0.3), (1.2, 0.05, 0.1)])
def test_write_of_ones_fills_its_box(z_where):
  """write(ones) is 1 well inside boxes() and 0 well outside (bilinear blur: half a glimpse pixel)."""
  canvas, glimpse_shape = (50, 60), (10, 12)
  z_where = jnp.array([z_where], jnp.float32)
  painted = np.asarray(glimpse.write(jnp.ones((1,) + glimpse_shape), z_where, canvas))[0]
  top, left, height, width = np.asarray(glimpse.boxes(z_where, canvas))[0]
  margin_y, margin_x = 0.5 * height / glimpse_shape[0] + 1e-3, 0.5 * width / glimpse_shape[1] + 1e-3
  rows, cols = np.mgrid[:canvas[0], :canvas[1]] + 0.5  # pixel centres
  well_inside = ((rows > top + margin_y) & (rows < top + height - margin_y)
                 & (cols > left + margin_x) & (cols < left + width - margin_x))
  well_outside = ((rows < top - margin_y) | (rows > top + height + margin_y)
                  | (cols < left - margin_x) | (cols > left + width + margin_x))
  assert well_inside.sum() > 0 and well_outside.sum() > 0
  np.testing.assert_allclose(painted[well_inside], 1.0, atol=1e-5)
  np.testing.assert_allclose(painted[well_outside], 0.0, atol=1e-6)


def test_boxes_hand_case():
  # s = 0: w = 0.1 + 0.9 / 2 = 0.55. Canvas 50 rows x 60 columns.
  # top = (y - w + 1) / 2 * 50, left = (x - w + 1) / 2 * 60, height = 0.55 * 50, width = 0.55 * 60.
  z_where = jnp.array([[[0.0, 0.2, -0.4], [BIG_S, 0.0, 0.0]]], jnp.float32)  # [1, 2, 3]
  boxes = glimpse.boxes(z_where, (50, 60))
  assert boxes.shape == (1, 2, 4)
  np.testing.assert_allclose(boxes[0], [[1.25, 19.5, 27.5, 33.0], [0.0, 0.0, 50.0, 60.0]], atol=1e-4)


def test_translation_moves_the_window():
  """x moves the glimpse right (columns), y moves it down (rows)."""
  image = np.zeros((1, 40, 40), np.float32)
  image[0, 30, 10] = 1.0  # bottom-left quadrant
  z = lambda x, y: jnp.array([[-2.0, x, y]], jnp.float32)  # w ~ 0.2
  assert float(glimpse.read(jnp.asarray(image), z(-0.47, 0.52), (8, 8)).sum()) > 0.1
  assert float(glimpse.read(jnp.asarray(image), z(0.52, -0.47), (8, 8)).sum()) == 0.0


class TestGradients:
  """jax.grad of read and write w.r.t. z_where matches central differences (float64)."""
  EPS = 1e-6

  def check(self, f, z_where):
    f = jax.jit(f)
    grad = np.asarray(jax.jit(jax.grad(f))(z_where))
    fd = np.zeros_like(grad)
    for idx in np.ndindex(*z_where.shape):
      step = np.zeros(z_where.shape)
      step[idx] = self.EPS
      fd[idx] = (float(f(z_where + step)) - float(f(z_where - step))) / (2 * self.EPS)
    assert np.abs(grad).max() > 1e-2  # the check has something to compare
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)

  def test_read(self):
    with jax.enable_x64(True):
      images = jnp.asarray(np.stack([smooth_image((20, 24)), smooth_image((20, 24), 1.0)]))
      weights = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 6)))
      z_where = jnp.array([[0.3, 0.1, -0.2], [-0.5, -0.31, 0.23]], jnp.float64)
      f = lambda z: jnp.sum(glimpse.read(images, z, (8, 6)) * weights)
      assert f(z_where).dtype == jnp.float64
      self.check(f, z_where)

  def test_write(self):
    with jax.enable_x64(True):
      patches = jnp.asarray(np.stack([smooth_image((8, 6)), smooth_image((8, 6), 2.0)]))
      weights = jnp.asarray(np.random.default_rng(1).normal(size=(2, 20, 24)))
      z_where = jnp.array([[0.3, 0.1, -0.2], [-0.5, -0.31, 0.23]], jnp.float64)
      f = lambda z: jnp.sum(glimpse.write(patches, z, (20, 24)) * weights)
      assert f(z_where).dtype == jnp.float64
      self.check(f, z_where)



def test_a_frame_reads_and_writes_a_crop_as_the_whole_canvas_does():
  """Windows inside a crop (glimpse.Frame: its centre and side) sample the same pixels there as on
  the whole canvas; a window half outside the crop keeps only its part inside."""
  image = jnp.asarray(np.stack([smooth_image((40, 40), phase) for phase in (0.0, 1.0, 2.0)]), jnp.float32)
  z_where = jnp.array([[-2.0, 0.1, -0.2], [-1.5, -0.1, 0.25], [-2.5, 0.05, 0.0]])  # inside the crop
  top, side = 10, 24  # rows and columns 10..33: its centre lies at (2 * 10 + 24) / 40 - 1 = 0.1
  frame = glimpse.Frame(jnp.full((3, 2), 0.1), side / 40)
  crop = lambda x: x[:, top:top + side, top:top + side]
  patches = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 8, 8)), jnp.float32)
  whole = glimpse.write(patches, z_where, (40, 40))
  local = glimpse.write(patches, z_where, (side, side), frame)
  np.testing.assert_allclose(local, crop(whole), atol=1e-5)
  np.testing.assert_allclose(local.sum(), whole.sum(), rtol=1e-5)  # all its ink lies inside
  np.testing.assert_allclose(glimpse.read(crop(image), z_where, (8, 8), frame), glimpse.read(image, z_where, (8, 8)),
                             atol=1e-5)
  edge = z_where.at[:, 1].set(0.7)  # centred on the crop's right edge (x = 0.1 + 0.6): half of it is cut
  cut = glimpse.write(patches, edge, (side, side), frame)
  np.testing.assert_allclose(cut, crop(glimpse.write(patches, edge, (40, 40))), atol=1e-5)
  kept = cut.sum((1, 2)) / glimpse.write(patches, edge, (40, 40)).sum((1, 2))
  assert np.all((0.3 < kept) & (kept < 0.7)), kept
