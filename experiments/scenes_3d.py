"""3D scenes: AIR inverts a MuJoCo renderer. Two experiments, one table (markdown + JSON), one picture.

1. one_object: scenes of one object. AIR (2 steps: the object, then "stop") against a supervised
   CNN trained on (image, true identity, position, (cos theta, sin theta)) pairs from the same number
   of training scenes, and the same CNN told each shape's symmetry (one_object_cnn_symmetric: it
   regresses (cos m theta, sin m theta), m the true shape's symmetry order, as AIR's latent angle
   is). Held out: identity accuracy, position error, rotation error modulo each shape's symmetry
   (cube 90 degrees, lying cylinder 180; spheres left out) and the re-render error (mean squared
   pixel error of render(inferred latents) against the image).
2. counts: scenes of 0-3 objects, AIR and DAIR (4 steps): count accuracy, identity accuracy of the
   objects matched by position, position error.

    python experiments/scenes_3d.py --workdir=/tmp/scenes_3d               # all of it
    python experiments/scenes_3d.py --workdir=/tmp/scenes_3d --runs=counts_air
    python experiments/scenes_3d.py --workdir=/tmp/s3 --smoke              # tiny, end to end

Each AIR run is a train workdir <workdir>/<run> (killed, it resumes from its checkpoint); each
finished run's held-out figures are cached in <workdir>/<run>/result.json. Writes
<workdir>/scenes_3d.{md,json} and <workdir>/scenes_3d.png (held-out scenes of the counts model).
"""
import json
import pathlib
import time

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from air_jax import infer
from air_jax import launch
from air_jax import metrics
from air_jax import pictures
from air_jax import train
from air_jax import models as models_lib
from air_jax.configs import shapes_3d as shapes_3d_config
from air_jax.data import shapes_3d
from air_jax.data import sources
from air_jax.scenes import shapes_3d as scene_3d

RUNS = ('one_object_air', 'one_object_cnn', 'one_object_cnn_symmetric', 'counts_air', 'counts_dair')
CNN_RUNS = ('one_object_cnn', 'one_object_cnn_symmetric')
ONE_OBJECT_STEPS = 4_000  # one object, 2 steps: learns in half the 0-3 object config's 8,000
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the runs, the table and the picture go.')
_RUNS = flags.DEFINE_list('runs', list(RUNS), f'Any of {list(RUNS)}.')
_NUM_TRAIN = flags.DEFINE_integer('num_train', 20_000, 'Training scenes (the same for AIR and the CNN).')
_NUM_EVAL = flags.DEFINE_integer('num_eval', 1_000, 'Held-out scenes (another seed).')
_STEPS = flags.DEFINE_integer('num_train_steps', None, 'AIR training steps per run (default: '
                               f'{ONE_OBJECT_STEPS} for one object, the config\'s for 0-3 objects).')
_EVAL_EVERY = flags.DEFINE_integer('eval_every_steps', None, 'AIR runs: steps between held-out '
                                   "evaluations and checkpoints (default: the config's).")
_EMA_DECAY = flags.DEFINE_float('ema_decay', None, 'AIR runs: > 0 evaluates an EMA of the parameters, '
                                "0 the latest parameters (default: the config's).")
_CNN_STEPS = flags.DEFINE_integer('cnn_steps', 4_000, 'Supervised CNN training steps (batch 64).')
_GRADIENT = flags.DEFINE_enum('gradient', 'central', ['central', 'spsa'], 'AIR pose gradient estimator.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'Cache of rendered scenes (default ~/.cache/air_jax).')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny models, data and runs: the pipeline end to end.')
flags.mark_flags_as_required(['workdir'])


def air_config(run: str):
  config = shapes_3d_config.get_config('smoke' if _SMOKE.value else None)
  config.data.data_dir = _DATA_DIR.value
  config.objective.gradient = _GRADIENT.value
  one_object = run.startswith('one_object')
  if one_object:
    config.data.train_counts = config.data.eval_counts = (1,)
    config.model.max_steps = 2
  if not _SMOKE.value:
    config.data.num_train, config.data.num_eval = _NUM_TRAIN.value, _NUM_EVAL.value
    if one_object:
      config.num_train_steps = ONE_OBJECT_STEPS
      config.eval_every_steps = config.checkpoint_every_steps = 1_000
    if _STEPS.value is not None:
      config.num_train_steps = _STEPS.value
    if _EVAL_EVERY.value is not None:
      config.eval_every_steps = config.checkpoint_every_steps = _EVAL_EVERY.value
    if _EMA_DECAY.value is not None:
      config.ema_decay = _EMA_DECAY.value
  config.model.difference_input = run.endswith('dair')
  return config


