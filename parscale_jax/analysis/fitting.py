"""Fitting one group of points: the law, its uncertainty, extrapolation, and competing forms."""
from __future__ import annotations

import dataclasses

import numpy as np

from parscale_jax.analysis.law import (DATA_FORMS, FORMS, HUBER_DELTA, LAW, LOWER_BOUND, LawForm,
                                       r_squared)
from parscale_jax.analysis.optimize import bootstrap, fit_many, fit_point, polish
from parscale_jax.analysis.tables import Points, check_fittable
from parscale_jax.errors import UserError

MULTIPLIER_P = (2, 4, 8)


def point_weights(points: Points, mode: str):
  """None, or weights ∝ 1/var(log loss) from the points' standard errors, normalised to mean 1."""
  if mode == "none":
    return None
  sem = points.sem
  if sem is None or np.any(~np.isfinite(sem)) or np.any(sem <= 0):
    raise UserError("weights=sem needs a positive standard error for every point (over seeds, or "
                    "a one-run point's val_sem)")
  w = 1.0 / (sem / points.loss) ** 2
  return w / w.mean()


def point_sems(points: Points, i: int) -> dict:
  """fit.json's standard errors of point i, each under its own name, where known."""
  return {name: float(values[i]) for name, values in (("seed_sem", points.seed_sem), ("val_sem", points.val_sem))
          if values is not None and np.isfinite(values[i])}


def _warm_fit(form: LawForm, theta, X, L, weights):
  theta, f = fit_many(form, theta[None], X, L, weights)
  return polish(form, theta[0], X, L, weights)


def held_out(form: LawForm, theta_full, points: Points, weights, mask_sets):
  """Fits without each held-out set (warm-started at the full fit) and predicts it."""
  errors = []
  for held in mask_sets:
    keep = ~held
    w = None if weights is None else weights[keep]
    theta, _ = _warm_fit(form, theta_full, points.select(keep).X, points.loss[keep], w)
    with np.errstate(over="ignore"):  # A runaway fit predicts inf: an infinite error.
      pred = form.predict(theta[None], *points.select(held).X)[0]
    errors.append(pred - points.loss[held])
  return np.concatenate(errors)


def extrapolation(form: LawForm, points: Points, weights) -> dict:
  """Fit without the largest size (the full grid procedure) and predict it."""
  size = points.size_index()
  held = size == size.max()
  keep = ~held
  w = None if weights is None else weights[keep]
  theta, _ = fit_point(form, points.select(keep).X, points.loss[keep], w)
  pred = form.predict(theta[None], *points.select(held).X)[0]
  err = pred - points.loss[held]
  return {"held_out": "largest size", "params": dict(zip(form.names, theta.tolist())),
          "points": [{"N": float(n), "P": float(p), "loss": float(l), "predicted": float(q)}
                     for n, p, l, q in zip(points.N[held], points.P[held], points.loss[held], pred)],
          "mean_abs_error": float(np.mean(np.abs(err))),
          "max_abs_error": float(np.max(np.abs(err))),
          "mean_rel_error": float(np.mean(np.abs(err) / points.loss[held]))}


def aic(rss: float, n: int, k: int) -> float:
  """AIC of a fit with k parameters and residual sum of squares rss (Gaussian on log residuals) over
  n points; -inf for an exact fit."""
  with np.errstate(divide="ignore"):
    return float(n * np.log(rss / n) + 2 * k)


def compare_forms(points: Points, weights) -> dict:
  """Each form's fit, R², AIC (Gaussian on log residuals) and leave-one-size-out error."""
  size = points.size_index()
  loso = [size == s for s in np.unique(size)]
  out = {}
  for name, form in FORMS.items():
    theta, f = fit_point(form, points.X, points.loss, weights)
    with np.errstate(over="ignore"):  # A runaway form's optimum overflows: its rss is inf.
      pred = form.predict(theta[None], *points.X)[0]
    rss = float(np.sum((np.log(pred) - np.log(points.loss)) ** 2))
    n, k = len(points), len(form.names)
    err = held_out(form, theta, points, weights, loso)
    out[name] = {"formula": form.formula, "params": dict(zip(form.names, theta.tolist())),
                 "objective": f, "r2": r_squared(pred, points.loss),
                 "aic": aic(rss, n, k),
                 "loso_rmse": float(np.sqrt(np.mean(err ** 2)))}
  best_aic = min(out, key=lambda k: out[k]["aic"])
  best_loso = min(out, key=lambda k: out[k]["loso_rmse"])
  return {"forms": out, "best_by_aic": best_aic, "best_by_loso": best_loso}


