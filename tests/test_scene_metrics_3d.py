"""Held-out 3D metrics (rotation_error, match_objects, scene_metrics) on hand-built cases."""
import numpy as np
from numpy import testing as npt

from air_jax.data import shapes_3d as data_shapes_3d
from air_jax.scenes import shapes_3d

CUBE, SPHERE, CYLINDER = 0, 1, 2  # indices in SHAPES


def test_shape_indices():
  assert shapes_3d.SHAPES == data_shapes_3d.SHAPES == ('cube', 'sphere', 'cylinder')


def test_rotation_error_scalars():
  err = lambda predicted, true, shape: float(shapes_3d.rotation_error(predicted, true, np.array(shape)))
  # Cube, period pi/2: (pi/2 + 0.1) mod pi/2 = 0.1, min(0.1, pi/2 - 0.1) = 0.1.
  npt.assert_allclose(err(0.3 + np.pi / 2 + 0.1, 0.3, CUBE), 0.1, atol=1e-12)
  # Cube off by -0.1: -0.1 mod pi/2 = pi/2 - 0.1, min(pi/2 - 0.1, 0.1) = 0.1.
  npt.assert_allclose(err(0.2, 0.3, CUBE), 0.1, atol=1e-12)
  # Cylinder, period pi: pi - 0.2 mod pi = pi - 0.2, min(pi - 0.2, 0.2) = 0.2.
  npt.assert_allclose(err(1.0 + np.pi - 0.2, 1.0, CYLINDER), 0.2, atol=1e-12)
  # Cylinder off by pi/2 (a cube's period) is the worst case, pi/2, not 0.
  npt.assert_allclose(err(np.pi / 2, 0.0, CYLINDER), np.pi / 2, atol=1e-12)
  # A sphere's rotation is invisible: NaN.
  assert np.isnan(err(1.0, 0.0, SPHERE))


def test_rotation_error_arrays_of_several_shapes():
  true = np.array([[0.0, 0.5, 1.0], [2.0, -1.0, 0.0]])
  offset = np.array([[np.pi / 2 + 0.1,  # cube: 0.1
                      np.pi / 4,  # cube: pi/4 (half the period, the largest error)
                      3.0],  # sphere: NaN
                     [-np.pi - 0.3,  # cylinder: -pi - 0.3 mod pi = pi - 0.3 -> 0.3
                      2 * np.pi,  # cube: 0 (a full turn)
                      np.pi / 2 + 0.25]])  # cylinder: pi/2 + 0.25 -> min(., pi/2 - 0.25) = pi/2 - 0.25
  shape = np.array([[CUBE, CUBE, SPHERE], [CYLINDER, CUBE, CYLINDER]])
  expected = np.array([[0.1, np.pi / 4, np.nan], [0.3, 0.0, np.pi / 2 - 0.25]])
  got = shapes_3d.rotation_error(true + offset, true, shape)
  assert got.shape == (2, 3)
  npt.assert_allclose(got, expected, atol=1e-12)  # NaNs must line up


def pairs(predicted_position, present, true_position, true_count):
  found = shapes_3d.match_objects(np.asarray(predicted_position, float), np.asarray(present, float),
                                  np.asarray(true_position, float), true_count)
  return sorted((int(slot), int(j)) for slot, j in found)


def test_match_objects_minimises_summed_distance_not_greedy():
  # Slots at x = 0, 2; truths at x = 1.1, 3.5. Greedy nearest-first takes slot 1 - truth 0 (0.9),
  # then slot 0 - truth 1 (3.5): total 4.4. Best: slot 0 - truth 0 (1.1) + slot 1 - truth 1 (1.5) = 2.6.
  assert pairs([[0, 0], [2, 0]], [1, 1], [[1.1, 0], [3.5, 0]], 2) == [(0, 0), (1, 1)]
  # The same with more slots than truths (the other branch): truths at x = 0, 2; slots at x = 1.1,
  # 3.5, 10. Greedy: slot 0 - truth 1 (0.9) then slot 1 - truth 0 (3.5) = 4.4; best 1.1 + 1.5 = 2.6.
  assert pairs([[1.1, 0], [3.5, 0], [10, 0]], [1, 1, 1], [[0, 0], [2, 0]], 2) == [(0, 0), (1, 1)]


def test_match_objects_missing_object():
  # One present slot, two true objects: it takes the nearer one (truth 1); truth 0 stays unmatched.
  # The padding row past true_count (on top of the slot) is not an object.
  assert pairs([[5, 5]], [1], [[0, 0], [5, 5.2], [5, 5]], 2) == [(0, 1)]


