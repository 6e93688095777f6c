"""Configurations (ml_collections) for air_jax runs: one file per scene kind, `get_config(arg)`
('smoke' shrinks a run to a test). Every option's default lives in its kind's file, once."""
import importlib

import ml_collections

CONFIGS = {'multi_mnist': 'air_jax.configs.multi_mnist', 'omniglot': 'air_jax.configs.omniglot',
           'shapes_3d': 'air_jax.configs.shapes_3d', 'images': 'air_jax.configs.images'}

# Options whose default has changed since they were added: a run saved before the option existed
# ran with this value, not with today's default.
BEFORE_THEY_EXISTED = {'ema_decay': 0.0}  # no parameter average (the default is 0.999 since session 19)


def default_config(kind: str) -> ml_collections.ConfigDict:
  """The default config of a scene kind."""
  if kind not in CONFIGS:
    raise ValueError(f'config.scene_kind must be one of {tuple(CONFIGS)}, got {kind!r}')
  return importlib.import_module(CONFIGS[kind]).get_config()


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of config plus every option it lacks (a run saved before the option existed), at the
  default of its scene kind (a config without scene_kind is a 'multi_mnist' one: runs saved before
  there were kinds), or at the value in BEFORE_THEY_EXISTED where the default has changed since."""
  config = ml_collections.ConfigDict(config.to_dict())
  if config.get('scene_kind') == 'shapes_3d' and 'eval_seed' in config.data:
    # 3D runs saved before the test split existed held out the scenes of eval_seed (2): today's
    # validation split. Read them so; today's default evaluates on the test seed instead.
    config.data.validation_seed = config.data.eval_seed
    config.data.eval_split = 'validation'
    del config.data['eval_seed']
  model = config.get('model')
  if model is not None and model.get('inference') == 'parallel' and 'cell_order' not in model:
    model.cell_order = 'parallel'  # parallel-core runs saved before the raster order decided at once
  for name, value in BEFORE_THEY_EXISTED.items():
    if name not in config:
      config[name] = value

  def add_missing(into, defaults):
    for name, value in defaults.items():
      if name not in into:
        into[name] = value
      elif isinstance(value, ml_collections.ConfigDict) and isinstance(into[name], ml_collections.ConfigDict):
        add_missing(into[name], value)

  add_missing(config, default_config(config.scene_kind if 'scene_kind' in config else 'multi_mnist'))
  return config
