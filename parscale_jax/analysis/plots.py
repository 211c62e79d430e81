"""Plots of a fit.json: loss vs N per P, loss vs P per size, the multiplier with its band,
residuals. Each is written as PNG and PDF; one panel per group."""
from __future__ import annotations

from pathlib import Path
import textwrap
import warnings

import matplotlib.ticker
import numpy as np

from parscale_jax import figures
from parscale_jax.analysis import law as law_forms
from parscale_jax.analysis.results import FitResult, NotIdentifiedWarning
from parscale_jax.analysis.tables import Points
from parscale_jax.figures import plt


def _panels(fit: FitResult, title: str):
  groups = fit.groups
  width = 5.6 * len(groups)
  fig, axes = plt.subplots(1, len(groups), figsize=(width, 4.4), squeeze=False)
  # Wrapped to the figure's width, so that a one-panel figure's title is never cut off.
  fig.suptitle("\n".join(textwrap.wrap(title, int(width * 9))), fontsize=10)
  return fig, [(g, fit.doc["groups"][g], fit.law(g), ax) for g, ax in zip(groups, axes[0])]


def _status(g) -> str:
  return "" if g.get("identified", True) else " (law not identified)"


def _clip_to_data(ax, values, margin: float = 0.25):
  """y limits from the observed values, so that a runaway fit cannot stretch the axis to 1e25."""
  lo, hi = float(np.min(values)), float(np.max(values))
  pad = margin * max(hi - lo, 1e-3 * max(abs(hi), 1.0))
  ax.set_ylim(lo - pad, hi + pad)


def _points(g):
  pts = g["points"]
  return (np.array([p["N"] for p in pts]), np.array([p["P"] for p in pts]),
          np.array([p["loss"] for p in pts]), np.array([p["predicted"] for p in pts]))


def point_sem(point: dict) -> float:
  """A fit.json point's standard error: over its seeds, or its one run's validation SE (NaN:
  unknown); fit.json files written before the two names hold either as `loss_sem`."""
  for key in ("seed_sem", "val_sem", "loss_sem"):
    if point.get(key) is not None:
      return float(point[key])
  return np.nan


def _sem(g) -> np.ndarray | None:
  """The points' standard errors, where the fit recorded them."""
  sem = np.array([point_sem(p) for p in g["points"]], float)
  return sem if np.isfinite(sem).any() else None


def error_bars(g) -> str:
  """What the error bars are: the SE over seeds, or a single run's validation SE."""
  seeds = [p.get("seeds") for p in g["points"]]
  if all(n is None for n in seeds):  # A fit.json from before it recorded seeds.
    return "bars: ± SE"
  if all(n is not None and n > 1 for n in seeds):
    return "bars: ± SE over seeds"
  if all(n == 1 for n in seeds):
    return "bars: ± validation SE (one seed)"
  return "bars: ± SE over seeds, validation SE where one seed"


def n_axis(fit: FitResult) -> str:
  """The x axis of a loss-vs-N plot: the count the fit used."""
  return f"N ({fit.doc.get('N', 'non-embedding parameters')})"


def _dots(ax, x, y, sem, color, label):
  """Points, with ± one standard error over seeds as error bars where known."""
  if sem is None:
    ax.scatter(x, y, color=color, label=label, zorder=3)
  else:
    ax.errorbar(x, y, yerr=np.nan_to_num(sem), fmt="o", ms=5, color=color, label=label, zorder=3,
                capsize=2, lw=1)


def value_colors(values):
  cmap = plt.get_cmap("viridis")
  uniq = sorted(set(values))
  return {v: cmap(i / max(len(uniq) - 1, 1)) for i, v in enumerate(uniq)}


def _human(x: float) -> str:
  """50K, 1.5M, 2B: parameter counts as people say them."""
  for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
    if abs(x) >= scale:
      return f"{x / scale:.3g}{suffix}"
  return f"{x:.3g}"


