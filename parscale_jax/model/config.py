"""Model configuration and named size presets."""
from __future__ import annotations

import dataclasses
from typing import Literal

from parscale_jax.configlib import ConfigError, check_choices, from_dict
from parscale_jax.model.prefix import PREFIX_FORMS  # The forms are modules: JAX loads late.


BYTE_VOCAB = 257  # 256 byte values + one end-of-document token (see data/tokenizer.py).
SCAN_FROM_LAYERS = 12  # Default depth from which the layer stack is scanned (ModelConfig.scan_layers).


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A Qwen2-architecture decoder with ParScale streams."""

  vocab_size: int = BYTE_VOCAB  # Token vocabulary size V.
  hidden_size: int = 64  # Model width D.
  intermediate_size: int = 192  # SwiGLU hidden width F.
  num_layers: int = 2  # Decoder layers L.
  num_heads: int = 4  # Query heads; head_dim = hidden_size / num_heads.
  num_kv_heads: int = 2  # Key/value heads (grouped-query attention).
  rope_theta: float = 10000.0  # Rotary embedding base.
  rms_norm_eps: float = 1e-6  # RMSNorm epsilon.
  tie_embeddings: bool = False  # Share the token embedding with the LM head.
  P: int = 1  # Parallel streams; P = 1 is the plain transformer.
  prefix_tokens: int = 48  # Learned key/value prefix length per layer and stream (P > 1).
  # P = 1 with a learned prefix too (an ablation: what the prefix gains without a second stream).
  single_stream_prefix: bool = False
  smoothing: float = 0.01  # Aggregation weights w <- w(1-eps) + eps/P (the reference's attn_smooth).
  aggregation: Literal["dynamic", "mean"] = "dynamic"  # Learned MLP weights, or a plain mean (ablation).
  init_std: float = 0.02  # Std of matrices and embeddings at initialisation.
  # Prefix init std (the reference leaves its prefix uninitialised, hence its NaNs). 0.5 made
  # P = 4 worse by 0.025 +- 0.002 nats than 0.02 at l4-200k (analysis/results/cpu_streams).
  prefix_init_std: float = 0.02
  # How training parameterises the prefix (a form of model/prefix.py). raw: the prefix tensors
  # themselves. mlp: the paper's reparameterisation (prefix tuning, Li & Liang 2021): per layer, a
  # table of P vectors through an MLP (tanh) that outputs each stream's key and value prefix;
  # export folds it into a raw prefix.
  prefix_param: str = "raw"
  prefix_mlp_dim: int = 128  # mlp: each stream's table vector per layer.
  prefix_mlp_hidden: int = 512  # mlp: the MLP's hidden width.
  # The layer stack as one scanned layer over stacked weights, so that compile time stays flat in
  # depth; None: from SCAN_FROM_LAYERS layers up (scanned, a 4-layer train step ran 25-30 % slower
  # on a 2-core CPU).
  scan_layers: bool | None = None
  # Activation rematerialisation of each layer in training: none (keep every activation), full
  # (keep only each layer's input, recompute the rest: about 1.2x the FLOPs), dots (keep the weight
  # matmuls' outputs, recompute the rest). Same gradients; less memory.
  remat: Literal["none", "full", "dots"] = "none"
  # How streams run in training and uncached forwards; all give the same numbers. loop: 8-21 %
  # faster CPU training at P >= 4, but compile time grows with P (benchmarks/README.md). Cached
  # decoding always runs the streams folded into the batch, as its cache holds them.
  stream_impl: Literal["vmap", "fold", "loop"] = "vmap"
  dtype: Literal["float32", "bfloat16"] = "float32"  # Compute dtype; parameters stay float32.
  # The size preset this config was made from (model.size); it becomes None as soon as a preset
  # field differs from the preset's (an override, dataclasses.replace), so it never names a model
  # the preset does not describe.
  size: str | None = None

  def __post_init__(self):
    check_choices(self, "model.")
    if self.prefix_param not in PREFIX_FORMS:
      raise ConfigError(f"model.prefix_param: {self.prefix_param!r} is not one of {list(PREFIX_FORMS)}")
    if self.size is not None and (self.size not in PRESETS or any(
        getattr(self, k) != v for k, v in PRESETS[self.size].items())):
      object.__setattr__(self, "size", None)  # Frozen: the one place a field is normalised.
    positive = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                "num_kv_heads", "P", "prefix_mlp_dim", "prefix_mlp_hidden")
    for name in positive:
      if getattr(self, name) < 1:
        raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
    if self.hidden_size % self.num_heads:
      raise ConfigError(f"model.num_heads={self.num_heads} does not divide "
                        f"hidden_size={self.hidden_size}")
    if self.num_heads % self.num_kv_heads:
      raise ConfigError(f"model.num_kv_heads={self.num_kv_heads} does not divide "
                        f"num_heads={self.num_heads}")
    if self.head_dim % 2:
      raise ConfigError(f"model head_dim={self.head_dim} must be even for rotary embeddings")
    if self.has_prefix and self.prefix_tokens < 1:
      raise ConfigError(f"model.prefix_tokens must be >= 1 when the model has a prefix (P > 1 or "
                        f"model.single_stream_prefix), got {self.prefix_tokens}")
    if not 0.0 <= self.smoothing < 1.0:
      raise ConfigError(f"model.smoothing must be in [0, 1), got {self.smoothing}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def scanned(self) -> bool:
    return self.scan_layers if self.scan_layers is not None else self.num_layers >= SCAN_FROM_LAYERS

  @property
  def has_prefix(self) -> bool:
    return self.P > 1 or self.single_stream_prefix

  @property
  def has_aggregator(self) -> bool:
    return self.P > 1 and self.aggregation == "dynamic"


def _paper(hidden: int, ffn: int) -> dict:
  return dict(vocab_size=151936, hidden_size=hidden, intermediate_size=ffn, num_layers=36,
              num_heads=16, num_kv_heads=2, rope_theta=1e6, tie_embeddings=False)


def _cpu(hidden: int, layers: int, heads: int = 4) -> dict:
  return dict(vocab_size=BYTE_VOCAB, hidden_size=hidden, intermediate_size=3 * hidden,
              num_layers=layers, num_heads=heads, num_kv_heads=2, rope_theta=10000.0)


def _gqa6(hidden: int, ffn: int) -> dict:
  return dict(vocab_size=BYTE_VOCAB, hidden_size=hidden, intermediate_size=ffn, num_layers=6,
              num_heads=8, num_kv_heads=1, rope_theta=10000.0)


def _cpu_deep(hidden: int) -> dict:
  return dict(vocab_size=BYTE_VOCAB, hidden_size=hidden, intermediate_size=3 * hidden,
              num_layers=4, num_heads=2, num_kv_heads=1, rope_theta=10000.0)


# The paper's six sizes (36 layers, 16 heads, 2 kv heads) and a byte-vocabulary ladder for CPU
# sweeps, from ~50K to ~4M non-embedding parameters. Within a family (cpu-55k ... cpu-390k at depth
# 2; l4-* at depth 4) only the width varies, as the paper's sizes share a depth of 36.
PRESETS: dict[str, dict] = {
    "paper-0.5b": _paper(896, 4864),
    "paper-0.7b": _paper(1024, 5504),
    "paper-1.1b": _paper(1280, 6912),
    "paper-1.6b": _paper(1536, 8320),
    "paper-2.8b": _paper(2048, 11008),
    "paper-4.4b": _paper(2560, 13824),
    "cpu-55k": _cpu(48, 2),
    "cpu-100k": _cpu(64, 2),
    "cpu-220k": _cpu(96, 2),
    "cpu-230k": _cpu(80, 3),
    "cpu-330k": _cpu(96, 3),
    "cpu-390k": _cpu(128, 2),
    "cpu-790k": _cpu(128, 4),
    "cpu-1.8m": _cpu(192, 4),
    "cpu-3.9m": _cpu(256, 5),
    # The science grid's family (sweeps/cpu_grid.yaml): 4 layers, 2 query heads sharing 1 kv head,
    # width only varying; depth gives the per-layer prefix room to act (calibration report).
    "l4-50k": _cpu_deep(32),
    "l4-110k": _cpu_deep(48),
    "l4-200k": _cpu_deep(64),
    "l4-310k": _cpu_deep(80),
    "l4-440k": _cpu_deep(96),
    # Where ParScale's own parameters are small, as at the paper's scale: 6 layers, 8 query heads
    # sharing 1 kv head, Qwen2.5's FFN ratio (~5.4x). With an 8-token prefix (model.prefix_tokens),
    # at P = 8 the prefix and aggregator are 9.3 % / 8.7 % of the backbone (paper-1.6b: 1.5 %).
    "g6-250k": _gqa6(48, 256),
    "g6-450k": _gqa6(64, 344),
}


def preset(name: str, **overrides) -> ModelConfig:
  """The named size preset, with field overrides (P, prefix_tokens, ...)."""
  if name not in PRESETS:
    raise ConfigError(f"unknown size preset '{name}' (known: {', '.join(PRESETS)})")
  return ModelConfig(**{**PRESETS[name], "size": name, **overrides})


def model_config_from_dict(data: dict) -> ModelConfig:
  """A model section of a config file: optional `size` preset name plus field overrides."""
  data = dict(data)
  size = data.pop("size", None)
  if size is not None:
    if size not in PRESETS:
      raise ConfigError(f"model.size: unknown size preset '{size}' (known: {', '.join(PRESETS)})")
    data = {**PRESETS[size], **data, "size": size}
  return from_dict(ModelConfig, data, prefix="model.")
