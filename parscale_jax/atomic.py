"""Replacing a file in one step, so that a kill never leaves it half written."""
from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
  """Writes `text` beside `path` (a name unique to this process) and renames it over `path`."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)
