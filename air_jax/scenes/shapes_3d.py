"""The 3D scene kind: objects of K shapes on a floor, rendered by MuJoCo, inferred by AIR.

The generative model is fully specified; only the inference network is learned. Per object:
    identity ~ Uniform(K)                          (cube, sphere, lying cylinder)
    pose z = (z0, z1, u0, u1) ~ N(0, I),   (x, y) = s (z0, z1),   theta = atan2(u1, u0) / m_identity
    image ~ N(render(identities, positions, thetas), sigma^2 I)     (MuJoCo, no learned parameters)
(s = objective.position_prior_scale: the latent is in units of the prior.) A shape that looks the
same after a turn of 2 pi / m (m = 4 for the cube, 2 for the lying cylinder, 1 for the sphere) has
theta = atan2(u1, u0) / m: every distinct view is one angle of u, the posterior over u has one mode
where theta's has m, and theta is uniform over (-pi/m, pi/m] when u ~ N(0, I), which renders as
uniform over the full turn. q(u) is Gaussian with a closed-form KL and nothing jumps at 2 pi. (With
theta = atan2(u1, u0) the expected gradient on q(u)'s mean at 0 is the likelihood's first circular
harmonic in theta, zero for views that repeat every 90 or 180 degrees.)

Per step (after the core's z_pres_i), attend, then infer:
    q(z0, z1) = N(loc_i, scale_i)     from the core's state h_i (with z_pres_i's logit)
    g_i = glimpse of x at the image of the sampled position (glimpse_where: a window of
          model.glimpse_extent metres at the object's depth, read by air_jax.glimpse)
    q(identity_i) = Cat(softmax(l_i)) and q(u | identity_i = k) = N(loc_ik, scale_ik), one rotation
          per shape (the sampled shape's is rendered; the best fit of a wrong shape sits at another
          angle), both from g_i by their own encoder (ShapeEncoder)
The identity's gradient (objective.discrete_gradient): 'reinforce', the score with the same NVIL
baseline and credit assignment as z_pres (air_jax.loss); 'enumerate', its expectation summed over
the K shapes (enumerated_discrete); 'wake', q(identity) fitted to the identity's exact posterior
given the rest by the inclusive KL (the ELBO's gradient on a shape's logit, q_k (f_k - E_q f),
vanishes once q_k ~ 0). The pose is reparameterised; d log p(x | z) / d pose by finite differences
of the renderer (air_jax.black_box: central differences or SPSA).
    KL(q || p) = KL(q(identity) || U(K)) + KL(q(z0, z1) || N(0, I)) + sum_k q(k) KL(q(u | k) || N(0, I))
    overlap_i = c sum_{j < i} z_pres_j relu(1 - d_ij / (2 r))^2     (d_ij: the centres' distance)
    off_floor_i = c_f sum_{a in x, y} relu(|a_i| - e)^2 / (2 r)^2    (e: the floor's extent)
The prior's support excludes what the world never holds: intersecting objects (centres closer than
twice the footprint radius r; overlap_i, c = objective.overlap_penalty nats at full overlap) and
centres off the floor (|x|, |y| > e; off_floor_i, c_f = objective.off_floor_penalty nats a
footprint's diameter past the edge). Both soft truncations go into -log p(z): without them two
objects can explain one, and an unseen object parked off the floor costs only its KLs.
DAIR: the canvas of step i is the render of the objects of steps < i (no gradient flows through it).
Why each piece, as measured: docs/results/scenes_3d.md.
"""
import functools
import itertools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from air_jax import black_box
from air_jax import evaluators as evaluators_lib
from air_jax import glimpse
from air_jax import modules
from air_jax import objectives
from air_jax.data import shapes_3d
from air_jax.scenes import base

POSE_SIZE = 4  # x, y, u0, u1
DISCRETE_GRADIENTS = ('reinforce', 'enumerate', 'wake')  # objective.discrete_gradient: how q(identity) learns
SHAPES = shapes_3d.SHAPES


