"""Shared by the benchmark scripts: a printed table and a JSON record."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path


def machine() -> dict:
  import os
  return {"platform": platform.platform(), "python": platform.python_version(),
          "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_record(name: str, rows: list[dict], out: str | None, extra: dict | None = None) -> Path:
  """Writes {benchmark, machine, rows, extra} as JSON; called as rows come in too, so that a run
  stopped part-way keeps what it measured."""
  record = {"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}
  path = Path(out or f"benchmarks/results/{name}.json")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=2) + "\n")
  return path


def report(name: str, rows: list[dict], out: str | None, extra: dict | None = None) -> None:
  """Prints rows as an aligned table and writes the JSON record."""
  columns = list(dict.fromkeys(k for r in rows for k in r))
  cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  widths = {c: max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
  print("  ".join(c.ljust(widths[c]) for c in columns))
  for r in rows:
    print("  ".join(cell(r.get(c, "")).ljust(widths[c]) for c in columns))
  print(f"wrote {write_record(name, rows, out, extra)}")
