"""The cost figure: memory and latency increase over the P = 1 base, parallel vs parameter
scaling at equal predicted loss, per batch size."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from parscale_jax.figures import plt, save


def plot_cost(result: dict, out: Path) -> list[Path]:
  out.mkdir(parents=True, exist_ok=True)
  mode = result["assumptions"]["prefix_mode"]
  rows = result["by_batch"]
  batches = [r["batch"] for r in rows]
  x = np.arange(len(batches))
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for ax, key, scale, unit in ((axes[0], "memory_increase", 1e9, "GB"),
                               (axes[1], "latency_increase", 1e-3, "ms")):
    par = [r[mode][key]["parallel"] / scale for r in rows]
    prm = [r[mode][key]["parameter"] / scale for r in rows]
    ax.bar(x - 0.2, prm, 0.4, label="parameter scaling", color="C1")
    ax.bar(x + 0.2, par, 0.4, label=f"parallel scaling (P={result['assumptions']['P']})", color="C0")
    ax.set_xticks(x, [f"batch {b}" for b in batches])
    ax.set_ylabel(f"{key.replace('_', ' ')} ({unit})")
    ax.legend(fontsize=8)
  a = result["assumptions"]
  fig.suptitle(f"{a['size']}: increase over P=1 at equal predicted loss ({a['device']['name']})")
  return save(fig, out, "cost")


def plot_plan(result, out: Path) -> list[Path]:
  """The plan's Pareto front: predicted loss against memory and against latency, coloured by P,
  the recommendation and the runner-up marked."""
  out.mkdir(parents=True, exist_ok=True)
  front = result.front
  ps = sorted({c.P for c in front})
  cmap = plt.get_cmap("viridis")
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, key, label in ((axes[0], "memory_gb", "inference memory (GB)"),
                         (axes[1], "latency_ms", "latency: prefill + all output tokens (ms)")):
    for i, p in enumerate(ps):
      pts = [c for c in front if c.P == p]
      ax.scatter([getattr(c, key) for c in pts], [c.loss for c in pts], s=18,
                 color=cmap(i / max(len(ps) - 1, 1)), label=f"P={p}")
    for cand, marker, name in ((result.recommended, "*", "recommended"),
                               (result.runner_up, "X", "runner-up")):
      if cand is not None:
        ax.scatter([getattr(cand, key)], [cand.loss], marker=marker, s=180, color="crimson",
                   edgecolor="black", zorder=5, label=name)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("predicted loss")
  axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.suptitle("Pareto front of (N, P) candidates", fontsize=10)
  return save(fig, out, "plan")
