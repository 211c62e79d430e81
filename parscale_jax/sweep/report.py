"""After a sweep: the fit, plots and report, and their publication where the notebook reads them."""
from __future__ import annotations

from pathlib import Path

from parscale_jax import figures
from parscale_jax.analysis.results import FitResult, write_fit
from parscale_jax.atomic import copy_file_atomic, write_text_atomic
from parscale_jax.errors import UserError
from parscale_jax.rundir import REPORT, SWEEP_MARK, TABLE, ResultsDir
from parscale_jax.sweep.comparisons import (axis_comparison, loss_table, pooled_p_gain, setting_label,
                                            stage_comparison)
from parscale_jax.sweep.contrasts import baseline_table, contrast_table
from parscale_jax.sweep.diversity import (diversity_cells, diversity_table, measure_diversity,
                                          plot_rho_vs_tokens)
from parscale_jax.sweep.token_gains import matched_table, plot_gains, trend_table
from parscale_jax.tablefile import read_table


def analyze_sweep(spec, results_dir: Path, rows: list[dict], log=print) -> Path:
  from parscale_jax.sweep.calibration import settings_table
  from parscale_jax.sweep.curves import plot_curves

  results_dir = Path(results_dir)
  if spec.publish_dir is not None:
    refuse_to_shrink(rows, spec.publish_dir)
  stages = spec.analysis.fit_stages or spec.stages
  fit_rows = [r for r in rows if r["stage"] in stages]
  failed = [r for r in rows if r["status"] == "failed"]
  pending = [r for r in rows if r["status"] not in ("done", "failed")]
  text = [f"# Sweep `{spec.name}`", "",
          f"{len(rows) - len(failed) - len(pending)} runs done, {len(failed)} failed, "
          f"{len(pending)} not finished. Table: `table.csv`. Loss: validation loss in nats per token.",
          "", loss_table(rows), ""]
  for r in failed:
    text.append(f"- failed: `{r['run_id']}`: {r['reason']}")
  gain = pooled_p_gain(rows, stages[0])
  if gain:
    text += ["## P streams against one, pooled over sizes", "", gain, ""]
  # Both counts and the gains' trend pair runs within one stage: the first, as the pooled gain.
  first_stage = [r for r in rows if r["stage"] == stages[0]]
  matched = matched_table(first_stage)
  if matched:
    text += ["## Both parameter counts", "", "Each variant (or P) minus P = 1 of the same seed and "
             "budget: with the same backbone, and with the same total parameters (every parameter "
             "counted, as the paper does), P = 1's loss read at the run's N off the P = 1 runs of "
             "that seed and budget, neighbouring sizes joined by straight lines in ln N (beyond the "
             "sizes, the end one extended). Pairs over (size, seed).", "", matched, ""]
  comparison = stage_comparison(rows, stages[0])
  if comparison:
    text += ["## Stages compared", "", comparison]
  settings = settings_table(rows)
  if settings and len({r["stage"] for r in rows}) > 1:
    text += ["## Settings compared", "", "Validation loss differences paired by seed; ± is the "
             "standard error over pairs, seed SD the pooled standard deviation of a cell's seeds.",
             "", settings, ""]
  by_axis = axis_comparison(rows)
  if by_axis and not spec.analysis.contrasts:
    text += ["## Grid axes compared", "", by_axis]
  gains_plot = plot_gains(first_stage, results_dir)  # Also removes an old one that no longer applies.
  cells = {}  # Stream diversity, measured where variants are contrasted.
  if spec.analysis.contrasts:
    measure_diversity(spec, results_dir, rows, spec.publish_dir, log)
    cells = diversity_cells(rows, results_dir, spec.publish_dir)
  rho_plot = plot_rho_vs_tokens(cells, results_dir)  # As gains_vs_D: an old one that no longer applies goes.
  if spec.analysis.contrasts:
    text += ["## Variants compared", "", "Validation loss (nats per token) of A minus B, paired by "
             "seed; ± is the standard error over pairs, the interval Student's t at 95 %.", "",
             contrast_table(rows, spec.analysis.contrasts), ""]
    trend = trend_table(first_stage, spec.analysis.contrasts)
    if trend:
      text += ["## Gains against tokens", "", "Change of A − B per doubling of training tokens: per "
               "(size, seed), the least-squares slope of the paired difference against log2(tokens) "
               "over its budgets (three or more); mean ± SE [95 % t interval] over them. Negative: "
               "A's lead over B grows with tokens.", "", trend, ""]
    if gains_plot:
      text += ["![each variant minus P = 1 against tokens, under both counts](gains_vs_D.png)", ""]
    if cells:
      text += ["## Stream diversity", "", "rho: mean pairwise correlation over validation tokens of "
               "the streams' residuals 1 − p(next token) (`parscale diversity`); the multiplier is "
               "(P / (1 + (P − 1) rho))^(1/alpha) with the paper's alpha.", "", diversity_table(cells), ""]
      if rho_plot:
        text += ["![rho against tokens, per size and variant](rho_vs_D.png)", ""]
  if spec.analysis.compare_to:
    folder = spec.path.parent / spec.analysis.compare_to
    against = baseline_table(rows, read_table(ResultsDir(folder).table))
    if against:
      text += [f"## Against {folder.name}", "", f"Validation loss of each run minus `{folder.name}`'s "
               "run of the same size, P, seed and tokens (nats per token), paired; ± is the standard "
               "error over pairs, the interval Student's t at 95 %.", "", against, ""]
  if plot_curves(results_dir, rows, results_dir, spec.publish_dir):
    text += ["## Training curves", "", "![training loss against tokens](curves.png)", ""]
  if spec.analysis.fit:
    text += fit_section(spec, results_dir / "fit", fit_rows, log)
  report = results_dir / REPORT
  write_text_atomic(report, "\n".join(text) + "\n")
  if spec.publish_dir is not None:
    publish(results_dir, spec.publish_dir, log)
  return report


