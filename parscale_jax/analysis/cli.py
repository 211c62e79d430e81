"""`parscale fit` and `parscale plot`."""
from __future__ import annotations

import sys
import time
from pathlib import Path


def run_fit(source: str, out: Path, group_by: str | None = None, n_bootstrap: int = 1000,
            weights: str = "none", seed: int = 0, compare: bool = True, log=print) -> dict:
  from parscale_jax.analysis.fitting import fit_group
  from parscale_jax.analysis.results import fit_document, write_fit
  from parscale_jax.analysis.tables import load_points

  groups = load_points(source, group_by)
  fitted = {}
  for name, points in groups.items():
    t = time.time()
    fitted[name] = fit_group(name, points, n_bootstrap=n_bootstrap, weights_mode=weights, seed=seed,
                             compare=compare)
    g = fitted[name]
    log(f"{name}: E={g['E']:.6g} A={g['A']:.6g} alpha={g['alpha']:.6g} k={g['k']:.6g} "
        f"objective={g['objective']:.4e} R2={g['r2']:.4f} ({len(points)} points, {time.time() - t:.1f}s)")
  doc = fit_document(fitted, source)
  write_fit(doc, Path(out) / "fit.json")
  return doc


def _fit(args) -> None:
  from parscale_jax.analysis.plots import plot_all
  from parscale_jax.analysis.report import write_report
  from parscale_jax.analysis.results import FitResult
  from parscale_jax.errors import UserError

  if (args.input is None) == (args.reference is None):
    raise UserError("give an INPUT table or --reference paper (one of them)")
  source = "paper" if args.reference else args.input
  out = Path(args.out)
  doc = run_fit(source, out, args.group_by, args.bootstrap, args.weights, args.seed,
                log=lambda s: print(s, file=sys.stderr))
  if not args.no_plots:
    plot_all(FitResult(doc), out)
    write_report(doc, out, "Parallel scaling law fit")
  print(out / "fit.json")


def _plot(args) -> None:
  from parscale_jax.analysis.plots import plot_all
  from parscale_jax.analysis.results import load_fit

  fit = load_fit(args.fit)
  for path in plot_all(fit, args.out or Path(args.fit).parent):
    print(path)


def register(sub) -> None:
  p = sub.add_parser("fit", help="fit the parallel scaling law to a loss table")
  p.add_argument("input", nargs="?", help="CSV or JSON lines with columns N, P, loss (a sweep's table)")
  p.add_argument("--reference", choices=["paper"], help="fit the paper's published table instead")
  p.add_argument("--group-by", help="fit one law per value of this column (paper: dataset)")
  p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
  p.add_argument("--weights", choices=["none", "sem"], default="none",
                 help="weight points by 1/var(log loss) from loss_sem")
  p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
  p.add_argument("--no-plots", action="store_true", help="write fit.json only")
  p.add_argument("--out", required=True, help="output directory")
  p.set_defaults(func=_fit)

  q = sub.add_parser("plot", help="plot a fit.json (PNG and PDF)")
  q.add_argument("fit", help="fit.json")
  q.add_argument("--out", help="directory (default: beside fit.json)")
  q.set_defaults(func=_plot)
