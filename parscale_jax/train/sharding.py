"""Device mesh, sharding rules and multi-host start.

Mesh axes: `data` (batch only) and `fsdp` (batch and parameters). A parameter is sharded over
`fsdp` along its largest dimension that divides evenly; everything else is replicated. The same
rules give the abstract (eval_shape) state its shardings before anything is allocated.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from parscale_jax.configlib import ConfigError
from parscale_jax.train.config import MeshConfig


def maybe_initialize_distributed() -> None:
  """Starts multi-host JAX when the environment describes several processes (JAX_COORDINATOR_ADDRESS
  with JAX_NUM_PROCESSES/JAX_PROCESS_ID, or a SLURM/TPU/k8s job that jax auto-detects)."""
  if jax.distributed.is_initialized():
    return
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("TPU_WORKER_HOSTNAMES"):
    jax.distributed.initialize()


def use_cpu_devices(n: int) -> None:
  """Splits this host's CPU backend into n devices, so that the mesh splits the batch over cores:
  XLA:CPU leaves a core idle during much of one program's small element-wise ops, and n programs
  keep n cores busy. Only possible before JAX starts its backends; no effect on accelerators."""
  if n == 1:
    return
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:
    if len(jax.devices("cpu")) != n:
      raise ConfigError(f"mesh.cpu_devices={n}: JAX already runs in this process with "
                        f"{len(jax.devices('cpu'))} CPU devices; start a fresh process") from None


def make_mesh(config: MeshConfig, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  fsdp = config.fsdp
  data = config.data if config.data > 0 else n // fsdp
  if fsdp < 1 or data * fsdp != n:
    raise ConfigError(f"mesh: data={config.data} x fsdp={fsdp} does not use the {n} devices")
  return Mesh(np.asarray(devices).reshape(data, fsdp), ("data", "fsdp"))


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
  if fsdp == 1 or not shape:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def tree_shardings(mesh: Mesh, abstract_tree):
  """NamedShardings for every array leaf of an (abstract) pytree, by the rule above."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp)), abstract_tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches [grad_accum, rows, seq] are split by rows over all devices."""
  return NamedSharding(mesh, P(None, ("data", "fsdp"), None))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