class ShapeEncoder(nn.Module):
  """glimpse [B, G, G] -> q(identity) logits [B, K], q(u | identity = k) loc and scale [B, K, 2]
  (one rotation per shape): 3x3 stride-2 convolutions (modules.ConvFeatures; () = the pixels), a
  ReLU layer, then a linear layer for each. The identity's starts at zero (q uniform: during
  objective.discrete_freeze_steps every shape is drawn a third of the time, so each one's rotation
  learns); the scales start at initial_scale."""
  hidden: int
  num_shapes: int
  conv_features: Sequence[int]
  initial_scale: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, glimpses):
    k = self.num_shapes
    features = modules.ConvFeatures(tuple(self.conv_features))(glimpses)
    hidden = nn.relu(modules.Dense(self.hidden, dtype=self.dtype, name='hidden')(features))
    identity_logits = modules.Dense(k, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                                    name='identity')(hidden)
    loc, raw_scale = jnp.split(modules.Dense(4 * k, dtype=self.dtype, name='rotation')(hidden), 2, axis=-1)
    loc, scale = modules.gaussian_params(
        jnp.concatenate([loc, raw_scale + modules.scale_bias(self.initial_scale)], -1))
    return identity_logits, loc.reshape(-1, k, 2), scale.reshape(-1, k, 2)


# Rotational symmetry of each shape about the vertical axis (radians); a sphere's rotation is invisible.
SYMMETRY = {'cube': np.pi / 2, 'sphere': None, 'cylinder': np.pi}
# m = 2 pi / period, in SHAPES order (1 for the sphere: any m renders the same).
SYMMETRY_ORDER = np.array([2 * np.pi / SYMMETRY[shape] if SYMMETRY[shape] else 1.0 for shape in SHAPES])


def renderer_pose(pose: jax.Array, identity: jax.Array, position_scale: float) -> jax.Array:
  """(z0, z1, u0, u1) [..., 4] of objects of shape `identity` [...] -> (x, y, theta) =
  (s z0, s z1, atan2(u1, u0) / m_identity) [..., 3], what the renderer takes."""
  theta = jnp.arctan2(pose[..., 3], pose[..., 2]) / jnp.asarray(SYMMETRY_ORDER, pose.dtype)[identity]
  return jnp.concatenate([position_scale * pose[..., :2], theta[..., None]], axis=-1)


def world_of(data: ml_collections.ConfigDict, counts) -> shapes_3d.World:
  world = dict(data.world)
  world['light_direction'] = tuple(world['light_direction'])
  return shapes_3d.World(counts=tuple(counts), **world)


EVAL_SPLITS = ('validation', 'test')


