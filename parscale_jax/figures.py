"""Figures as the project writes them: a PNG to read and a PDF for papers, side by side, with
matplotlib's file-only backend (the machines that draw them have no display)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def figure_paths(out: Path, name: str) -> list[Path]:
  """Where `save` writes the figure `name` in `out`."""
  return [Path(out) / f"{name}.png", Path(out) / f"{name}.pdf"]


def save(fig, out: Path, name: str, dpi: int = 130) -> list[Path]:
  """Lays out, writes and closes `fig`; legends placed beside the axes stay in the files."""
  fig.tight_layout()
  paths = figure_paths(out, name)
  for path in paths:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  return paths


def token_axis(ax, budgets) -> None:
  """The x axis of a plot against training tokens: doublings evenly spaced, a tick per budget."""
  ax.set_xscale("log", base=2)
  ax.set_xticks(sorted(budgets), [f"{t / 1e6:.3g}" for t in sorted(budgets)])
  ax.minorticks_off()
  ax.set_xlabel("D (training tokens, millions)")