class SupervisedCNN(nn.Module):
  """image [B, H, W] -> identity logits [B, K], position [B, 2], (cos theta, sin theta) [B, 2]."""
  num_shapes: int = len(shapes_3d.SHAPES)
  width: int = 32

  @nn.compact
  def __call__(self, images):
    x = images[..., None]
    for features in (self.width, 2 * self.width, 2 * self.width):
      x = nn.relu(nn.Conv(features, (3, 3), strides=2)(x))
    x = nn.relu(nn.Dense(256)(x.reshape(len(x), -1)))
    out = nn.Dense(self.num_shapes + 4)(x)
    return out[:, :self.num_shapes], out[:, self.num_shapes:self.num_shapes + 2], out[:, self.num_shapes + 2:]


def train_cnn(train_set, steps: int, log, symmetric: bool, seed: int = 0):
  """Adam on cross-entropy(identity) + |position error|^2 / 0.1^2 + |(cos m theta, sin m theta)
  error|^2, m = 1 (plain) or the true shape's symmetry order (symmetric; at test theta =
  atan2 / m of the inferred shape)."""
  model = SupervisedCNN(width=8 if _SMOKE.value else 32)
  images = sources.to_unit_interval(train_set['image'])
  params = model.init(jax.random.key(seed), images[:1])
  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(params)

  order = jnp.asarray(scene_3d.SYMMETRY_ORDER if symmetric else np.ones(len(shapes_3d.SHAPES)), jnp.float32)

  def loss_fn(params, x, shape, position, theta):
    logits, predicted_position, rotation = model.apply(params, x)
    theta = order[shape] * theta
    identity_loss = optax.softmax_cross_entropy_with_integer_labels(logits, shape).mean()
    position_loss = jnp.square(predicted_position - position).sum(-1).mean() / 0.01
    rotation_loss = jnp.square(rotation - jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)).sum(-1).mean()
    return identity_loss + position_loss + rotation_loss

  @jax.jit
  def step(params, opt_state, x, shape, position, theta):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, shape, position, theta)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  start = time.time()
  for i in range(steps):
    index = rng.integers(0, len(images), 64)
    params, opt_state, loss = step(params, opt_state, images[index], train_set['shape'][index, 0],
                                   train_set['position'][index, 0], train_set['theta'][index, 0])
    if (i + 1) % 500 == 0 or i + 1 == steps:
      log(f'cnn step {i + 1}/{steps}: loss {float(loss):.3f} ({time.time() - start:.0f}s)')

  def predict(x):
    logits, position, rotation = jax.jit(model.apply)(params, sources.to_unit_interval(x))
    identity = np.asarray(logits.argmax(-1))
    theta = np.arctan2(rotation[:, 1], rotation[:, 0]) / np.asarray(order)[identity]
    return dict(count=np.ones(len(x), np.int32), identity=identity[:, None],
                position=np.asarray(position)[:, None], theta=theta[:, None])

  return predict, time.time() - start


def rerender_error(scene, inferred, images) -> np.ndarray:
  """Per image mean squared pixel error of the render of the inferred scene against the image."""
  slots = scene.model.max_steps
  count = np.asarray(inferred['count'])
  present = np.arange(slots)[None] < count[:, None]
  pad = lambda a: np.concatenate([a, np.zeros((len(a), slots - a.shape[1]) + a.shape[2:], a.dtype)], 1)
  pose = np.concatenate([pad(inferred['position']), pad(inferred['theta'][..., None])], -1)
  renders = scene.pool(pad(inferred['identity']), pose, present)
  return np.square(renders - sources.to_unit_interval(images)).mean((1, 2))