def _label(ax, xlabel: str, ylabel: str, title: str, log_base: int = 10, legend_size: int = 8,
           bars: str = "bars: ± SE over seeds", subs=(1.0, 2.0, 5.0)):
  ax.set_xscale("log", base=log_base)
  if log_base == 10:  # Plain numbers at 1-2-5 steps: a log axis over less than a decade keeps labels.
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: _human(x)))
  else:
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=legend_size, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
  ax.set_title(title + ("" if not ax.containers else f"\n({bars})"), fontsize=9)


def _save(fig, out: Path, name: str) -> list[Path]:
  for ax in fig.axes:  # Minor tick labels of log axes collide with the major ones.
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  return figures.save(fig, out, name)


def loss_vs_n(fit, out):
  fig, panels = _panels(fit, "Loss vs non-embedding parameters, per P (curves: fitted law)")
  for name, g, law, ax in panels:
    N, P, L, _ = _points(g)
    sem = _sem(g)
    colors = value_colors(P)
    inside = np.geomspace(N.min(), N.max(), 100)
    for p in sorted(set(P)):
      sel = P == p
      _dots(ax, N[sel], L[sel], None if sem is None else sem[sel], colors[p], f"P={p:g}")
      ax.plot(inside, law.predict(inside, p), color=colors[p], lw=1.2)
      for end in (np.geomspace(N.min() / 1.3, N.min(), 10), np.geomspace(N.max(), N.max() * 1.3, 10)):
        ax.plot(end, law.predict(end, p), color=colors[p], lw=1.0, ls="--")
    ax.plot([], [], color="gray", lw=1.0, ls="--", label="law beyond the data")
    _clip_to_data(ax, L)
    _label(ax, n_axis(fit), "validation loss",
           f"{name}: k={law.k:.3g}, alpha={law.alpha:.3g}, E={law.E:.3g}{_status(g)}", bars=error_bars(g))
  return _save(fig, out, "loss_vs_N")


def loss_vs_p(fit, out):
  fig, panels = _panels(fit, "Loss vs P, per model size (curves: fitted law)")
  for name, g, law, ax in panels:
    N, P, L, _ = _points(g)
    sem = _sem(g)
    size = Points(N, P, L).size_index()
    colors = value_colors(size)
    pgrid = np.geomspace(1, P.max(), 50)
    for s in sorted(set(size)):
      sel = size == s
      _dots(ax, P[sel], L[sel], None if sem is None else sem[sel], colors[s], f"N≈{N[sel].min():.3g}")
      ax.plot(pgrid, law.predict(N[sel].min(), pgrid), color=colors[s], lw=1.2)
    ax.set_xticks(sorted(set(P)))
    _clip_to_data(ax, L)
    _label(ax, "P (parallel streams)", "validation loss", f"{name}{_status(g)}", log_base=2,
           legend_size=7, bars=error_bars(g))
  return _save(fig, out, "loss_vs_P")


def multiplier(fit, out):
  fig, panels = _panels(fit, "Equivalent-parameter multiplier k·ln P + 1 (band: bootstrap 95 %)")
  for name, g, law, ax in panels:
    p_max = max(p["P"] for p in g["points"])  # The data's range: no extrapolation in P.
    pgrid = np.linspace(1, p_max, 100)
    ax.set_xticks(sorted({p["P"] for p in g["points"]}))
    if not g.get("identified", True):  # As the report: no multiplier from a law the data do not pin.
      ax.text(0.5, 0.5, "law not identified:\nno multiplier", ha="center", va="center",
              transform=ax.transAxes)
      ax.set_xlim(1, max(p_max, 2))
      ax.set_ylim(0.9, 2.0)
      _label(ax, "P", "parameter multiplier", f"{name}{_status(g)}", log_base=2)
      continue
    ax.plot(pgrid, law.multiplier(pgrid), color="C0", label=f"k={law.k:.3g}")
    samples = np.asarray(g.get("bootstrap", {}).get("samples", []))
    if samples.size:
      with np.errstate(all="ignore"):  # A runaway fit's draws overflow; they fall off the axis.
        band = law_forms.LAW.multiplier(samples, pgrid)
        lo, hi = np.nanpercentile(band, [2.5, 97.5], axis=0)
      ax.fill_between(pgrid, lo, hi, color="C0", alpha=0.25, label="95 % interval")
      # Up to the band and the curve, but never beyond 10x: a runaway k must not flatten the plot.
      top = np.nanmax(np.concatenate([hi, law.multiplier(pgrid)]))
      ax.set_ylim(0.9, 1.05 * (min(float(top), 10.0) if np.isfinite(top) else 10.0))
    _label(ax, "P", "parameter multiplier", f"{name}{_status(g)}", log_base=2)
  return _save(fig, out, "multiplier")