class Scene(base.SceneKind):
  """Shapes 3D: objects {identity_logits [.., K], identity [..] int32, position_loc, position_scale
  [.., 2], rotation_loc, rotation_scale [.., K, 2], pose [.., 4] = (z0, z1, u0, u1) of the sampled
  identity} (see renderer_pose)."""

  name = 'shapes_3d'
  making_sources = 'rendering'
  evaluators = ('shapes_3d_objects',)
  relaxable = False  # a discrete identity, and z_pres only masks what a black-box renderer draws

  def __init__(self, config: ml_collections.ConfigDict):
    self.world = world_of(config.data, config.data.train_counts)
    self.num_shapes = len(shapes_3d.SHAPES)
    super().__init__(config)

  @property
  def image_shape(self):
    return (self.world.image_size, self.world.image_size)

  @property
  def feedback_size(self):
    return self.num_shapes + POSE_SIZE

  @property
  def eval_split(self) -> str:
    """config.data.eval_split: 'test' (scenes of data.test_seed, never used to choose a setting) or
    'validation' (scenes of data.validation_seed, to choose settings on)."""
    return self.data.eval_split

  def check(self) -> None:
    if self.eval_split not in EVAL_SPLITS:
      raise ValueError(f'config.data.eval_split must be one of {EVAL_SPLITS}, got {self.eval_split!r}')
    self.world.check()
    world_of(self.data, self.data.eval_counts).check()
    objective = self.objective
    if objective.discrete_gradient not in DISCRETE_GRADIENTS:
      raise ValueError(f'config.objective.discrete_gradient must be one of {DISCRETE_GRADIENTS}, '
                       f'got {objective.discrete_gradient!r}')
    if objective.gradient not in black_box.METHODS:
      raise ValueError(f'config.objective.gradient must be one of {black_box.METHODS}, got {objective.gradient!r}')
    for name in ('overlap_penalty', 'off_floor_penalty'):
      if not objective[name] >= 0:
        raise ValueError(f'config.objective.{name} must be >= 0 (0: none), got {objective[name]}')
    for name in ('position_prior_scale', 'position_step', 'rotation_step', 'spsa_directions'):
      if not objective[name] > 0:
        raise ValueError(f'config.objective.{name} must be positive, got {objective[name]}')
    model = self.model
    for name in ('glimpse_size', 'glimpse_extent', 'encoder_hidden'):
      if not model[name] > 0:
        raise ValueError(f'config.model.{name} must be positive, got {model[name]}')
    modules.check_conv_features('model.glimpse_conv_features', model.glimpse_conv_features)
    if not self.data.render_processes >= 1:
      raise ValueError(f'config.data.render_processes must be >= 1, got {self.data.render_processes}')

  # --- the renderer ---
  @property
  def pool(self) -> shapes_3d.RenderPool:
    """The host renderer (render processes, each with its own MuJoCo context), started at first use."""
    return shapes_3d.shared_pool(self.world, self.model.max_steps, self.data.render_processes)

  @functools.cached_property
  def _render(self):
    objective = self.objective
    steps = (objective.position_step, objective.position_step, objective.rotation_step)
    return black_box.make_render(lambda *a: self.pool(*a), self.image_shape, method=objective.gradient,
                                 steps=steps, num_directions=objective.spsa_directions)

  def _render_plain(self, ids, poses, present):
    """The render without a gradient (DAIR's canvas): every row, no gather."""
    shape = jax.ShapeDtypeStruct((ids.shape[0],) + self.image_shape, jnp.float32)
    host = lambda *rows: np.asarray(self.pool(*(np.asarray(a) for a in rows)), np.float32)
    args = jax.lax.stop_gradient((ids, poses, present))
    return jax.pure_callback(host, shape, *args, vmap_method='sequential')

  def _render_needed(self, ids, poses, present, needed):
    """The render without a gradient of the scenes with needed [M] > 0; zeros for the others."""
    shape = jax.ShapeDtypeStruct((ids.shape[0],) + self.image_shape, jnp.float32)

    def host(ids, poses, present, needed):
      images = np.zeros(shape.shape, np.float32)
      rows = np.flatnonzero(np.asarray(needed) > 0)
      if len(rows):
        images[rows] = self.pool(np.asarray(ids)[rows], np.asarray(poses)[rows], np.asarray(present)[rows])
      return images

    args = jax.lax.stop_gradient((ids, poses, present, needed))
    return jax.pure_callback(host, shape, *args, vmap_method='sequential')

  # --- inside the core's step ---
  def predict(self, h):
    cfg = self.model
    logit, loc, scale = modules.PresWhereHead(
        cfg.predictor_hidden, cfg.z_pres_logit_bias, dtype=self.dtype,
        logit_bound=cfg.z_pres_logit_bound, where_size=2, initial_scale=cfg.initial_pose_scale,
        name='position_head')(h)
    return logit, (loc, scale)

  def glimpse_where(self, position):
    """z_where [B, 3] (air_jax.glimpse) of the glimpse on an object at floor position [B, 2]
    (metres): centred on the image of the object's centre, its side model.glimpse_extent metres at
    the object's depth d (w = focal * extent / (d * image size) of the canvas side)."""
    world, n = self.world, self.world.image_size
    position = jnp.clip(position, -2 * world.floor_extent, 2 * world.floor_extent)
    centre = jnp.concatenate([position, jnp.full(position.shape[:-1] + (1,), world.object_size, position.dtype)], -1)
    pixels, depth = shapes_3d.project(world, centre, xp=jnp)
    side = shapes_3d.focal_length(world) * self.model.glimpse_extent / (depth * n)
    side = jnp.clip(side, glimpse.WINDOW_MIN + 1e-3, glimpse.WINDOW_MAX - 1e-3)
    return jnp.stack([glimpse.window_logit(side), 2 * pixels[:, 1] / n - 1, 2 * pixels[:, 0] / n - 1], -1)

  def sample(self, head, images, key_fn, cell=None):
    """Attend, then infer: the position from the LSTM state, then the shape and its rotation from
    a glimpse of the image at the sampled position (ShapeEncoder). No cells (cells False)."""
    del cell
    cfg = self.model
    position_loc, position_scale = head
    draw = lambda loc, scale: loc if key_fn is None else loc + scale * jax.random.normal(key_fn(), loc.shape)
    position = draw(position_loc, position_scale)
    glimpses = glimpse.read(images, self.glimpse_where(self.objective.position_prior_scale * position),
                            (cfg.glimpse_size, cfg.glimpse_size))
    identity_logits, rotation_loc, rotation_scale = ShapeEncoder(
        cfg.encoder_hidden, self.num_shapes, cfg.glimpse_conv_features, cfg.initial_pose_scale,
        dtype=self.dtype, name='shape_encoder')(glimpses)
    if key_fn is None:
      identity = jnp.argmax(identity_logits, -1)
    else:
      identity = jax.random.categorical(key_fn(), identity_logits)
    identity = identity.astype(jnp.int32)
    rotations = draw(rotation_loc, rotation_scale)
    pose = jnp.concatenate([position, jnp.take_along_axis(rotations, identity[:, None, None], 1)[:, 0]], -1)
    objects = dict(identity_logits=identity_logits, identity=identity, position_loc=position_loc,
                   position_scale=position_scale, rotation_loc=rotation_loc, rotation_scale=rotation_scale,
                   rotations=rotations, pose=pose)
    return objects, jnp.concatenate([jax.nn.one_hot(identity, self.num_shapes), pose], axis=-1)

  def empty_canvas(self, images):
    batch, steps = images.shape[0], self.model.max_steps
    return dict(ids=jnp.zeros((batch, steps), jnp.int32), poses=jnp.zeros((batch, steps, 3)),
                present=jnp.zeros((batch, steps)), step=jnp.zeros((), jnp.int32),
                image=jnp.zeros_like(images) + self.floor() if self.model.difference_input else jnp.zeros_like(images))

  def floor(self) -> np.ndarray:
    """The render of the empty floor [H, W] (DAIR's first canvas)."""
    steps = self.model.max_steps
    return self.pool(np.zeros((1, steps), np.int32), np.zeros((1, steps, 3)), np.zeros((1, steps)))[0]

  def draw(self, canvas, objects, z_pres):
    slot = jnp.arange(self.model.max_steps) == canvas['step']
    put = lambda old, new: jnp.where(slot.reshape((1, -1) + (1,) * (old.ndim - 2)), new[:, None], old)
    poses = renderer_pose(objects['pose'], objects['identity'], self.objective.position_prior_scale)
    canvas = dict(ids=put(canvas['ids'], objects['identity']), poses=put(canvas['poses'], poses),
                  present=put(canvas['present'], z_pres), step=canvas['step'] + 1, image=canvas['image'])
    if self.model.difference_input:
      canvas['image'] = self._render_plain(canvas['ids'], canvas['poses'], canvas['present'])
    return canvas

  def canvas_image(self, canvas):
    return canvas['image']

  def render(self, canvas, objects, z_pres, key_fn):
    self.pool  # pylint: disable=pointless-statement  (starts the renderer now: a failure raises here, not in a callback)
    key = jax.random.key(0) if key_fn is None else key_fn()
    poses = renderer_pose(objects['pose'], objects['identity'], self.objective.position_prior_scale)
    return self._render(objects['identity'], poses, z_pres, key)

  # --- the objective ---
  def object_kls(self, out):
    objects = out.objects
    if self.objective.discrete_gradient == 'wake':  # q(identity) learns by wake_surrogate alone
      objects = self.hold_discrete(objects)
    rotation_kls = objectives.normal_kl(objects['rotation_loc'], objects['rotation_scale'], 0.0, 1.0).sum(-1)
    position_kl = objectives.normal_kl(objects['position_loc'], objects['position_scale'], 0.0, 1.0).sum(-1)
    return dict(identity=objectives.categorical_kl_uniform(objects['identity_logits']),
                pose=position_kl + (jax.nn.softmax(objects['identity_logits']) * rotation_kls).sum(-1),
                overlap=self.overlap(objects['pose'], out.z_pres), off_floor=self.off_floor(objects['pose']))

  def object_log_ratio(self, out):
    """log p - log q of the sampled identity (p uniform), position and the identity's rotation u
    (p = N(0, I)), less the overlap and off-floor penalties."""
    objects = out.objects
    pose, identity = objects['pose'], objects['identity']
    log_ratio = lambda x, loc, scale: (objectives.normal_log_prob(x, 0.0, 1.0) - objectives.normal_log_prob(x, loc, scale)).sum(-1)
    chosen = lambda x: jnp.take_along_axis(x, identity[..., None, None], -2)[..., 0, :]  # [B, N, K, 2] -> [B, N, 2]
    log_q_identity = objectives.categorical_log_prob(identity, objects['identity_logits'])
    return (-np.log(self.num_shapes) - log_q_identity
            + log_ratio(pose[..., :2], objects['position_loc'], objects['position_scale'])
            + log_ratio(pose[..., 2:], chosen(objects['rotation_loc']), chosen(objects['rotation_scale']))
            - self.overlap(pose, out.z_pres) - self.off_floor(pose))

  def overlap(self, pose, z_pres):
    """overlap_i [B, N] of pose latents [B, N, 4] (see the module docstring)."""
    position = self.objective.position_prior_scale * pose[..., :2]
    distance = jnp.sqrt(jnp.square(position[:, :, None] - position[:, None]).sum(-1) + 1e-12)  # [B, N, N]
    closeness = jnp.square(jax.nn.relu(1.0 - distance / (2 * self.world.footprint_radius)))
    earlier = jnp.tril(jnp.ones(distance.shape[1:]), -1)  # [i, j] = 1 for j < i
    return self.objective.overlap_penalty * (closeness * earlier * z_pres[:, None, :]).sum(-1)

  def off_floor(self, pose):
    """off_floor_i [B, N] of pose latents [B, N, 4] (see the module docstring)."""
    position = self.objective.position_prior_scale * pose[..., :2]
    beyond = jax.nn.relu(jnp.abs(position) - self.world.floor_extent) / (2 * self.world.footprint_radius)
    return self.objective.off_floor_penalty * jnp.square(beyond).sum(-1)

  def discrete_log_prob(self, out):
    """log q(identity_i) of the sampled identities: scored by REINFORCE (objective.discrete_gradient
    'reinforce'); zero with 'enumerate' and 'wake' (enumerated_discrete)."""
    if self.objective.discrete_gradient != 'reinforce':
      return jnp.zeros(out.z_pres.shape)
    return objectives.categorical_log_prob(out.objects['identity'], out.objects['identity_logits'])

  def enumerated_discrete(self, out, learn):
    """objective.discrete_gradient 'enumerate' or 'wake': objectives.Enumerated, canvas (i, k) the
    render of the sampled scene with step i's object made shape k (its rotation u_ik the draw from
    q(u | k), every other latent as sampled), no gradient; log_ratio log N(u_ik; 0, I) - log
    q(u_ik | k). None with 'reinforce'. 'enumerate': the loss sums the ELBO's expectation over
    identity_i exactly (objectives.enumerated_surrogate); 'wake': q(identity_i) learns by the
    inclusive KL to softmax_k(log p(x | k, rest) + log_ratio) (objectives.wake_surrogate) and
    not by the ELBO (object_kls hold the logits). The other steps' draws are held, so the
    dependence of later steps' q on identity_i (it is fed back to the LSTM) is left out: exact
    for one object per scene. K renders a present step, none
    while learn is False (objective.discrete_freeze_steps: the canvases are then zeros, and the
    surrogate, whose value is always 0, has no gradient either)."""
    if self.objective.discrete_gradient == 'reinforce':
      return None
    objects, z_pres = jax.lax.stop_gradient((out.objects, out.z_pres))
    batch, steps, k = objects['identity_logits'].shape
    swap = jnp.eye(steps, dtype=bool)[None, :, None, :]  # [1, i, 1, j]: object j is step i's
    shapes = jnp.arange(k, dtype=jnp.int32)[None, None, :, None]
    ids = jnp.where(swap, shapes, objects['identity'][:, None, None, :])  # [B, i, k, j]
    pose = jnp.broadcast_to(objects['pose'][:, None, None], (batch, steps, k, steps, POSE_SIZE))
    rotation = jnp.broadcast_to(objects['rotations'][:, :, :, None], (batch, steps, k, steps, 2))  # q(u | k) draw of step i
    pose = jnp.where(swap[..., None], jnp.concatenate([pose[..., :2], rotation], -1), pose)
    poses = renderer_pose(pose, ids, self.objective.position_prior_scale)  # [B, i, k, j, 3]
    present = jnp.broadcast_to(z_pres[:, None, None, :], ids.shape)
    needed = jnp.broadcast_to(z_pres[:, :, None] * learn, (batch, steps, k))  # an absent step's sum is not used
    canvases = self._render_needed(ids.reshape(-1, steps), poses.reshape(-1, steps, 3),
                                   present.reshape(-1, steps), needed.reshape(-1))
    u = objects['rotations']
    log_ratio = (objectives.normal_log_prob(u, 0.0, 1.0)
                 - objectives.normal_log_prob(u, objects['rotation_loc'], objects['rotation_scale'])).sum(-1)
    return objectives.Enumerated(out.objects['identity_logits'], canvases.reshape((batch, steps, k) + self.image_shape),
                                 log_ratio, inclusive=self.objective.discrete_gradient == 'wake')

  def hold_discrete(self, objects):
    """objects with q(identity)'s logits behind a stop-gradient (objective.discrete_freeze_steps)."""
    return dict(objects, identity_logits=jax.lax.stop_gradient(objects['identity_logits']))

  def summary(self, objects):
    """What evaluation and inference report of q's modes: identity [B, N] (shapes_3d.SHAPES
    index), its probability [B, N, K], position [B, N, 2] and theta [B, N] in (-pi, pi]."""
    pose = renderer_pose(objects['pose'], objects['identity'], self.objective.position_prior_scale)
    return dict(identity=objects['identity'], identity_prob=jax.nn.softmax(objects['identity_logits']),
                position=pose[..., :2], theta=pose[..., 2])

  # --- data and pictures ---
  def scenes(self, split: str) -> shapes_3d.Shapes3D:
    """'train' (data.train_seed), 'validation' (data.validation_seed) or 'test' (data.test_seed)."""
    data = self.data
    seeds = dict(train=data.train_seed, validation=data.validation_seed, test=data.test_seed)
    if split not in seeds:
      raise ValueError(f'a 3D split is one of {tuple(seeds)}, got {split!r}')
    counts, num = (data.train_counts, data.num_train) if split == 'train' else (data.eval_counts, data.num_eval)
    return shapes_3d.Shapes3D(world_of(data, counts), num_examples=num, seed=seeds[split])

  def grid_arguments(self, arrays):
    """Each present step's object boxed (shapes_3d.object_boxes) and its shape in the caption."""
    return dict(canvas=arrays['canvas'], z_pres=arrays['z_pres'],
                boxes=shapes_3d.object_boxes(self.world, arrays['position']),
                step_labels=[[shapes_3d.SHAPES[k] for k in row] for row in arrays['identity']])


