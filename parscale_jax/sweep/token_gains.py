"""How the streams' gain moves with training tokens (a budget ladder's question), under both
parameter counts: against P = 1 of the same backbone, and against P = 1 of the same total
parameters (every parameter counted, the paper's convention), read off the P = 1 runs of the
sizes joined in ln N, per seed and budget."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from parscale_jax import figures
from parscale_jax.analysis.plots import value_colors
from parscale_jax.figures import plt
from parscale_jax.stats import mean_se_interval, standard_error
from parscale_jax.sweep.contrasts import PAIRING_AXES, grid_setting

MIN_BUDGETS = 3  # A slope through two points has no residual to check it by.


def _done(rows: list[dict]) -> list[dict]:
  return [r for r in rows if r["status"] == "done" and r.get("tokens")]


def _variant(row: dict) -> str:
  """The run's named variant, or in a grid over P without variants, `P=<P>`."""
  return row.get("grid.variant") or f"P={row['P']}"


def _others(row: dict) -> tuple:
  """The row's grid values besides variant (or P), seed, size and budget: one table block each."""
  return grid_setting(row, leave_out=(*PAIRING_AXES, "model.P", "model.size", "tokens"))


def baseline_variant(rows: list[dict]) -> str | None:
  """The variant (or `P=1` in a grid over P) that is plain P = 1 (no ParScale parameters: N equals
  N_backbone); None unless exactly one is."""
  plain: dict[str, bool] = {}
  for r in _done(rows):
    ok = r.get("P") == 1 and r.get("N") == r.get("N_backbone")
    plain[_variant(r)] = plain.get(_variant(r), True) and ok
  names = [v for v, ok in plain.items() if ok]
  return names[0] if len(names) == 1 else None


def _p1_at(points: list[tuple[float, float]], n: float) -> float:
  """P = 1's loss at N = n from its (N, loss) runs sorted by N: straight lines in ln N between
  neighbouring sizes (P = 1's gain per e-fold of N shrinks with N: one line through all of them
  would misread the ends), the end segment extended beyond them."""
  ln_n = np.log([size_n for size_n, _ in points])
  loss = np.array([size_loss for _, size_loss in points])
  i = int(np.clip(np.searchsorted(ln_n, math.log(n)) - 1, 0, len(points) - 2))
  slope = (loss[i + 1] - loss[i]) / (ln_n[i + 1] - ln_n[i])
  return float(loss[i] + slope * (math.log(n) - ln_n[i]))


def matched_differences(rows: list[dict], baseline: str) -> dict[tuple, dict[str, dict]]:
  """{(others, tokens): {variant: {(size, seed): (same backbone, same total parameters)}}}: each
  run's loss minus P = 1's at its backbone, and minus P = 1's at its total N, the latter read off
  the P = 1 runs of its seed and budget joined in ln N (two or more sizes needed)."""
  base: dict[tuple, dict[str, dict]] = {}
  for r in _done(rows):
    if _variant(r) == baseline:
      base.setdefault((_others(r), r["tokens"], r["seed"]), {})[r["size"]] = (r["N"], r["loss"])
  out: dict[tuple, dict[str, dict]] = {}
  for r in _done(rows):
    if _variant(r) == baseline:
      continue
    sizes = base.get((_others(r), r["tokens"], r["seed"]), {})
    if r["size"] not in sizes or len(sizes) < 2:
      continue
    same_total = r["loss"] - _p1_at(sorted(sizes.values()), r["N"])
    cell = out.setdefault((_others(r), r["tokens"]), {}).setdefault(_variant(r), {})
    cell[(r["size"], r["seed"])] = (r["loss"] - sizes[r["size"]][1], same_total)
  return out


def matched_table(rows: list[dict]) -> str:
  """Markdown: per variant and budget, its loss minus P = 1's with the same backbone and with the
  same total parameters; mean ± SE [95 % t interval] over the seeds of each size, and over the
  (size, seed) pairs with the sizes pooled."""
  baseline = baseline_variant(rows)
  cells = matched_differences(rows, baseline) if baseline else {}
  backbone_n = {r["size"]: r.get("N_backbone") or 0 for r in _done(rows)}  # Older tables lack it.
  lines = [f"| A | setting | A − {baseline}, same backbone | A − {baseline}, same total parameters | n |",
           "|---|---|---|---|---|"]

  def line(variant: str, label: str, pairs: list[tuple[float, float]]) -> str:
    backbone, total = np.array(pairs).T
    return (f"| {variant} | {label} | {mean_se_interval(backbone)} | {mean_se_interval(total)} "
            f"| {len(pairs)} |")

  for (others, tokens), variants in sorted(cells.items()):
    label = ", ".join([f"{k}={v}" for k, v in others] + [f"tokens={tokens}"])
    for variant, pairs in sorted(variants.items()):
      sizes = sorted({size for size, _ in pairs}, key=lambda size: backbone_n[size])
      for size in sizes:
        lines.append(line(variant, f"size={size}, {label}",
                          [v for (sz, _), v in sorted(pairs.items()) if sz == size]))
      if len(sizes) > 1:
        lines.append(line(variant, f"{label}, sizes pooled", [v for _, v in sorted(pairs.items())]))
  return "\n".join(lines) if len(lines) > 2 else ""


