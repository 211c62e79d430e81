"""result.json: a run's status and results, written by RunRecord alone (atomically).

A run is `running` from its start, then `done` with its results or `failed` with its reason:
whatever stops it (a NaN, a damaged checkpoint, a full disk, a W&B login, a killed sweep worker)
leaves `failed` and one line saying why, never `running`.
"""
from __future__ import annotations

import errno
import json
from pathlib import Path

from parscale_jax.atomic import write_json_atomic
from parscale_jax.errors import UserError
from parscale_jax.rundir import RunDir


def read_result(workdir: Path) -> dict | None:
  """A run's result.json, or None (absent, or cut by a kill mid-write of an older version)."""
  path = RunDir(Path(workdir)).result
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError):
    return None


def failure_reason(error: BaseException) -> str:
  """One line for an exception that stopped a run."""
  if isinstance(error, OSError) and error.errno == errno.ENOSPC:
    return (f"disk full: {error.filename or 'a write'}: {error.strerror} (free space, then run "
            f"again to resume)")
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  if isinstance(error, UserError):
    return text or type(error).__name__
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


class RunRecord:
  """The result.json of one run directory."""

  def __init__(self, workdir: Path, run_id: str):
    self.path = RunDir(Path(workdir)).result
    self.fields: dict = read_result(workdir) or {"run_id": run_id}
    self.fields["run_id"] = run_id

  def start(self, **fields) -> None:
    self.fields = {"run_id": self.fields["run_id"], **fields, "status": "running", "reason": None}
    self._write()

  def finish(self, **fields) -> dict:
    self.fields.update(fields, status="done", reason=None)
    self._write()
    return dict(self.fields)

  def fail(self, reason: str, **fields) -> dict:
    """Marks the run failed; a second failure (the disk still full) is not raised over the first."""
    self.fields.update(fields, status="failed", reason=reason)
    try:
      self._write()
    except OSError:
      pass
    return dict(self.fields)

  def interrupt(self, checkpoint_step: int | None) -> None:
    """Marks the run stopped by the user (Ctrl-C): not failed, resumed by running it again."""
    self.fields.update(status="interrupted",
                       reason=f"interrupted; run the same command again to resume from step "
                              f"{checkpoint_step or 0}")
    try:
      self._write()
    except OSError:
      pass

  def adopt(self, result: dict, source: Path) -> dict:
    """Takes over a finished run that was trained elsewhere with this run's config (a sweep's
    `reuse`), saying where it came from."""
    self.fields = {**result, "run_id": self.fields["run_id"], "reused_from": str(source)}
    self._write()
    return dict(self.fields)

  def _write(self) -> None:
    write_json_atomic(self.path, self.fields)