def rotation_error(predicted: np.ndarray, true: np.ndarray, shape: np.ndarray) -> np.ndarray:
  """|predicted - true| modulo the true shape's symmetry period (radians, in [0, period / 2]);
  NaN for spheres. Arrays of one shape."""
  period = np.array([np.nan if SYMMETRY[SHAPES[k]] is None else SYMMETRY[SHAPES[k]] for k in np.ravel(shape)])
  period = period.reshape(np.shape(shape))
  difference = np.mod(np.asarray(predicted, np.float64) - np.asarray(true, np.float64), period)
  return np.minimum(difference, period - difference)


def match_objects(predicted_position: np.ndarray, predicted_present: np.ndarray,
                  true_position: np.ndarray, true_count: int):
  """Pairs (predicted slot, true object) minimising the summed distance, over all assignments of
  the fewer of the two to the more (at most 4 objects: exhaustive)."""
  slots = np.flatnonzero(np.asarray(predicted_present) > 0.5)
  truths = np.arange(int(true_count))
  if not len(slots) or not len(truths):
    return []
  distance = np.linalg.norm(predicted_position[slots][:, None] - true_position[truths][None], axis=-1)
  best, pairs = np.inf, []
  if len(slots) <= len(truths):
    for chosen in itertools.permutations(range(len(truths)), len(slots)):
      total = distance[np.arange(len(slots)), chosen].sum()
      if total < best:
        best, pairs = total, [(slots[i], truths[j]) for i, j in enumerate(chosen)]
  else:
    for chosen in itertools.permutations(range(len(slots)), len(truths)):
      total = distance[chosen, np.arange(len(truths))].sum()
      if total < best:
        best, pairs = total, [(slots[i], truths[j]) for j, i in enumerate(chosen)]
  return pairs


