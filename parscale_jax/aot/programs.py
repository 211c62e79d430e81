"""Compile a run's programs ahead of time from abstract state, and read what the compiler says.

`compile_training` builds the training step exactly as `parscale train` does (build_training: the
same mesh, shardings, optimizer, dtype, layer scan and remat) and lowers it on ShapeDtypeStructs,
so nothing is allocated; `compile_decoding` does the same for prefill and one cached decode step.
Each gives bytes per chip (arguments, outputs, temporaries, donated aliases) and the compiler's
FLOPs and bytes accessed per chip, beside the project's own FLOP accounting.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time

from flax import nnx
import jax
from jax.experimental.layout import Format, Layout
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from parscale_jax.aot.topology import native_stderr_to_file
from parscale_jax.errors import UserError
from parscale_jax.model.accounting import flops_per_token
from parscale_jax.model import kernels
from parscale_jax.model.decode import DECODE_STEP_JIT, decode_step
from parscale_jax.model.parscale import abstract_model, init_cache
from parscale_jax.train import sharding
from parscale_jax.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Compiled:
  """What the compiler reports for one program, per chip."""

  name: str
  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  alias_bytes: int  # Outputs written into donated arguments (counted once).
  flops: float  # Per chip, from the compiled program's cost analysis.
  bytes_accessed: float
  accounted_flops: float  # Per chip, by parscale_jax.model.accounting.
  compile_seconds: float
  state_bytes: int = 0  # Parameters and optimizer state (training) or parameters (decoding).
  param_bytes: int = 0  # Parameters alone.

  @property
  def peak_bytes(self) -> int:
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  def as_dict(self) -> dict:
    return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes}


class OutOfMemory(UserError):
  """The compiler refused the program: it needs more memory than a chip has."""

  def __init__(self, name: str, message: str, needed: int | None, state_bytes: int):
    super().__init__(f"{name}: does not fit: {message}")
    self.needed, self.state_bytes = needed, state_bytes


def shard_bytes(abstract_tree, shardings) -> int:
  """Bytes one device holds of a sharded pytree (its largest shard of each leaf)."""
  total = 0
  for leaf, spec in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)):
    total += math.prod(spec.shard_shape(tuple(leaf.shape))) * np.dtype(leaf.dtype).itemsize
  return total


# For counting FLOPs only. XLA:TPU splits a large sharded matmul and its collective into a loop
# over shards (windowed einsum), and its cost analysis counts a loop body once: on 8 v5p chips a
# paper-0.5b layer counted 0.84 of its matmuls. Without the split the count is the matmuls' own
# (the split changes when the work runs, not how much).
COUNTING_OPTIONS = {"tpu": {"xla_jf_spmd_threshold_for_windowed_einsum_mib": "1000000"}}


def _compile(name: str, lower, accounted_flops: float, state_bytes: int, param_bytes: int,
             platform: str, compiler_options: dict | None = None) -> Compiled:
  """lower: () -> a jax Lowered program, traced with the kernels of `platform` (the devices')."""
  start = time.perf_counter()
  with native_stderr_to_file(), kernels.traced_for(platform):
    try:
      compiled = lower().compile(compiler_options=compiler_options)
    except Exception as e:  # XLA's out-of-memory error names what the program needs.
      text = str(e)
      if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
        raise
      raise OutOfMemory(name, _first_line(text), needed_bytes(text, state_bytes), state_bytes) from None
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return Compiled(name, int(memory.argument_size_in_bytes), int(memory.output_size_in_bytes),
                  int(memory.temp_size_in_bytes), int(memory.alias_size_in_bytes),
                  float(cost.get("flops", math.nan)), float(cost.get("bytes accessed", math.nan)),
                  accounted_flops, seconds, state_bytes, param_bytes)


def _first_line(text: str) -> str:
  for line in text.splitlines():
    if "memory" in line.lower():
      return line.strip()[:240]
  return text.strip().splitlines()[0][:240]


_UNITS = {"B": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def needed_bytes(text: str, state_bytes: int = 0) -> int | None:
  """Bytes needed, where XLA says so: "Used 27.31G of 15.75G hbm", or "the total memory required
  for HLO temporaries (18.66T) exceeds ..." (temporaries alone: the state comes on top)."""
  match = re.search(r"Used ([0-9.]+)([BKMGT])i?B? of ([0-9.]+)([BKMGT])", text)
  if match:
    return int(float(match.group(1)) * _UNITS[match.group(2)])
  match = re.search(r"required for HLO temporaries \(([0-9.]+)([BKMGT])\)", text)
  if match:
    return int(float(match.group(1)) * _UNITS[match.group(2)]) + state_bytes
  return None


def compile_training(config: TrainConfig, devices, compiler_options: dict | None = None) -> Compiled:
  """The training step of `config` compiled for `devices` (one optimizer step, grad_accum
  micro-batches)."""
  from parscale_jax.train.trainer import build_training, check_mesh

  mesh = sharding.make_mesh(config.mesh, devices)
  check_mesh(config, mesh)  # The batch must split over the mesh, as train requires.
  training = build_training(config, mesh)
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       training.abstract_state, training.state_shardings)
  rows = jax.ShapeDtypeStruct((config.grad_accum, config.batch_size // config.grad_accum,
                               config.data.seq_len + 1), jnp.int32, sharding=training.rows_sharding)
  accounted = flops_per_token(config.model, config.data.seq_len) * config.tokens_per_step / len(devices)
  state_bytes = shard_bytes(training.abstract_state, training.state_shardings)
  param_bytes = sum(shard_bytes(getattr(training.abstract_state, k), getattr(training.state_shardings, k))
                    for k in ("params", "frozen"))
  return _compile("train step", lambda: training.train_step.lower(state, rows), accounted,
                  state_bytes, param_bytes, devices[0].platform, compiler_options)


def step_cost(config: TrainConfig, devices) -> tuple[float, float]:
  """The compiler's (FLOPs, bytes accessed) per chip for one whole training step. XLA's cost
  analysis counts a loop body once, and the step loops over layers (scan) and micro-batches
  (grad_accum); so the step is compiled again unrolled with one and with two layers and one
  micro-batch, and each count extrapolated: grad_accum x (f(1) + (layers - 1) x (f(2) - f(1))),
  exact for identical layers. (Compiled with COUNTING_OPTIONS: no loops inside a layer either.)"""
  micro = dataclasses.replace(config, batch_size=config.batch_size // config.grad_accum, grad_accum=1)
  options = COUNTING_OPTIONS.get(devices[0].platform)
  counts = []
  for layers in (1, 2):
    model = dataclasses.replace(config.model, num_layers=layers, scan_layers=False, size=None)
    program = compile_training(dataclasses.replace(micro, model=model), devices, options)
    counts.append((program.flops, program.bytes_accessed))
  extrapolate = lambda one, two: config.grad_accum * (one + (config.model.num_layers - 1) * (two - one))
  return extrapolate(counts[0][0], counts[1][0]), extrapolate(counts[0][1], counts[1][1])


def compile_decoding(config: TrainConfig, devices, batch: int, prompt_tokens: int,
                     max_tokens: int, cache_dtype=jnp.bfloat16,
                     weights_dtype=None) -> tuple[Compiled, Compiled]:
  """(prefill of `prompt_tokens`, one decode step) at `batch` rows with a cache of `max_tokens`,
  parameters sharded as in training, the batch split over the mesh where it divides. Weights stay
  in the training dtype unless `weights_dtype` casts the floating ones (a served model in bf16)."""
  mesh = sharding.make_mesh(config.mesh, devices)
  graphdef, params = nnx.split(abstract_model(config.model))
  param_shardings = sharding.tree_shardings(mesh, params)
  cast = lambda dtype: weights_dtype if weights_dtype and jnp.issubdtype(dtype, jnp.floating) else dtype
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, cast(a.dtype), sharding=s),
                        params, param_shardings)
  n = len(devices)
  rows_axis = ("data", "fsdp") if batch % n == 0 else None
  cache_abstract = jax.eval_shape(lambda: init_cache(config.model, batch, max_tokens, cache_dtype))
  cache_spec = {"k": P(None, rows_axis), "v": P(None, rows_axis), "index": P()}
  cache = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=NamedSharding(mesh, cache_spec[k]))
           for k, v in cache_abstract.items()}
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=NamedSharding(mesh, P()))
  state_bytes = shard_bytes(params, param_shardings)
  # The cache in the layout the compiler picks, as in `generate`, where the cache never leaves the
  # program: held row-major, some batch sizes would have it relaid out (copied whole) every step.
  cache_formats = {k: Format(Layout.AUTO, v.sharding) if k != "index" else v.sharding
                   for k, v in cache.items()}
  rows = NamedSharding(mesh, P(rows_axis))
  step = jax.jit(decode_step.__wrapped__, **DECODE_STEP_JIT,
                 in_shardings=(param_shardings, rows, cache_formats, key.sharding),
                 out_shardings=(rows, rows, cache_formats))
  out = []
  for name, tokens in (("prefill", prompt_tokens), ("decode step", 1)):
    ids = jax.ShapeDtypeStruct((batch, tokens), jnp.int32, sharding=rows)
    accounted = flops_per_token(config.model, tokens, training=False) * batch * tokens / n
    out.append(_compile(f"{name} (batch {batch})",
                        lambda ids=ids: step.lower(graphdef, params, ids, cache, key),
                        accounted, state_bytes, state_bytes, devices[0].platform))
  return out[0], out[1]
