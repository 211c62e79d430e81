"""Does a run fit a slice? Compile its programs for the slice's chips and judge them against the
chip table: memory per chip and its margin, the compiler's FLOPs against the project's accounting,
the roofline step time and the MFU it bounds. `fitting_setting` searches remat and gradient
accumulation for the least costly setting that fits.
"""
from __future__ import annotations

import dataclasses
import math

from parscale_jax.aot.programs import (Compiled, OutOfMemory, compile_decoding, compile_training,
                                      step_cost)
from parscale_jax.aot.topology import chip, topology_devices
from parscale_jax.configlib import ConfigError
from parscale_jax.cost.devices import Device
from parscale_jax.model.accounting import flops_per_token, recompute_flops_per_token
from parscale_jax.train.config import TrainConfig

# Cheapest first: remat adds recomputation (full: about a fifth more FLOPs); accumulation splits a
# step into smaller, less efficient micro-batches.
REMAT_ORDER = ("none", "dots", "full")


def judge(program: Compiled, device: Device) -> dict:
  """The program's memory verdict on `device`. (Its `flops` and `bytes_accessed` are XLA's counts
  with each loop body once: see step_cost for a whole training step.)"""
  return {**program.as_dict(), "chip_memory_bytes": device.memory,
          "fits": program.peak_bytes <= device.memory,
          "margin_bytes": device.memory - program.peak_bytes}


def roofline(report: dict, flops: float, bytes_accessed: float, device: Device) -> dict:
  """The step's compiler FLOPs against the accounting, its roofline time and the MFU it bounds."""
  compute_s, memory_s = flops / device.peak_flops, bytes_accessed / device.bandwidth
  step_s = max(compute_s, memory_s)
  return {**report, "step_flops": flops, "step_bytes_accessed": bytes_accessed,
          "flops_ratio": flops / report["accounted_flops"],
          # Against model FLOPs plus what remat recomputes: the work the program should do.
          "flops_ratio_with_recompute": flops / (report["accounted_flops"]
                                                 + report.get("recompute_flops", 0.0)),
          "roofline_seconds": step_s, "bound": "compute" if compute_s >= memory_s else "memory",
          # Model FLOPs (the accounting's) over what the chip could do in the roofline time.
          "mfu_bound": report["accounted_flops"] / (device.peak_flops * step_s)}


def _refused(error: OutOfMemory, device: Device, accounted_flops: float) -> dict:
  return {"name": "train step", "fits": False, "peak_bytes": error.needed,
          "state_bytes": error.state_bytes, "accounted_flops": accounted_flops,
          "chip_memory_bytes": device.memory,
          "margin_bytes": None if error.needed is None else device.memory - error.needed,
          "error": str(error)}


def check_training(config: TrainConfig, devices, device: Device) -> dict:
  per_chip = config.tokens_per_step / len(devices)
  recompute = {"recompute_flops": recompute_flops_per_token(config.model, config.data.seq_len) * per_chip}
  try:
    return {**judge(compile_training(config, devices), device), **recompute}
  except OutOfMemory as e:
    return {**_refused(e, device, flops_per_token(config.model, config.data.seq_len) * per_chip), **recompute}


def settings(batch: int, chips: int) -> list[tuple[str, int]]:
  """(remat, grad_accum) from the cheapest: no remat before dots before full, fewer micro-batches
  first, down to one row per chip."""
  accums = [a for a in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
            if batch % a == 0 and (batch // a) % chips == 0]
  return [(remat, a) for remat in REMAT_ORDER for a in accums]


def with_setting(config: TrainConfig, remat: str, grad_accum: int) -> TrainConfig:
  """`config` with one (remat, grad_accum) setting of settings()."""
  return dataclasses.replace(config, grad_accum=grad_accum,
                             model=dataclasses.replace(config.model, remat=remat))


def fitting_setting(config: TrainConfig, devices, device: Device, log=lambda s: None, start: int = 0):
  """(index in settings(), config, train report) of the first setting from `start` that fits;
  (None, config, last report) when none does. A setting that does not fit skips ahead by what its
  memory says: the activations shrink with the micro-batch."""
  options = settings(config.batch_size, len(devices))
  i, report = start, None
  while i < len(options):
    remat, accum = options[i]
    candidate = with_setting(config, remat, accum)
    report = check_training(candidate, devices, device)
    log(f"  remat={remat} grad_accum={accum}: "
        + (f"{report['peak_bytes'] / 2**30:.1f} GiB" if report.get("peak_bytes") else "?")
        + (" fits" if report["fits"] else " does not fit"))
    if report["fits"]:
      return i, candidate, report
    need, state = report.get("peak_bytes"), report.get("state_bytes")
    steps = 1
    if need and state and 0.95 * device.memory > state:
      steps = max(1, math.ceil(math.log2(max((need - state) / (0.95 * device.memory - state), 1))))
    j = i
    while steps and j + 1 < len(options) and options[j + 1][0] == remat:
      j, steps = j + 1, steps - 1
    i = j if j > i else i + 1
  return None, config, report


def check(config: TrainConfig, topology: str, *, search: bool = False, flops: bool = True,
          decode: bool = True, decode_batch: int = 64, prompt_tokens: int = 2048, new_tokens: int = 256,
          log=lambda s: None) -> dict:
  """The full report of `config` on `topology` (see the module docstring)."""
  devices = topology_devices(topology)
  device = chip(devices)
  config = _mesh_for(config, len(devices))
  if search:
    _, config, train = fitting_setting(config, devices, device, log)
  else:
    train = check_training(config, devices, device)
  if flops and train["fits"]:  # (The probes of a step that does not fit would not fit either.)
    train = roofline(train, *step_cost(config, devices), device)
  decoding = []
  for batch in sorted({1, decode_batch}) if decode else ():
    try:
      prefill, step = compile_decoding(config, devices, batch, prompt_tokens, prompt_tokens + new_tokens)
      decoding += [judge(prefill, device), judge(step, device)]
    except OutOfMemory as e:
      decoding.append({"name": f"decoding (batch {batch})", "fits": False, "error": str(e)})
  m = config.model
  return {"topology": topology, "chips": len(devices), "chip": dataclasses.asdict(device),
          "size": m.size, "P": m.P, "seq_len": config.data.seq_len, "batch_size": config.batch_size,
          "grad_accum": config.grad_accum, "remat": m.remat, "dtype": m.dtype,
          "mesh": {"data": len(devices) // config.mesh.fsdp, "fsdp": config.mesh.fsdp},
          "train": train, "decoding": decoding, "fits": bool(train.get("fits"))}


def _mesh_for(config: TrainConfig, n: int) -> TrainConfig:
  """The config's mesh on n chips; a parameter-sharding size larger than the slice is refused."""
  if config.mesh.fsdp > n or n % config.mesh.fsdp:
    raise ConfigError(f"mesh.fsdp={config.mesh.fsdp} does not divide the slice's {n} chips; "
                      f"--set mesh.fsdp=N with N dividing {n}")
  return config
