"""Import and export of Hugging Face Qwen2 / Qwen2-ParScale checkpoints (config.json + safetensors)."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from parscale_jax.atomic import write_text_atomic
from parscale_jax.configlib import ConfigError
from parscale_jax.errors import UserError, is_disk_full
from parscale_jax.model.config import ModelConfig
from parscale_jax.model.parscale import ParScaleLM, abstract_model, combine_prefix
from parscale_jax.rundir import RunDir


class CheckpointError(UserError):
  """A checkpoint that does not match its config or cannot be read."""


@dataclasses.dataclass
class _Slot:
  variable: nnx.Variable
  transpose: bool = False  # torch Linear stores [out, in]; the aggregator's weights are [in, out].
  layer: int | None = None  # Per layer in the file, stacked here (scanned layers and the prefix)
  layer_axis: int = 0  # ... on this axis: 0 for scanned layers, 1 for the prefix [P, L, ...].


def _slots(model: ParScaleLM) -> dict[str, _Slot]:
  c = model.config
  slots = {"model.embed_tokens.weight": _Slot(model.embed_tokens.embedding),
           "model.norm.weight": _Slot(model.backbone.norm.scale)}
  if not c.tie_embeddings:
    slots["lm_head.weight"] = _Slot(model.lm_head.weight)
  backbone = model.backbone
  for i in range(c.num_layers):
    layer = backbone.layers if backbone.scanned else backbone.layers[i]
    slot = (lambda v: _Slot(v, layer=i)) if backbone.scanned else _Slot
    pre = f"model.layers.{i}."
    attn = layer.self_attn
    for name in ("q_proj", "k_proj", "v_proj"):
      slots[f"{pre}self_attn.{name}.weight"] = slot(getattr(attn, name).weight)
      slots[f"{pre}self_attn.{name}.bias"] = slot(getattr(attn, name).bias)
    slots[f"{pre}self_attn.o_proj.weight"] = slot(attn.o_proj.weight)
    for name in ("gate_proj", "up_proj", "down_proj"):
      slots[f"{pre}mlp.{name}.weight"] = slot(getattr(layer.mlp, name).weight)
    slots[f"{pre}input_layernorm.weight"] = slot(layer.input_layernorm.scale)
    slots[f"{pre}post_attention_layernorm.weight"] = slot(layer.post_attention_layernorm.scale)
    if c.has_prefix:
      slots[f"{pre}self_attn.prefix_k"] = _Slot(model.prefix_k, layer=i, layer_axis=1)
      slots[f"{pre}self_attn.prefix_v"] = _Slot(model.prefix_v, layer=i, layer_axis=1)
  if c.has_aggregator:
    agg = model.aggregator
    slots["model.aggregate_layer.0.weight"] = _Slot(agg.w1, transpose=True)
    slots["model.aggregate_layer.0.bias"] = _Slot(agg.b1)
    slots["model.aggregate_layer.2.weight"] = _Slot(agg.w2, transpose=True)
    slots["model.aggregate_layer.2.bias"] = _Slot(agg.b2)
  return slots


def _file_shape(slot: _Slot) -> tuple[int, ...]:
  shape = tuple(slot.variable.get_value().shape)
  if slot.layer is not None:
    return shape[:slot.layer_axis] + shape[slot.layer_axis + 1:]
  return shape[::-1] if slot.transpose else shape


def config_from_hf(hf: dict, **overrides) -> ModelConfig:
  """Maps a Hugging Face Qwen2(-ParScale) config.json to ModelConfig."""
  if hf.get("hidden_act", "silu") != "silu":
    raise ConfigError(f"config.json: hidden_act={hf['hidden_act']!r} is not supported (only silu)")
  if hf.get("rope_scaling"):
    raise ConfigError("config.json: rope_scaling is not supported")
  if hf.get("use_sliding_window"):
    raise ConfigError("config.json: use_sliding_window=true is not supported")
  try:
    fields = dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        rope_theta=float(hf.get("rope_theta", 10000.0)), rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), P=int(hf.get("parscale_n", 1)),
        prefix_tokens=int(hf.get("parscale_n_tokens", 48)),
        smoothing=float(hf.get("parscale_attn_smooth", 0.01)))
  except KeyError as e:
    raise ConfigError(f"config.json: missing key {e.args[0]!r}") from None
  fields.update(hf.get("parscale_jax", {}))
  fields.update(overrides)
  try:
    return ModelConfig(**fields)
  except TypeError as e:  # An unknown field in the parscale_jax section or the overrides.
    raise ConfigError(f"config.json: {e}") from None


def config_to_hf(config: ModelConfig) -> dict:
  hf = {
      "architectures": ["Qwen2ParScaleForCausalLM" if config.P > 1 else "Qwen2ForCausalLM"],
      "model_type": "qwen2_parscale" if config.P > 1 else "qwen2",
      "hidden_act": "silu", "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "rope_theta": config.rope_theta, "rms_norm_eps": config.rms_norm_eps,
      "tie_word_embeddings": config.tie_embeddings, "rope_scaling": None,
      "use_sliding_window": False, "torch_dtype": "float32",
  }
  if config.P > 1:
    hf.update(parscale_n=config.P, parscale_n_tokens=config.prefix_tokens,
              parscale_attn_smooth=config.smoothing)
  # Our fields with no Hugging Face counterpart, so that a round trip keeps them.
  hf["parscale_jax"] = {"aggregation": config.aggregation, "init_std": config.init_std,
                        "prefix_init_std": config.prefix_init_std}
  return hf


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  index = path / "model.safetensors.index.json"
  files = ([path / "model.safetensors"] if not index.exists()
           else sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()}))
  tensors = {}
  for file in files:
    if not file.exists():
      raise CheckpointError(f"{file}: no such file")
    try:
      tensors.update(load_file(str(file)))
    except (SafetensorError, OSError, ValueError) as e:
      raise CheckpointError(f"{file}: unreadable safetensors file ({e})") from None
  return tensors


def checkpoint_folder(path: str | Path) -> Path:
  """A Hugging Face folder: `path` itself, or a finished run directory's `final/`."""
  if not isinstance(path, (str, Path)):
    raise CheckpointError(f"a checkpoint path must be a string or Path, got {type(path).__name__}")
  path = Path(path).expanduser()
  if RunDir(path).exported:
    return RunDir(path).final
  if not (path / "config.json").exists():
    raise CheckpointError(f"{path}: neither a finished run directory nor a Hugging Face checkpoint "
                          f"folder (no config.json)")
  return path


