"""Device descriptions for the roofline: dense 16-bit peak and memory bandwidth."""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Device:
  name: str
  peak_flops: float  # Dense matmul FLOP/s at the compute dtype (bf16).
  bandwidth: float  # Memory bandwidth, bytes/s.
  memory: float  # Bytes of HBM per chip.
  source: str = ""  # Where the numbers come from.
  kinds: tuple[str, ...] = ()  # jax's device_kind strings of this chip.


_NV = "NVIDIA data sheet (dense, without sparsity)"
GIB = 2 ** 30
DEVICES = {
    "a100-80gb": Device("A100-80GB SXM", 312e12, 2039e9, 80e9, _NV, ("NVIDIA A100-SXM4-80GB",)),
    "h100": Device("H100 SXM", 989e12, 3350e9, 80e9, _NV, ("NVIDIA H100 80GB HBM3",)),
    "h200": Device("H200 SXM", 989e12, 4800e9, 141e9, _NV, ("NVIDIA H200",)),
    # Per chip, from Google Cloud's system-architecture pages (cloud.google.com/tpu/docs/<chip>).
    "tpu-v4": Device("TPU v4", 275e12, 1228e9, 32 * GIB, "cloud.google.com/tpu/docs/v4", ("TPU v4",)),
    "tpu-v5e": Device("TPU v5e", 197e12, 819e9, 16 * GIB, "cloud.google.com/tpu/docs/v5e",
                      ("TPU v5 lite", "TPU v5e")),
    "tpu-v5p": Device("TPU v5p", 459e12, 2765e9, 95 * GIB, "cloud.google.com/tpu/docs/v5p",
                      ("TPU v5", "TPU v5p")),
    "tpu-v6e": Device("TPU v6e (Trillium)", 918e12, 1640e9, 32 * GIB, "cloud.google.com/tpu/docs/v6e",
                      ("TPU v6 lite", "TPU v6e")),
}


def device_for_kind(kind: str) -> Device | None:
  """The table's chip for a jax device_kind ("TPU v5 lite", "NVIDIA H100 80GB HBM3"), or None."""
  for device in DEVICES.values():
    if kind in device.kinds:
      return device
  for device in DEVICES.values():  # GPU kinds vary by board: match the model name.
    if not kind.startswith("TPU") and device.name.split()[0].split("-")[0] in kind:
      return device
  return None


def measure_cpu(seconds: float = 1.0) -> Device:
  """This machine, measured: float32 matmul FLOP/s (jax) and copy bandwidth (numpy)."""
  n = 1024
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  reps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    f(a).block_until_ready()
    reps += 1
  flops = 2 * n ** 3 * reps / (time.perf_counter() - start)
  src = np.ones(64 * 2 ** 20 // 8)  # 64 MiB, beyond the caches.
  dst = np.empty_like(src)
  reps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    np.copyto(dst, src)
    reps += 1
  bandwidth = 2 * src.nbytes * reps / (time.perf_counter() - start)  # Read + write.
  memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return Device("this CPU (measured)", flops, bandwidth, float(memory))
