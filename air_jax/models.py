"""What a run builds once from its config: the scene kind, the inference core and the NVIL baseline.

    models = build(config)   # validates the config once; every part checks its own settings
    out = models.core.apply({'params': params['model']}, images, rngs={'sample': key})

The loss, the steps, evaluation, pictures and the tools take a Models instead of a config.
A new inference core plugs in as a module in air_jax/cores/ and a name in CORES ('recurrent':
AIR and DAIR; 'parallel': a grid of cells inferred at once).
"""
import dataclasses
from typing import Callable, Dict

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from air_jax import modules
from air_jax import scenes
from air_jax.configs import checks
from air_jax.cores import parallel
from air_jax.cores import recurrent

# config.model.inference -> (config.model, scene kind) -> the core (a Flax module, air_jax.cores).
CORES: Dict[str, Callable[[ml_collections.ConfigDict, scenes.SceneKind], nn.Module]] = {
    'recurrent': lambda model, scene: recurrent.RecurrentCore(recurrent.RecurrentOptions.from_config(model), scene),
    'parallel': lambda model, scene: parallel.ParallelCore(parallel.ParallelOptions.from_config(model), scene),
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
  if config.model.inference not in CORES:
    raise ValueError(f'config.model.inference must be one of {tuple(CORES)}, got {config.model.inference!r}')
  if config.model.inference == 'parallel':  # its slots are its cells
    config.model.max_steps = parallel.ParallelOptions.from_config(config.model).grid_size ** 2
  checks.validate_config(config)
  scene = scenes.build(config)
  if config.model.inference == 'parallel' and not scene.cells:
    raise ValueError(f"config.model.inference 'parallel' needs a scene kind that places objects in cells; "
                     f"{scene.name} does not: use 'recurrent'")
  if config.objective.z_pres_estimator != 'nvil' and not scene.relaxable:
    raise ValueError(f"config.objective.z_pres_estimator {config.objective.z_pres_estimator!r} needs object "
                     f"latents that are all reparameterised, which {scene.name} has not: use 'nvil'")
  core = CORES[config.model.inference](config.model, scene)
  baseline = modules.Baseline(config.model.baseline_hidden, dtype=jnp.dtype(config.model.matmul_dtype))
  return Models(config=config, scene=scene, core=core, baseline=baseline)
