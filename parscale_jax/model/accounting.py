"""Parameter and FLOP accounting, as the paper counts them.

N (non-embedding parameters) includes ParScale's own parameters (prefix and aggregator) and excludes
the token embedding and the LM head.
"""
from __future__ import annotations

import dataclasses

from parscale_jax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class ParamCounts:
  backbone: int  # Decoder layers and final norm.
  prefix: int  # P x layers x 2 (k, v) x kv_heads x prefix_tokens x head_dim.
  aggregator: int  # Linear(P·D -> D) + Linear(D -> P), with biases.
  embedding: int  # Token embedding plus an untied LM head.

  @property
  def non_embedding(self) -> int:
    return self.backbone + self.prefix + self.aggregator

  @property
  def total(self) -> int:
    return self.non_embedding + self.embedding


def param_counts(c: ModelConfig) -> ParamCounts:
  d, f, h = c.hidden_size, c.intermediate_size, c.head_dim
  q, kv = c.num_heads * h, c.num_kv_heads * h
  attention = (d * q + q) + 2 * (d * kv + kv) + q * d
  layer = attention + 3 * d * f + 2 * d
  backbone = c.num_layers * layer + d
  prefix = c.P * c.num_layers * 2 * kv * c.prefix_tokens if c.has_prefix else 0
  aggregator = (c.P * d * d + d + d * c.P + c.P) if c.has_aggregator else 0
  embedding = c.vocab_size * d * (1 if c.tie_embeddings else 2)
  return ParamCounts(backbone, prefix, aggregator, embedding)


def flops_per_token(c: ModelConfig, seq_len: int, training: bool = True) -> float:
  """Matmul and attention FLOPs per token (forward x3 when training).

  Backbone matmuls and attention run once per stream (x P); the embedding lookup is free; the LM
  head and the aggregator run once. Attention is causal over `seq_len` (on average (S+1)/2 keys) plus
  the prefix."""
  d, f, h = c.hidden_size, c.intermediate_size, c.head_dim
  q, kv = c.num_heads * h, c.num_kv_heads * h
  layer_matmul = 2 * (d * q + 2 * d * kv + q * d + 3 * d * f)
  keys = (seq_len + 1) / 2 + (c.prefix_tokens if c.has_prefix else 0)
  layer_attention = 2 * 2 * q * keys  # q·k scores and probs·v.
  per_stream = c.num_layers * (layer_matmul + layer_attention)
  head = 2 * d * c.vocab_size
  aggregator = 2 * (c.P * d * d + d * c.P) if c.has_aggregator else 0
  forward = c.P * per_stream + aggregator + head
  return float(3 * forward if training else forward)


def recompute_flops_per_token(c: ModelConfig, seq_len: int) -> float:
  """FLOPs per token that model.remat adds to a training step, beyond flops_per_token's model
  FLOPs: the forward work the backward pass needs again. full recomputes a layer but for its two
  output projections (attention's and the MLP's: the backward pass needs their inputs, never their
  outputs); dots keeps the weight matmuls' outputs and recomputes attention's two batched products."""
  if c.remat == "none":
    return 0.0
  d, f, h = c.hidden_size, c.intermediate_size, c.head_dim
  q, kv = c.num_heads * h, c.num_kv_heads * h
  keys = (seq_len + 1) / 2 + (c.prefix_tokens if c.has_prefix else 0)
  attention = 2 * 2 * q * keys
  layer = attention + (2 * (d * q + 2 * d * kv + 2 * d * f) if c.remat == "full" else 0)
  return float(c.P * c.num_layers * layer)


def describe(c: ModelConfig, seq_len: int) -> dict:
  counts = param_counts(c)
  return {
      "shape": {"layers": c.num_layers, "hidden": c.hidden_size, "ffn": c.intermediate_size,
                "heads": c.num_heads, "kv_heads": c.num_kv_heads, "head_dim": c.head_dim,
                "vocab": c.vocab_size, "P": c.P,
                "prefix_tokens": c.prefix_tokens if c.has_prefix else 0,
                "aggregation": c.aggregation if c.P > 1 else "none"},
      "non_embedding_params": counts.non_embedding,
      "embedding_params": counts.embedding,
      "parscale_params": counts.prefix + counts.aggregator,
      "total_params": counts.total,
      "seq_len": seq_len,
      "train_flops_per_token": flops_per_token(c, seq_len, training=True),
      "forward_flops_per_token": flops_per_token(c, seq_len, training=False),
  }
