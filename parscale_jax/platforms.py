"""Which JAX platforms start (a host without TPU chips never starts the TPU runtime), and which
GPUs there are for local sweep workers (read before JAX starts in them).

With libtpu installed (the `tpu` extra, also what `parscale compile` needs to build programs for
TPU topologies on any host), JAX starts the TPU runtime on every host; without chips it prints
warnings about TPU_ACCELERATOR_TYPE and TPU_WORKER_HOSTNAMES and falls back to the CPU. Imported
by the package before JAX, this sets JAX_PLATFORMS=cpu in that one case (no TPU chip on the PCI
bus, no CUDA plugin, JAX_PLATFORMS unset). Compiling for a TPU topology does not need the TPU
platform started (parscale_jax/aot/topology.py).
"""
from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path

GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips (jax._src.hardware_utils reads the same).


def host_has_tpu() -> bool:
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      if Path(vendor).read_text().strip() == GOOGLE_PCI_VENDOR:
        return True
    except OSError:
      continue
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def skip_absent_tpu(environ=os.environ) -> bool:
  """Sets JAX_PLATFORMS=cpu where JAX would start a TPU runtime with no TPU; True if it did."""
  if "JAX_PLATFORMS" in environ or importlib.util.find_spec("libtpu") is None:
    return False
  if any(importlib.util.find_spec(p) for p in CUDA_PLUGINS):
    return False
  if environ.get("TPU_ACCELERATOR_TYPE") or host_has_tpu():
    return False
  environ["JAX_PLATFORMS"] = "cpu"
  return True


CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin")


def local_gpus(environ=os.environ) -> list[str]:
  """The GPUs this process's JAX would use: CUDA_VISIBLE_DEVICES's entries, else one per
  /dev/nvidiaN; none without a CUDA build of JAX (or with JAX_PLATFORMS naming no GPU)."""
  if not any(importlib.util.find_spec(p) for p in CUDA_PLUGINS):
    return []
  platforms = environ.get("JAX_PLATFORMS", "")
  if platforms and not any(p in platforms for p in ("cuda", "gpu")):
    return []
  if "CUDA_VISIBLE_DEVICES" in environ:
    return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() not in ("", "-1")]
  return sorted((Path(d).name.removeprefix("nvidia") for d in glob.glob("/dev/nvidia[0-9]*")), key=int)


def gpu_worker_environment(gpu: str, sharing: int) -> dict[str, str]:
  """What a worker on `gpu` sets before JAX starts: that GPU alone, and where `sharing` workers
  share it, each preallocates its share of the memory instead of JAX's default 75 %."""
  env = {"CUDA_VISIBLE_DEVICES": gpu}
  if sharing > 1:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / sharing:.3f}"
  return env
