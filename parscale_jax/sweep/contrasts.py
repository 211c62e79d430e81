"""Variant contrasts of a sweep (analysis.contrasts): A minus B paired by seed at each setting of
the other grid axes, and the stream diversity (rho) of its P > 1 runs."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from parscale_jax.analysis.results import paper_law
from parscale_jax.atomic import write_text_atomic
from parscale_jax.rundir import DIVERSITY, ResultsDir, local_or_published
from parscale_jax.stats import mean_se_interval, paired_differences, standard_error
from parscale_jax.sweep.comparisons import setting_order


PAIRING_AXES = ("variant", "seed")


def grid_setting(row: dict, leave_out: tuple[str, ...] = PAIRING_AXES) -> tuple:
  """The row's grid values other than the axes in `leave_out` (variant and seed: the pairing),
  as sorted (axis, value) pairs."""
  skip = {f"grid.{axis}" for axis in leave_out}
  return tuple(sorted((k[5:], row[k]) for k in row
                      if k.startswith("grid.") and k not in skip and row[k] not in (None, "")))


def _label(setting: tuple) -> str:
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
        lines.append(f"| {a} − {b} | {_label(setting)} | {mean_se_interval(diffs)} | {len(diffs)} |")
        pooled.setdefault(tuple((k, v) for k, v in setting if k != "model.size"), []).append(diffs)
    for others, parts in pooled.items():
      if len(parts) > 1:  # Several sizes: one pair per (size, seed).
        diffs = np.concatenate(parts)
        lines.append(f"| {a} − {b} | {_label(others)}, sizes pooled | {mean_se_interval(diffs)} | "
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


def diversity_table(rows: list[dict], results_dir: Path, published: Path | None) -> str:
  """Markdown: rho, the best single stream's loss above the aggregate's, and the predicted
  multiplier per setting and variant, mean ± SE over the seeds whose runs have a diversity.json."""
  cells: dict[tuple, list[dict]] = {}
  for r in rows:
    if r["status"] != "done" or not r.get("grid.variant"):
      continue
    found = local_or_published(results_dir, published, r["run_id"], needs=DIVERSITY)
    if found is not None:
      doc = json.loads(found.diversity.read_text())
      cells.setdefault((grid_setting(r), r["grid.variant"]), []).append(doc)
  if not cells:
    return ""
  lines = ["| setting | variant | rho | best stream − aggregate loss | predicted N multiplier | n |",
           "|---|---|---|---|---|---|"]
  for (setting, variant), docs in sorted(cells.items(), key=lambda kv: (setting_order(kv[0][0]), kv[0][1])):
    rho = [d["rho"] for d in docs]
    gap = [min(d["stream_losses"]) - d["aggregate_loss"] for d in docs]
    mult = [d["predicted_multiplier"] for d in docs]
    fmt = lambda v: f"{np.mean(v):.4f}" + (f" ± {standard_error(v):.4f}" if len(v) > 1 else "")
    lines.append(f"| {_label(setting)} | {variant} | {fmt(rho)} | {fmt(gap)} | {fmt(mult)} | {len(docs)} |")
  return "\n".join(lines)


DIVERSITY_TOKENS = 65536  # Validation tokens per run: rho's SE over tokens is far below its seed SD.


def measure_diversity(spec, results_dir: Path, rows: list[dict], published: Path | None,
                      log=print) -> None:
  """Writes diversity.json (stream losses, rho) beside each finished P > 1 run that has its final
  model here and no diversity.json yet, and publishes it with the run."""
  from parscale_jax.sweep.table import publish_run
  from parscale_jax.train.evaluate import diversity_checkpoint

  alpha = None
  by_id = {r.run_id: r for r in spec.runs}
  for row in rows:
    run_dir = ResultsDir(results_dir).run(row["run_id"])
    if row["status"] != "done" or (row.get("P") or 1) < 2 or run_dir.diversity.exists() or not run_dir.exported:
      continue
    alpha = alpha or paper_law().alpha
    data = by_id[row["run_id"]].train_config(Path(results_dir)).data
    data = dataclasses.replace(data, val_tokens=min(data.val_tokens, DIVERSITY_TOKENS))
    doc = diversity_checkpoint(run_dir.path, data, alpha)
    write_text_atomic(run_dir.diversity, json.dumps(doc, indent=1) + "\n")
    log(f"{row['run_id']}: rho={doc['rho']:.4f}")
    if published is not None:
      publish_run(results_dir, row["run_id"], published)
