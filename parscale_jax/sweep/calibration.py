"""Settings compared for a recipe: per stage, how far apart sizes are at P = 1, how much seeds
scatter, and what P streams gain, all paired by seed (a seed gives every size and P its own init
draw and the same batches)."""
from __future__ import annotations

import numpy as np

from parscale_jax.stats import mean_se, mean_se_interval, paired_differences, pooled_sd, standard_error


def settings_table(rows: list[dict]) -> str:
  """Markdown: one line per stage with at least two sizes at P = 1 and two seeds."""
  done = [r for r in rows if r["status"] == "done"]
  by: dict[str, dict[tuple, dict[int, float]]] = {}
  n_of: dict[str, float] = {}
  for r in done:
    by.setdefault(r["stage"], {}).setdefault((r["size"], r["P"]), {})[r["seed"]] = r["loss"]
    n_of[r["size"]] = min(n_of.get(r["size"], r["N"]), r["N"])
  ps = sorted({r["P"] for r in done} - {1})
  lines = ["| setting | P = 1: smallest minus largest size (× its SE) | seed SD | "
           + " | ".join(f"P = {p} minus P = 1: pooled [95 % interval]; smallest / largest size"
                        for p in ps) + " |",
           "|---|---|---|" + "---|" * len(ps)]
  for stage, cells in by.items():
    sizes = sorted({s for s, p in cells if p == 1}, key=lambda s: n_of[s])
    if len(sizes) < 2:
      continue
    gap = paired_differences(cells[(sizes[0], 1)], cells[(sizes[-1], 1)])
    ratio = f" ({gap.mean() / standard_error(gap):.1f}×)" if len(gap) > 1 and standard_error(gap) > 0 else ""
    sd = pooled_sd(list(v.values()) for v in cells.values())
    sd = f"{sd:.4f}" if np.isfinite(sd) else ""
    gains = []
    for p in ps:
      diffs = np.concatenate([paired_differences(cells[(s, p)], cells[(s, 1)]) for s in sizes
                              if (s, p) in cells] or [np.array([])])
      ends = [mean_se(paired_differences(cells[(s, p)], cells[(s, 1)])) if (s, p) in cells else ""
              for s in (sizes[0], sizes[-1])]
      gains.append(mean_se_interval(diffs) + f"; {ends[0]} / {ends[1]}")
    lines.append(f"| {stage} | {mean_se(gap)}{ratio} | {sd} | " + " | ".join(gains) + " |")
  return "\n".join(lines) if len(lines) > 2 else ""