def scene_metrics(inferred: dict, truth: dict, render_error: np.ndarray | None = None) -> dict:
  """Held-out 3D metrics of inferred latents (air_jax.infer's: count, identity, position, theta,
  z_pres_prob) against the scenes' truth (count, shape, position, theta):
    count_accuracy; over objects matched by position (match_objects): identity_accuracy,
    position_error (mean distance, metres), rotation_error_deg (mean, modulo each shape's
    symmetry, spheres left out; matched objects of the right shape only); matched share of the
    true objects; re-render error (mean squared pixel error) if given."""
  count = np.asarray(inferred['count'])
  present = np.arange(inferred['identity'].shape[1])[None] < count[:, None]
  same_shape, distances, rotations, matched = [], [], [], 0
  for b in range(len(count)):
    for slot, j in match_objects(inferred['position'][b], present[b], truth['position'][b], truth['count'][b]):
      matched += 1
      shape = int(truth['shape'][b, j])
      same_shape.append(int(inferred['identity'][b, slot]) == shape)
      distances.append(np.linalg.norm(inferred['position'][b, slot] - truth['position'][b, j]))
      if same_shape[-1] and SYMMETRY[SHAPES[shape]] is not None:
        rotations.append(float(rotation_error(inferred['theta'][b, slot], truth['theta'][b, j], np.array(shape))))
  mean = lambda x: float(np.mean(x)) if len(x) else float('nan')
  result = dict(count_accuracy=float((count == np.asarray(truth['count'])).mean()),
                identity_accuracy=mean(same_shape), position_error=mean(distances),
                rotation_error_deg=float(np.degrees(mean(rotations))),
                matched_fraction=matched / max(1, int(np.sum(truth['count']))), objects=int(np.sum(truth['count'])))
  if render_error is not None:
    result['rerender_mse'] = float(np.mean(render_error))
  return result


@evaluators_lib.register('shapes_3d_objects')
def matched_objects(scenes, inferred, max_count):
  """scene_metrics of the held-out scenes under 'objects': identity accuracy, position and rotation
  error over the objects matched by position, and the matched share."""
  figures = scene_metrics(inferred, scenes)
  return dict(objects={k: v for k, v in figures.items() if k != 'count_accuracy'})
