"""3D scenes rendered by MuJoCo: the prior's layouts, determinism, and what the renders show."""
import subprocess
import sys

import numpy as np
import pytest

from air_jax.data import shapes_3d
from tests import helpers

WORLD = shapes_3d.World()
NONE = np.full(3, -1)


@pytest.fixture(scope='module')
def renderer():
  r = shapes_3d.SceneRenderer(WORLD)
  yield r
  r.close()


def alone(renderer, shape, x=0.0, y=0.0, theta=0.0):
  """A render of one object."""
  position = np.zeros((3, 2))
  position[0] = x, y
  return renderer.render(np.array([shape, -1, -1]), position, np.array([theta, 0, 0]), 1)


def test_layouts_follow_the_prior():
  scenes = shapes_3d.Shapes3D(WORLD, num_examples=400, seed=0)
  layouts = [scenes.layout(i) for i in range(400)]
  counts = np.array([int(s['count']) for s in layouts])
  assert set(counts) == set(WORLD.counts)
  assert np.all(np.bincount(counts) > 60)  # ~100 each
  shapes = []
  for s in layouts:
    c = int(s['count'])
    assert np.all(s['shape'][c:] == -1) and np.all((s['shape'][:c] >= 0) & (s['shape'][:c] < 3))
    assert np.all(np.abs(s['position'][:c]) <= WORLD.floor_extent)
    assert np.all((s['theta'][:c] >= 0) & (s['theta'][:c] < 2 * np.pi))
    for i in range(c):
      for j in range(i):  # footprints do not intersect
        assert np.hypot(*(s['position'][i] - s['position'][j])) >= 2 * WORLD.footprint_radius
    shapes.extend(s['shape'][:c])
  assert np.all(np.bincount(shapes, minlength=3) > 150)  # ~200 each


def test_scenes_depend_only_on_seed_and_index():
  a = shapes_3d.Shapes3D(WORLD, num_examples=8, seed=3)
  b = shapes_3d.Shapes3D(WORLD, num_examples=8, seed=3)
  other = shapes_3d.Shapes3D(WORLD, num_examples=8, seed=4)
  first = a.__getitems__([5, 2])
  again = b.__getitems__([2, 5])
  for key in ('image', 'count', 'shape', 'position', 'theta'):
    np.testing.assert_array_equal(first[key][::-1], again[key], err_msg=key)
  assert first['image'].dtype == np.uint8 and first['image'].shape == (2, 32, 32)
  assert not np.array_equal(first['image'], other.__getitems__([5, 2])['image'])
  with pytest.raises(IndexError, match='out of range'):
    a[8]


def test_an_empty_scene_is_the_floor(renderer):
  empty = renderer.render(NONE, np.zeros((3, 2)), np.zeros(3), 0)
  assert empty.dtype == np.float32 and empty.shape == (32, 32)
  assert 0.0 <= empty.min() and empty.max() <= 1.0
  assert empty.std() < 0.02  # one grey floor, evenly lit
  # Bodies left at earlier positions do not linger: the renderer parks what a scene does not hold.
  alone(renderer, 0)
  np.testing.assert_array_equal(renderer.render(NONE, np.zeros((3, 2)), np.zeros(3), 0), empty)


def test_shapes_differ_and_rotate_as_solids(renderer):
  empty = renderer.render(NONE, np.zeros((3, 2)), np.zeros(3), 0)
  renders = [alone(renderer, k) for k in range(3)]
  for k, image in enumerate(renders):
    assert (np.abs(image - empty) > 0.05).sum() > 15, shapes_3d.SHAPES[k]  # each is visible
  for i in range(3):
    for j in range(i):
      assert np.abs(renders[i] - renders[j]).sum() > 5.0, (i, j)  # silhouettes and shading differ
  cube, sphere, cylinder = 0, 1, 2
  change = lambda k, theta: float(np.abs(alone(renderer, k, theta=theta) - renders[k]).sum())
  # Symmetries of the solids (measured: cube 1/8 turn 15.4, cylinder 1/4 turn 19.2; a sphere turned
  # by 1 rad 0.33, its tessellation; cube 1/4 turn and cylinder 1/2 turn exactly 0).
  assert change(cube, np.pi / 2) < 0.05 and change(cube, np.pi / 4) > 5.0
  assert change(cylinder, np.pi) < 0.05 and change(cylinder, np.pi / 2) > 5.0
  assert change(sphere, 1.0) < 1.0


