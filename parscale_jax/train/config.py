"""The experiment config: model, data, optimiser and run settings, parsed strictly from YAML."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from parscale_jax.configlib import ConfigError, apply_overrides, check_choices, from_dict, load_yaml, to_dict
from parscale_jax.data.config import DataConfig
from parscale_jax.model.config import ModelConfig, model_config_from_dict


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with warmup and a decay schedule, clipping, and a weight-decay mask."""

  lr: float = 3e-3  # Peak learning rate.
  schedule: Literal["cosine", "wsd", "constant"] = "cosine"  # Decay after warmup.
  warmup_fraction: float = 0.05  # Share of steps spent warming up linearly from 0.
  # Warmup length in steps, whatever the run's length (0: warmup_fraction of the steps). Runs of
  # one token ladder share it, so that each budget's schedule follows the same stable phase.
  warmup_steps: int = 0
  decay_fraction: float = 0.2  # wsd only: the final share of steps that decays to min_lr.
  min_lr_ratio: float = 0.1  # Final learning rate as a fraction of lr.
  weight_decay: float = 0.1  # Decoupled weight decay on matrices (not biases, norms or prefix).
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0  # Global gradient-norm clipping; 0 disables.
  prefix_lr_scale: float = 1.0  # The prefix's learning rate as a multiple of lr.

  def __post_init__(self):
    check_choices(self, "optim.")
    if self.lr <= 0:
      raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
    if self.warmup_steps < 0:
      raise ConfigError(f"optim.warmup_steps must be >= 0 (0: warmup_fraction), got {self.warmup_steps}")
    if self.prefix_lr_scale <= 0:
      raise ConfigError(f"optim.prefix_lr_scale must be > 0, got {self.prefix_lr_scale}")
    if self.weight_decay < 0 or self.clip_norm < 0 or self.eps <= 0:
      raise ConfigError("optim.weight_decay and optim.clip_norm must be >= 0 and optim.eps > 0")
    for name in ("b1", "b2"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")
    for name in ("warmup_fraction", "decay_fraction", "min_lr_ratio"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ConfigError(f"optim.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh: batch split over data x fsdp, parameters sharded over fsdp."""

  data: int = -1  # Data-parallel size; -1 takes all devices not used by fsdp.
  fsdp: int = 1  # Parameter-sharding size.
  # CPU only: split the host into this many devices, one per core, for data parallelism over
  # cores (XLA:CPU leaves a core idle through many small ops; benchmarks/README.md). Needs a fresh
  # process; 1 leaves the devices as JAX starts them (XLA_FLAGS may still set a count).
  cpu_devices: int = 1

  def __post_init__(self):
    if self.data == 0 or self.data < -1:
      raise ConfigError(f"mesh.data must be >= 1 or -1 (all devices), got {self.data}")
    if self.fsdp < 1:
      raise ConfigError(f"mesh.fsdp must be >= 1, got {self.fsdp}")
    if self.cpu_devices < 1:
      raise ConfigError(f"mesh.cpu_devices must be >= 1, got {self.cpu_devices}")


@dataclasses.dataclass(frozen=True)
class WandbConfig:
  """Weights & Biases logging beside metrics.jsonl and TensorBoard (the `wandb` extra)."""

  project: str | None = None  # W&B project; None: no W&B logging.
  mode: Literal["offline", "online"] = "offline"  # offline writes workdir/wandb; `wandb sync` uploads it.
  entity: str | None = None  # W&B team or user; None: the logged-in default.

  def __post_init__(self):
    check_choices(self, "wandb.")
    if self.project is not None and not self.project.strip():
      raise ConfigError("wandb.project must be a name, or absent for no W&B logging")
    if self.project is None and (self.entity is not None or self.mode != "offline"):
      raise ConfigError("wandb.entity and wandb.mode need wandb.project (the W&B project to log to)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One training run."""

  model: ModelConfig = ModelConfig()
  data: DataConfig = DataConfig()
  optim: OptimConfig = OptimConfig()
  mesh: MeshConfig = MeshConfig()
  tokens: int = 1_000_000  # Training length in tokens (rounded down to whole steps).
  batch_size: int = 32  # Rows per optimiser step (global, all devices together).
  grad_accum: int = 1  # Micro-batches per step; batch_size must be a multiple of it.
  seed: int = 0  # Parameter initialisation seed.
  eval_every: int = 0  # Evaluate every N steps (0: only at the end).
  checkpoint_every: int = 100  # Save a checkpoint every N steps (and at the end).
  keep_checkpoints: int = 2  # Checkpoints kept on disk.
  log_every: int = 10  # Steps between metric lines.
  # Two-stage training: initialise the backbone from a P = 1 run directory or Hugging Face
  # checkpoint folder; the prefix and aggregator start fresh.
  init_from: str | None = None
  freeze_backbone: bool = False  # Train only the prefix and aggregator (ParScale parameters).
  export_final: bool = True  # Write the final model as a Hugging Face checkpoint (workdir/final).
  tensorboard: bool = True  # Also write TensorBoard event files.
  wandb: WandbConfig = WandbConfig()  # Also log to Weights & Biases when wandb.project is set.

  def __post_init__(self):
    for name in ("tokens", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints",
                 "log_every"):
      if getattr(self, name) < 1:
        raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.eval_every < 0:
      raise ConfigError(f"eval_every must be >= 0 (0: only at the end), got {self.eval_every}")
    if self.seed < 0:
      raise ConfigError(f"seed must be >= 0, got {self.seed}")
    if self.batch_size % self.grad_accum:
      raise ConfigError(f"batch_size={self.batch_size} is not a multiple of grad_accum={self.grad_accum}")
    if self.steps < 1:
      raise ConfigError(f"tokens={self.tokens} is less than one step "
                        f"({self.batch_size} x {self.data.seq_len} tokens)")
    if self.freeze_backbone and not self.model.has_prefix:
      raise ConfigError("freeze_backbone needs ParScale parameters to train: model.P > 1 or "
                        "model.single_stream_prefix")
    if self.model.single_stream_prefix and self.export_final:
      raise ConfigError("model.single_stream_prefix has no Hugging Face format: "
                        "set export_final: false")

  @property
  def tokens_per_step(self) -> int:
    return self.batch_size * self.data.seq_len

  @property
  def steps(self) -> int:
    return self.tokens // self.tokens_per_step

  @property
  def train_data(self) -> DataConfig:
    """The data config with the document order seeded by `seed` unless data.shuffle_seed is set."""
    if self.data.shuffle_seed is not None:
      return self.data
    return dataclasses.replace(self.data, shuffle_seed=self.seed)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
  data = dict(data)
  model = model_config_from_dict(data.pop("model", {}) or {})
  config = from_dict(TrainConfig, {k: v for k, v in data.items()} | {"model": model})
  return config


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
  return config_from_dict(apply_overrides(load_yaml(path), overrides))


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
  return to_dict(config)


def _flat(tree: dict, prefix: str = "") -> dict:
  """{"optim": {"lr": 1}} -> {"optim.lr": 1}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_differences(saved: dict, config: TrainConfig, ignore=("wandb",)) -> list[str]:
  """The dotted keys in which a run's saved config.yaml differs from `config`; a key the saved
  config lacks (written by an earlier version) counts as its default. `ignore`: top-level
  sections that may change between sessions of a run (W&B logging may be turned on later)."""
  previous, current = _flat(saved or {}), _flat(config_to_dict(config))
  defaults = _flat(config_to_dict(TrainConfig()))
  # model.size only names the preset the other model fields already spell out.
  return sorted(k for k in set(previous) | set(current) if k.split(".")[0] not in ignore
                and k != "model.size" and previous.get(k, defaults.get(k)) != current.get(k))
