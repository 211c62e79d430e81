"""Where a sweep's runs execute. An executor takes one stage's tasks (each a run, or a token
ladder's budgets in order: sweep/worker.py `chains`) and yields each run's result as it finishes,
and None every poll interval without one, so that the sweep can publish and show progress.
`broken` counts the times it lost a worker mid-stage: the sweep then offers the stage again (a
run whose worker died MAX_WORKER_DEATHS times is failed, from its deaths.jsonl).

A new executor is a class with this interface and its entry in EXECUTORS; `parscale sweep run
--executor NAME` offers every entry."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol

from parscale_jax.errors import UserError
from parscale_jax.sweep.spec import SweepSpec


POLL_SECONDS = 15.0  # How long an executor waits for a result before yielding None.


class Executor(Protocol):
  broken: int

  def __init__(self, spec: SweepSpec, address: str | None = None): ...

  def execute(self, tasks: list[list], results_dir: Path, retry_failed: bool) -> Iterator[dict | None]:
    ...


def _local():
  from parscale_jax.sweep.executors.local import LocalExecutor
  return LocalExecutor


def _ray():
  from parscale_jax.sweep.executors.ray_cluster import RayExecutor
  return RayExecutor


# name -> a function returning the class (imported when chosen: Ray is an optional extra).
EXECUTORS = {"local": _local, "ray": _ray}


def make_executor(name: str, spec: SweepSpec, address: str | None = None) -> Executor:
  if name not in EXECUTORS:
    raise UserError(f"--executor {name}: not one of {', '.join(EXECUTORS)}")
  return EXECUTORS[name]()(spec, address)
