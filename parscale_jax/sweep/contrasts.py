"""Variant contrasts of a sweep (analysis.contrasts): A minus B paired by seed at each setting of
the other grid axes, and each run against another sweep's run of the same cell."""
from __future__ import annotations

import numpy as np

from parscale_jax.stats import mean_se_interval, paired_differences
from parscale_jax.sweep.comparisons import setting_order


PAIRING_AXES = ("variant", "seed")


def grid_setting(row: dict, leave_out: tuple[str, ...] = PAIRING_AXES) -> tuple:
  """The row's grid values other than the axes in `leave_out` (variant and seed: the pairing),
  as sorted (axis, value) pairs."""
  skip = {f"grid.{axis}" for axis in leave_out}
  return tuple(sorted((k[5:], row[k]) for k in row
                      if k.startswith("grid.") and k not in skip and row[k] not in (None, "")))


def grid_label(setting: tuple) -> str:
  """A setting from grid_setting as text: `size=g6-250k, tokens=614400` (all: "all")."""
  return ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in setting) or "all"


def contrast_table(rows: list[dict], contrasts) -> str:
  """Markdown: per contrast and setting, the mean paired difference ± SE [95 % t interval] and n;
  a contrast's pooled line joins the settings that differ only in model.size."""
  done = [r for r in rows if r["status"] == "done" and r.get("grid.variant")]
  losses: dict[tuple, dict[str, dict]] = {}
  for r in done:
    losses.setdefault(grid_setting(r), {}).setdefault(r["grid.variant"], {})[r["seed"]] = r["loss"]
  lines = ["| A − B | setting | mean ± SE [95 % interval] | n |", "|---|---|---|---|"]
  for a, b in contrasts:
    pooled: dict[tuple, list[np.ndarray]] = {}
    for setting in sorted(losses, key=setting_order):
      cell = losses[setting]
      if a not in cell or b not in cell:
        continue
      diffs = paired_differences(cell[a], cell[b])
      if len(diffs):
        lines.append(f"| {a} − {b} | {grid_label(setting)} | {mean_se_interval(diffs)} | {len(diffs)} |")
        pooled.setdefault(tuple((k, v) for k, v in setting if k != "model.size"), []).append(diffs)
    for others, parts in pooled.items():
      if len(parts) > 1:  # Several sizes: one pair per (size, seed).
        diffs = np.concatenate(parts)
        lines.append(f"| {a} − {b} | {grid_label(others)}, sizes pooled | {mean_se_interval(diffs)} | "
                     f"{len(diffs)} |")
  return "\n".join(lines) if len(lines) > 2 else ""


def baseline_table(rows: list[dict], baseline_rows: list[dict]) -> str:
  """Markdown: each done run minus the baseline's run of the same size, P, seed and tokens, per
  (P, tokens) and pooled over P: mean ± SE [95 % t interval] and n pairs."""
  key = lambda r: (r.get("size"), r.get("P"), r.get("seed"), r.get("tokens"))
  base = {key(r): r["loss"] for r in baseline_rows if r.get("status") == "done"}
  cells: dict[tuple, list[float]] = {}
  for r in rows:
    if r["status"] == "done" and key(r) in base:
      diff = r["loss"] - base[key(r)]
      cells.setdefault((r["tokens"], r["P"]), []).append(diff)
      cells.setdefault((r["tokens"], "all"), []).append(diff)
  if not cells:
    return ""
  lines = ["| tokens | P | this − baseline: mean ± SE [95 % interval] | n |", "|---|---|---|---|"]
  for (tokens, p), diffs in sorted(cells.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
    lines.append(f"| {tokens} | {p} | {mean_se_interval(diffs)} | {len(diffs)} |")
  return "\n".join(lines)
