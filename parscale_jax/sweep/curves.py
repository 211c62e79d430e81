"""Training curves of a sweep's runs: training loss against tokens, one panel per setting (stage and
any extra grid axes) and size, a colour per P and a line style per seed, to show when streams and
seeds part ways."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from parscale_jax import figures
from parscale_jax.analysis.plots import value_colors
from parscale_jax.figures import plt
from parscale_jax.rundir import METRICS, ResultsDir, local_or_published
from parscale_jax.sweep.comparisons import setting_label, settings_and_sizes
from parscale_jax.train.metrics import read_metrics

_SEED_STYLES = ("-", "--", ":", "-.")


def read_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, training loss) from a run's metrics.jsonl; evaluation lines and unreadable lines
  (a run killed mid-write) are skipped."""
  tokens, losses, _ = _read_metrics(run_dir)
  return tokens, losses


def read_eval_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, validation loss) of the evaluations a run logged (at least its final one)."""
  return _read_metrics(run_dir)[2]


def _read_metrics(run_dir: Path):
  tokens, losses, evals = [], [], []
  tokens_per_step = None
  for record in read_metrics(run_dir):
    if "loss" in record and "tokens" in record:
      tokens.append(record["tokens"])
      losses.append(record["loss"])
      tokens_per_step = record["tokens"] / max(record["step"], 1)
    elif "eval_loss" in record and tokens_per_step:
      evals.append((record["step"] * tokens_per_step, record["eval_loss"]))
  ev = np.array(evals, float).reshape(-1, 2)
  return np.array(tokens, float), np.array(losses, float), (ev[:, 0], ev[:, 1])


def plot_curves(results_dir: Path, rows: list[dict], out: Path, published: Path | None = None) -> list[Path]:
  """Writes curves.png and curves.pdf to `out` for the done runs that have metrics (here, else in
  the `published` copy); returns the paths written (none, and any old plot removed, when no run
  has a curve)."""
  def run_dir(run_id):
    found = local_or_published(results_dir, published, run_id, needs=METRICS)
    return ResultsDir(results_dir).run(run_id).path if found is None else found.path

  curves = {}
  for r in rows:
    if r["status"] == "done":
      tokens, losses = read_curve(run_dir(r["run_id"]))
      if len(tokens) > 1:
        curves[r["run_id"]] = (r, tokens, losses)
  if not curves:
    for path in figures.figure_paths(out, "curves"):  # A stale plot from an earlier analysis must not be published.
      path.unlink(missing_ok=True)
    return []
  panels = settings_and_sizes([r for r, _, _ in curves.values()])
  colours = value_colors([r["P"] for r, _, _ in curves.values()])
  seeds = sorted({r["seed"] for r, _, _ in curves.values()}, key=str)
  cols = min(4, len(panels))
  rows_n = math.ceil(len(panels) / cols)
  fig, axes = plt.subplots(rows_n, cols, figsize=(4.4 * cols, 3.4 * rows_n), squeeze=False)
  for ax, (setting, size) in zip(axes.flat, panels):
    tail = []  # Losses after the first tenth of training set the y range; the start is off scale.
    for r, tokens, losses in curves.values():
      if (setting_label(r), r["size"]) != (setting, size):
        continue
      style = _SEED_STYLES[seeds.index(r["seed"]) % len(_SEED_STYLES)]
      ax.plot(tokens / 1e6, losses, style, color=colours[r["P"]], lw=1.2)
      tail.extend(losses[tokens >= 0.1 * tokens.max()])
      eval_tokens, eval_losses = read_eval_curve(run_dir(r["run_id"]))
      if len(eval_tokens):
        ax.plot(eval_tokens / 1e6, eval_losses, "o" + style, color=colours[r["P"]], ms=4, lw=0.8)
        tail.extend(eval_losses)
    if tail:
      ax.set_ylim(min(tail) - 0.02, max(tail) + 0.02)
    ax.set_title(f"{setting}: {size}", fontsize=9)
    ax.set_xlabel("tokens (millions)")
    ax.set_ylabel("loss (line: training; dots: validation)")
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  # One legend for the figure, beside the panels: a colour per P, a line style per seed.
  from matplotlib.lines import Line2D
  handles = ([Line2D([], [], color=c, lw=2, label=f"P = {p}") for p, c in sorted(colours.items())]
             + [Line2D([], [], color="grey", ls=_SEED_STYLES[i % len(_SEED_STYLES)], label=f"seed {s}")
                for i, s in enumerate(seeds)])
  fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
  fig.suptitle("Training curves (the first tenth of training, far above, is off scale)", fontsize=10)
  return figures.save(fig, out, "curves", dpi=110)
