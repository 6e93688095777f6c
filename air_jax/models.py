"""What a run builds once from its config: the scene kind, the inference core and the NVIL baseline.

    models = build(config)   # validates the config once; every part checks its own settings
    out = models.core.apply({'params': params['model']}, images, rngs={'sample': key})

The loss, the steps, evaluation, pictures and the tools take a Models instead of a config.
A new inference core plugs in as a module in air_jax/cores/ (an options class and a Flax module)
and a name in CORES ('recurrent':
AIR and DAIR; 'parallel': a grid of cells inferred at once).
"""
import dataclasses
from typing import Any, Dict, Tuple, Type

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from air_jax import modules
from air_jax import scenes
from air_jax.configs import checks
from air_jax.cores import parallel
from air_jax.cores import recurrent

# config.model.inference -> (its options class: from_config(config.model) checks them, .slots is the
# number of object slots; its Flax module: Core(options, scene kind), needs_cells says whether the
# kind must place objects in cells, check_scene(options, scene kind) raises ValueError where the
# options do not fit the kind's images).
CORES: Dict[str, Tuple[Any, Type[nn.Module]]] = {
    'recurrent': (recurrent.RecurrentOptions, recurrent.RecurrentCore),
    'parallel': (parallel.ParallelOptions, parallel.ParallelCore),
}


@dataclasses.dataclass(frozen=True)
class Models:
  """A run's parts, built once (build)."""
  config: ml_collections.ConfigDict  # the validated, resolved copy of the config (treat as read-only)
  scene: scenes.SceneKind            # what a scene is: its objects, renderer, data, evaluators
  core: nn.Module                    # images -> cores.CoreOutput
  baseline: modules.Baseline         # NVIL's input-dependent baseline


def build(config: ml_collections.ConfigDict) -> Models:
  """The Models of a config, validated once (raises ValueError naming the first bad setting). The
  config is copied first and completed by its scene kind (scenes.resolved: settings the kind reads
  from its data); Models.config is that copy, the one a run saves."""
  config = scenes.resolved(config.copy_and_resolve_references())
  inference = config.model.inference
  if inference not in CORES:
    raise ValueError(f'config.model.inference must be one of {tuple(CORES)}, got {inference!r}')
  options_class, core_class = CORES[inference]
  options = options_class.from_config(config.model)
  config.model.max_steps = options.slots  # the parallel core's: its cells
  checks.validate_config(config)
  scene = scenes.build(config)
  if core_class.needs_cells and not scene.cells:
    raise ValueError(f"config.model.inference {inference!r} needs a scene kind that places objects in cells; "
                     f"{scene.name} does not: use 'recurrent'")
  if config.objective.z_pres_estimator != 'nvil' and not scene.relaxable:
    raise ValueError(f"config.objective.z_pres_estimator {config.objective.z_pres_estimator!r} needs object "
                     f"latents that are all reparameterised, which {scene.name} has not: use 'nvil'")
  core_class.check_scene(options, scene)
  core = core_class(options, scene)
  baseline = modules.Baseline(config.model.baseline_hidden, dtype=jnp.dtype(config.model.matmul_dtype))
  return Models(config=config, scene=scene, core=core, baseline=baseline)
