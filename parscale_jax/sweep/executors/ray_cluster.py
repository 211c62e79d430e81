"""Runs as Ray tasks on a cluster (`--executor ray --address HOST:PORT`), each asking for
`executor.threads_per_worker` CPUs and `executor.gpus_per_run` GPUs."""
from __future__ import annotations

from pathlib import Path

from parscale_jax.errors import UserError
from parscale_jax.sweep import executors
from parscale_jax.sweep.spec import SweepSpec
from parscale_jax.sweep.worker import execute_chain_ray


class RayExecutor:
  def __init__(self, spec: SweepSpec, address: str | None = None):
    try:
      import ray
    except ImportError:
      raise UserError("--executor ray needs Ray: pip install 'parscale-jax[ray]'") from None
    if not ray.is_initialized():
      ray.init(address=address, log_to_driver=False)
    self.ray, self.spec, self.broken = ray, spec, 0

  def execute(self, tasks, results_dir: Path, retry_failed: bool):
    ray, config = self.ray, self.spec.executor
    remote = ray.remote(num_cpus=config.threads_per_worker, num_gpus=config.gpus_per_run)(execute_chain_ray)
    pending = [remote.remote(t, str(results_dir), retry_failed, config.threads_per_worker) for t in tasks]
    while pending:
      ready, pending = ray.wait(pending, num_returns=1, timeout=executors.POLL_SECONDS)
      if not ready:
        yield None
      for result in ray.get(ready[0]) if ready else ():
        yield result
