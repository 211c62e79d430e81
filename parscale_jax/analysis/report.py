"""A short markdown report of a fit.json."""
from __future__ import annotations

from pathlib import Path

from parscale_jax.atomic import write_text_atomic
from parscale_jax.rundir import REPORT


def _ci(g, key):
  ci = g.get("ci95", {}).get(key)
  return f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""


def verdict(name: str, g: dict) -> str:
  """One line: whether the group identifies the law, and what it says about k."""
  if not g.get("identified", True):
    return f"**{name}: law not identified**: {'; '.join(g['not_identified'])}. No claim about k."
  ci = g.get("ci95", {}).get("k")
  if not ci:
    return f"{name}: k = {g['k']:.3g} (no bootstrap, so no interval)."
  if g.get("k_excludes_zero"):
    return (f"{name}: k = {g['k']:.3g}, 95 % interval [{ci[0]:.3g}, {ci[1]:.3g}], above 0: "
            f"P streams are worth more parameters, R² {g['r2']:.3f}.")
  return (f"{name}: k = {g['k']:.3g}, 95 % interval [{ci[0]:.3g}, {ci[1]:.3g}] includes 0: "
          f"no gain from P streams is resolved.")


def fit_markdown(doc: dict, plots_dir: str | None = ".") -> str:
  """The fit as markdown; plots_dir: where its PNGs are linked from (None: no links)."""
  lines = [f"Law: `{doc['law']}` (N: {doc['N']}). Source: `{doc['source']}`.", "",
           *[verdict(name, g) + "  " for name, g in doc["groups"].items()], "",
           "| group | points | E | A | alpha | k | objective | R² |", "|---|---|---|---|---|---|---|---|"]
  for name, g in doc["groups"].items():
    lines.append(f"| {name} | {g['n_points']} | {g['E']:.4g}{_ci(g, 'E')} | {g['A']:.4g}{_ci(g, 'A')} "
                 f"| {g['alpha']:.4g}{_ci(g, 'alpha')} | {g['k']:.4g}{_ci(g, 'k')} "
                 f"| {g['objective']:.4e} | {g['r2']:.4f} |")
  lines += ["", "Brackets: bootstrap 95 % intervals. The paper's k: 0.39 on Stack-V2-Python, 0.33 on "
            "the Pile (0.5B to 4.4B parameters, 42B tokens).", ""]
  for name, g in doc["groups"].items():
    if "decreasing_in_N" in g:
      flat = [p for p, ok in g["decreasing_in_N"].items() if not ok]
      lines.append(f"{name}: loss strictly decreasing in N at every P." if not flat else
                   f"{name}: loss not strictly decreasing in N at P = {', '.join(flat)}.")
  # Multipliers only at the P the fit saw: beyond them the law is an extrapolation.
  fitted = [max((p["P"] for p in g.get("points", [])), default=8) for g in doc["groups"].values()]
  ps = [p for p in ("2", "4", "8") if int(p) <= max(fitted)]
  lines += ["",
            "Equivalent-parameter multiplier k·ln P + 1 (P streams are worth this many times the parameters):", "",
            "| group | " + " | ".join(f"P={p}" for p in ps) + " | k > 0 (95 %) |",
            "|---|" + "---|" * len(ps) + "---|"]
  for name, g in doc["groups"].items():
    if not g.get("identified", True):  # The optimum's multipliers would read as a finding.
      lines.append(f"| {name} | " + "– | " * len(ps) + "not identified |")
      continue
    cells = []
    for p in ps:
      ci = g.get("multiplier_ci95", {}).get(p)
      cells.append(f"{g['multiplier'][p]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    excludes = g.get("k_excludes_zero")
    lines.append(f"| {name} | {' | '.join(cells)} | "
                 f"{'not identified' if excludes is None and 'ci95' in g else excludes if excludes is not None else 'n/a'} |")
  for name, g in doc["groups"].items():
    if "extrapolation" in g:
      e = g["extrapolation"]
      lines += ["", f"Extrapolation ({name}): fitted without the largest size, its losses are predicted "
                f"with mean absolute error {e['mean_abs_error']:.4f} (max {e['max_abs_error']:.4f}, "
                f"{100 * e['mean_rel_error']:.2f} % relative)."]
    if "comparison" in g:
      c = g["comparison"]
      lines += ["", f"Competing forms ({name}); best by AIC: **{c['best_by_aic']}**, best held-out "
                f"(leave one size out): **{c['best_by_loso']}**", "",
                "| form | objective | R² | AIC | LOSO RMSE |", "|---|---|---|---|---|"]
      for form, r in c["forms"].items():
        lines.append(f"| {form} | {r['objective']:.4e} | {r['r2']:.4f} | {r['aic']:.2f} | {r['loso_rmse']:.4f} |")
  lines += token_axis_lines(doc)
  if plots_dir is not None:
    if any("data_term" in g for g in doc["groups"].values()):
      lines += ["", f"![loss vs D]({plots_dir}/loss_vs_D.png)"]
    lines += ["", f"![loss vs N]({plots_dir}/loss_vs_N.png)", f"![loss vs P]({plots_dir}/loss_vs_P.png)",
              f"![multiplier]({plots_dir}/multiplier.png)", f"![residuals]({plots_dir}/residuals.png)"]
  return "\n".join(lines) + "\n"


def token_axis_lines(doc: dict) -> list[str]:
  """The laws with a data term, for groups fitted over several token budgets."""
  lines = []
  for name, g in doc["groups"].items():
    if "data_term" not in g:
      continue
    t = g["data_term"]
    lines += ["", f"Token axis ({name}): the law above is fitted at the longest budget, D = "
              f"{g['tokens']:.4g} tokens. Over every budget ({', '.join(f'{d:.3g}' for d in t['budgets'])}):", "",
              "| form | parameters (95 % intervals) | R² | AIC | longest budget predicted from the shorter (MAE) | identified |",
              "|---|---|---|---|---|---|"]
    for form, r in t["forms"].items():
      if "skipped" in r:
        lines.append(f"| {form} | skipped: {r['skipped']} | | | | |")
        continue
      params = ", ".join(f"{k} {v:.3g}{_ci(r, k)}" for k, v in r["params"].items())
      held = r.get("longest_budget_from_shorter", {}).get("mean_abs_error")
      lines.append(f"| {form} | {params} | {r['r2']:.4f} | {r['aic']:.2f} | "
                   f"{'–' if held is None else f'{held:.4f}'} | "
                   f"{'yes' if r['identified'] else 'no: ' + '; '.join(r['not_identified'])} |")
    lines += ["", "Formulas: " + "; ".join(f"{form}: `{r['formula']}`" for form, r in t["forms"].items()),
              "D in tokens; B in units of 1e9 tokens; D_rho in millions of tokens."]
  return lines


def write_report(doc: dict, out: Path, title: str, preamble: str = "") -> Path:
  path = Path(out) / REPORT
  write_text_atomic(path, f"# {title}\n\n{preamble}{fit_markdown(doc)}")
  return path
