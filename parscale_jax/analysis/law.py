"""The parallel scaling law and its competitors, as vectorised numpy functions.

Every form maps parameters theta [S, K] (S candidate fits) and points N [M], P [M] (and, for the
forms with a data term, training tokens D [M]) to predicted losses [S, M]. N is the non-embedding
parameter count, ParScale's own parameters included (or the backbone's, as a fit says).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from parscale_jax.scaling import diversity_multiplier, multiplier

HUBER_DELTA = 1e-3  # The paper's Huber threshold on log-loss residuals.
LOWER_BOUND = 1e-8  # The paper's lower bound on every parameter.


def _x(A, N, denominator):
  return A * 1e9 / (N * denominator)


def parscale(theta, N, P):
  """L = E + (A·1e9 / (N·(k·ln P + 1)))^alpha — the paper's law."""
  E, A, alpha, k = (theta[:, i:i + 1] for i in range(4))
  return E + _x(A, N, multiplier(k, P)) ** alpha


def diversity(theta, N, P):
  """L = (A·1e9 / (N·P^(1/alpha)·DIVERSITY))^alpha + E, DIVERSITY = [(P-1)·rho + 1]^(-1/alpha):
  the paper's theoretical form, i.e. E + (A·1e9/N)^alpha · ((P-1)·rho + 1) / P."""
  E, A, alpha, rho = (theta[:, i:i + 1] for i in range(4))
  return E + _x(A, N, 1.0) ** alpha * ((P - 1.0) * rho + 1.0) / P


def power_in_p(theta, N, P):
  """L = E + (A·1e9 / (N·P^gamma))^alpha — streams as a power of P."""
  E, A, alpha, gamma = (theta[:, i:i + 1] for i in range(4))
  return E + _x(A, N, P ** gamma) ** alpha


def p_independent(theta, N, P):
  """L = E + (A·1e9 / N)^alpha — streams bring nothing."""
  E, A, alpha = (theta[:, i:i + 1] for i in range(3))
  return E + _x(A, N, np.ones_like(P)) ** alpha


def _data_term(B, beta, D):
  """(B·1e9 / D)^beta: the loss that D training tokens leave above the parameters' own limit."""
  return (B * 1e9 / D) ** beta


def parscale_with_data(theta, N, P, D):
  """L = E + (A·1e9 / (N·(k·ln P + 1)))^alpha + (B·1e9 / D)^beta — the paper's law with a data
  term (Chinchilla's form): streams multiply the parameters, not the tokens."""
  E, A, alpha, k, B, beta = (theta[:, i:i + 1] for i in range(6))
  return E + _x(A, N, multiplier(k, P)) ** alpha + _data_term(B, beta, D)


def stream_correlation(rho_end, D_rho, D):
  """rho(D) = rho_end + (1 - rho_end)·exp(-D / (D_rho·1e6)): streams start alike (rho 1) and
  decorrelate towards rho_end as they train (D_rho in millions of tokens)."""
  return rho_end + (1.0 - rho_end) * np.exp(-D / (D_rho * 1e6))


# The share of rho(D)'s fall (1 - rho_end) that must happen between the shortest and the longest
# budget for the data to pin its scale D_rho: below it the fall is over before the shortest budget
# (or barely begun at the longest), and no resample moves D_rho, so its interval is narrow but empty.
MIN_VISIBLE_DECORRELATION = 0.01


def decorrelation_in_range(D_rho: float, budgets) -> float:
  """The share of rho(D)'s fall that happens between the shortest and the longest budget."""
  scale = D_rho * 1e6
  return float(np.exp(-np.min(budgets) / scale) - np.exp(-np.max(budgets) / scale))


def unseen_decorrelation(params: dict, budgets) -> list[str]:
  """Why budgets spanning these tokens cannot pin D_rho (empty when they can)."""
  D_rho = params["D_rho"]
  if decorrelation_in_range(D_rho, budgets) >= MIN_VISIBLE_DECORRELATION:
    return []
  when = ("is over before the shortest budget" if D_rho * 1e6 < np.min(budgets)
          else "has barely begun at the longest budget")
  return [f"the data do not pin D_rho = {D_rho:.3g}: rho's fall {when} "
          f"(under {100 * MIN_VISIBLE_DECORRELATION:g} % of it between the budgets)"]


def diversity_with_data(theta, N, P, D):
  """L = E + (A·1e9/N)^alpha · ((P-1)·rho(D) + 1) / P + (B·1e9 / D)^beta — the saturating
  (diversity) form, its correlation rho falling with tokens as `stream_correlation`."""
  E, A, alpha, B, beta, rho_end, D_rho = (theta[:, i:i + 1] for i in range(7))
  rho = stream_correlation(rho_end, D_rho, D)
  return E + _x(A, N, 1.0) ** alpha * ((P - 1.0) * rho + 1.0) / P + _data_term(B, beta, D)


