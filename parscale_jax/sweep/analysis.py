"""After a sweep: fit the law on its table, plot, and write a short report."""
from __future__ import annotations

import json
from pathlib import Path

from parscale_jax.errors import UserError


def _loss_table(rows: list[dict]) -> str:
  done = [r for r in rows if r["status"] == "done"]
  smallest = {}
  for r in done:  # Order sizes by parameter count, not by name.
    key = (r["stage"], r["size"])
    smallest[key] = min(smallest.get(key, r["N"]), r["N"])
  sizes = sorted(smallest, key=lambda key: (key[0], smallest[key]))
  ps = sorted({r["P"] for r in done})
  lines = ["| stage | size | " + " | ".join(f"P={p}" for p in ps) + " |",
           "|---|---|" + "---|" * len(ps)]
  for stage, size in sizes:
    cells = []
    for p in ps:
      runs = [r for r in done if r["stage"] == stage and r["size"] == size and r["P"] == p]
      if not runs:
        cells.append("")
        continue
      mean = sum(r["loss"] for r in runs) / len(runs)
      cells.append(f"{mean:.4f}" + (f" (n={len(runs)})" if len(runs) > 1 else ""))
    lines.append(f"| {stage} | {size} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def analyze_sweep(spec, results_dir: Path, rows: list[dict], log=print) -> Path:
  from parscale_jax.analysis.cli import run_fit
  from parscale_jax.analysis.plots import plot_all
  from parscale_jax.analysis.report import fit_markdown
  from parscale_jax.analysis.results import FitResult

  results_dir = Path(results_dir)
  stages = spec.analysis.fit_stages or spec.stages
  fit_rows = [r for r in rows if r["stage"] in stages]
  table = results_dir / "fit_input.jsonl"
  table.write_text("".join(json.dumps(r) + "\n" for r in fit_rows))
  failed = [r for r in rows if r["status"] == "failed"]
  pending = [r for r in rows if r["status"] not in ("done", "failed")]
  text = [f"# Sweep `{spec.name}`", "",
          f"{len(rows) - len(failed) - len(pending)} runs done, {len(failed)} failed, "
          f"{len(pending)} not finished. Table: `table.csv`. Loss: validation loss in nats per token.",
          "", _loss_table(rows), ""]
  for r in failed:
    text.append(f"- failed: `{r['run_id']}`: {r['reason']}")
  fit_dir = results_dir / "fit"
  try:
    doc = run_fit(str(table), fit_dir, group_by="stage" if len(stages) > 1 else None,
                  n_bootstrap=spec.analysis.bootstrap, weights=spec.analysis.weights, log=log)
    plot_all(FitResult(doc), fit_dir)
    text += ["", "## Fitted law", "", fit_markdown(doc, plots_dir="fit")]
  except UserError as e:
    text += ["", f"No fit: {e}"]
    log(f"no fit: {e}")
  report = results_dir / "report.md"
  report.write_text("\n".join(text) + "\n")
  return report
