"""Orbax checkpoints of the train state: periodic saves, resume from the latest."""
import pathlib

import orbax.checkpoint as ocp


class Checkpointer:
  """Keeps the last `max_to_keep` states under <workdir>/checkpoints."""

  def __init__(self, workdir: str | pathlib.Path, max_to_keep: int = 2, create: bool = True):
    self.directory = pathlib.Path(workdir).absolute() / 'checkpoints'
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, target, step: int | None = None):
    """The state saved at step (default: latest), with target's structure, shapes and shardings."""
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.StandardRestore(target))

  def save(self, step: int, state) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
