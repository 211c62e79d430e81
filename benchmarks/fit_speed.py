"""Fit speed: the vectorised fit (point fit + 1000 bootstrap resamples, both published datasets)
against the plain loop of 300 scipy L-BFGS-B starts for the two point fits alone, side by side.

    python benchmarks/fit_speed.py [--bootstrap 1000] [--out benchmarks/results/fit_speed.json]

Target: vectorised total < plain-loop total (a ratio measured within one run).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import report
from parscale_jax.analysis.law import FORMS
from parscale_jax.analysis.optimize import bootstrap, fit_point, fit_scipy_loop
from parscale_jax.analysis.tables import load_points


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--bootstrap", type=int, default=1000)
  parser.add_argument("--out")
  args = parser.parse_args()
  form = FORMS["parscale"]
  rows, totals = [], {"vectorised": 0.0, "scipy_loop": 0.0}
  for name, pts in load_points("paper").items():
    t = time.perf_counter()
    theta_loop, f_loop = fit_scipy_loop(form, pts.X, pts.loss)
    loop_s = time.perf_counter() - t
    t = time.perf_counter()
    theta, f = fit_point(form, pts.X, pts.loss)
    point_s = time.perf_counter() - t
    t = time.perf_counter()
    samples = bootstrap(form, theta, pts.X, pts.loss, args.bootstrap)
    boot_s = time.perf_counter() - t
    totals["scipy_loop"] += loop_s
    totals["vectorised"] += point_s + boot_s
    rows.append({"dataset": name, "scipy_loop_s": loop_s, "vectorised_point_s": point_s,
                 f"vectorised_bootstrap{args.bootstrap}_s": boot_s,
                 "objective_loop": f_loop, "objective_vectorised": f,
                 "max_param_rel_diff": float(np.max(np.abs(theta / theta_loop - 1))),
                 "bootstrap_fits": len(samples)})
  ratio = totals["vectorised"] / totals["scipy_loop"]
  rows.append({"dataset": "TOTAL", "scipy_loop_s": totals["scipy_loop"],
               "vectorised_point_s": totals["vectorised"]})
  report("fit_speed", rows, args.out, {"vectorised_over_loop": ratio, "target": "< 1"})
  print(f"vectorised (point + {args.bootstrap} bootstrap) / scipy loop (point only) = {ratio:.3f}")


if __name__ == "__main__":
  main()