def test_match_objects_spurious_object():
  # Three slots, two truths: the far slot 1 (at (9, 9)) is left out.
  assert pairs([[0, 0.1], [9, 9], [1, 0.1]], [1, 1, 1], [[0, 0], [1, 0]], 2) == [(0, 0), (2, 1)]


def test_match_objects_absent_slots_never_matched():
  # Slot 1 sits exactly on truth 0 but is absent (0.5 is not > 0.5); slot 0 (0.2) likewise. The
  # present slots 2 and 3 keep their own indices.
  predicted = [[0, 0], [0, 0], [0.3, 0], [1.2, 0]]
  assert pairs(predicted, [0.2, 0.5, 0.51, 1.0], [[0, 0], [1, 0]], 2) == [(2, 0), (3, 1)]


def test_match_objects_empty():
  assert pairs([[0, 0], [1, 1]], [0, 0], [[0, 0]], 1) == []  # no present slot
  assert pairs([[0, 0], [1, 1]], [1, 1], [[0, 0]], 0) == []  # no true object
  assert pairs(np.zeros((0, 2)), [], np.zeros((0, 2)), 0) == []


def scenes():
  """Three scenes, three slots and three truth rows each (rows past the count are padding)."""
  inferred = dict(
      count=np.array([2, 1, 2]),
      identity=np.array([[CYLINDER, CUBE, CUBE], [SPHERE, CUBE, CUBE], [CUBE, SPHERE, CUBE]]),
      position=np.array([[[1, 0.1], [0, -0.2], [0, 0]],  # slot 2 absent (count 2) though on truth 0
                         [[2, 0.3], [0, 0], [0, 0]],
                         [[3, 3], [-1, 1.4], [0, 0]]]),
      theta=np.array([[0.5 + np.pi + 0.1, 0.1 - 0.05, 0.1],
                      [0.3, 0.0, 0.0],
                      [0.0, 2.0, 0.0]]))
  truth = dict(
      count=np.array([2, 2, 1]),
      shape=np.array([[CUBE, CYLINDER, CUBE], [SPHERE, CUBE, CUBE], [SPHERE, CUBE, CUBE]]),
      position=np.array([[[0, 0], [1, 0], [0, 0]],
                         [[0, 0], [2, 0], [0, 0]],
                         [[-1, 1], [0, 0], [0, 0]]], float),
      theta=np.array([[0.1, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
  return inferred, truth


def test_scene_metrics_hand_built_batch():
  inferred, truth = scenes()
  render_error = np.array([[0.1, 0.3], [0.2, 0.2], [0.0, 0.4]])
  got = shapes_3d.scene_metrics(inferred, truth, render_error)
  # Scene 0 (counts 2 = 2): slot 0 - cylinder (distance 0.1, right shape, error (pi + 0.1) mod pi = 0.1),
  #   slot 1 - cube (distance 0.2, right shape, error 0.05).
  # Scene 1 (counts 1 != 2, the sphere is missed): slot 0 - cube at distance 0.3, called a sphere:
  #   wrong shape, so its rotation (0.3 off) is left out.
  # Scene 2 (counts 2 != 1, the far slot 0 is spurious): slot 1 - sphere at distance 0.4, right
  #   shape, no rotation error (sphere).
  assert set(got) == {'count_accuracy', 'identity_accuracy', 'position_error', 'rotation_error_deg',
                      'matched_fraction', 'objects', 'rerender_mse'}
  npt.assert_allclose(got['count_accuracy'], 1 / 3)
  npt.assert_allclose(got['identity_accuracy'], 3 / 4)  # 3 right of 4 matched
  npt.assert_allclose(got['position_error'], (0.1 + 0.2 + 0.3 + 0.4) / 4)  # 0.25 m
  npt.assert_allclose(got['rotation_error_deg'], (0.1 + 0.05) / 2 * 180 / np.pi)  # 4.297 degrees
  npt.assert_allclose(got['matched_fraction'], 4 / 5)  # 4 matched of 2 + 2 + 1 true objects
  assert got['objects'] == 5
  npt.assert_allclose(got['rerender_mse'], (0.1 + 0.3 + 0.2 + 0.2 + 0.0 + 0.4) / 6)  # 0.2


def test_scene_metrics_nothing_matched():
  inferred, truth = scenes()
  inferred['count'] = np.zeros(3, int)
  got = shapes_3d.scene_metrics(inferred, truth)
  assert 'rerender_mse' not in got
  assert got['count_accuracy'] == 0.0 and got['matched_fraction'] == 0.0 and got['objects'] == 5
  for key in ('identity_accuracy', 'position_error', 'rotation_error_deg'):  # means over no objects
    assert np.isnan(got[key]), key
