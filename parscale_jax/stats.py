"""Standard errors, paired differences and t intervals: the statistics every report uses."""
from __future__ import annotations

import math

import numpy as np


def standard_error(values) -> float:
  """Standard error of the mean (sample std, ddof 1); NaN for fewer than two values."""
  values = np.asarray(values, float)
  return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def pooled_sd(groups) -> float:
  """Square root of the mean within-group variance (ddof 1) over the groups of two or more values:
  how much seeds scatter; NaN where no group has two."""
  variances = [np.var(np.asarray(g, float), ddof=1) for g in groups if len(g) > 1]
  return float(np.sqrt(np.mean(variances))) if variances else math.nan


def paired_differences(a: dict, b: dict) -> np.ndarray:
  """a[key] - b[key] over the keys (seeds) both have, in key order."""
  return np.array([a[k] - b[k] for k in sorted(set(a) & set(b))], float)


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
  """Student-t interval of the mean; (nan, nan) for fewer than two values."""
  values = np.asarray(values, float)
  if len(values) < 2:
    return math.nan, math.nan
  from scipy import stats

  half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * standard_error(values)
  return float(values.mean() - half), float(values.mean() + half)


def mean_se(values, digits: int = 4) -> str:
  """'+0.0123 ± 0.0045' (mean and standard error); the mean alone for one value; '' for none."""
  values = np.asarray(values, float)
  if len(values) == 0:
    return ""
  text = f"{values.mean():+.{digits}f}"
  return text + (f" ± {standard_error(values):.{digits}f}" if len(values) > 1 else "")


def mean_se_interval(values, digits: int = 4) -> str:
  """'+0.0123 ± 0.0045 [+0.0030, +0.0216]' (mean, standard error, 95 % t interval), as far as
  the number of values allows."""
  values = np.asarray(values, float)
  if len(values) == 0:
    return ""
  text = f"{values.mean():+.{digits}f}"
  if len(values) > 1:
    lo, hi = t_interval(values)
    text += f" ± {standard_error(values):.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
  return text
