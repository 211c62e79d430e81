"""The parallel scaling law's multipliers: how many parameters P streams are worth. Pure numpy,
below both training (which measures stream diversity) and analysis (which fits the law)."""
from __future__ import annotations

import numpy as np


def multiplier(k, P):
  """k·ln P + 1: how many times the parameters P streams are worth, by the paper's law."""
  return k * np.log(P) + 1.0


def diversity_multiplier(P, rho, alpha):
  """(P / ((P - 1)·rho + 1))^(1/alpha): the parameters P streams whose residuals correlate by rho
  are worth, by the paper's theory (the `diversity` form of analysis/law.py)."""
  return (P / ((P - 1.0) * rho + 1.0)) ** (1.0 / alpha)
