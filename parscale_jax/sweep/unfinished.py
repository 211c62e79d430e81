"""Runs in flight, published: the newest checkpoint of each unfinished run (and token-ladder trunk)
copied beside the finished runs, so that a fresh clone of the repository resumes them where they
were instead of training them again (a P = 8 ladder cell trains for longer than a machine is held).

    <publish>/unfinished/runs/<run_id>/      config.yaml  metrics.jsonl  checkpoints/<step>/
    <publish>/unfinished/trunks/<trunk_id>/  the same, plus branch_points/<step>/ of unfinished budgets

On with `analysis.publish_unfinished`. A sweep refreshes the copies while it runs (each poll) and
removes each once its run is published done; `sweep run` in a folder without a run's checkpoints
starts from the copy. Each copy is one checkpoint (parameters and optimizer state): the copies
cost disk and repository space only while their runs are in flight.
"""
from __future__ import annotations

import errno
from pathlib import Path
import shutil
import sys

from parscale_jax.atomic import copy_file_atomic, copy_tree_atomic
from parscale_jax.rundir import BRANCH_POINTS, CONFIG, METRICS, ResultsDir, RunDir, steps
from parscale_jax.sweep.table import run_result


UNFINISHED = "unfinished"


def publish_unfinished(spec, results_dir: Path) -> None:
  """Refreshes the published copy of every unfinished run and trunk that has a newer checkpoint
  here, and removes the copies of runs that are done."""
  if spec.publish_dir is None or not spec.analysis.publish_unfinished:
    return
  local, copies = ResultsDir(results_dir), ResultsDir(spec.publish_dir / UNFINISHED)
  done = {run.run_id for run in spec.runs if _done(spec, results_dir, run)}
  for run in spec.runs:
    if run.run_id in done:
      shutil.rmtree(copies.run(run.run_id).path, ignore_errors=True)
    else:
      refresh_copy(local.run(run.run_id), copies.run(run.run_id))
  for trunk_id, runs in _trunks(spec).items():
    needed = {run.branch.start_step for run in runs if run.run_id not in done}
    if needed:
      refresh_copy(local.trunk(trunk_id), copies.trunk(trunk_id), needed)
    else:
      shutil.rmtree(copies.trunk(trunk_id).path, ignore_errors=True)


def restore_unfinished(spec, results_dir: Path, log) -> None:
  """Gives each unfinished run and trunk its published copy's checkpoint where that is newer than
  this folder's (a fresh clone has none)."""
  if spec.publish_dir is None or not spec.analysis.publish_unfinished:
    return
  local, copies = ResultsDir(results_dir), ResultsDir(spec.publish_dir / UNFINISHED)
  for run in spec.runs:
    if not _done(spec, results_dir, run):
      restore_copy(copies.run(run.run_id), local.run(run.run_id), log)
  for trunk_id in _trunks(spec):
    restore_copy(copies.trunk(trunk_id), local.trunk(trunk_id), log)


def _done(spec, results_dir: Path, run) -> bool:
  return (run_result(results_dir, run.run_id, spec.publish_dir) or {}).get("status") == "done"


def _trunks(spec) -> dict[str, list]:
  trunks: dict[str, list] = {}
  for run in spec.runs:
    if run.branch is not None:
      trunks.setdefault(run.branch.trunk_id, []).append(run)
  return trunks


def refresh_copy(source: RunDir, copy: RunDir, branch_points: set[int] | None = None) -> None:
  """Copies the newest checkpoint of `source` where it is newer than the copy's, and the branch
  points the copy lacks. The metrics go first: lines past the checkpoint are dropped on resume,
  lines missing before it are lost."""
  for stale in copy.path.glob("**/.*.partial"):  # Left by a copy that was killed.
    shutil.rmtree(stale, ignore_errors=True)
  try:
    for step in branch_points or ():
      point = source / BRANCH_POINTS / str(step)
      if point.is_dir() and not (copy / BRANCH_POINTS / str(step)).is_dir():
        copy_tree_atomic(point, copy / BRANCH_POINTS / str(step))
    for stale in steps(copy / BRANCH_POINTS) - set(branch_points or ()):
      shutil.rmtree(copy / BRANCH_POINTS / str(stale), ignore_errors=True)
    step = source.latest_checkpoint()
    if step is None or step <= (copy.latest_checkpoint() or 0):
      return
    copy.path.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG, METRICS):
      if (source / name).exists():
        copy_file_atomic(source / name, copy / name)
    copy_tree_atomic(source.checkpoints / str(step), copy.checkpoints / str(step))
  except OSError as e:
    # The trainer dropped that checkpoint meanwhile, or another sweep process (`sweep report`)
    # copied it first: the next poll sees the copy as it is. Anything else is said.
    if e.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
      print(f"{copy.path}: not refreshed ({e})", file=sys.stderr)
    return
  for stale in steps(copy.checkpoints) - {step}:
    shutil.rmtree(copy.checkpoints / str(stale), ignore_errors=True)


def restore_copy(copy: RunDir, target: RunDir, log) -> None:
  """Copies what the published copy holds beyond this folder: a newer checkpoint, with the metrics
  and config that go with it, and branch points this folder lacks."""
  step, here = copy.latest_checkpoint(), target.latest_checkpoint()
  newer = step is not None and (here is None or step > here)
  points = steps(copy / BRANCH_POINTS) - steps(target / BRANCH_POINTS)
  if not newer and not points:
    return
  target.path.mkdir(parents=True, exist_ok=True)
  for point in sorted(points):
    copy_tree_atomic(copy / BRANCH_POINTS / str(point), target / BRANCH_POINTS / str(point))
  if newer:
    for name in (CONFIG, METRICS):
      if (copy / name).exists():
        copy_file_atomic(copy / name, target / name)
    copy_tree_atomic(copy.checkpoints / str(step), target.checkpoints / str(step))
  log(f"{target.path.name}: resumes from its published copy"
      + (f" at step {step}" if newer else ""))