def load_pretrained(path: str | Path, **overrides) -> ParScaleLM:
  """Loads a Hugging Face Qwen2-ParScale or plain Qwen2 checkpoint folder, or a finished run
  directory's final model, as a ParScaleLM.

  `overrides` set ModelConfig fields that the file does not fix (e.g. stream_impl, dtype)."""
  path = checkpoint_folder(path)
  config_file = path / "config.json"
  try:
    hf = json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_file}: malformed JSON ({e})") from None
  config = config_from_hf(hf, **overrides)
  if config.prefix_param != "raw":
    raise ConfigError(f"{path}: a checkpoint holds combined prefixes; load it with "
                      f"prefix_param='raw' (the default)")
  tensors = _read_tensors(path)
  model = abstract_model(config)
  slots = _slots(model)
  ignorable = {"lm_head.weight"} if config.tie_embeddings else set()
  unexpected = sorted(k for k in tensors
                      if k not in slots and k not in ignorable and not k.endswith("rotary_emb.inv_freq"))
  if unexpected:
    raise CheckpointError(f"tensor {unexpected[0]} is not part of a model with this config "
                          f"(P={config.P}, layers={config.num_layers})")
  stacked: dict[int, dict[int, np.ndarray]] = {}
  for name, slot in slots.items():
    if name not in tensors:
      raise CheckpointError(f"tensor {name} is missing from the checkpoint")
    array = tensors[name]
    if not np.issubdtype(array.dtype, np.floating):
      raise CheckpointError(f"tensor {name} has dtype {array.dtype}; weights must be floating point")
    if not np.isfinite(array).all():
      raise CheckpointError(f"tensor {name} holds non-finite values (NaN or inf)")
    if tuple(array.shape) != _file_shape(slot):
      raise CheckpointError(f"tensor {name} has shape {tuple(array.shape)}, "
                            f"the config implies {_file_shape(slot)}")
    array = np.asarray(array, np.float32)
    if slot.layer is not None:
      stacked.setdefault(id(slot.variable), {})[slot.layer] = array
      if len(stacked[id(slot.variable)]) == config.num_layers:
        slot.variable.set_value(jnp.asarray(np.stack(
            [stacked[id(slot.variable)][i] for i in range(config.num_layers)], axis=slot.layer_axis)))
    else:
      slot.variable.set_value(jnp.asarray(array.T if slot.transpose else array))
  return model


def save_pretrained(model: ParScaleLM, path: str | Path) -> None:
  """Writes `model` as a Hugging Face checkpoint folder (float32 safetensors + config.json)."""
  from safetensors.numpy import save_file

  if not isinstance(model, ParScaleLM):
    raise CheckpointError(f"save_pretrained: expected a ParScaleLM, got {type(model).__name__}")
  path = Path(path)
  if path.exists() and not path.is_dir():
    raise CheckpointError(f"save_pretrained: {path} is a file; give a folder to write into")
  path.mkdir(parents=True, exist_ok=True)
  model = combine_prefix(model)  # The reference's format: the prefix tensors themselves.
  tensors = {}
  for name, slot in _slots(model).items():
    array = np.asarray(slot.variable[...], np.float32)
    if slot.layer is not None:
      array = np.take(array, slot.layer, axis=slot.layer_axis)
    elif slot.transpose:
      array = array.T
    tensors[name] = np.ascontiguousarray(array)
  target = path / "model.safetensors"
  partial = path / ".model.safetensors.tmp"  # Renamed when whole: no half-written model is left.
  try:
    save_file(tensors, str(partial), metadata={"format": "pt"})
  except Exception as e:  # safetensors reports its I/O errors as SafetensorError, with the OS's text.
    partial.unlink(missing_ok=True)
    if is_disk_full(e):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)) from None
    raise
  # safetensors creates the file readable by its owner only; a model is shared like config.json.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(partial, 0o666 & ~umask)
  os.replace(partial, target)
  write_text_atomic(path / "config.json", json.dumps(config_to_hf(model.config), indent=2) + "\n")
