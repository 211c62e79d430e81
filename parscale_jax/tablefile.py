"""Reading loss tables, the one reader for every table: CSV or JSON lines, with one-line errors;
`read_table` types a sweep's columns (numbers as numbers, empty cells as None)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from parscale_jax.errors import UserError

_INTS = ("P", "seed", "tokens")
_FLOATS = ("N", "N_backbone", "loss", "val_sem", "loss_sem", "train_loss", "eval_bits_per_byte", "flops", "wall_seconds")


def read_rows(path: Path) -> list[dict]:
  """The rows of a CSV (values as text) or JSON-lines table (values as written)."""
  path = Path(path)
  if not path.is_file():
    raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
  try:
    text = path.read_text()
  except UnicodeDecodeError:
    raise UserError(f"{path}: not a text table (CSV or JSON lines)") from None
  if path.suffix in (".jsonl", ".json"):
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          raise UserError(f"{path}:{i}: malformed JSON line") from None
    return rows
  try:
    return list(csv.DictReader(text.splitlines()))
  except csv.Error as e:
    raise UserError(f"{path}: malformed CSV ({e})") from None


def read_table(path: Path) -> list[dict]:
  """A sweep's table (table.csv or table.jsonl) with its numeric columns as numbers and empty cells
  as None."""
  def parse(key, value):
    if value in ("", None):
      return None
    if key in _INTS:
      return int(value)
    if key in _FLOATS:
      return float(value)
    return value

  return [{k: parse(k, v) for k, v in row.items()} for row in read_rows(path)]
