"""Replacing a file in one step, so that a kill or a full disk never leaves it half written."""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
  """Writes `text` beside `path` (a name unique to this process) and renames it over `path`; a
  failed write (a full disk) leaves `path` as it was and no temporary file behind."""
  path = Path(path)
  tmp = _temporary(path)
  try:
    tmp.write_text(text)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def copy_file_atomic(source: Path, target: Path) -> None:
  """Copies `source` over `target` in one step (bytes, so plots too)."""
  target = Path(target)
  tmp = _temporary(target)
  try:
    tmp.write_bytes(Path(source).read_bytes())
    os.replace(tmp, target)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def copy_tree_atomic(source: Path, target: Path) -> None:
  """A folder copied whole or not at all (renamed into place), so a kill never leaves half."""
  source, target = Path(source), Path(target)
  partial = target.parent.parent / f".{target.parent.name}.{target.name}.{os.getpid()}.partial"
  shutil.rmtree(partial, ignore_errors=True)
  target.parent.mkdir(parents=True, exist_ok=True)
  try:
    shutil.copytree(source, partial)
    partial.rename(target)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise


def _temporary(path: Path) -> Path:
  # A name unique to this process and thread.
  return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _json_text(data) -> str:
  return json.dumps(data, indent=2) + "\n"


def write_json_atomic(path: Path, data) -> None:
  write_text_atomic(path, _json_text(data))


def create_json_exclusive(path: Path, data) -> bool:
  """Creates `path` holding `data` unless it exists (then False): whole or not at all, and of two
  processes racing to create it exactly one wins."""
  path = Path(path)
  tmp = _temporary(path)
  try:
    tmp.write_text(_json_text(data))
    os.link(tmp, path)  # Fails if `path` exists, unlike a rename.
    return True
  except FileExistsError:
    return False
  finally:
    tmp.unlink(missing_ok=True)
