"""3D scenes rendered by MuJoCo: a floor and 0-3 objects, each one of K = 3 shapes.

The world (every number a field of `World`): a grey floor, a fixed oblique camera and one fixed
directional light. An object is a cube, a sphere or a cylinder lying on its side, all of one size and
one material, so identity shows only in shape. It has a position (x, y) on the floor and a rotation
theta about the vertical axis. Objects do not intersect: their footprints, discs of radius
`World.footprint_radius`, are placed by rejection sampling. Images are greyscale floats in [0, 1].

Rendering is MuJoCo's own offscreen renderer (`mujoco.Renderer`). Set `MUJOCO_GL=egl` before
importing mujoco (this module sets it if unset): Mesa's software rasteriser on a CPU machine, the
GPU's EGL on a GPU machine. One MjModel holds a mocap body per (object slot, shape). A render moves
the bodies of the scene's objects into place and parks the others out of the camera's view.

Example i of `Shapes3D(seed=s)` depends only on (s, i), through `numpy.random.default_rng([s, i])`.
It carries:
- `image` uint8 [H, W] and `count` int32;
- per object, padded up to `max_objects`: `shape` int32 (-1 if absent) and `position` float32 [2]
  (x, y on the floor);
- `theta` float32 in [0, 2 pi).
"""
import atexit
import dataclasses
import functools
import os
import threading
import time
from typing import Dict, Sequence

from absl import logging
import numpy as np

from air_jax.data import sources

SHAPES = ('cube', 'sphere', 'cylinder')  # identity k = index
PARKED = 50.0  # x of a body that is not in the scene: far outside the camera's view
MAX_PLACEMENT_TRIES = 1000
MAX_RENDER_RESTARTS = 3  # per batch, for a render process that died (RenderPool._render)
SCENE_VERSION = 1  # bump when the world's rendering or sampling changes: names the cached files


@dataclasses.dataclass(frozen=True)
class World:
  """The scene prior and the rendering setup (lengths in metres)."""
  image_size: int = 32
  counts: Sequence[int] = (0, 1, 2, 3)
  object_size: float = 0.15          # cube half-side, sphere radius, cylinder radius and half-length
  floor_extent: float = 0.45         # object centres uniform in [-extent, extent]^2
  footprint_radius: float = 0.22     # objects' centres at least 2x this apart (no intersection)
  camera_distance: float = 1.6       # from the floor's centre
  camera_elevation_deg: float = 50.0  # above the floor plane
  camera_fovy_deg: float = 45.0
  light_direction: Sequence[float] = (0.4, 0.6, -1.0)
  object_grey: float = 0.9
  floor_grey: float = 0.35

  @property
  def max_objects(self) -> int:
    return max(self.counts)

  def check(self) -> None:
    """Raises ValueError naming the first invalid field."""
    counts = tuple(self.counts)
    sources.check_counts('World.counts', counts)
    if self.image_size < 8:
      raise ValueError(f'World.image_size must be at least 8, got {self.image_size}')
    if not self.footprint_radius >= self.object_size * np.sqrt(2):
      raise ValueError(f'World.footprint_radius={self.footprint_radius} must cover an object '
                       f'(>= object_size * sqrt(2) = {self.object_size * np.sqrt(2):.3f})')
    if not 0 < self.camera_elevation_deg < 90:
      raise ValueError(f'World.camera_elevation_deg must be in (0, 90), got {self.camera_elevation_deg}')


def _geom(shape: str, size: float, grey: float) -> str:
  rgba = f'{grey} {grey} {grey} 1'
  if shape == 'cube':
    return f'<geom type="box" size="{size} {size} {size}" rgba="{rgba}"/>'
  if shape == 'sphere':
    return f'<geom type="sphere" size="{size}" rgba="{rgba}"/>'
  # A cylinder's axis is its local z: turned 90 degrees about x, it lies along y on the floor.
  return f'<geom type="cylinder" size="{size} {size}" euler="90 0 0" rgba="{rgba}"/>'


