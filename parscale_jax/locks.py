"""Exclusive locks on directories: non-blocking ones on run directories, a blocking one for a
folder's shared files; the OS drops a lock when its holder dies."""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def held(directory: Path, name: str):
  """Waits for the lock `directory/name` and holds it for the block: processes that rewrite one
  folder's shared files (a table, a report) take turns."""
  Path(directory).mkdir(parents=True, exist_ok=True)
  with open(Path(directory) / name, "a+") as file:
    fcntl.flock(file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(file, fcntl.LOCK_UN)
