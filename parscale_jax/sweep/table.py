"""The sweep's results table: one row per run, rebuilt from each run's result.json and written
atomically (CSV and JSON lines), so a kill never leaves a truncated row."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from parscale_jax.atomic import write_text_atomic
from parscale_jax.locks import held
from parscale_jax.rundir import PUBLISHED_FILES, TABLE, TABLE_JSONL, TABLE_LOCK, ResultsDir
from parscale_jax.sweep.comparisons import SHAPE_AXES
from parscale_jax.sweep.spec import RunSpec
from parscale_jax.train.run_record import read_result

COLUMNS = ("run_id", "stage", "size", "N", "N_backbone", "P", "seed", "tokens", "loss", "val_sem", "train_loss",
           "eval_bits_per_byte", "flops", "wall_seconds", "status", "reason")


def run_result(results_dir: Path, run_id: str, published: Path | None = None) -> dict | None:
  """A run's result: its workdir's, or where that is not done, the published copy's if that one is
  (a fresh clone of a repository has the published runs and none of the workdirs)."""
  local = read_result(ResultsDir(results_dir).run(run_id).path)
  if published is not None and (local is None or local.get("status") != "done"):
    copy = read_result(ResultsDir(published).run(run_id).path)
    if copy and copy.get("status") == "done":
      return copy
  return local


def copy_run_files(source: Path, target: Path, names=PUBLISHED_FILES) -> None:
  """Copies a run's small files (not checkpoints or the model), each written atomically."""
  target.mkdir(parents=True, exist_ok=True)
  for name in names:
    if (source / name).exists():
      write_text_atomic(target / name, (source / name).read_text())


def publish_run(results_dir: Path, run_id: str, published: Path) -> None:
  """Copies a finished run's small files under published/runs/, so that a sweep can be resumed
  from a clone of the repository."""
  copy_run_files(ResultsDir(results_dir).run(run_id).path, ResultsDir(published).run(run_id).path)


def table_row(run: RunSpec, result: dict | None) -> dict:
  result = result or {}
  # The preset the sweep names (a stage may override some of its fields), else the trainer's match.
  size = (run.config.get("model") or {}).get("size") or result.get("size")
  shape = [f"{k.removeprefix('model.')}={v}" for k, v in run.values.items() if k in SHAPE_AXES
           and k != "model.size"]
  if shape and size in (None, "custom"):  # Sizes set by shape axes are named by them.
    size = ",".join(shape)
  row = {"run_id": run.run_id, "stage": run.stage, "size": size,
         "N": result.get("N"), "N_backbone": result.get("N_backbone"), "P": result.get("P", run.values.get("model.P")),
         "seed": result.get("seed", run.values.get("seed")), "tokens": result.get("tokens"),
         "loss": result.get("eval_loss"), "val_sem": result.get("eval_loss_sem"),
         "train_loss": result.get("train_loss"), "eval_bits_per_byte": result.get("eval_bits_per_byte"),
         "flops": result.get("flops"), "wall_seconds": result.get("wall_seconds"),
         "status": result.get("status", "pending"), "reason": result.get("reason")}
  if row["status"] in ("running", "interrupted"):  # Stopped part-way: it resumes when run again.
    row["status"] = "pending"
  for key, value in run.values.items():  # Grid axes as their own columns.
    row.setdefault(f"grid.{key}", value)
  return row


def table_turn(results_dir: Path):
  """The lock that sweeps sharing a results folder take in turn to read the runs and rewrite the
  table (and its fit and report): a writer never puts back an older view over a newer one."""
  return held(results_dir, TABLE_LOCK)


def write_table(results_dir: Path, runs: tuple[RunSpec, ...], published: Path | None = None,
                *, turn_held: bool = False) -> list[dict]:
  """Rebuilds the table from the runs' results; turn_held: the caller holds table_turn."""
  if not turn_held:
    with table_turn(results_dir):
      return write_table(results_dir, runs, published, turn_held=True)
  rows = [table_row(r, run_result(results_dir, r.run_id, published)) for r in runs]
  columns = list(COLUMNS) + sorted({k for row in rows for k in row} - set(COLUMNS))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
  write_text_atomic(results_dir / TABLE, buf.getvalue())
  write_text_atomic(results_dir / TABLE_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
  return rows