def refuse_to_shrink(rows: list[dict], target: Path) -> None:
  """A published folder whose table has finished runs that are not finished here (their run
  folders neither here nor published, as in a table published before runs were) is not replaced
  by a report on fewer runs."""
  table = Path(target) / TABLE
  if not table.exists():
    return
  here = {r["run_id"]: r["status"] for r in rows}
  lost = [r["run_id"] for r in read_table(table)
          if r.get("status") == "done" and here.get(r["run_id"], "done") != "done"]
  if lost:
    raise UserError(f"{target} holds {len(lost)} finished runs that are not finished here (first: "
                    f"{lost[0]}) and not published as run folders; nothing was analysed or published: "
                    f"train them (parscale sweep run) or set analysis.publish to another folder")


def publish(results_dir: Path, target: Path, log=print) -> None:
  """Copies the table, report, fit and training curves where the notebooks read them; stale
  plots and fit files go."""
  target.mkdir(parents=True, exist_ok=True)
  copy_file_atomic(results_dir / TABLE, target / TABLE)
  # The fit's files sit beside the report there, not in fit/.
  write_text_atomic(target / REPORT, (results_dir / REPORT).read_text().replace("](fit/", "]("))
  for old in target.iterdir():
    if old.suffix in (".json", ".png", ".pdf") and old.name != SWEEP_MARK:  # Not the owner's mark.
      old.unlink()
  fit_dir = results_dir / "fit"
  plots = [path for name in ("curves", "gains_vs_D", "rho_vs_D")
           for path in figures.figure_paths(results_dir, name) if path.exists()]
  if fit_dir.is_dir():
    plots += list(fit_dir.iterdir())
  for path in plots:
    copy_file_atomic(path, target / path.name)
  log(f"published: {target}")


def fit_section(spec, fit_dir: Path, fit_rows: list[dict], log) -> list[str]:
  """The fitted law's report lines, or the reason there is none. N counts every parameter (the
  paper's count) unless analysis.n_column says otherwise; where ParScale's own parameters make the
  two counts differ, the law is also fitted under the other (fit_<count>.json), and shown second."""
  from parscale_jax.analysis.fit_table import fit_table
  from parscale_jax.analysis.plots import plot_all
  from parscale_jax.analysis.report import fit_markdown

  # One law per setting (stage and any grid axis besides size, P, seed and token budget): runs
  # that differ in, say, learning rate are never averaged as if they were seeds. Budgets are the
  # law's D; the variants named in fit_variants (each only a P) are one grid.
  if spec.analysis.fit_variants:
    fit_rows = [{k: v for k, v in r.items() if k != "grid.variant"} for r in fit_rows
                if r.get("grid.variant") in spec.analysis.fit_variants]
  fit_rows = [dict(r, setting=setting_label({k: v for k, v in r.items() if k != "grid.tokens"}))
              for r in fit_rows]
  several = len({r["setting"] for r in fit_rows}) > 1
  primary = spec.analysis.n_column
  other = "N_backbone" if primary == "N" else "N"
  fit = lambda column, out: fit_table(
      fit_rows, out, group_by="setting" if several else None, n_bootstrap=spec.analysis.bootstrap,
      weights=spec.analysis.weights, n_column=column, log=log)
  try:
    doc = fit(primary, fit_dir)
    plot_all(FitResult(doc), fit_dir)
  except UserError as e:
    log(f"no fit: {e}")
    return ["", f"No fit: {e}"]
  lines = ["", "## Fitted law", "", fit_markdown(doc, plots_dir="fit")]
  (fit_dir / f"fit_{other}.json").unlink(missing_ok=True)
  done = [r for r in fit_rows if r["status"] == "done"]
  if any(r.get("N") != r.get("N_backbone") for r in done):
    try:
      second = fit(other, None)
    except UserError as e:
      lines += ["", f"## The law with N = {other}", "", f"No fit: {e}"]
    else:
      write_fit(second, fit_dir / f"fit_{other}.json")
      lines += ["", f"## The law with N = {other} (`fit_{other}.json`)", "",
                fit_markdown(second, plots_dir=None)]
  return lines
