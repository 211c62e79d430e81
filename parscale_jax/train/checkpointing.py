"""orbax checkpoints of a run: train state, data-iterator state and run metadata, saved together."""
from __future__ import annotations

from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp

from parscale_jax.errors import UserError


def manager(workdir: Path, keep: int) -> ocp.CheckpointManager:
  # Synchronous saves: a checkpoint is complete on disk (orbax commits it by rename) before
  # training goes on, so a SIGKILL never leaves a half-written latest step.
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                         create=True)
  return ocp.CheckpointManager(
      Path(workdir).absolute() / "checkpoints", options=options,  # orbax needs absolute paths
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler(),  # One file per process.
                     "meta": ocp.JsonCheckpointHandler()})


def save(mngr: ocp.CheckpointManager, step: int, state, data_iterator, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=grain.checkpoint.CheckpointSave(data_iterator),
                                          meta=ocp.args.JsonSave(meta)))
  mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, shardings, data_iterator):
  """Restores (state, meta) at `step` with arrays placed by `shardings`; `data_iterator` is set to
  the saved position."""
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_state, shardings)
  try:
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        data=grain.checkpoint.CheckpointRestore(data_iterator),
        meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax raises many types for damaged files.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"checkpoint {mngr.directory}/{step} cannot be restored: {first}") from None
  return out["state"], out["meta"]