def world_xml(world: World, slots: int | None = None) -> str:
  """MJCF of the world: floor, light, camera 'eye', a mocap body per (slot j, shape k) 'o{j}_{k}'
  for slots j < `slots` (default: world.max_objects)."""
  slots = world.max_objects if slots is None else slots
  elevation = np.deg2rad(world.camera_elevation_deg)
  back, up = world.camera_distance * np.cos(elevation), world.camera_distance * np.sin(elevation)
  # The camera at (0, -back, up) looks at the origin: its x axis is world x, its y axis is
  # (0, sin e, cos e) (perpendicular to the view direction, pointing up the image).
  y_axis = f'0 {np.sin(elevation):.6f} {np.cos(elevation):.6f}'
  bodies = '\n'.join(
      f'<body name="o{j}_{k}" mocap="true" pos="{PARKED} 0 {world.object_size}">'
      f'{_geom(shape, world.object_size, world.object_grey)}</body>'
      for j in range(slots) for k, shape in enumerate(SHAPES))
  floor = world.floor_grey
  return f"""<mujoco model="shapes_3d">
  <visual><headlight ambient="0.25 0.25 0.25" diffuse="0 0 0" specular="0 0 0"/>
    <global offwidth="{world.image_size}" offheight="{world.image_size}"/></visual>
  <worldbody>
    <light directional="true" dir="{' '.join(map(str, world.light_direction))}" diffuse="0.8 0.8 0.8"
           specular="0.1 0.1 0.1" castshadow="false"/>
    <geom type="plane" size="3 3 0.1" rgba="{floor} {floor} {floor} 1"/>
    <camera name="eye" pos="0 {-back:.6f} {up:.6f}" xyaxes="1 0 0 {y_axis}" fovy="{world.camera_fovy_deg}"/>
    {bodies}
  </worldbody>
</mujoco>"""


def focal_length(world: World) -> float:
  """The camera's focal length in pixels: an object of side s at depth d spans focal * s / d."""
  return 0.5 * world.image_size / np.tan(np.deg2rad(world.camera_fovy_deg) / 2)


def project(world: World, points, xp=np):
  """World points [..., 3] -> ((row, column) [..., 2] in image pixels of the camera 'eye', depth
  [...] in metres along the view). xp: the array module (numpy, or jax.numpy inside a jit)."""
  elevation = np.deg2rad(world.camera_elevation_deg)
  back, up = world.camera_distance * np.cos(elevation), world.camera_distance * np.sin(elevation)
  points = np.asarray(points, np.float64) if xp is np else points
  relative = points - np.array([0.0, -back, up], points.dtype)
  x_axis, y_axis = np.array([1.0, 0, 0]), np.array([0.0, np.sin(elevation), np.cos(elevation)])
  z_axis = np.cross(x_axis, y_axis)  # points back, out of the image
  depth = -(relative @ z_axis.astype(relative.dtype))
  focal, centre = focal_length(world), 0.5 * world.image_size
  pixels = xp.stack([centre - focal * (relative @ y_axis.astype(relative.dtype)) / depth,
                     centre + focal * (relative @ x_axis.astype(relative.dtype)) / depth], -1)
  return pixels, depth


def object_boxes(world: World, position: np.ndarray) -> np.ndarray:
  """Image boxes (top, left, height, width) [..., 4] around objects at positions [..., 2]: the
  projection of the cube of side 2 object_size standing there."""
  size = world.object_size
  corners = np.array([[dx, dy, dz] for dx in (-size, size) for dy in (-size, size) for dz in (0, 2 * size)])
  points = np.concatenate([np.asarray(position)[..., None, :], np.zeros(np.shape(position)[:-1] + (1, 1))], -1)
  pixels, _ = project(world, points + corners)  # [..., 8, 2]
  low, high = pixels.min(-2), pixels.max(-2)
  return np.concatenate([low, high - low], -1)


class RendererUnavailableError(RuntimeError, sources.UnavailableError):
  """MuJoCo is missing or can open no OpenGL context; the message says what to install."""


GL_HINT = ('install an OpenGL backend (Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri) and '
           'choose it with MUJOCO_GL=egl (or osmesa: libosmesa6)')


def _import_mujoco():
  os.environ.setdefault('MUJOCO_GL', 'egl')
  # Mesa's software rasteriser splits each tiny render over threads unless told not to: one
  # thread per render is faster here (593 vs 452 renders/s from one thread, 843 vs 695 from two).
  os.environ.setdefault('LP_NUM_THREADS', '1')
  try:
    import mujoco  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RendererUnavailableError(f'3D scenes need MuJoCo (pip install mujoco==4.0.0): {e}') from e
  except Exception as e:  # pylint: disable=broad-except  (mujoco rejects a bad MUJOCO_GL at import)
    raise RendererUnavailableError(f'MuJoCo did not start with MUJOCO_GL={os.environ["MUJOCO_GL"]!r}: '
                                   f'{" ".join(str(e).split())}; {GL_HINT}') from e
  return mujoco


