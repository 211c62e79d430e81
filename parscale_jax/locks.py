"""Exclusive, non-blocking locks on run directories; the OS drops a lock when its holder dies."""
from __future__ import annotations

import fcntl
from pathlib import Path


class DirLock:
  """A lock on `directory`, held through the file `directory/name`."""

  def __init__(self, directory: Path, name: str):
    directory.mkdir(parents=True, exist_ok=True)
    self.file = open(directory / name, "a+")

  def acquire(self) -> bool:
    try:
      fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return True
    except BlockingIOError:
      return False

  def release(self) -> None:
    fcntl.flock(self.file, fcntl.LOCK_UN)
    self.file.close()
