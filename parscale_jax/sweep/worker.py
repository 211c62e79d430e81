"""Executing one run in a worker (a local process or a Ray task), under a per-run lock.

This module imports no JAX at the top: a worker sets its thread limits before JAX starts.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import os
from pathlib import Path
import shutil
import signal
import sys
import time
import traceback

from parscale_jax.locks import DirLock
from parscale_jax.rundir import ATTEMPTS, LOCK, ResultsDir, RunDir


def limit_threads(threads: int, cpus: list[int] | None = None) -> None:
  """Pins this process to `cpus` and keeps XLA's CPU thread pools to `threads` (before jax)."""
  if cpus and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, cpus)
  flags = os.environ.get("XLA_FLAGS", "")
  if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
    flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  os.environ["XLA_FLAGS"] = flags.strip()
  for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(threads)


@dataclasses.dataclass(frozen=True)
class WorkerSlot:
  """One local worker's share of the host: its CPU threads and cores, and the environment that
  gives it its GPU (empty on a CPU host)."""

  threads: int
  cpus: list[int]
  env: dict[str, str]


def init_worker(threads: int, slots) -> None:
  """ProcessPoolExecutor initializer: each worker takes its own slot (cores, GPU) before JAX."""
  slot = slots.get() if slots is not None else WorkerSlot(threads, [], {})
  os.environ.update(slot.env)
  limit_threads(slot.threads, slot.cpus or None)
  _die_with_parent()


def _die_with_parent() -> None:
  """A worker whose sweep process is killed stops too, instead of training queued runs unseen
  (its run resumes from its checkpoint when the sweep is started again). Linux only."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def RunLock(workdir: Path) -> DirLock:
  """The sweep's lock on a run's workdir (the trainer holds its own, .train.lock, inside it)."""
  return DirLock(workdir, LOCK)


def is_locked(workdir: Path) -> bool:
  if not (workdir / LOCK).exists():
    return False
  try:
    lock = RunLock(workdir)
  except OSError:  # A read-only results folder (a published copy): nobody trains there.
    return False
  if lock.acquire():
    lock.release()
    return False
  lock.file.close()
  return True


def execute_run(run, results_dir: str, retry_failed: bool = False) -> dict:
  """Trains one run of a sweep unless it is done, failed (without retry) or running elsewhere."""
  from parscale_jax.train.run_record import RunRecord, failure_reason, read_result

  results_dir = Path(results_dir)
  workdir = ResultsDir(results_dir).run(run.run_id).path
  lock = RunLock(workdir)
  if not lock.acquire():
    return {"run_id": run.run_id, "status": "running", "skipped": "locked by another process"}
  try:
    previous = read_result(workdir)
    if previous and (previous.get("status") == "done" or
                     (previous.get("status") == "failed" and not retry_failed)):
      return dict(previous, skipped="finished before")
    with open(workdir / ATTEMPTS, "a") as f:
      f.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "time": time.time()}) + "\n")
    if run.init_from_run:
      parent = read_result(ResultsDir(results_dir).run(run.init_from_run).path)
      if not parent or parent.get("status") != "done":
        raise RuntimeError(f"init_from run {run.init_from_run} has not finished")
    from parscale_jax.sweep.ladder import prepare_branch
    from parscale_jax.train.trainer import train
    config = run.train_config(results_dir)
    if run.branch is not None:
      prepare_branch(run.branch, results_dir, workdir, run.run_id)
    result = train(config, workdir, run_id=run.run_id, progress=False)
    drop_checkpoints_of_finished(workdir, result)
    return result
  except Exception as e:  # Any failure is recorded; the sweep goes on.
    result = RunRecord(workdir, run.run_id).fail(failure_reason(e))
    try:
      (workdir / "error.log").write_text(traceback.format_exc())
    except OSError:
      pass
    return result
  finally:
    lock.release()


def drop_checkpoints_of_finished(workdir: Path, result: dict) -> None:
  """A finished sweep run keeps its exported model (final/: what evaluation, diversity and
  init_from read), not the checkpoints it would resume from (most of a run's disk: the optimizer
  state of the prefix MLP made the demo's results 980 MB)."""
  if result.get("status") == "done" and RunDir(workdir).exported:
    shutil.rmtree(RunDir(workdir).checkpoints, ignore_errors=True)


# Set when Ctrl-C reached this worker: it starts no further run. (A pool worker reports the
# interrupt as its task's exception and takes the next queued task, often before the sweep
# process has stopped it.)
_interrupted = False


def execute_chain(runs, results_dir: str, retry_failed: bool = False) -> list[dict]:
  """Runs one after another in this worker: a token ladder's budgets share their trunk, which
  one worker trains as far as each budget needs, in budget order. Once Ctrl-C has reached this
  worker, it starts none."""
  global _interrupted
  results = []
  for run in runs:
    if _interrupted:
      break
    try:
      results.append(execute_run(run, results_dir, retry_failed))
    except KeyboardInterrupt:
      _interrupted = True
      raise
  return results


def chains(runs) -> list[list]:
  """The runs grouped into what one worker executes in order: each ladder's budgets together (in
  the sweep's order), every other run alone."""
  out: list[list] = []
  by_trunk: dict[str, list] = {}
  for run in runs:
    if run.branch is None:
      out.append([run])
    elif run.branch.trunk_id in by_trunk:
      by_trunk[run.branch.trunk_id].append(run)
    else:
      by_trunk[run.branch.trunk_id] = [run]
      out.append(by_trunk[run.branch.trunk_id])
  return out


def execute_chain_ray(runs, results_dir: str, retry_failed: bool, threads: int) -> list[dict]:
  # Takes effect in a fresh Ray worker; one that already ran jax keeps its thread pools (Ray also
  # sets OMP_NUM_THREADS from the task's num_cpus).
  limit_threads(threads)
  return execute_chain(runs, results_dir, retry_failed)
