"""Scaling-law analysis: fit the parallel scaling law, its uncertainty, competitors, plots."""
from parscale_jax.analysis.results import FitResult, FittedLaw, load_fit
