"""Scene kinds: what differs between kinds of scene (air_jax.scenes.base.SceneKind says what a kind
brings). config.scene_kind selects one of KINDS; each lives in one module beside this one, with its
default config in air_jax/configs/<kind>.py:

    'multi_mnist'  2D digits: a window z_where and an appearance z_what, a learned decoder
    'omniglot'     the same 2D model on handwritten characters (no true counts)
    'shapes_3d'    3D objects on a floor: a shape identity and a pose, rendered by MuJoCo
    'images'       the 2D model on the user's own images (an npz or a folder of PNG/JPEG)
"""
import importlib

import ml_collections

from air_jax.scenes.base import SceneKind

KINDS = {'multi_mnist': 'air_jax.scenes.multi_mnist', 'omniglot': 'air_jax.scenes.omniglot',
         'shapes_3d': 'air_jax.scenes.shapes_3d', 'images': 'air_jax.scenes.images'}


def kind_of(config: ml_collections.ConfigDict):
  """The SceneKind subclass that config.scene_kind names."""
  if config.scene_kind not in KINDS:
    raise ValueError(f'config.scene_kind must be one of {tuple(KINDS)}, got {config.scene_kind!r}')
  kind = importlib.import_module(KINDS[config.scene_kind]).Scene
  assert kind.name == config.scene_kind, (kind.name, config.scene_kind)
  return kind


def resolved(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config completed by its kind (SceneKind.resolved), in place."""
  return kind_of(config).resolved(config)


def build(config: ml_collections.ConfigDict) -> SceneKind:
  """The scene kind of a config (config.scene_kind), built once; raises ValueError on a bad setting.
  Call it through air_jax.models.build, which resolves and validates the config first."""
  return kind_of(config)(config)


def max_count(config: ml_collections.ConfigDict) -> int:
  """The largest count a run can see or infer: its data's counts (where it has them) and max_steps."""
  return max([config.model.max_steps] + [max(config.data[f]) for f in ('train_counts', 'eval_counts') if f in config.data])
