"""fit.json: writing it, and `load_fit`, which turns it back into a predictor.

Format (version 1): {"version": 1, "law": formula, "source": input, "groups": {name: {E, A, alpha,
k, objective, r2, n_points, multiplier, ci95, multiplier_ci95, k_excludes_zero, bootstrap,
extrapolation, comparison, points}}}. E, A, alpha, k are the law's parameters (A in units of 1e9
parameters), objective the summed Huber loss (delta 1e-3) of log residuals, r2 on the losses.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
import math
from pathlib import Path

import numpy as np

from parscale_jax.analysis.law import LAW
from parscale_jax.atomic import write_text_atomic
from parscale_jax.errors import UserError

VERSION = 1


N_MEANING = {"N": "non-embedding parameters, ParScale's own included",
             "N_backbone": "non-embedding parameters of the backbone, ParScale's own excluded"}


def fit_document(groups: dict, source: str, n_column: str = "N") -> dict:
  return {"version": VERSION, "law": LAW.formula, "source": source,
          "N": N_MEANING.get(n_column, n_column), "groups": groups}


def write_fit(doc: dict, path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


class NotIdentifiedWarning(UserWarning):
  """A law is used whose fit the data do not identify."""


@dataclasses.dataclass(frozen=True)
class FittedLaw:
  """One group's fitted law."""

  E: float
  A: float
  alpha: float
  k: float
  group: str = "all"
  # Why the data do not pin this law (fit.json's not_identified); empty when they do. Its
  # predictions then warn (the numbers are the optimum's, not a finding).
  not_identified: tuple[str, ...] = ()

  def _warn(self) -> None:
    if self.not_identified:
      warnings.warn(f"the law of group {self.group!r} is not identified by its data "
                    f"({'; '.join(self.not_identified)}): its predictions are no finding",
                    NotIdentifiedWarning, stacklevel=3)

  @property
  def theta(self) -> np.ndarray:
    """The parameters in the law's order (law.LAW.names)."""
    return LAW.theta(dataclasses.asdict(self))

  def predict(self, N, P):
    """Predicted loss at non-embedding parameters N and P streams."""
    self._warn()
    N, P = np.broadcast_arrays(np.asarray(N, float), np.asarray(P, float))
    return LAW.predict(self.theta[None], N.ravel(), P.ravel())[0].reshape(N.shape)[()]

  def multiplier(self, P):
    """k·ln P + 1: how many times the parameters P streams are worth."""
    return LAW.multiplier(self.theta, P)

  def equivalent_params(self, N, P):
    """The parameter count that a single stream would need to match N parameters at P streams."""
    self._warn()
    return np.asarray(N, float) * self.multiplier(P)

  def params_for_loss(self, loss, P=1):
    """N at which P streams reach `loss` (inf where the loss is at or below E)."""
    return LAW.params_for_loss(self.theta, loss, P)


@dataclasses.dataclass(frozen=True)
class FitResult:
  doc: dict

  @property
  def groups(self) -> list[str]:
    return list(self.doc["groups"])

  def group_name(self, group: str | None = None) -> str:
    """`group`, or the fit's only group; an unknown or missing name is a one-line error."""
    if group is None:
      if len(self.groups) != 1:
        raise UserError(f"fit has groups {', '.join(self.groups)}; name one")
      group = self.groups[0]
    if group not in self.doc["groups"]:
      raise UserError(f"fit has no group {group!r} (groups: {', '.join(self.groups)})")
    return group

  def law(self, group: str | None = None) -> FittedLaw:
    group = self.group_name(group)
    g = self.doc["groups"][group]
    return FittedLaw(**{name: g[name] for name in LAW.names}, group=group,
                     not_identified=tuple(g.get("not_identified") or ()))

  def predict(self, N, P, group: str | None = None):
    return self.law(group).predict(N, P)

  def equivalent_params(self, N, P, group: str | None = None):
    return self.law(group).equivalent_params(N, P)


def load_fit(path: str | Path) -> FitResult:
  """Reads a fit.json; a damaged or foreign file gets an error that names the problem."""
  path = Path(path)
  try:
    doc = json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f"{path}: no such file") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
  if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("groups"), dict):
    raise UserError(f"{path}: not a version-{VERSION} fit.json (no 'version'/'groups')")
  for name, g in doc["groups"].items():
    if not isinstance(g, dict):
      raise UserError(f"{path}: group {name!r} is not a mapping")
    for key in (*LAW.names, "objective", "r2"):
      # bool is an int in Python: `k: true` is no number.
      if isinstance(g.get(key), bool) or not isinstance(g.get(key), (int, float)) or not math.isfinite(g[key]):
        raise UserError(f"{path}: group {name!r} has no valid {key!r}")
    for key in LAW.names:  # The law's parameters are positive (fitted >= 1e-8).
      if g[key] <= 0:
        raise UserError(f"{path}: group {name!r} has {key} = {g[key]:g}; the law needs {key} > 0")
  return FitResult(doc)


def paper_fit() -> FitResult:
  """The law fitted to the paper's published losses, per dataset, with 1000 bootstrap draws
  (package data: `parscale fit --reference paper` wrote it; a test checks it is current)."""
  from importlib import resources

  text = resources.files("parscale_jax.analysis").joinpath("paper_fit.json").read_text()
  return FitResult(json.loads(text))


def paper_law(group: str = "stack-v2-python") -> FittedLaw:
  """The paper-fit law of one dataset (stack-v2-python or pile)."""
  fit = paper_fit()
  if group not in fit.groups:
    raise UserError(f"the paper's table has no group {group!r} (groups: {', '.join(fit.groups)})")
  return fit.law(group)
