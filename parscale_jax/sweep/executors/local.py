"""Runs as worker processes on this host: one per `executor.workers` (default: one per GPU where
JAX has GPUs, else cores // threads_per_worker), each pinned to its own cores and GPU. A worker
that dies (killed, e.g. by the out-of-memory killer) breaks the pool: the death is noted against
the run it held alone."""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

from parscale_jax.platforms import gpu_worker_environment, local_gpus
from parscale_jax.rundir import ATTEMPTS, DEATHS, ResultsDir
from parscale_jax.sweep import executors
from parscale_jax.sweep.spec import SweepSpec
from parscale_jax.sweep.worker import WorkerSlot, execute_chain, init_worker
from parscale_jax.train.run_record import read_result


def worker_slots(workers: int, threads: int, n_tasks: int, cores: list[int] | None = None,
                 gpus: list[str] | None = None) -> list[WorkerSlot]:
  """What each worker gets: its cores and, on a GPU host, its GPU. With GPUs, `workers` defaults
  to one per GPU (each worker's JAX would otherwise take most of every GPU's memory); more
  workers than GPUs share them round robin, each with its share of the memory."""
  if cores is None:
    cores = (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else list(range(os.cpu_count() or 1)))
  gpus = local_gpus() if gpus is None else gpus
  threads = max(1, threads)
  workers = workers or (len(gpus) if gpus else max(1, len(cores) // threads))
  workers = max(1, min(workers, n_tasks))
  slots = []
  for i in range(workers):
    cpus = [cores[(i * threads + j) % len(cores)] for j in range(threads)]
    env = {}
    if gpus:
      sharing = -(-workers // len(gpus)) if workers > len(gpus) else 1
      env = gpu_worker_environment(gpus[i % len(gpus)], sharing)
    slots.append(WorkerSlot(threads, cpus, env))
  return slots


class LocalExecutor:
  def __init__(self, spec: SweepSpec, address: str | None = None):
    self.spec, self.broken = spec, 0

  def _pool(self, n_tasks: int) -> cf.ProcessPoolExecutor:
    ctx = multiprocessing.get_context("spawn")
    slots = ctx.Queue()
    plan = worker_slots(self.spec.executor.workers, self.spec.executor.threads_per_worker, n_tasks)
    for slot in plan:
      slots.put(slot)
    return cf.ProcessPoolExecutor(len(plan), mp_context=ctx, initializer=init_worker,
                                  initargs=(plan[0].threads, slots))

  def execute(self, tasks, results_dir: Path, retry_failed: bool):
    pool = self._pool(len(tasks))
    with pool:
      try:
        pending = {pool.submit(execute_chain, t, str(results_dir), retry_failed) for t in tasks}
        workers = {}
        while pending:
          workers.update(getattr(pool, "_processes", None) or {})  # pid -> Process, as they start.
          done, pending = cf.wait(pending, timeout=executors.POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
          if not done:
            yield None
          for future in done:
            try:
              results = future.result()
            except cf.process.BrokenProcessPool:  # A worker was killed: the pool is gone.
              self.broken += 1
              pool.shutdown(wait=True)  # The pool reaps its workers: their exit codes are known.
              _record_deaths([run for task in tasks for run in task], results_dir, _killed(workers))
              return
            yield from results
      # GeneratorExit: the interrupt came while the caller held a result.
      except (KeyboardInterrupt, GeneratorExit):
        _stop_workers(pool)
        raise


def _killed(workers: dict) -> set:
  """The pids of the workers that died on their own (killed, e.g. by the out-of-memory killer);
  not those the broken pool then stopped itself (SIGTERM), whose runs did nothing wrong."""
  return {pid for pid, process in workers.items()
          if process.exitcode not in (None, 0, -signal.SIGTERM)}


def _record_deaths(runs, results_dir: Path, workers: set) -> None:
  """Notes a death in deaths.jsonl of each run whose latest attempt ran in one of the killed
  workers and did not finish."""
  for run in runs:
    workdir = ResultsDir(results_dir).run(run.run_id).path
    attempts = workdir / ATTEMPTS
    if not attempts.exists() or (read_result(workdir) or {}).get("status") in ("done", "failed"):
      continue
    lines = attempts.read_text().splitlines()
    if lines and json.loads(lines[-1]).get("pid") in workers:
      with open(workdir / DEATHS, "a") as f:
        f.write(json.dumps({"time": time.time(), "pid": json.loads(lines[-1])["pid"]}) + "\n")


def _stop_workers(pool) -> None:
  """Ctrl-C: no queued run starts, and the running ones stop now; they resume from their last
  checkpoint when the sweep is started again, as after a kill. (Left alone, a worker that got the
  interrupt too would report it and take the next queued run, and the pool's exit would wait for
  every queued run.)"""
  processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them.
  pool.shutdown(wait=False, cancel_futures=True)
  for process in processes:
    process.kill()
