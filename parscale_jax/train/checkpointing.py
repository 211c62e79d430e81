"""orbax checkpoints of a run: train state, data-iterator state and run metadata, saved together."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import shutil
import sys
import warnings
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from parscale_jax.errors import UserError, is_disk_full
from parscale_jax.rundir import RunDir


def manager(workdir: Path, keep: int) -> ocp.CheckpointManager:
  # Synchronous saves: a checkpoint is complete on disk (orbax commits it by rename) before
  # training goes on, so a SIGKILL never leaves a half-written latest step.
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                         create=True)
  return ocp.CheckpointManager(
      RunDir(Path(workdir).absolute()).checkpoints, options=options,  # orbax needs absolute paths
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler(),  # One file per process.
                     "meta": ocp.JsonCheckpointHandler()})


@jax.jit
def _leaf_sums(state) -> list[jax.Array]:
  """Two wrapping uint32 sums of each array's bits, the second weighted by position: any changed
  byte changes them. Computed on device, so sharded state is never gathered to one host."""
  sums = []
  for leaf in jax.tree.leaves(state):
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    flat = leaf.reshape(-1)
    if flat.dtype == jnp.bool_:
      flat = flat.astype(jnp.uint8)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[flat.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(flat, unsigned).reshape(-1).astype(jnp.uint32)
    weights = jnp.arange(1, bits.size + 1, dtype=jnp.uint32)
    sums.append(jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * weights, dtype=jnp.uint32)]))
  return sums


def state_checksum(state) -> str:
  """A checksum of every array in `state` (values, not layout): saved with a checkpoint and
  compared on restore, so that damaged array files are refused instead of trained on."""
  sums = jax.device_get(_leaf_sums(state))
  return hashlib.sha256(b"".join(s.astype(">u4").tobytes() for s in sums)).hexdigest()[:32]


HEADROOM_BYTES = 1 << 20  # Metadata, the data iterator's state and the file system's blocks.


def _disk_full(directory: Path, detail: str) -> OSError:
  return OSError(errno.ENOSPC, detail, str(directory))


def save(mngr: ocp.CheckpointManager, step: int, state, data_iterator, meta: dict) -> None:
  """Saves a checkpoint, or raises OSError(ENOSPC) and leaves no partial one behind. The free
  space is checked first: a write that runs out of room inside orbax fails in its worker threads,
  which keep failing (and printing) after the error has reached us."""
  directory = Path(mngr.directory)
  need = sum(leaf.nbytes for leaf in jax.tree.leaves(state)) + HEADROOM_BYTES
  free = shutil.disk_usage(directory).free
  if free < need:
    raise _disk_full(directory, f"a checkpoint needs about {need / 1e6:.1f} MB, "
                                f"{free / 1e6:.1f} MB are free")
  state = state.as_dict()  # A TrainState, stored as its fields by name.
  meta = {**meta, "state_checksum": state_checksum(state)}
  _drop_failed_checkpoint_noise()  # A failed write's callbacks, as a failed restore's (below).
  try:
    with _orbax_thread_errors_unlogged():
      mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                              data=grain.checkpoint.CheckpointSave(data_iterator),
                                              meta=ocp.args.JsonSave(meta)))
      mngr.wait_until_finished()
  except Exception as e:
    # orbax reports a full disk as ValueError("RESOURCE_EXHAUSTED: ... [os_error_code='28']").
    if not is_disk_full(e):
      raise
    for partial in directory.glob("*.orbax-checkpoint-tmp*"):
      shutil.rmtree(partial, ignore_errors=True)
    raise _disk_full(directory, "No space left on device") from None


@contextlib.contextmanager
def _orbax_thread_errors_unlogged():
  """orbax logs the error of each of its writer threads with a traceback (absl), and asyncio the
  writes whose error nobody retrieved, before and after the first error is raised here; that one
  is what the user is told, once. After a failed save, the writes still running go on failing:
  those logs stay off for the rest of the process."""
  loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    yield
  except BaseException:
    # ...and the writes it abandoned are reported again as never-awaited coroutines at exit.
    warnings.filterwarnings("ignore", r"coroutine .* was never awaited", RuntimeWarning)
    raise
  for logger, level in zip(loggers, levels):
    logger.setLevel(level)


def _is_closed_loop(error) -> bool:
  return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _is_abandoned_read(unraisable) -> bool:
  """An orbax coroutine left unfinished by a failed restore and closed when the garbage collector
  took it: it raises on that close (its exception's cause is the GeneratorExit)."""
  code = getattr(unraisable.object, "cr_code", None)
  return (code is not None and "orbax" in Path(code.co_filename).parts
          and isinstance(getattr(unraisable.exc_value, "__cause__", None), GeneratorExit))


def _drop_failed_checkpoint_noise() -> None:
  """When a restore (or save) fails, tensorstore reads still in flight call back into orbax's
  event loop, which is closed by then ("Event loop is closed", from their threads), and its
  unfinished read coroutines raise again when collected, later, in a long-lived process such as a
  notebook ("Exception ignored in: <coroutine ...>"): dozens of tracebacks around the one line that
  says what is wrong. Those alone are dropped, for the rest of the process."""
  if getattr(sys.excepthook, "drops_closed_loop", False):
    return
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

  def quiet_excepthook(kind, value, tb):
    if not _is_closed_loop(value):
      excepthook(kind, value, tb)

  def quiet_unraisablehook(unraisable):
    if not (_is_closed_loop(unraisable.exc_value) or _is_abandoned_read(unraisable)):
      unraisablehook(unraisable)

  quiet_excepthook.drops_closed_loop = True
  sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, shardings, data_iterator):
  """Restores (state, meta) at `step` with arrays placed by `shardings` (TrainStates of abstract
  arrays and of shardings); `data_iterator` is set to the saved position."""
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_state.as_dict(), shardings.as_dict())
  _drop_failed_checkpoint_noise()  # Before: the first callbacks come while the error unwinds.
  try:
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        data=grain.checkpoint.CheckpointRestore(data_iterator),
        meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax raises many types for damaged files.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    first = first.split(" See full TensorStore details")[0]  # A dump of the store's spec follows.
    raise UserError(f"checkpoint {mngr.directory}/{step} cannot be restored: {first}") from None
  expected = out["meta"].get("state_checksum")
  if expected is not None and state_checksum(out["state"]) != expected:
    raise UserError(f"checkpoint {mngr.directory}/{step} is damaged: its arrays do not match the "
                    "checksum saved with them")
  return type(abstract_state).from_dict(out["state"]), out["meta"]
