"""Which (N, P) to train or deploy under a budget: the fitted law and the roofline cost model together.

Candidates are models of one family (the base shape's depth, heads and vocabulary; width solved for
N, as `scaled_config` does) over a range of N, at each P. For each: the law's predicted loss with its
bootstrap 95 % interval, inference memory and latency on a device (`inference_cost`), and training
FLOPs for a token budget (P streams cost P times per token). A plan picks, under one constraint, the
candidate with the lowest predicted loss (or, for a target loss, the lowest latency), and sets beside
it the best model of the other kind (P = 1 against P > 1), with the share of bootstrap fits in which
the choice would flip.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from parscale_jax.analysis.law import LAW, LawForm
from parscale_jax.analysis.results import FittedLaw
from parscale_jax.cost.devices import Device
from parscale_jax.cost.model import Workload, inference_cost, scaled_config
from parscale_jax.errors import UserError
from parscale_jax.model.accounting import flops_per_token, param_counts
from parscale_jax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Constraint:
  """Exactly one budget: memory, latency, a target loss, or training compute."""

  max_memory_gb: float | None = None  # Inference memory (weights, KV cache, activations).
  max_latency_ms: float | None = None  # Prefill plus decoding every output token.
  target_loss: float | None = None  # Reach this loss at the lowest latency.
  train_flops: float | None = None  # Training compute for `train_tokens` tokens.
  train_tokens: float | None = None

  def __post_init__(self):
    given = [k for k in ("max_memory_gb", "max_latency_ms", "target_loss", "train_flops")
             if getattr(self, k) is not None]
    if len(given) != 1:
      raise UserError("plan: give exactly one of a memory, latency, target-loss or training-FLOPs budget")
    if any(getattr(self, k) <= 0 for k in given):
      raise UserError(f"plan: the budget {given[0]} must be > 0")
    if self.train_flops is not None and not (self.train_tokens and self.train_tokens > 0):
      raise UserError("plan: a training-FLOPs budget needs the training tokens (> 0)")


@dataclasses.dataclass(frozen=True)
class Candidate:
  N: float  # Non-embedding parameters, ParScale's own included (the law's N).
  P: int
  hidden: int
  layers: int
  loss: float
  loss_ci95: tuple[float, float] | None
  memory_gb: float
  prefill_ms: float
  decode_ms: float  # Per output token, averaged over the generation.
  latency_ms: float  # Prefill plus all output tokens.
  train_flops: float | None

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Plan:
  recommended: Candidate
  runner_up: Candidate | None  # The best model of the other kind (P = 1 vs P > 1).
  comparison: str  # One sentence: the runner-up against the recommendation.
  flip_share: float | None  # Share of bootstrap fits in which the runner-up would be chosen.
  front: list[Candidate]  # Pareto front: no candidate is better on loss, memory and latency.
  assumptions: dict
  extrapolated: bool = False  # The recommendation's P lies beyond the P the law was fitted on.
  # Set when the budget binds nothing: the recommendation is the largest model considered.
  unbound: str | None = None

  def as_dict(self) -> dict:
    return {"recommended": self.recommended.as_dict(), "extrapolated": self.extrapolated,
            "unbound": self.unbound,
            "runner_up": self.runner_up.as_dict() if self.runner_up else None,
            "comparison": self.comparison, "flip_share": self.flip_share,
            "front": [c.as_dict() for c in self.front], "assumptions": self.assumptions}


def _losses(form: LawForm, theta, N, P) -> np.ndarray:
  return form.predict(np.atleast_2d(theta), np.asarray(N, float), np.asarray(P, float))


def candidate(config: ModelConfig, theta, samples, device: Device, w: Workload, seq_len: int,
              train_tokens: float | None, form: LawForm = LAW) -> Candidate:
  n = param_counts(config).non_embedding
  loss = float(_losses(form, theta, [n], [config.P])[0, 0])
  ci = None
  if samples is not None and len(samples):
    lo, hi = np.percentile(_losses(form, samples, [n], [config.P])[:, 0], [2.5, 97.5])
    ci = (float(lo), float(hi))
  cost = inference_cost(config, device, w)
  flops = flops_per_token(config, seq_len) * train_tokens if train_tokens else None
  return Candidate(float(n), config.P, config.hidden_size, config.num_layers, loss, ci,
                   cost["memory"]["total"] / 1e9, cost["latency"]["prefill"] * 1e3,
                   cost["latency"]["decode"] * 1e3 / max(w.output_tokens, 1),
                   cost["latency"]["total"] * 1e3, flops)


def family(base: ModelConfig, n_values, Ps) -> list[ModelConfig]:
  """base's family at each backbone size in n_values and each P."""
  base1 = dataclasses.replace(base, P=1)
  configs = []
  for n in n_values:
    shape = scaled_config(base1, float(n))
    configs += [dataclasses.replace(shape, P=int(p), prefix_tokens=base.prefix_tokens) for p in Ps]
  return configs


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
  keys = lambda c: (c.loss, c.memory_gb, c.latency_ms)
  front = [c for c in cands if not any(
      all(a <= b for a, b in zip(keys(o), keys(c))) and keys(o) != keys(c) for o in cands)]
  return sorted(front, key=lambda c: c.loss)