def _slope(points: dict[int, float]) -> float | None:
  """Least-squares change per doubling of tokens through (tokens, value); None below MIN_BUDGETS."""
  if len(points) < MIN_BUDGETS:
    return None
  tokens = sorted(points)
  return float(np.polyfit(np.log2(tokens), [points[t] for t in tokens], 1)[0])


def trend_table(rows: list[dict], contrasts) -> str:
  """Markdown: the change of each A − B per doubling of training tokens: per (size, seed), the
  least-squares slope of the paired difference against log2(tokens) over its budgets (at least
  MIN_BUDGETS); mean ± SE [95 % t interval] over (size, seed), per size and sizes pooled. A − P = 1
  also against P = 1 of A's total parameters. Negative: A's lead grows with tokens."""
  done = _done(rows)
  loss = {(_others(r), _variant(r), r["size"], r["seed"], r["tokens"]): r["loss"] for r in done}
  baseline = baseline_variant(rows)
  matched = matched_differences(rows, baseline) if baseline else {}
  series: dict[tuple, dict[tuple, dict[int, float]]] = {}  # (contrast, count, others) -> unit -> points
  for a, b in contrasts:
    for (others, variant, size, seed, tokens), value in loss.items():
      other = loss.get((others, b, size, seed, tokens))
      if variant == a and other is not None:
        unit = series.setdefault((f"{a} − {b}", "same backbone", others), {})
        unit.setdefault((size, seed), {})[tokens] = value - other
    if b != baseline:
      continue
    for (others, tokens), variants in matched.items():
      for key, (_, total) in variants.get(a, {}).items():
        unit = series.setdefault((f"{a} − {b}", "same total parameters", others), {})
        unit.setdefault(key, {})[tokens] = total
  lines = ["| A − B | count | setting | change per doubling of tokens: mean ± SE [95 % interval] | n |",
           "|---|---|---|---|---|"]
  for (name, count, others), units in series.items():
    slopes = {key: s for key, points in units.items() if (s := _slope(points)) is not None}
    label = ", ".join(f"{k}={v}" for k, v in others)
    sizes = sorted({size for size, _ in slopes})
    for size in sizes:
      values = [s for (sz, _), s in sorted(slopes.items()) if sz == size]
      lines.append(f"| {name} | {count} | {', '.join(filter(None, [label, f'size={size}']))} | "
                   f"{mean_se_interval(values)} | {len(values)} |")
    if len(sizes) > 1:
      values = [s for _, s in sorted(slopes.items())]
      lines.append(f"| {name} | {count} | {', '.join(filter(None, [label, 'sizes pooled']))} | "
                   f"{mean_se_interval(values)} | {len(values)} |")
  return "\n".join(lines) if len(lines) > 2 else ""


def plot_gains(rows: list[dict], out: Path) -> list[Path]:
  """gains_vs_D.png and .pdf in `out`: each variant minus P = 1 against training tokens, a colour
  per variant and a marker per size (mean ± SE over seeds), under both counts side by side; none
  (and an old plot removed) without the baseline at two sizes and two budgets."""
  baseline = baseline_variant(rows)
  cells = matched_differences(rows, baseline) if baseline else {}
  if len({tokens for _, tokens in cells}) < 2:  # Not a trend without two budgets.
    for path in figures.figure_paths(out, "gains_vs_D"):
      path.unlink(missing_ok=True)
    return []
  series: dict[tuple, dict[int, list]] = {}  # (others, variant, size) -> tokens -> [(backbone, total)]
  for (others, tokens), variants in cells.items():
    for variant, pairs in variants.items():
      for (size, _), values in pairs.items():
        series.setdefault((others, variant, size), {}).setdefault(tokens, []).append(values)
  settings = sorted({others for others, _, _ in series})
  sizes = sorted({size for _, _, size in series})
  colours = value_colors(sorted({variant for _, variant, _ in series}))
  fig, axes = plt.subplots(len(settings), 2, figsize=(11, 3.8 * len(settings)), squeeze=False, sharey="row")
  for row, others in enumerate(settings):
    for column, count in enumerate(("same backbone", "same total parameters")):
      ax = axes[row, column]
      ax.axhline(0, color="grey", lw=0.8)
      for (setting, variant, size), points in sorted(series.items()):
        if setting != others:
          continue
        tokens = sorted(points)
        values = [np.array(points[t])[:, column] for t in tokens]
        sem = np.nan_to_num([standard_error(v) for v in values])  # One seed: no bar.
        ax.errorbar(tokens, [v.mean() for v in values], yerr=sem, marker="os^D"[sizes.index(size) % 4],
                    ms=4, capsize=2, lw=1, color=colours[variant],
                    ls=("-", "--", ":", "-.")[sizes.index(size) % 4], label=f"{variant}, {size}")
      figures.token_axis(ax, {t for (setting, _, _), points in series.items() if setting == others
                              for t in points})
      ax.set_ylabel(f"loss − {baseline} (nats)")
      title = ", ".join(f"{k}={v}" for k, v in others)
      ax.set_title(f"{title + ': ' if title else ''}against {baseline} of the {count}\n"
                   "(below 0: the variant is better; bars: ± SE over seeds)", fontsize=9)
    axes[row, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  return figures.save(fig, out, "gains_vs_D", dpi=110)
