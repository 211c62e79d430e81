"""The cost figure: memory and latency increase over the P = 1 base, parallel vs parameter
scaling at equal predicted loss, per batch size."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
  fig.tight_layout()
  paths = [out / "cost.png", out / "cost.pdf"]
  for p in paths:
    fig.savefig(p, dpi=130)
  plt.close(fig)
  return paths
