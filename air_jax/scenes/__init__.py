"""Scene kinds: what a kind of scene brings to the one AIR core, objective, train loop and tools.

AIR's recurrent core (air_jax.model), its objective (air_jax.objectives, air_jax.loss), the train
loop (air_jax.train), checkpoints, evaluation and the command-line tools are the same for every
scene. A scene kind (`config.scene_kind`) brings what differs: the latents of one object, how they
are inferred from the LSTM state, how objects are drawn, and its data. Its object, built from the
whole config, offers:

    image_shape                       (H, W) of its images
    feedback_size                     size of the per-step latent vector the LSTM reads next step
    predict(h) -> (logit, head)       z_pres logit [B] and the object head's outputs, from h [B, L]
    sample(head, images, key_fn) -> (objects, feedback)   object latents {name: [B, ...]}; key_fn
                                      None: q's modes, else a function returning fresh keys
    empty_canvas(images), draw(canvas, objects, z_pres), canvas_image(canvas)
                                      the canvas carried between steps (DAIR reads canvas_image)
    render(canvas, objects [B, N, ...], z_pres [B, N], key_fn) -> [B, H, W]   the likelihood's mean
    object_kls(out) -> {name: [B, N]}  per-step KL of each object latent (unmasked)
    discrete_log_prob(out) -> [B, N]  log q of the step's sampled discrete object latents (REINFORCE)
    hold_discrete(objects) -> objects  the same, q(discrete latents)'s parameters behind a stop-gradient
    enumerated_discrete(out, learn) -> objectives.Enumerated or None   discrete object latents the
                                      loss sums over their K values (the canvas with step i's latent
                                      set to k; nothing rendered while learn is False), or None
    check()                           raises ValueError naming a bad scene setting
    sources(log) -> (train, eval)     random-access sources of {'image' uint8, 'count', ...}
    pictures(scale) -> Pictures       picture(params, images, true counts) -> uint8 RGB grid

predict, sample and draw run inside the core's step module: the submodules they create are the
step's. Kinds: 'multi_mnist' (2D, scenes.multi_mnist), 'omniglot' (the same 2D model on handwritten
characters, scenes.omniglot) and 'shapes_3d' (scenes.shapes_3d). A kind whose data has no true
object counts (Omniglot: a character's number of parts is unknown) gives count -1 and has no
data.train_counts / data.eval_counts; its evaluation reports the steps used instead of a count accuracy.
"""
import importlib

import ml_collections

KINDS = {'multi_mnist': 'air_jax.scenes.multi_mnist', 'omniglot': 'air_jax.scenes.omniglot',
         'shapes_3d': 'air_jax.scenes.shapes_3d'}
CONFIGS = {'multi_mnist': 'air_jax.configs.default', 'omniglot': 'air_jax.configs.omniglot',
           'shapes_3d': 'air_jax.configs.shapes_3d'}
COUNT_FIELDS = ('train_counts', 'eval_counts')  # config.data's true object counts, where the data has them


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f'config.scene_kind must be one of {tuple(KINDS)}, got {kind!r}')


def scene_of(config: ml_collections.ConfigDict):
  """The scene kind object of a config (config.scene_kind)."""
  _check_kind(config.scene_kind)
  return importlib.import_module(KINDS[config.scene_kind]).Scene(config)


def cached_sources(scene, verb: str, log=print):
  """(train, eval) of a scene kind: scene.scenes('train') and scene.scenes(its eval split: 'test'
  unless the kind has a validation split and config.data.eval_split names it), each made once
  ('composing', 'rendering': `verb` in the progress lines) and cached under <data_dir>/scenes."""
  import pathlib  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from air_jax import metrics  # pylint: disable=g-import-not-at-top
  from air_jax.data import mnist  # pylint: disable=g-import-not-at-top
  from air_jax.data import multi_mnist  # pylint: disable=g-import-not-at-top
  cache_dir = pathlib.Path(scene.data.data_dir or mnist.default_data_dir()) / 'scenes'
  sources = []
  for split in ('train', getattr(scene, 'eval_split', 'test')):
    scenes = scene.scenes(split)
    start = time.time()
    progress = metrics.ProgressPrinter(f'{verb} {split} scenes', log)
    sources.append(multi_mnist.materialise_cached(scenes, cache_dir, split, progress=progress))
    counts = f' (counts {tuple(scenes.counts)})' if hasattr(scenes, 'counts') else ''
    log(f'{len(scenes)} {split} scenes{counts} ready in {time.time() - start:.1f}s')
  return tuple(sources)


def max_count(config: ml_collections.ConfigDict) -> int:
  """The largest count a run can see or infer: its data's counts (where it has them) and max_steps."""
  return max([config.model.max_steps] + [max(config.data[f]) for f in COUNT_FIELDS if f in config.data])


def air_for(config: ml_collections.ConfigDict):
  """The AIR model (air_jax.model.AIR) of a config: its core options and its scene kind."""
  from air_jax import model  # pylint: disable=g-import-not-at-top
  return model.AIR(config.model, scene_of(config))


def default_config(kind: str) -> ml_collections.ConfigDict:
  """The default config of a scene kind: every option's default lives there."""
  _check_kind(kind)
  return importlib.import_module(CONFIGS[kind]).get_config()


# Options whose default has changed since they were added: a run saved before the option existed
# ran with this value, not with today's default.
BEFORE_THEY_EXISTED = {'ema_decay': 0.0}  # no parameter average (the default is 0.999 since session 19)


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of config plus every option it lacks (a run saved before the option existed), at the
  default of its scene kind (a config without scene_kind is a 'multi_mnist' one), or at the value
  in BEFORE_THEY_EXISTED where the default has changed since."""
  config = ml_collections.ConfigDict(config.to_dict())
  for name, value in BEFORE_THEY_EXISTED.items():
    if name not in config:
      config[name] = value

  def add_missing(into, defaults):
    for name, value in defaults.items():
      if name not in into:
        into[name] = value
      elif isinstance(value, ml_collections.ConfigDict) and isinstance(into[name], ml_collections.ConfigDict):
        add_missing(into[name], value)

  add_missing(config, default_config(config.get('scene_kind', 'multi_mnist')))
  return config
