"""Inference cost of parallel vs parameter scaling, by a roofline model.

For a base shape at P streams, the fitted law gives the loss; the parameter-scaled model of the
same family (same depth, heads and vocabulary; width and FFN scaled together) with N·(k·ln P + 1)
non-embedding parameters predicts the same loss. Both are costed against the base at P = 1:

- memory: weights, KV cache (P streams per sequence, plus each stream's prefix), and the largest
  layer's activations during prefill, attention scores included (checked against the XLA:TPU
  compiler's memory analysis: benchmarks/README.md);
- latency: prefill and each decode step take max(FLOPs / (peak·eff_flops), bytes / (bw·eff_bw));
  decode reads all weights and the whole KV cache once per step.
"""
from __future__ import annotations

import dataclasses
import math

from scipy.optimize import brentq

from parscale_jax.cost import DEFAULT_PREFIX_MODE
from parscale_jax.scaling import multiplier
from parscale_jax.cost.devices import Device
from parscale_jax.errors import UserError
from parscale_jax.model.accounting import param_counts
from parscale_jax.model.config import ModelConfig
from parscale_jax.model.layers import PREFILL_CHUNK


@dataclasses.dataclass(frozen=True)
class Workload:
  batch: int = 1
  input_tokens: int = 64
  output_tokens: int = 64
  bytes_per_value: int = 2  # fp16 weights and cache.
  flops_efficiency: float = 0.7
  bandwidth_efficiency: float = 0.9
  prefix_mode: str = DEFAULT_PREFIX_MODE  # One of PREFIX_MODES (parscale_jax/cost/__init__.py).


def scaled_config(base: ModelConfig, non_embedding: float) -> ModelConfig:
  """The P = 1 model of base's family with `non_embedding` parameters (width solved for)."""
  ratio = base.intermediate_size / base.hidden_size
  step = 2 * base.num_heads  # Keeps head_dim an even integer.

  def shaped(width):
    hidden = max(step, int(round(width / step)) * step)
    return dataclasses.replace(base, P=1, hidden_size=hidden, intermediate_size=int(round(hidden * ratio)))

  if not math.isfinite(non_embedding) or non_embedding <= 0:
    raise UserError(f"no model of the family has {non_embedding:.3g} non-embedding parameters "
                    f"(is the fit's k negative?)")
  low, high = step, base.hidden_size * 64
  count = lambda x: param_counts(shaped(x)).non_embedding - non_embedding
  if count(high) < 0:
    raise UserError(f"{non_embedding:.3g} non-embedding parameters is beyond the family of "
                    f"{base.num_layers} layers (at most {param_counts(shaped(high)).non_embedding:.3g}); "
                    f"a smaller prefix or P keeps the comparison in range")
  if count(low) > 0:
    return shaped(low)
  return shaped(brentq(count, low, high))


def _roofline(flops, nbytes, device: Device, w: Workload) -> float:
  return max(flops / (device.peak_flops * w.flops_efficiency),
             nbytes / (device.bandwidth * w.bandwidth_efficiency))


def inference_cost(c: ModelConfig, device: Device, w: Workload) -> dict:
  """Memory (bytes) and latency (s) of generating w.output_tokens after w.input_tokens."""
  counts = param_counts(c)
  b, s_in, s_out, bpv = w.batch, w.input_tokens, w.output_tokens, w.bytes_per_value
  kv_width = 2 * c.num_kv_heads * c.head_dim  # Keys and values per token per layer.
  prefix = c.prefix_tokens if c.has_prefix else 0
  streams = c.P * b  # Every sequence runs P streams.
  if w.prefix_mode == "prompt":  # Prefix tokens computed like prompt tokens, per sequence.
    s_in, prefix = s_in + prefix, 0
  context = s_in + s_out
  weights = counts.total * bpv
  kv_cache = c.num_layers * kv_width * bpv * (streams * context + c.P * prefix)
  # Prefill's largest layer: the prompt's activations, and the float32 scores of one chunk of its
  # queries against the whole cache (the model scores a prompt PREFILL_CHUNK queries at a time).
  scores = streams * c.num_heads * min(s_in, PREFILL_CHUNK) * (context + prefix) * 4
  activations = streams * s_in * (c.hidden_size * 4 + c.intermediate_size * 2) * bpv + scores
  backbone = 2 * counts.backbone  # Matmul FLOPs per token per stream (prefix: no compute).
  head = 2 * c.hidden_size * c.vocab_size  # Once per position, after aggregation.
  agg = 2 * counts.aggregator

  def attention(queries, keys):
    return 4 * c.num_layers * c.num_heads * c.head_dim * queries * keys

  # Prefill: every stream runs the prompt; the head runs once per position.
  prefill_flops = (streams * s_in * backbone + attention(streams * s_in, s_in / 2 + prefix)
                   + b * s_in * (head + agg))
  prefill_bytes = weights + c.num_layers * kv_width * bpv * streams * s_in
  prefill = _roofline(prefill_flops, prefill_bytes, device, w)
  decode = 0.0
  for t in range(s_out):
    ctx = s_in + t + prefix
    flops = streams * backbone + attention(streams, ctx) + b * (head + agg)
    nbytes = weights + c.num_layers * kv_width * bpv * (streams * (s_in + t) + c.P * prefix)
    decode += _roofline(flops, nbytes, device, w)
  return {"params_total": counts.total, "non_embedding": counts.non_embedding,
          "memory": {"weights": weights, "kv_cache": kv_cache, "activations": activations,
                     "total": weights + kv_cache + activations},
          "latency": {"prefill": prefill, "decode": decode, "total": prefill + decode}}


def compare(base: ModelConfig, P: int, k: float, device: Device, w: Workload) -> dict:
  """Parallel scaling (base at P) against parameter scaling of equal predicted loss."""
  base1 = dataclasses.replace(base, P=1)
  parallel = dataclasses.replace(base, P=P)
  n_parallel = param_counts(parallel).non_embedding
  n_equal = n_parallel * float(multiplier(k, P))
  scaled = scaled_config(base1, n_equal)
  costs = {name: inference_cost(c, device, w) for name, c in
           (("base", base1), ("parallel", parallel), ("parameter", scaled))}
  mem_inc = {k2: costs[k2]["memory"]["total"] - costs["base"]["memory"]["total"] for k2 in ("parallel", "parameter")}
  lat_inc = {k2: costs[k2]["latency"]["total"] - costs["base"]["latency"]["total"] for k2 in ("parallel", "parameter")}
  return {"P": P, "batch": w.batch, "k": k, "equal_loss_non_embedding": n_equal,
          "parameter_scaled_shape": {"hidden": scaled.hidden_size, "ffn": scaled.intermediate_size,
                                     "layers": scaled.num_layers},
          "costs": costs, "memory_increase": mem_inc, "latency_increase": lat_inc,
          "memory_increase_ratio": mem_inc["parameter"] / mem_inc["parallel"],
          "latency_increase_ratio": lat_inc["parameter"] / lat_inc["parallel"]}
