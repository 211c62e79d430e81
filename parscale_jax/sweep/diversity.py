"""Stream diversity of a sweep's P > 1 runs: rho (`parscale diversity`) measured beside each
finished run and published with it, tabled per setting and variant, and drawn against training
tokens where the sweep has several budgets."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from parscale_jax import figures
from parscale_jax.analysis.plots import value_colors
from parscale_jax.analysis.results import paper_law
from parscale_jax.atomic import write_text_atomic
from parscale_jax.figures import plt
from parscale_jax.rundir import DIVERSITY, ResultsDir, local_or_published
from parscale_jax.stats import standard_error
from parscale_jax.sweep.comparisons import setting_order, value_order
from parscale_jax.sweep.contrasts import grid_label, grid_setting

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
    if (row["status"] != "done" or (row.get("P") or 1) < 2 or run_dir.diversity.exists()
        or not run_dir.exported):
      continue
    alpha = alpha or paper_law().alpha
    data = by_id[row["run_id"]].train_config(Path(results_dir)).data
    data = dataclasses.replace(data, val_tokens=min(data.val_tokens, DIVERSITY_TOKENS))
    doc = diversity_checkpoint(run_dir.path, data, alpha)
    write_text_atomic(run_dir.diversity, json.dumps(doc, indent=1) + "\n")
    log(f"{row['run_id']}: rho={doc['rho']:.4f}")
    if published is not None:
      publish_run(results_dir, row["run_id"], published)


def diversity_cells(rows: list[dict], results_dir: Path, published: Path | None) -> dict[tuple, list[dict]]:
  """{(setting, variant): diversity.json documents of its seeds}, from each finished run's folder
  here, else its published copy."""
  cells: dict[tuple, list[dict]] = {}
  for r in rows:
    if r["status"] != "done" or not r.get("grid.variant"):
      continue
    found = local_or_published(results_dir, published, r["run_id"], needs=DIVERSITY)
    if found is not None:
      doc = json.loads(found.diversity.read_text())
      cells.setdefault((grid_setting(r), r["grid.variant"]), []).append(doc)
  return cells


def diversity_table(cells: dict[tuple, list[dict]]) -> str:
  """Markdown: rho, the best single stream's loss above the aggregate's, and the predicted
  multiplier per setting and variant, mean ± SE over the seeds."""
  if not cells:
    return ""
  lines = ["| setting | variant | rho | best stream − aggregate loss | predicted N multiplier | n |",
           "|---|---|---|---|---|---|"]
  for (setting, variant), docs in sorted(cells.items(), key=lambda kv: (setting_order(kv[0][0]), kv[0][1])):
    rho = [d["rho"] for d in docs]
    gap = [min(d["stream_losses"]) - d["aggregate_loss"] for d in docs]
    mult = [d["predicted_multiplier"] for d in docs]
    fmt = lambda v: f"{np.mean(v):.4f}" + (f" ± {standard_error(v):.4f}" if len(v) > 1 else "")
    lines.append(f"| {grid_label(setting)} | {variant} | {fmt(rho)} | {fmt(gap)} | {fmt(mult)} "
                 f"| {len(docs)} |")
  return "\n".join(lines)


def plot_rho_vs_tokens(cells: dict[tuple, list[dict]], out: Path) -> list[Path]:
  """rho_vs_D.png and .pdf in `out`: rho against training tokens, a panel per setting of the other
  grid axes (each size), a line per variant (mean ± SE over seeds); none (and an old plot removed)
  without two budgets."""
  series: dict[tuple, dict[str, dict[int, list[float]]]] = {}  # others -> variant -> tokens -> rho
  for (setting, variant), docs in cells.items():
    tokens = dict(setting).get("tokens")
    if tokens is not None:
      others = tuple((k, v) for k, v in setting if k != "tokens")
      series.setdefault(others, {}).setdefault(variant, {})[int(tokens)] = [d["rho"] for d in docs]
  if len({t for variants in series.values() for points in variants.values() for t in points}) < 2:
    for path in figures.figure_paths(out, "rho_vs_D"):
      path.unlink(missing_ok=True)
    return []
  panels = sorted(series, key=setting_order)
  colours = value_colors(sorted({v for variants in series.values() for v in variants}, key=value_order))
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False, sharey="row")
  for ax, others in zip(axes[0], panels):
    for variant, points in sorted(series[others].items(), key=lambda kv: value_order(kv[0])):
      tokens = sorted(points)
      sem = np.nan_to_num([standard_error(points[t]) for t in tokens])  # One seed: no bar.
      ax.errorbar(tokens, [np.mean(points[t]) for t in tokens], yerr=sem, marker="o", ms=4, capsize=2,
                  lw=1, color=colours[variant], label=variant)
    figures.token_axis(ax, {t for points in series[others].values() for t in points})
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("rho (streams' residual correlation)")
    ax.set_title(f"{grid_label(others)}\n(1: the streams are alike; bars: ± SE over seeds)", fontsize=9)
    ax.legend(fontsize=7)
  return figures.save(fig, out, "rho_vs_D", dpi=110)