# A fit below this R² on the losses, a parameter this close to its lower bound, a k this large or
# an interval wider than this ratio says the law is not identified by the data.
R2_MIN = 0.8
AT_BOUND = 10 * LOWER_BOUND
K_MAX = 100.0
CI_RATIO_MAX = 1000.0
MIN_BOOTSTRAP = 100  # Fewer resamples cannot place the 2.5 and 97.5 percentiles.


def identification(g: dict) -> list[str]:
  """Why a fitted group does not identify the law (empty when it does)."""
  reasons = [f"{key} = {g[key]:.3g} is at its lower bound" for key in LAW.names
             if g[key] <= AT_BOUND]
  if g["k"] > K_MAX:
    reasons.append(f"k = {g['k']:.3g} runs off (streams worth more than {K_MAX:g}x ln P parameters)")
  if not g["r2"] >= R2_MIN:
    reasons.append(f"R² = {g['r2']:.3f} is below {R2_MIN}")
  for key, (lo, hi) in g.get("ci95", {}).items():
    if key != "k" and lo > 0 and hi / lo > CI_RATIO_MAX:
      reasons.append(f"the 95 % interval of {key} spans {np.log10(hi / lo):.0f} orders of magnitude")
  ci_k = g.get("ci95", {}).get("k")
  if ci_k and ci_k[1] > K_MAX:
    reasons.append(f"the 95 % interval of k reaches {ci_k[1]:.3g}")
  return reasons


def fit_group(name: str, points: Points, *, n_bootstrap: int = 1000, weights_mode: str = "none",
              seed: int = 0, compare: bool = True) -> dict:
  """The paper's fit of one group, with bootstrap intervals, extrapolation, comparison and a
  verdict: `identified` is False, with `not_identified` reasons, when the data do not pin the law
  down; `k_excludes_zero` is then None, since no claim about k can be made.

  Points at several token budgets (points.D) get the law over (N, P) at the longest budget, and
  under `data_term` the laws with a data term over every budget (see fit_data_terms)."""
  form = LAW
  if n_bootstrap < 0 or 0 < n_bootstrap < MIN_BOOTSTRAP:
    raise UserError(f"bootstrap: {n_bootstrap} resamples; a 95 % interval needs at least "
                    f"{MIN_BOOTSTRAP} (0 for none)")
  every_budget = points
  if points.D is not None:
    points = dataclasses.replace(points.select(points.D == points.D.max()), D=None)
  check_fittable(name, points, len(form.names))
  weights = point_weights(points, weights_mode)
  theta, f = fit_point(form, points.X, points.loss, weights)
  pred = form.predict(theta[None], *points.X)[0]
  result = dict(zip(form.names, theta.tolist()))
  result.update(objective=f, r2=r_squared(pred, points.loss), n_points=len(points),
                weights=weights_mode, huber_delta=HUBER_DELTA,
                multiplier={str(p): float(form.multiplier(theta, p)) for p in MULTIPLIER_P},
                points=[{"N": float(n), "P": float(p), "loss": float(l), "predicted": float(q),
                         **point_sems(points, i),
                         **({"seeds": int(points.seeds[i])} if points.seeds is not None else {})}
                        for i, (n, p, l, q) in enumerate(zip(points.N, points.P, points.loss, pred))])
  if n_bootstrap:
    samples = bootstrap(form, theta, points.X, points.loss, n_bootstrap, seed, weights)
    lo, hi = np.percentile(samples, [2.5, 97.5], axis=0)
    result["ci95"] = {k: [float(a), float(b)] for k, a, b in zip(form.names, lo, hi)}
    mult = {str(p): form.multiplier(samples, p).ravel() for p in MULTIPLIER_P}
    result["multiplier_ci95"] = {p: [float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))]
                                 for p, m in mult.items()}
    result["k_excludes_zero"] = bool(result["ci95"]["k"][0] > 1e-6)
    with np.errstate(over="ignore"):  # Runaway draws (A beyond 1e300) round to inf, as they are.
      rounded = np.round(samples, 8).tolist()
    result["bootstrap"] = {"n": int(len(samples)), "requested": n_bootstrap, "seed": seed,
                           "samples": rounded}
  result["decreasing_in_N"] = {
      f"{p:g}": bool(np.all(np.diff(points.loss[points.P == p][np.argsort(points.N[points.P == p])]) < 0))
      for p in np.unique(points.P)}
  reasons = identification(result)
  result["identified"] = not reasons
  result["not_identified"] = reasons
  if reasons and "k_excludes_zero" in result:
    result["k_excludes_zero"] = None
  if len(np.unique(points.size_index())) >= 3:
    result["extrapolation"] = extrapolation(form, points, weights)
    if compare:
      result["comparison"] = compare_forms(points, weights)
  if every_budget.D is not None:
    result["tokens"] = float(every_budget.D.max())
    result["data_term"] = fit_data_terms(name, every_budget, n_bootstrap=n_bootstrap,
                                         weights_mode=weights_mode, seed=seed)
  return result