class SceneRenderer:
  """render(shape [M] int, position [M, 2], theta [M], count) -> float32 [H, W] in [0, 1].

  One MjModel with `slots` object slots (default world.max_objects) and one offscreen renderer;
  not thread-safe (use one per thread)."""

  def __init__(self, world: World, slots: int | None = None):
    world.check()
    mujoco = _import_mujoco()
    self.world, self._mujoco = world, mujoco
    self.slots = world.max_objects if slots is None else int(slots)
    self.model = mujoco.MjModel.from_xml_string(world_xml(world, self.slots))
    self.data = mujoco.MjData(self.model)
    try:
      self.renderer = mujoco.Renderer(self.model, world.image_size, world.image_size)
    except Exception as e:  # pylint: disable=broad-except
      raise RendererUnavailableError(
          f'MuJoCo could not open an offscreen OpenGL context (MUJOCO_GL={os.environ.get("MUJOCO_GL")!r}): '
          f'{" ".join(str(e).split())}; {GL_HINT}') from e
    self._body = np.array([[self.model.body(f'o{j}_{k}').mocapid[0] for k in range(len(SHAPES))]
                           for j in range(self.slots)])

  def render(self, shape: np.ndarray, position: np.ndarray, theta: np.ndarray, count: int) -> np.ndarray:
    """The scene of objects 0 .. count - 1."""
    return self.render_present(shape, position, theta, np.arange(len(shape)) < count)

  def render_present(self, shape, position, theta, present) -> np.ndarray:
    """The scene of the objects j with present[j] (other slots' shape, position, theta unused)."""
    data, size = self.data, self.world.object_size
    data.mocap_pos[:] = (PARKED, 0.0, size)
    data.mocap_quat[:] = (1.0, 0.0, 0.0, 0.0)
    position = np.nan_to_num(np.asarray(position, np.float64), nan=PARKED, posinf=PARKED, neginf=-PARKED)
    theta = np.nan_to_num(np.asarray(theta, np.float64))
    for j in np.flatnonzero(np.asarray(present) > 0.5):
      body = self._body[j, int(np.clip(shape[j], 0, len(SHAPES) - 1))]
      data.mocap_pos[body] = (position[j, 0], position[j, 1], size)
      half = 0.5 * float(theta[j])
      data.mocap_quat[body] = (np.cos(half), 0.0, 0.0, np.sin(half))  # about the vertical axis
    self._mujoco.mj_forward(self.model, data)
    self.renderer.update_scene(data, camera='eye')
    rgb = self.renderer.render().astype(np.float32)
    return rgb.mean(-1) / 255.0  # grey objects on a grey floor: the channels are equal

  def close(self) -> None:
    self.renderer.close()