def residuals(fit, out):
  fig, panels = _panels(fit, "Residuals: observed - fitted loss")
  for name, g, law, ax in panels:
    N, P, L, pred = _points(g)
    colors = value_colors(P)
    for p in sorted(set(P)):
      sel = P == p
      ax.scatter(N[sel], L[sel] - pred[sel], color=colors[p], label=f"P={p:g}")
    ax.axhline(0, color="gray", lw=0.8)
    _label(ax, n_axis(fit), "residual", f"{name}: R²={g['r2']:.4f}{_status(g)}", subs=(1.0,))
  return _save(fig, out, "residuals")


def loss_vs_d(fit, out) -> list[Path]:
  """Loss against training tokens per P and size, with the law with a data term (groups fitted
  over several budgets only)."""
  groups = [g for g in fit.groups if "data_term" in fit.doc["groups"][g]]
  if not groups:
    return []
  fig, axes = plt.subplots(1, len(groups), figsize=(6.4 * len(groups), 4.6), squeeze=False)
  fig.suptitle("Loss vs training tokens D, per P (markers and line styles: sizes; curves: "
               "law with a data term)", fontsize=10)
  for name, ax in zip(groups, axes[0]):
    form = fit.doc["groups"][name]["data_term"]["forms"]["parscale_data"]
    pts = form["points"]
    N, P, D, L = (np.array([q[c] for q in pts]) for c in ("N", "P", "D", "loss"))
    sem = np.array([point_sem(q) for q in pts])
    size = Points(N, P, L).size_index()
    colors = value_colors(P)
    theta = np.array([[form["params"][k] for k in law_forms.DATA_FORMS["parscale_data"].names]])
    grid = np.geomspace(D.min(), D.max(), 60)
    for s in sorted(set(size)):
      for p in sorted(set(P)):
        sel = (size == s) & (P == p)
        if not sel.any():
          continue
        label = f"P={p:g}" if s == 0 else None
        ax.errorbar(D[sel], L[sel], yerr=np.nan_to_num(sem[sel]), fmt="os^D"[s % 4], ms=4, capsize=2,
                    lw=0, elinewidth=1, color=colors[p], label=label, zorder=3)
        n = N[sel][0]
        ax.plot(grid, law_forms.parscale_with_data(theta, np.full_like(grid, n), np.full_like(grid, p),
                                                   grid)[0],
                color=colors[p], lw=1.0, ls=("-", "--", ":", "-.")[s % 4])
    sizes = ", ".join(f"{'os^D'[s % 4]} N≈{_human(N[size == s].min())}" for s in sorted(set(size)))
    ok = "" if form.get("identified", True) else " (law not identified)"
    _clip_to_data(ax, L)
    _label(ax, "D (training tokens)", "validation loss",
           f"{name}: k={form['params']['k']:.3g}, beta={form['params']['beta']:.3g}{ok}\n{sizes}")
  return _save(fig, out, "loss_vs_D")


def plot_all(fit: FitResult, out: str | Path) -> list[Path]:
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  with warnings.catch_warnings():  # Plots of a not-identified fit carry its verdict instead.
    warnings.simplefilter("ignore", NotIdentifiedWarning)
    return [p for f in (loss_vs_n, loss_vs_p, multiplier, residuals, loss_vs_d) for p in f(fit, out)]