def held_out(scene):
  """Every scene of the kind's eval split (data.eval_split: test or validation)."""
  scenes_ = scene.scenes(scene.eval_split)
  return scenes_.__getitems__(range(len(scenes_)))


def run_air(run: str, root: pathlib.Path, log) -> dict:
  config = air_config(run)
  workdir = root / run
  final = train.train_and_evaluate(config, str(workdir), log=log)
  models = infer.load_models(workdir)
  config, scene = models.config, models.scene
  params = infer.load_params(workdir, models)
  test = held_out(scene)
  start = time.time()
  inferred = infer.infer(models, params, sources.to_unit_interval(test['image']))
  seconds = time.time() - start
  figures = scene_3d.scene_metrics(inferred, test, rerender_error(scene, inferred, test['image']))
  history = metrics.read_history(workdir)
  train_seconds = max([r.get('train_seconds', 0.0) for r in history] + [0.0])
  return dict(figures, run=run, steps=final['step'], train_seconds=train_seconds,
              inference_images_per_second=len(test['image']) / seconds, gradient=config.objective.gradient,
              num_train=config.data.num_train, num_eval=len(test['image']))


def run_cnn(run: str, log) -> dict:
  scene = models_lib.build(air_config(run)).scene
  train_scenes = scene.scenes('train')
  train_set = train_scenes.__getitems__(range(len(train_scenes)))
  test = held_out(scene)
  predict, seconds = train_cnn(train_set, 50 if _SMOKE.value else _CNN_STEPS.value, log,
                               symmetric=run == 'one_object_cnn_symmetric')
  inferred = predict(test['image'])
  figures = scene_3d.scene_metrics(inferred, test, rerender_error(scene, inferred, test['image']))
  return dict(figures, run=run, steps=_CNN_STEPS.value, train_seconds=seconds,
              num_train=len(train_set['image']), num_eval=len(test['image']))


COLUMNS = (('count_accuracy', 'count acc.', '{:.3f}'), ('identity_accuracy', 'identity acc.', '{:.3f}'),
           ('position_error', 'position error (m)', '{:.4f}'), ('rotation_error_deg', 'rotation error (deg)', '{:.1f}'),
           ('rerender_mse', 're-render MSE', '{:.5f}'), ('train_seconds', 'train time (s)', '{:.0f}'))


def markdown(results: dict) -> str:
  lines = ['| run | ' + ' | '.join(title for _, title, _ in COLUMNS) + ' |',
           '|---|' + '---|' * len(COLUMNS)]
  for run, result in results.items():
    cells = [fmt.format(result[key]) if key in result else '' for key, _, fmt in COLUMNS]
    lines.append(f'| {run} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    launch.fail(f'unexpected arguments {argv[1:]}')
  launch.require_choices('runs', _RUNS.value, RUNS)
  root = pathlib.Path(_WORKDIR.value)
  root.mkdir(parents=True, exist_ok=True)
  log = lambda s: print(s, flush=True)
  results = {}
  for run in RUNS:
    path = root / run / 'result.json'
    if run in _RUNS.value and not path.exists():
      log(f'== {run}')
      try:
        result = run_cnn(run, log) if run in CNN_RUNS else run_air(run, root, log)
      except (ValueError, FileNotFoundError, train.NonFiniteError, shapes_3d.RendererUnavailableError) as e:
        launch.fail(str(e))
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(result, indent=1))
    if path.exists():
      results[run] = json.loads(path.read_text())
  (root / 'scenes_3d.json').write_text(json.dumps(results, indent=1))
  (root / 'scenes_3d.md').write_text(markdown(results))
  log(markdown(results))
  picture_run = next((r for r in ('counts_air', 'counts_dair', 'one_object_air') if r in results), None)
  if picture_run:
    models = infer.load_models(root / picture_run)
    test = models.scene.scenes(models.scene.eval_split).__getitems__(range(8))
    picture = pictures.Pictures(models, scale=3)(infer.load_params(root / picture_run, models),
                                                 test['image'], test['count'])
    pictures.save_png(picture, root / 'scenes_3d.png')
    log(f'wrote {root / "scenes_3d.png"} ({picture_run})')
  log(f'wrote {root / "scenes_3d.md"}, {root / "scenes_3d.json"}')


if __name__ == '__main__':
  app.run(main)
