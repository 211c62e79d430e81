"""Device descriptions for the roofline: dense 16-bit peak and memory bandwidth."""
from __future__ import annotations

import dataclasses
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Device:
  name: str
  peak_flops: float  # Dense matmul FLOP/s at the compute dtype.
  bandwidth: float  # Memory bandwidth, bytes/s.
  memory: float  # Bytes.


DEVICES = {
    "a100-80gb": Device("A100-80GB SXM", 312e12, 2039e9, 80e9),
    "h100": Device("H100 SXM", 989e12, 3350e9, 80e9),
    "h200": Device("H200 SXM", 989e12, 4800e9, 141e9),
}


def measure_cpu(seconds: float = 1.0) -> Device:
  """This machine, measured: float32 matmul FLOP/s (jax) and copy bandwidth (numpy)."""
  import os

  import jax
  import jax.numpy as jnp

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