def test_position_moves_the_object_in_the_image(renderer):
  empty = renderer.render(NONE, np.zeros((3, 2)), np.zeros(3), 0)

  def centroid(image):
    ink = np.abs(image - empty) > 0.05
    rows, cols = np.nonzero(ink)
    return rows.mean(), cols.mean()

  centre, right, far = (centroid(alone(renderer, 1, x, y)) for x, y in ((0, 0), (0.3, 0), (0, 0.3)))
  assert right[1] > centre[1] + 3  # +x is to the right in the image
  assert far[0] < centre[0] - 2    # +y is away from the camera: higher in the image


def test_64_pixel_images():
  scenes = shapes_3d.Shapes3D(shapes_3d.World(image_size=64), num_examples=2, seed=0)
  batch = scenes.__getitems__([0, 1])
  assert batch['image'].shape == (2, 64, 64)


@pytest.mark.parametrize('fields, message', [
    (dict(counts=()), 'World.counts'),
    (dict(counts=(0, -1)), 'World.counts'),
    (dict(image_size=4), 'World.image_size'),
    (dict(footprint_radius=0.1), 'World.footprint_radius'),
    (dict(camera_elevation_deg=95.0), 'World.camera_elevation_deg'),
])
def test_bad_world_is_refused(fields, message):
  with pytest.raises(ValueError, match=message):
    shapes_3d.Shapes3D(shapes_3d.World(**fields), num_examples=1, seed=0)


def test_impossible_layout_is_refused():
  crowded = shapes_3d.World(counts=(3,), floor_extent=0.2)
  with pytest.raises(ValueError, match='cannot place 3 objects'):
    shapes_3d.Shapes3D(crowded, num_examples=1, seed=0).layout(0)
  with pytest.raises(ValueError, match='num_examples'):
    shapes_3d.Shapes3D(WORLD, num_examples=0, seed=0)


def test_no_opengl_backend_is_one_clear_error():
  """A MUJOCO_GL that names no usable backend: one RendererUnavailableError naming the variable
  and what to install, not a trace from inside MuJoCo."""
  code = ('from air_jax.data import shapes_3d\n'
          'try:\n'
          '  shapes_3d.SceneRenderer(shapes_3d.World())\n'
          'except shapes_3d.RendererUnavailableError as e:\n'
          '  print(e)\n')
  env = dict(helpers.subprocess_env(), MUJOCO_GL='no_such_backend')
  process = subprocess.run([sys.executable, '-c', code], cwd=helpers.REPO, env=env, capture_output=True,
                           text=True, timeout=120)
  assert process.returncode == 0, process.stderr[-2000:]
  lines = process.stdout.strip().splitlines()
  assert len(lines) == 1, process.stdout
  assert "MUJOCO_GL='no_such_backend'" in lines[0] and 'libegl1 libgl1-mesa-dri' in lines[0], lines[0]


def test_render_pool_restarts_a_render_process_that_died():
  """A render process killed between batches (as a native crash in the rasteriser would) is
  started again and its rows rendered again: the same images, not an error."""
  import signal  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  layouts = [shapes_3d.sample_layout(rng, WORLD) for _ in range(4)]
  shape = np.stack([l['shape'] for l in layouts])
  pose = np.concatenate([np.stack([l['position'] for l in layouts]),
                         np.stack([l['theta'] for l in layouts])[..., None]], axis=-1)
  present = shape >= 0
  pool = shapes_3d.RenderPool(WORLD, WORLD.max_objects, processes=2)
  try:
    before = pool(shape, pose, present)
    pool._workers[1].send_signal(signal.SIGSEGV)  # pylint: disable=protected-access
    pool._workers[1].wait(timeout=30)  # pylint: disable=protected-access
    after = pool(shape, pose, present)
    assert pool.restarts == 1
    np.testing.assert_array_equal(after, before)
    # Killed mid-batch: after its rows were sent, before it replied (stopped before they arrive).
    send, victim = pool._send, pool._workers[0]  # pylint: disable=protected-access
    def send_then_kill(worker, message):
      if worker is victim:
        worker.send_signal(signal.SIGSTOP)
      send(worker, message)
      if worker is victim:
        worker.kill()
        worker.wait(timeout=30)
    pool._send = send_then_kill  # pylint: disable=protected-access
    np.testing.assert_array_equal(pool(shape, pose, present), before)
    assert pool.restarts == 2
    # An error a render process reports ends the pool: no later batch reads a stale reply.
    with pytest.raises(RuntimeError, match='a render process failed: IndexError'):
      pool(shape, pose[..., :2], present)  # no theta: the render processes fail
    with pytest.raises(RuntimeError, match='render pool was closed'):
      pool(shape, pose, present)
    assert np.abs(before[2:] - before[:2]).sum() > 1.0  # the killed process's rows are real scenes
  finally:
    pool.close()
