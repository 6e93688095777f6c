"""Orbax checkpoints of the train state: periodic saves, resume from the latest.

Orbax writes each save into a temporary folder and renames it when complete, so a crash during a
save leaves the previous checkpoint as the latest. A checkpoint that does not fit the state it is
restored into (another model config) or cannot be read (corrupt files) raises CheckpointError
naming the checkpoint and the mismatch.
"""
import dataclasses
import pathlib

import jax
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored into the requested state; the message says why."""


def _path_name(path) -> str:
  """'params/model/image_kernel' for a pytree key path (attribute, dict and sequence keys)."""
  names = []
  for key in path:
    for attr in ('name', 'key', 'idx'):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return '/'.join(names)


def _first_line(error: Exception, limit: int = 160) -> str:
  text = str(error).splitlines()[0] if str(error) else ''
  return f'{type(error).__name__}: ' + (text[:limit] + '...' if len(text) > limit else text)


def _shapes(tree) -> dict:
  return {_path_name(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def shape_mismatches(stored: dict, expected: dict) -> list:
  """Human-readable differences between two {path: shape} maps."""
  problems = [f'{name}: stored {stored[name]}, expected {expected[name]}'
              for name in expected if name in stored and stored[name] != expected[name]]
  problems += [f'{name}: missing from the checkpoint' for name in expected if name not in stored]
  problems += [f'{name}: in the checkpoint but not in this model' for name in stored if name not in expected]
  return problems


class Checkpointer:
  """Keeps the last `max_to_keep` states under <workdir>/checkpoints."""

  def __init__(self, workdir: str | pathlib.Path, max_to_keep: int = 2, create: bool = True):
    self.directory = pathlib.Path(workdir).absolute() / 'checkpoints'
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _stored(self, step: int):
    """(metadata tree, {path: shape}) of the checkpoint at step, read once."""
    try:
      tree = self.manager.item_metadata(step).tree
      return tree, _shapes(tree)
    except Exception as e:  # missing or garbled metadata files
      raise CheckpointError(f'checkpoint {self.directory / str(step)} cannot be read (corrupt or incomplete: '
                            f'{_first_line(e)}); delete it to resume from an earlier one') from e

  def _restore(self, step: int, target):
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # array data missing or truncated
      raise CheckpointError(f'checkpoint {self.directory / str(step)} cannot be restored (corrupt: '
                            f'{_first_line(e)}); delete it to resume from an earlier one') from e

  def _check_fits(self, step: int, stored: dict, expected: dict) -> None:
    problems = shape_mismatches(stored, expected)
    if problems:
      raise CheckpointError(f'checkpoint {self.directory / str(step)} does not fit this model (saved with another '
                            'config?): ' + '; '.join(problems[:3])
                            + (f'; and {len(problems) - 3} more' if len(problems) > 3 else ''))

  def restore(self, target, step: int | None = None):
    """The state saved at step (default: latest), with target's structure, shapes and shardings.
    Fields of target without arrays (e.g. ema_params = {} when off) need not be in the checkpoint:
    checkpoints written before such a field existed still restore."""
    step = self.latest_step() if step is None else step
    on_disk, stored = self._stored(step)
    self._check_fits(step, stored, _shapes(target))
    if not dataclasses.is_dataclass(target):
      return self._restore(step, target)
    fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)}
    # on_disk, not the shapes: a field saved as an empty {} is in the checkpoint too.
    absent = {k: v for k, v in fields.items() if k not in on_disk and not jax.tree.leaves(v)}
    restored = self._restore(step, {k: v for k, v in fields.items() if k not in absent})
    return target.replace(**restored, **absent)

  def restore_params(self, target, step: int | None = None, subtree: str = 'params/model'):
    """Only one set of model parameters (subtree: params/model, or ema_params) of the state saved
    at step, with target's structure and shapes, on the first device; the rest of the checkpoint
    (optimiser state, counters) may have any layout."""
    step = self.latest_step() if step is None else step
    metadata, stored = self._stored(step)
    prefix = subtree + '/'
    if not any(k.startswith(prefix) for k in stored):
      raise CheckpointError(f'checkpoint {self.directory / str(step)} has no {subtree} (saved with another '
                            'config? ema_params exist only in runs with config.ema_decay > 0)')
    self._check_fits(step, {k[len(prefix):]: v for k, v in stored.items() if k.startswith(prefix)}, _shapes(target))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    everything = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    restored = self._restore(step, everything)
    for key in subtree.split('/'):
      restored = restored[key]
    return restored

  def save(self, step: int, state) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