def _feasible(c: Candidate, k: Constraint) -> bool:
  if k.max_memory_gb is not None:
    return c.memory_gb <= k.max_memory_gb
  if k.max_latency_ms is not None:
    return c.latency_ms <= k.max_latency_ms
  if k.train_flops is not None:
    return c.train_flops <= k.train_flops
  return c.loss <= k.target_loss


def _choose(cands: list[Candidate], k: Constraint) -> Candidate | None:
  ok = [c for c in cands if _feasible(c, k)]
  if not ok:
    return None
  if k.target_loss is not None:
    return min(ok, key=lambda c: (c.latency_ms, c.memory_gb))
  return min(ok, key=lambda c: c.loss)


def plan(law, base: ModelConfig, device: Device, constraint: Constraint, *, samples=None,
         Ps=(1, 2, 4, 8, 16), n_values=None, workload: Workload = Workload(), seq_len: int = 4096,
         fit_source: str = "", max_fitted_P: float | None = None) -> Plan:
  """The recommended (N, P) under `constraint`. law: a FittedLaw (`load_fit(...).law(group)`) or
  the paper's law's parameters in its order (E, A, alpha, k); samples: its bootstrap draws
  [S, parameters], for intervals and the flip share; n_values: backbone sizes to consider
  (default: 40 sizes from 1/8 to 8 times base's); max_fitted_P: the largest P the law was fitted
  on, beyond which a recommendation is flagged as an extrapolation."""
  form = law.form if isinstance(law, FittedLaw) else LAW
  theta = np.asarray(law.theta if isinstance(law, FittedLaw) else law, float)
  if n_values is None:
    n0 = param_counts(dataclasses.replace(base, P=1)).backbone
    n_values = np.geomspace(n0 / 8, n0 * 8, 40)
  tokens = constraint.train_tokens
  cands = [candidate(c, theta, samples, device, workload, seq_len, tokens, form)
           for c in family(base, n_values, Ps)]
  best = _choose(cands, constraint)
  if best is None:
    raise UserError("plan: no candidate meets the budget; widen the size range or the budget")
  rival = _choose([c for c in cands if (c.P == 1) != (best.P == 1)], constraint)
  runner = rival
  if best.P > 1:
    # P = 1 at the recommendation's predicted loss, solved exactly: what the streams are worth.
    equal = scaled_config(dataclasses.replace(base, P=1), best.N * float(form.multiplier(theta, best.P)))
    runner = candidate(equal, theta, samples, device, workload, seq_len, tokens, form)
  comparison = ""
  if runner is not None:
    same = " for the same predicted loss" if best.P > 1 else f", predicted loss {runner.loss:.4f} against {best.loss:.4f}"
    comparison = (f"P = {runner.P} at {runner.N / 1e9:.3g}B: {runner.memory_gb / best.memory_gb:.2f}x "
                  f"the memory and {runner.latency_ms / best.latency_ms:.2f}x the latency{same}")
  flip = None
  if samples is not None and len(samples) and rival is not None:
    # How often the best feasible model of the other kind would predict the better outcome.
    if constraint.target_loss is None:
      flip = float(np.mean(_losses(form, samples, [rival.N], [rival.P])[:, 0]
                           < _losses(form, samples, [best.N], [best.P])[:, 0]))
    else:
      flip = float(np.mean(_losses(form, samples, [best.N], [best.P])[:, 0] > constraint.target_loss))
    if flip > 0.05:
      comparison += (f"; within the fit's uncertainty the choice flips ({100 * flip:.0f} % of "
                     f"bootstrap fits)")
  extrapolated = max_fitted_P is not None and best.P > max_fitted_P
  unbound = None
  largest = max(c.N for c in cands if c.P == best.P)
  if constraint.target_loss is None and best.N >= largest:
    unbound = (f"the budget binds nothing: the recommendation is the largest model considered "
               f"({largest / 1e9:.3g}B, the top of the size range); give a smaller budget or a "
               f"larger --size")
  assumptions = {"device": dataclasses.asdict(device), "workload": dataclasses.asdict(workload),
                 "seq_len": seq_len, "constraint": dataclasses.asdict(constraint), "P": list(Ps),
                 "family": {"layers": base.num_layers, "heads": base.num_heads,
                            "kv_heads": base.num_kv_heads, "vocab": base.vocab_size,
                            "prefix_tokens": base.prefix_tokens},
                 "fit": fit_source, "max_fitted_P": max_fitted_P, "law": {k: float(v) for k, v in form.params(theta).items()}}
  return Plan(best, runner, comparison, flip, pareto_front(cands), assumptions, extrapolated, unbound)
