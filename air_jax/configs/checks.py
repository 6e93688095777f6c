"""Checks of a run's config: validity, and whether a workdir's checkpoints may be resumed with it."""
import json
import pathlib
from typing import Any, Dict

import ml_collections

from air_jax import configs
from air_jax import metrics as metrics_lib
from air_jax.data import sources

COUNT_FIELDS = ('train_counts', 'eval_counts')  # config.data's true object counts, where the data has them
MATMUL_DTYPES = ('float32', 'bfloat16')
ESTIMATORS = ('nvil', 'concrete', 'vimco')  # air_jax.loss's z_pres estimators


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first invalid setting of the options every run shares (the scene
  kind and the inference core check their own when air_jax.models.build makes them)."""
  positive = ['batch_size', 'eval_batch_size', 'num_train_steps', 'log_every_steps',
              'eval_every_steps', 'checkpoint_every_steps', 'learning_rate', 'baseline_learning_rate',
              'max_nonfinite_in_a_row']
  for name in positive:
    if not config[name] > 0:
      raise ValueError(f'config.{name} must be positive, got {config[name]}')
  if not config.per_device_batch_size >= 0:
    raise ValueError(f'config.per_device_batch_size must be >= 0 (0: use batch_size), got {config.per_device_batch_size}')
  if not config.model.max_steps > 0:
    raise ValueError(f'config.model.max_steps must be positive, got {config.model.max_steps}')
  if config.model.matmul_dtype not in MATMUL_DTYPES:
    raise ValueError(f'config.model.matmul_dtype must be one of {MATMUL_DTYPES}, got {config.model.matmul_dtype!r}')
  if not config.model.z_pres_logit_bound >= 0:
    raise ValueError('config.model.z_pres_logit_bound must be >= 0 (0: unbounded), got '
                     f'{config.model.z_pres_logit_bound}')
  if not config.eval_importance_samples >= 0:
    raise ValueError(f'config.eval_importance_samples must be >= 0 (0: none), got {config.eval_importance_samples}')
  objective = config.objective
  for name in ('z_pres_prior', 'z_pres_prior_start'):
    if not 0 < objective[name] < 1:
      raise ValueError(f'config.objective.{name} must be in (0, 1), got {objective[name]}')
  if not objective.likelihood_scale > 0:
    raise ValueError(f'config.objective.likelihood_scale must be positive, got {objective.likelihood_scale}')
  if not 0 <= config.learning_rate_decay_to <= 1:
    raise ValueError(f'config.learning_rate_decay_to must be in [0, 1] (1: a constant learning rate), '
                     f'got {config.learning_rate_decay_to}')
  if not 0 <= config.ema_decay < 1:
    raise ValueError(f'config.ema_decay must be in [0, 1) (0: no parameter average), got {config.ema_decay}')
  for name in ('likelihood_blur', 'z_pres_freeze_steps', 'discrete_freeze_steps'):
    if not objective[name] >= 0:
      raise ValueError(f'config.objective.{name} must be >= 0, got {objective[name]}')
  if objective.z_pres_estimator not in ESTIMATORS:
    raise ValueError(f'config.objective.z_pres_estimator must be one of {ESTIMATORS}, got {objective.z_pres_estimator!r}')
  for name in ('concrete_temperature_start', 'concrete_temperature'):
    if not objective[name] > 0:
      raise ValueError(f'config.objective.{name} must be positive, got {objective[name]}')
  if not objective.vimco_samples >= 2:
    raise ValueError(f'config.objective.vimco_samples must be >= 2 (VIMCO leaves one draw out), got {objective.vimco_samples}')
  if not 0 <= objective.signal_decay < 1:
    raise ValueError(f'config.objective.signal_decay must be in [0, 1), got {objective.signal_decay}')
  for counts in (f for f in COUNT_FIELDS if f in config.data):
    sources.check_counts(f'config.data.{counts}', config.data[counts], config.model.max_steps)


# Settings a run may change when it resumes; any other difference from the saved config is an error.
RESUMABLE_SETTINGS = ('num_train_steps', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
                      'max_checkpoints', 'max_nonfinite_in_a_row', 'eval_batch_size', 'data.data_dir',
                      'data.num_eval', 'eval_importance_samples')


def _flatten(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  flat = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{name}.'))
    else:
      flat[f'{prefix}{name}'] = value
  return flat


def config_differences(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> list:
  """'name: saved -> new' for every setting (outside RESUMABLE_SETTINGS) that differs. A setting
  the saved config lacks (added to the library after that run started) counts as the value that
  run had (configs.with_defaults)."""
  old = _flatten(json.loads(configs.with_defaults(saved).to_json_best_effort()))
  new = _flatten(json.loads(config.to_json_best_effort()))
  return [f'{name}: {old.get(name, "(unset)")} -> {new.get(name, "(unset)")}'
          for name in sorted(set(old) | set(new))
          if name not in RESUMABLE_SETTINGS and old.get(name) != new.get(name)]


def check_resumable(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """Raises ValueError when workdir holds checkpoints of a run with another config."""
  checkpoint_dir = workdir / 'checkpoints'
  if not (checkpoint_dir.is_dir() and any(p.name.isdigit() for p in checkpoint_dir.iterdir())):
    return
  if not (workdir / 'config.json').is_file():
    raise ValueError(f'workdir {workdir} has checkpoints but no config.json: cannot tell whether they '
                     'fit this config; use a new workdir')
  differences = config_differences(metrics_lib.load_config(workdir), config)
  if differences:
    raise ValueError(f'workdir {workdir} holds a run with another config ({"; ".join(differences[:5])}'
                     f'{"; ..." if len(differences) > 5 else ""}): resume it with its own config or use a new workdir')