@dataclasses.dataclass(frozen=True)
class LawForm:
  name: str
  names: tuple[str, ...]  # Parameter names, in theta order.
  predict: Callable
  grid: tuple[tuple[float, ...], ...]  # Starting values per parameter; all combinations are tried.
  formula: str
  covariates: tuple[str, ...] = ("N", "P")  # What predict takes after theta.
  # How many times N the parameters P streams are worth: m(params, P), params by name. Every (N, P)
  # form here is L = E + (A·1e9 / (N·m))^alpha, which `params_for_loss` inverts. None for the
  # forms over tokens, whose worth of streams also depends on D.
  n_multiplier: Callable | None = None
  # Why points at these budgets cannot pin a parameter whose effect lives on the token axis:
  # unseen(params by name, budgets) -> reasons, empty when they can. None: nothing to check.
  unseen: Callable | None = None

  def params(self, theta) -> dict:
    """theta [K] -> {name: value}; theta [S, K] -> {name: column [S, 1]} (broadcasts against
    points, as predict does)."""
    theta = np.asarray(theta, float)
    if theta.ndim == 1:
      return {name: theta[i] for i, name in enumerate(self.names)}
    return {name: theta[:, i:i + 1] for i, name in enumerate(self.names)}

  def theta(self, params) -> np.ndarray:
    """{name: value} (a mapping, e.g. a fit.json group) -> theta [K] in this form's order."""
    return np.array([float(params[name]) for name in self.names])

  def multiplier(self, theta, P):
    """The N multiplier P streams are worth under theta ([K], or [S, K] giving [S, len(P)])."""
    return self.n_multiplier(self.params(theta), np.asarray(P, float))

  def params_for_loss(self, theta, loss, P):
    """N at which P streams reach `loss` under theta [K] (inf where the loss is at or below E)."""
    p, loss = self.params(theta), np.asarray(loss, float)
    with np.errstate(all="ignore"):
      n = p["A"] * 1e9 / ((loss - p["E"]) ** (1.0 / p["alpha"]) * self.multiplier(theta, P))
    return np.where(loss > p["E"], n, np.inf)


# Starting values shared by the forms (a new form may use them).
E0 = tuple(np.exp([-1.0, -0.5, 0.0]))
A0 = tuple(np.exp([-4.0, -2.0, 0.0, 2.0, 4.0]))
ALPHA0 = (0.0, 0.5, 1.0, 1.5, 2.0)

# The law and its competitors; a new form is one entry (the sweep reports compare them all).
FORMS: dict[str, LawForm] = {
    "parscale": LawForm("parscale", ("E", "A", "alpha", "k"), parscale,
                        (E0, A0, ALPHA0, (0.2, 0.4, 0.6, 0.8)),
                        "L = E + (A*1e9 / (N*(k*ln P + 1)))^alpha",
                        n_multiplier=lambda p, P: multiplier(p["k"], P)),
    "diversity": LawForm("diversity", ("E", "A", "alpha", "rho"), diversity,
                         (E0, A0, ALPHA0, (0.2, 0.4, 0.6, 0.8)),
                         "L = (A*1e9 / (N*P^(1/alpha)*DIVERSITY))^alpha + E, "
                         "DIVERSITY = [(P-1)*rho + 1]^(-1/alpha)",
                         n_multiplier=lambda p, P: diversity_multiplier(P, p["rho"], p["alpha"])),
    "power": LawForm("power", ("E", "A", "alpha", "gamma"), power_in_p,
                     (E0, A0, ALPHA0, (0.05, 0.1, 0.2, 0.4)),
                     "L = E + (A*1e9 / (N*P^gamma))^alpha",
                     n_multiplier=lambda p, P: P ** p["gamma"]),
    "p_independent": LawForm("p_independent", ("E", "A", "alpha"), p_independent,
                             (E0, A0, ALPHA0), "L = E + (A*1e9 / N)^alpha",
                             n_multiplier=lambda p, P: np.ones_like(P)),
}
LAW = FORMS["parscale"]  # The paper's law: what fits, reports, plans and costs use.


B0 = tuple(np.exp([-8.0, -5.0, -2.0]))
BETA0 = (0.3, 0.7)

# Laws over (N, P, D), fitted where a table has runs at several token budgets.
DATA_FORMS: dict[str, LawForm] = {
    "parscale_data": LawForm("parscale_data", ("E", "A", "alpha", "k", "B", "beta"),
                             parscale_with_data,
                             (E0, A0[::2], (0.5, 1.0), (0.2, 0.6), B0, BETA0),
                             "L = E + (A*1e9 / (N*(k*ln P + 1)))^alpha + (B*1e9 / D)^beta",
                             ("N", "P", "D")),
    "diversity_data": LawForm("diversity_data", ("E", "A", "alpha", "B", "beta", "rho_end", "D_rho"),
                              diversity_with_data,
                              (E0, A0[::2], (0.5, 1.0), B0, BETA0, (0.3, 0.8), (1.0, 5.0)),
                              "L = E + (A*1e9/N)^alpha * ((P-1)*rho(D) + 1)/P + (B*1e9 / D)^beta, "
                              "rho(D) = rho_end + (1 - rho_end)*exp(-D / (D_rho*1e6))",
                              ("N", "P", "D"), unseen=unseen_decorrelation),
}


def start_grid(form: LawForm) -> np.ndarray:
  """All combinations of the starting values, [S, K], clipped to the lower bound."""
  mesh = np.meshgrid(*form.grid, indexing="ij")
  return np.maximum(np.stack([m.reshape(-1) for m in mesh], axis=1), LOWER_BOUND)


def huber(r, delta=HUBER_DELTA):
  a = np.abs(r)
  return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def objective(form: LawForm, theta, X, L, weights=None, delta=HUBER_DELTA):
  """Summed Huber loss of log(prediction) - log(L) at covariates X (the form's, e.g. (N, P)), one
  value per row of theta; inf where the prediction is not positive and finite."""
  with np.errstate(all="ignore"):
    pred = form.predict(np.atleast_2d(theta), *X)
    r = np.log(pred) - np.log(L)
    terms = huber(r, delta) * (1.0 if weights is None else weights)
    value = np.sum(terms, axis=-1)
  return np.where(np.all(np.isfinite(r), axis=-1), value, np.inf)


def r_squared(pred, L) -> float:
  return float(1.0 - np.sum((L - pred) ** 2) / np.sum((L - np.mean(L)) ** 2))
