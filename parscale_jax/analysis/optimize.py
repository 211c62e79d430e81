"""Fitting a law: many starts (or bootstrap resamples) at once, then an exact polish.

`fit_many` runs a damped Gauss-Newton (Levenberg-Marquardt) on the Huber objective with IRLS
weights, in log-parameter space, vectorised over every start and every resample: one numpy pass
per iteration for all problems together, instead of one scipy L-BFGS-B run per start. The best
start is then polished by scipy's L-BFGS-B on the paper's exact objective and bounds, so the
reported optimum is the paper procedure's optimum.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

from parscale_jax.analysis.law import HUBER_DELTA, LOWER_BOUND, LawForm, objective, start_grid


def _residuals(form, u, X, L):
  with np.errstate(all="ignore"):
    return np.log(form.predict(np.exp(u), *X)) - np.log(L)


def _objective_u(form, u, X, L, weights, delta):
  return objective(form, np.exp(u), X, L, weights, delta)


def _lm_step(form, u, lam, X, L, w, delta, h=1e-6):
  """One damped Gauss-Newton step with IRLS Huber weights for every row of u [S, K]."""
  S, K = u.shape
  r = _residuals(form, u, X, L)
  # Central differences in log space: 2K extra evaluations for all problems at once.
  J = np.empty((S, len(L), K))
  for j in range(K):
    du = np.zeros(K)
    du[j] = h
    J[:, :, j] = (_residuals(form, u + du, X, L) - _residuals(form, u - du, X, L)) / (2 * h)
  ok = np.all(np.isfinite(r), axis=1) & np.all(np.isfinite(J), axis=(1, 2))
  r = np.where(ok[:, None], r, 0.0)
  J = np.where(ok[:, None, None], J, 0.0)
  abs_r = np.abs(r)
  psi = np.clip(r, -delta, delta)  # Huber's derivative.
  irls = np.where(abs_r <= delta, 1.0, delta / np.maximum(abs_r, 1e-300))
  g = np.einsum("sm,smk->sk", w * psi, J)
  H = np.einsum("sm,smk,sml->skl", w * irls, J, J)
  eye = np.eye(K)
  damped = H + lam[:, None, None] * (np.einsum("skk->sk", H)[:, :, None] * eye + 1e-12 * eye)
  step = -np.einsum("skl,sl->sk", np.linalg.pinv(damped), g)
  step = np.where(np.isfinite(step), np.clip(step, -5, 5), 0.0)
  return np.maximum(u + step, np.log(LOWER_BOUND)), ok


def fit_many(form: LawForm, theta0, X, L, weights=None, delta: float = HUBER_DELTA,
             iterations: int = 300):
  """Minimises the weighted Huber objective from each row of theta0 [S, K] over the points with
  covariates X (the form's, e.g. (N, P), each [M]) and losses L [M]; weights [S, M] or [M] or
  None. Returns (theta [S, K], objective [S])."""
  theta0 = np.maximum(np.atleast_2d(np.asarray(theta0, float)), LOWER_BOUND)
  S, K = theta0.shape
  w = np.ones((S, len(L))) if weights is None else np.broadcast_to(weights, (S, len(L)))
  u = np.log(theta0)
  f = _objective_u(form, u, X, L, w, delta)
  lam = np.full(S, 1e-3)
  active = np.isfinite(f)
  for _ in range(iterations):
    idx = np.flatnonzero(active)
    if idx.size == 0:
      break
    u_new, ok = _lm_step(form, u[idx], lam[idx], X, L, w[idx], delta)
    f_new = _objective_u(form, u_new, X, L, w[idx], delta)
    better = (f_new < f[idx]) & ok
    u[idx] = np.where(better[:, None], u_new, u[idx])
    f[idx] = np.where(better, f_new, f[idx])
    lam[idx] = np.clip(np.where(better, lam[idx] / 3.0, lam[idx] * 4.0), 1e-12, 1e12)
    # A problem is done once even heavily damped steps no longer improve it.
    active[idx] = ok & (lam[idx] < 1e8)
  return np.exp(u), f


def polish(form: LawForm, theta, X, L, weights=None, delta: float = HUBER_DELTA):
  """scipy L-BFGS-B on the exact objective with the paper's bounds, from theta [K]."""
  fun = lambda t: float(objective(form, t, X, L, weights, delta)[0])
  res = minimize(fun, np.asarray(theta, float), method="L-BFGS-B",
                 bounds=[(LOWER_BOUND, None)] * len(theta))
  if res.fun <= fun(theta):
    return res.x, float(res.fun)
  return np.asarray(theta, float), fun(theta)


def fit_point(form: LawForm, X, L, weights=None, delta: float = HUBER_DELTA):
  """The paper's procedure (every grid start, keep the best), vectorised, then polished."""
  theta, f = fit_many(form, start_grid(form), X, L, weights, delta)
  best = np.argsort(f)[:3]  # Polish the three best basins; keep the best result.
  polished = [polish(form, theta[i], X, L, weights, delta) for i in best if np.isfinite(f[i])]
  if not polished:
    raise FloatingPointError("no start reached a finite objective")
  return min(polished, key=lambda x: x[1])


def fit_scipy_loop(form: LawForm, X, L, weights=None, delta: float = HUBER_DELTA):
  """The plain procedure: scipy L-BFGS-B (finite-difference gradients) from every grid start,
  one after another. The reference that `fit_point` is checked and timed against."""
  best = (None, np.inf)
  fun = lambda t: float(objective(form, t, X, L, weights, delta)[0])
  for theta0 in itertools.product(*form.grid):
    with np.errstate(all="ignore"):
      res = minimize(fun, np.maximum(theta0, LOWER_BOUND), method="L-BFGS-B",
                     bounds=[(LOWER_BOUND, None)] * len(theta0))
    if np.isfinite(res.fun) and res.fun < best[1]:
      best = (res.x, float(res.fun))
  return best


def bootstrap(form: LawForm, theta_hat, X, L, n: int, seed: int = 0, weights=None,
              delta: float = HUBER_DELTA):
  """Case-resampling bootstrap: n resamples of the points (as multinomial counts, so every
  resample is one row of a vectorised fit), each started from the point estimate.
  Returns theta [n, K] (rows that did not converge to a finite objective are dropped)."""
  rng = np.random.default_rng(seed)
  M = len(L)
  counts = rng.multinomial(M, np.full(M, 1.0 / M), size=n).astype(float)
  w = counts if weights is None else counts * weights
  theta, f = fit_many(form, np.repeat(np.asarray(theta_hat)[None], n, axis=0), X, L, w, delta)
  return theta[np.isfinite(f)]
