"""The fitting API as a library: a loss table (path, rows or 'paper') in, a fit document out."""
from __future__ import annotations

import time
from pathlib import Path

from parscale_jax.analysis.fitting import fit_group
from parscale_jax.analysis.report import verdict
from parscale_jax.analysis.results import fit_document, write_fit
from parscale_jax.analysis.tables import load_points


def fit_table(source: str | Path | list[dict], out: Path | None = None, group_by: str | None = None,
              n_bootstrap: int = 1000, weights: str = "none", seed: int = 0, compare: bool = True,
              n_column: str = "N", log=print) -> dict:
  """Fits the law to each group of `source` and returns the fit document (see results.py);
  with `out`, also writes out/fit.json."""
  groups = load_points(source, group_by, n_column)
  fitted = {}
  for name, points in groups.items():
    t = time.time()
    fitted[name] = fit_group(name, points, n_bootstrap=n_bootstrap, weights_mode=weights, seed=seed,
                             compare=compare)
    g = fitted[name]
    log(f"{name}: E={g['E']:.6g} A={g['A']:.6g} alpha={g['alpha']:.6g} k={g['k']:.6g} "
        f"objective={g['objective']:.4e} R2={g['r2']:.4f} ({len(points)} points, {time.time() - t:.1f}s)")
    log(verdict(name, g).replace("**", ""))
  doc = fit_document(fitted, source if not isinstance(source, list) else "table", n_column)
  if out is not None:
    write_fit(doc, Path(out) / "fit.json")
  return doc
