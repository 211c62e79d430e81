"""fit.json: writing it, and `load_fit`, which turns it back into a predictor.

Format (version 1): {"version": 1, "law": formula, "form": its name in law.FORMS (absent in older
files: the paper's law), "source": input, "groups": {name: {<the form's parameters>, objective, r2,
n_points, multiplier, ci95, multiplier_ci95, k_excludes_zero, bootstrap, extrapolation, comparison,
points}}}. Under the paper's law the parameters are E, A, alpha, k (A in units of 1e9 parameters);
objective is the summed Huber loss (delta 1e-3) of log residuals, r2 on the losses.
"""
from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from importlib import resources
import json
import math
from pathlib import Path
import warnings

import numpy as np

from parscale_jax.analysis.law import FORMS, LAW, LawForm
from parscale_jax.atomic import write_text_atomic
from parscale_jax.errors import UserError


VERSION = 1
UNNAMED_FORM = "parscale"  # What a fit.json without a "form" holds (all files written so far).


N_MEANING = {"N": "non-embedding parameters, ParScale's own included",
             "N_backbone": "non-embedding parameters of the backbone, ParScale's own excluded"}


def fit_document(groups: dict, source: str, n_column: str = "N") -> dict:
  form = {} if LAW.name == UNNAMED_FORM else {"form": LAW.name}
  return {"version": VERSION, "law": LAW.formula, **form, "source": source,
          "N": N_MEANING.get(n_column, n_column), "groups": groups}


def law_form(doc: dict, where: str = "fit.json") -> LawForm:
  """The form a fit.json's groups were fitted with (files without a `form` hold the paper's law)."""
  name = doc.get("form", UNNAMED_FORM)
  if name not in FORMS:
    raise UserError(f"{where}: unknown law form {name!r} (known: {', '.join(FORMS)})")
  return FORMS[name]


def write_fit(doc: dict, path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


class NotIdentifiedWarning(UserWarning):
  """A law is used whose fit the data do not identify."""


@dataclasses.dataclass(frozen=True)
class FittedLaw:
  """One group's fitted law: a law form and its parameters by name (`law.k`, `law.params["k"]`)."""

  params: Mapping[str, float]
  form: LawForm = LAW
  group: str = "all"
  # Why the data do not pin this law (fit.json's not_identified); empty when they do. Its
  # predictions then warn (the numbers are the optimum's, not a finding).
  not_identified: tuple[str, ...] = ()

  def __post_init__(self):
    if set(self.params) != set(self.form.names):
      raise ValueError(f"law {self.form.name!r} has parameters {', '.join(self.form.names)}, "
                       f"not {', '.join(self.params)}")
    object.__setattr__(self, "params", {name: float(self.params[name]) for name in self.form.names})

  def __getattr__(self, name: str) -> float:
    params = self.__dict__.get("params", {})
    if name in params:
      return params[name]
    raise AttributeError(f"{type(self).__name__} of law {self.form.name!r} has no {name!r}")

  def _warn(self) -> None:
    if self.not_identified:
      warnings.warn(f"the law of group {self.group!r} is not identified by its data "
                    f"({'; '.join(self.not_identified)}): its predictions are no finding",
                    NotIdentifiedWarning, stacklevel=3)

  @property
  def theta(self) -> np.ndarray:
    """The parameters in the form's order (form.names)."""
    return self.form.theta(self.params)

  def predict(self, N, P):
    """Predicted loss at non-embedding parameters N and P streams."""
    self._warn()
    N, P = np.broadcast_arrays(np.asarray(N, float), np.asarray(P, float))
    return self.form.predict(self.theta[None], N.ravel(), P.ravel())[0].reshape(N.shape)[()]

  def multiplier(self, P):
    """How many times the parameters P streams are worth (k·ln P + 1 under the paper's law)."""
    return self.form.multiplier(self.theta, P)

  def equivalent_params(self, N, P):
    """The parameter count that a single stream would need to match N parameters at P streams."""
    self._warn()
    return np.asarray(N, float) * self.multiplier(P)

  def params_for_loss(self, loss, P=1):
    """N at which P streams reach `loss` (inf where the loss is at or below E)."""
    return self.form.params_for_loss(self.theta, loss, P)


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
    form = law_form(self.doc)
    return FittedLaw({name: g[name] for name in form.names}, form, group,
                     tuple(g.get("not_identified") or ()))

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
  form = law_form(doc, str(path))
  for name, g in doc["groups"].items():
    if not isinstance(g, dict):
      raise UserError(f"{path}: group {name!r} is not a mapping")
    for key in (*form.names, "objective", "r2"):
      # bool is an int in Python: `k: true` is no number.
      if isinstance(g.get(key), bool) or not isinstance(g.get(key), (int, float)) or not math.isfinite(g[key]):
        raise UserError(f"{path}: group {name!r} has no valid {key!r}")
    for key in form.names:  # The law's parameters are positive (fitted >= 1e-8).
      if g[key] <= 0:
        raise UserError(f"{path}: group {name!r} has {key} = {g[key]:g}; the law needs {key} > 0")
  return FitResult(doc)


def paper_fit() -> FitResult:
  """The law fitted to the paper's published losses, per dataset, with 1000 bootstrap draws
  (package data: `parscale fit --reference paper` wrote it; a test checks it is current)."""
  text = resources.files("parscale_jax.analysis").joinpath("paper_fit.json").read_text()
  return FitResult(json.loads(text))


def paper_law(group: str = "stack-v2-python") -> FittedLaw:
  """The paper-fit law of one dataset (stack-v2-python or pile)."""
  fit = paper_fit()
  if group not in fit.groups:
    raise UserError(f"the paper's table has no group {group!r} (groups: {', '.join(fit.groups)})")
  return fit.law(group)