def data_term_identification(g: dict, form: LawForm, budgets) -> list[str]:
  """Why a fitted form with a data term is not identified by points at these budgets (empty when
  it is)."""
  reasons = [f"{key} = {g['params'][key]:.3g} is at its lower bound" for key in form.names
             if g["params"][key] <= AT_BOUND]
  if form.unseen is not None:
    reasons += form.unseen(g["params"], budgets)
  if not g["r2"] >= R2_MIN:
    reasons.append(f"R² = {g['r2']:.3f} is below {R2_MIN}")
  for key, (lo, hi) in g.get("ci95", {}).items():
    if lo > 0 and hi / lo > CI_RATIO_MAX:
      reasons.append(f"the 95 % interval of {key} spans {np.log10(hi / lo):.0f} orders of magnitude")
  return reasons


def fit_data_terms(name: str, points: Points, *, n_bootstrap: int = 1000, weights_mode: str = "none",
                   seed: int = 0) -> dict:
  """The laws over (N, P, D) (law.DATA_FORMS) fitted to every budget: parameters, R², AIC,
  bootstrap intervals, the error predicting the longest budget from the shorter ones, and whether
  the data identify each form."""
  weights = point_weights(points, weights_mode)
  longest = points.D == points.D.max()
  out = {"budgets": sorted(float(d) for d in np.unique(points.D)), "forms": {}}
  for form in DATA_FORMS.values():
    if len(points) <= len(form.names):
      out["forms"][form.name] = {"formula": form.formula, "skipped":
                                 f"{len(points)} points for {len(form.names)} parameters"}
      continue
    theta, f = fit_point(form, points.X, points.loss, weights)
    with np.errstate(over="ignore"):  # A runaway form's optimum overflows: its rss is inf.
      pred = form.predict(theta[None], *points.X)[0]
    rss = float(np.sum((np.log(pred) - np.log(points.loss)) ** 2))
    n = len(points)
    g = {"formula": form.formula, "params": dict(zip(form.names, theta.tolist())), "objective": f,
         "r2": r_squared(pred, points.loss), "aic": aic(rss, n, len(form.names)),
         "points": [{"N": float(a), "P": float(b), "D": float(d), "loss": float(l), "predicted": float(q),
                     **point_sems(points, i)}
                    for i, (a, b, d, l, q) in enumerate(zip(*points.X, points.loss, pred))]}
    if n_bootstrap:
      samples = bootstrap(form, theta, points.X, points.loss, n_bootstrap, seed, weights)
      lo, hi = np.percentile(samples, [2.5, 97.5], axis=0)
      g["ci95"] = {k: [float(a), float(b)] for k, a, b in zip(form.names, lo, hi)}
    if (~longest).sum() > len(form.names):
      held = held_out(form, theta, points, weights, [longest])
      g["longest_budget_from_shorter"] = {"mean_abs_error": float(np.mean(np.abs(held))),
                                          "max_abs_error": float(np.max(np.abs(held)))}
    reasons = data_term_identification(g, form, points.D)
    g["identified"], g["not_identified"] = not reasons, reasons
    out["forms"][form.name] = g
  return out