def serve_renders() -> None:
  """A render process (python -c 'from air_jax.data import shapes_3d; shapes_3d.serve_renders()'):
  reads pickled (world, slots), makes one SceneRenderer, then answers each pickled (shape, pose,
  present) batch on stdin with ('images', [M, H, W]) on its stdout, until None. Anything else that
  writes to stdout (MuJoCo, EGL) goes to stderr instead."""
  import pickle  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  replies = os.fdopen(os.dup(1), 'wb')
  os.dup2(2, 1)
  jobs = sys.stdin.buffer
  world, slots = pickle.load(jobs)
  try:
    renderer = SceneRenderer(world, slots)
  except Exception as e:  # pylint: disable=broad-except
    pickle.dump(('error', str(e)), replies)
    replies.flush()
    return
  pickle.dump(('ready', None), replies)
  replies.flush()
  while (job := pickle.load(jobs)) is not None:
    shape, pose, present = job
    try:
      images = np.stack([renderer.render_present(shape[m], pose[m, :, :2], pose[m, :, 2], present[m])
                         for m in range(len(shape))])
      pickle.dump(('images', images), replies, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # pylint: disable=broad-except
      pickle.dump(('error', f'{type(e).__name__}: {e}'), replies)
    replies.flush()
  renderer.close()


class RenderPool:
  """pool(shape int [M, K], pose float [M, K, 3] = (x, y, theta), present [M, K]) -> float32
  [M, H, W]: M scenes of up to K = slots objects, split over `processes` render processes, each
  with its own SceneRenderer. The host side of the 3D scene kind's renderer
  (air_jax.black_box.make_render). Use `shared_pool`.

  Processes, not threads: Mesa's software rasteriser JIT-compiles with its own LLVM, and doing
  that in the process whose XLA compiles at the same time crashed it (a segfault in a native
  thread, seen twice); in their own processes renders are also faster (1,169 against 843
  renders/s with 2 workers, experiments/benchmark_3d.py)."""

  def __init__(self, world: World, slots: int, processes: int = 2):
    if processes < 1:
      raise ValueError(f'render processes must be >= 1, got {processes}')
    import pathlib  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    self.world, self.slots, self.processes = world, int(slots), int(processes)
    self.renders, self.seconds = 0, 0.0  # scenes rendered so far and the wall time it took
    self.restarts = 0  # render processes that died and were started again
    self._lock = threading.Lock()  # one batch at a time through the pipes (callers may be threads)
    self._env = dict(os.environ)  # the child imports this copy of air_jax
    root = str(pathlib.Path(__file__).resolve().parents[2])
    self._env['PYTHONPATH'] = os.pathsep.join(
        [root] + ([self._env['PYTHONPATH']] if self._env.get('PYTHONPATH') else []))
    self._command = [sys.executable, '-c',
                     'from air_jax.data import shapes_3d; shapes_3d.serve_renders()']
    self._workers = []
    atexit.register(self.close)
    for _ in range(self.processes):
      try:
        self._workers.append(self._start_worker())
      except RendererUnavailableError:
        self.close()
        raise

  def _start_worker(self):
    """A fresh interpreter (not a fork of this one: forking a process that runs XLA's threads is
    unsafe) that has made its SceneRenderer; RendererUnavailableError if it could not."""
    import subprocess  # pylint: disable=g-import-not-at-top
    worker = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=self._env)
    self._send(worker, (self.world, self.slots))
    kind, message = self._receive(worker)
    if kind != 'ready':
      self._stop(worker)
      raise RendererUnavailableError(message)
    return worker

  @staticmethod
  def _send(worker, message) -> None:
    import pickle  # pylint: disable=g-import-not-at-top
    pickle.dump(message, worker.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    worker.stdin.flush()

  @staticmethod
  def _receive(worker):
    """The worker's reply, or ('exited', why) if its process is gone."""
    import pickle  # pylint: disable=g-import-not-at-top
    try:
      return pickle.load(worker.stdout)
    except (EOFError, pickle.UnpicklingError):
      return ('exited', f'the render process exited (status {worker.wait()}); its stderr says why')

  def __call__(self, shape, pose, present) -> np.ndarray:
    shape, pose, present = np.asarray(shape), np.asarray(pose, np.float64), np.asarray(present)
    if shape.shape[1] > self.slots:
      raise ValueError(f'scenes of {shape.shape[1]} objects, the renderer has {self.slots} slots')
    with self._lock:
      if not self._workers:
        raise RuntimeError('this render pool was closed (after a render error, or by close())')
      try:
        return self._render(shape, pose, present)
      except BaseException:
        # Replies of the other processes may be left unread in their pipes: a later batch would
        # read them as its own. Stop them all; shared_pool makes a fresh pool on its next call.
        self.close()
        shared_pool.cache_clear()
        raise

  def _render(self, shape, pose, present) -> np.ndarray:
    """Renders are deterministic, so a render process that died (a native crash in the software
    rasteriser: once in ~3,400 training steps) is started again and sent its rows again: once if
    it was found dead when sent them, then up to MAX_RENDER_RESTARTS times per process per batch
    if it dies before replying. An error the process reports itself is raised."""
    start = time.perf_counter()
    parts = [rows for rows in np.array_split(np.arange(len(shape)), self.processes) if len(rows)]
    jobs = [(shape[rows], pose[rows], present[rows]) for rows in parts]
    for index, job in enumerate(jobs):
      self._send_or_restart(index, job)
    images = []
    for index, job in enumerate(jobs):
      kind, result = self._receive(self._workers[index])
      for _ in range(MAX_RENDER_RESTARTS):
        if kind != 'exited':
          break
        self._restart(index, result)
        self._send(self._workers[index], job)
        kind, result = self._receive(self._workers[index])
      if kind != 'images':
        raise RuntimeError(f'a render process failed: {result}')
      images.append(result)
    size = self.world.image_size
    out = np.concatenate(images).astype(np.float32) if images else np.zeros((0, size, size), np.float32)
    self.renders += len(shape)
    self.seconds += time.perf_counter() - start
    return out

  def _send_or_restart(self, index: int, job) -> None:
    try:
      self._send(self._workers[index], job)
    except (BrokenPipeError, OSError):  # it died between batches
      self._restart(index, f'the render process exited (status {self._workers[index].wait()})')
      self._send(self._workers[index], job)

  def _restart(self, index: int, why: str) -> None:
    logging.warning('%s; starting render process %d again', why, index)
    self._stop(self._workers[index])
    self._workers[index] = self._start_worker()
    self.restarts += 1

  @classmethod
  def _stop(cls, worker) -> None:
    for finish in (lambda: cls._send(worker, None), worker.stdin.close):
      try:
        finish()
      except (BrokenPipeError, OSError, ValueError):
        pass
    try:
      worker.wait(timeout=10)
    except Exception:  # pylint: disable=broad-except
      worker.kill()
      worker.wait()
    worker.stdout.close()

  def close(self) -> None:
    """Stops the render processes (each frees its renderer itself)."""
    for worker in self._workers:
      self._stop(worker)
    self._workers = []


@functools.lru_cache(maxsize=None)
def shared_pool(world: World, slots: int, processes: int) -> RenderPool:
  """One RenderPool per (world, slots, processes) for the process: every model, step and source of
  one world renders through the same few render processes."""
  return RenderPool(world, slots, processes)


def sample_layout(rng: np.random.Generator, world: World) -> Dict[str, np.ndarray]:
  """A scene from the prior: count ~ Uniform(counts), shape ~ Uniform(K), (x, y) uniform on the
  floor with footprints apart (rejection sampling), theta ~ Uniform[0, 2 pi)."""
  m = world.max_objects
  count = int(rng.choice(np.asarray(world.counts)))
  position = np.zeros((m, 2), np.float32)
  for j in range(count):
    for _ in range(MAX_PLACEMENT_TRIES):
      candidate = rng.uniform(-world.floor_extent, world.floor_extent, size=2)
      if all(np.hypot(*(candidate - position[i])) >= 2 * world.footprint_radius for i in range(j)):
        position[j] = candidate
        break
    else:
      raise ValueError(f'cannot place {count} objects with footprint radius {world.footprint_radius} '
                       f'on a floor of extent {world.floor_extent}')
  shape = np.full(m, -1, np.int32)
  shape[:count] = rng.integers(0, len(SHAPES), size=count)
  theta = np.zeros(m, np.float32)
  theta[:count] = rng.uniform(0, 2 * np.pi, size=count)
  return dict(count=np.int32(count), shape=shape, position=position, theta=theta)


class Shapes3D:
  """Random-access source of rendered 3D scenes (len / getitem / getitems), like MultiMNIST."""

  def __init__(self, world: World = World(), *, num_examples: int, seed: int):
    world.check()
    if num_examples <= 0:
      raise ValueError(f'num_examples must be positive, got {num_examples}')
    self.world, self.num_examples, self.seed = world, int(num_examples), int(seed)

  def __len__(self) -> int:
    return self.num_examples

  @property
  def counts(self):
    return tuple(self.world.counts)

  def layout(self, index: int) -> Dict[str, np.ndarray]:
    if not 0 <= index < self.num_examples:
      raise IndexError(f'index {index} out of range for {self.num_examples} scenes')
    return sample_layout(np.random.default_rng([self.seed, int(index)]), self.world)

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    return {k: v[0] for k, v in self.__getitems__([index]).items()}

  def __getitems__(self, indices: Sequence[int]) -> Dict[str, np.ndarray]:
    """The scenes at indices, rendered together (shared_pool of the world, 2 processes)."""
    layouts = [self.layout(int(i)) for i in indices]
    layout = {k: np.stack([scene[k] for scene in layouts]) for k in layouts[0]}
    pose = np.concatenate([layout['position'], layout['theta'][..., None]], -1)
    present = np.arange(self.world.max_objects) < layout['count'][:, None]
    images = shared_pool(self.world, self.world.max_objects, 2)(layout['shape'], pose, present)
    return dict(image=np.round(images * 255).astype(np.uint8), **layout)

  def cache_name(self, split: str) -> str:
    """File name that pins down every example (the world, its counts, the number and the seed)."""
    import hashlib  # pylint: disable=g-import-not-at-top
    world = hashlib.sha1(repr(dataclasses.astuple(self.world)).encode()).hexdigest()[:10]
    return f'shapes_3d_v{SCENE_VERSION}_{split}_n{self.num_examples}_seed{self.seed}_world{world}.npz'
