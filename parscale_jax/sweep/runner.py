"""Running a sweep: stages in order, each stage's runs handed to an executor (sweep/executors:
local processes, Ray tasks), the table after every finished run, then the fit, plots and report."""
from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

from parscale_jax import bars
from parscale_jax.atomic import create_json_exclusive
from parscale_jax.data.pipeline import prepare_corpus
from parscale_jax.errors import UserError
from parscale_jax.rundir import DEATHS, PUBLISHED_FILES, RESULT, ResultsDir
from parscale_jax.sweep.executors import Executor, make_executor
from parscale_jax.sweep.spec import SweepSpec
from parscale_jax.sweep.table import publish_run, run_result, table_turn, write_table
from parscale_jax.sweep.unfinished import publish_unfinished, restore_unfinished
from parscale_jax.sweep.worker import chains, is_locked
from parscale_jax.train.config import config_differences
from parscale_jax.train.run_record import read_result


def default_results_dir(spec: SweepSpec) -> Path:
  return Path("results") / spec.name


def run_state(results_dir: Path, run, published: Path | None = None) -> str:
  """done / failed / running / pending; a run published as done (see run_result) is done."""
  if is_locked(ResultsDir(results_dir).run(run.run_id).path):
    return "running"
  result = run_result(results_dir, run.run_id, published)
  if result and result.get("status") in ("done", "failed"):
    return result["status"]
  return "pending"


def _prepare_data(spec: SweepSpec, results_dir: Path) -> None:
  """Builds each corpus once here, so that workers never race to build it."""
  seen = set()
  for run in spec.runs:
    data = run.train_config(results_dir).data
    key = (data.source, data.data_dir, data.val_percent, data.text_key)
    if key not in seen:
      seen.add(key)
      prepare_corpus(data)


def run_sweep(spec: SweepSpec, results_dir: Path, *, executor: str | Executor = "local",
              address: str | None = None, retry_failed: bool = False, progress: bool = True,
              analyze: bool = True, log=lambda s: print(s, file=sys.stderr)) -> list[dict]:
  """Runs (or resumes) every run of `spec`; `executor` names one of sweep/executors' EXECUTORS
  (`address`: a Ray cluster's) or is an executor object."""
  if isinstance(executor, str):
    executor = make_executor(executor, spec, address)
  results_dir = Path(results_dir)
  if spec.target is not None:
    check_target(spec, results_dir)
  ResultsDir(results_dir).runs.mkdir(parents=True, exist_ok=True)
  claim_results_dir(spec, results_dir)
  claim_publish_dir(spec)
  published = spec.publish_dir
  state = lambda results_dir, run: run_state(results_dir, run, published)
  todo_states = ("pending", "failed") if retry_failed else ("pending",)
  adopt_reused_runs(spec, results_dir, log)
  restore_unfinished(spec, results_dir, log)
  if any(state(results_dir, r) in todo_states for r in spec.runs):
    with bars.quiet(not progress):
      _prepare_data(spec, results_dir)
  publish_finished(spec, results_dir)
  rows = write_table(results_dir, spec.runs, published)
  bar = live = None
  if progress:
    from parscale_jax.sweep.progress import SweepProgress
    finished = sum(r["status"] in ("done", "failed") for r in rows)
    # The sweep's own ETA (work in FLOPs, runs in flight included) is the one shown.
    bar = bars.progress_bar(len(spec.runs), finished, f"sweep {spec.name}", "run", eta=False)
    live = SweepProgress(spec.runs, results_dir, state)
  try:
    for stage, todo in _stage_batches(spec, results_dir, state, todo_states, executor, log):
      for result in executor.execute(chains(todo), results_dir, retry_failed):
        if result is None:  # No task finished within the polling interval.
          # A ladder's budgets finish inside one task: publish each as it lands.
          publish_finished(spec, results_dir)
          publish_unfinished(spec, results_dir)
          write_table(results_dir, spec.runs, published)
          if bar is not None:
            _show(bar, live)
          continue
        if published is not None and result.get("status") == "done" and not result.get("skipped"):
          publish_run(results_dir, result["run_id"], published)
          publish_unfinished(spec, results_dir)
        write_table(results_dir, spec.runs, published)
        if bar is not None:
          _show(bar, live)
        if result.get("skipped"):
          continue
        loss = result.get("eval_loss")
        log(f"{result['run_id']}: {result['status']}"
            + (f" loss={loss:.4f}" if isinstance(loss, float) else "")
            + (f" ({result['reason']})" if result.get("reason") else ""))
  finally:
    if bar is not None:
      bar.close()
  with table_turn(results_dir):  # The last to finish reports: its view is the newest.
    rows = write_table(results_dir, spec.runs, published, turn_held=True)
    if analyze:
      from parscale_jax.sweep.report import analyze_sweep
      analyze_sweep(spec, results_dir, rows, log=log)
  return rows


def _show(bar, live) -> None:
  """The bar's count is the runs finished (a ladder's branches land inside one task), its text
  the live summary."""
  text = live.summary()
  bar.n = live.finished
  bar.set_postfix_str(text)


def check_target(spec: SweepSpec, results_dir: Path) -> None:
  """Nothing trains until every run is known to fit the sweep's target slice. The compiles run in
  a process of their own on JAX's CPU platform, so that this one never takes a host's chips."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  check = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "sweep", "check", str(spec.path),
                          "--results", str(results_dir)], env=env, stdout=subprocess.PIPE, text=True)
  if check.returncode != 0:
    raise UserError(f"{spec.path}: not every run fits its target {spec.target} (above); nothing "
                    f"was trained")


def claim_publish_dir(spec: SweepSpec) -> None:
  """A publish folder holds one sweep's runs, as a results folder does (a second sweep with the
  same run ids would overwrite the first's published runs)."""
  if spec.publish_dir is not None:
    claim_results_dir(spec, spec.publish_dir, "analysis.publish")


def claim_results_dir(spec: SweepSpec, results_dir: Path, setting: str = "--results") -> None:
  """A results folder holds one sweep: refuses another sweep's folder, and runs of this one whose
  saved settings differ from the file's (their results would be reported as this file's)."""
  marker = ResultsDir(results_dir).mark

  def refuse_another_owner():
    owner = json.loads(marker.read_text()).get("name")
    if owner != spec.name:
      raise UserError(f"{results_dir} holds the runs of sweep {owner!r}, not {spec.name!r}; give "
                      f"this sweep its own folder with {setting}")

  if marker.exists():
    refuse_another_owner()
  for run in spec.runs:
    run_dir = ResultsDir(results_dir).run(run.run_id)
    saved = run_dir.saved_config()
    if saved is None:
      continue
    changed = config_differences(saved, run.train_config(results_dir), ignore=("wandb", "init_from"))
    if changed:
      raise UserError(f"{run_dir.path} was trained with other settings than {spec.path} gives it "
                      f"(differs in: {', '.join(changed)}); use another {setting} folder")
  results_dir.mkdir(parents=True, exist_ok=True)
  # Created only if absent: of two sweeps started at once on a new folder, one is refused.
  if not create_json_exclusive(marker, {"name": spec.name, "file": str(spec.path)}):
    refuse_another_owner()


def adopt_reused_runs(spec: SweepSpec, results_dir: Path, log=lambda s: None) -> int:
  """Takes over, as done, each pending run whose config another sweep's published run was trained
  with (same model, data, seed and budget: the same computation); its files are copied into this
  sweep's run folder, result.json naming where it came from. Returns how many."""
  from parscale_jax.sweep.table import copy_run_files
  from parscale_jax.train.run_record import RunRecord

  if not spec.reuse_dirs:
    return 0
  candidates = []
  for folder in spec.reuse_dirs:
    for run_id in ResultsDir(folder).run_ids():
      source = ResultsDir(folder).run(run_id)
      result, saved = read_result(source.path), source.saved_config()
      if result and result.get("status") == "done" and saved is not None:
        candidates.append((source.path, saved))
  adopted = 0
  for run in spec.runs:
    if run_state(results_dir, run, spec.publish_dir) != "pending":
      continue
    config = run.train_config(results_dir)
    source = next((src for src, saved in candidates
                   if not config_differences(saved, config, ignore=("wandb", "init_from"))), None)
    if source is None:
      continue
    target = ResultsDir(results_dir).run(run.run_id).path
    copy_run_files(source, target, [n for n in PUBLISHED_FILES if n != RESULT])
    RunRecord(target, run.run_id).adopt(read_result(source), source)  # Last: now it is done.
    log(f"{run.run_id}: done, reused from {source}")
    adopted += 1
  return adopted


def publish_finished(spec: SweepSpec, results_dir: Path) -> None:
  """Publishes every finished run not yet published: runs that finished before the sweep had a
  publish folder, in another process, or just before a kill."""
  published = spec.publish_dir
  if published is None:
    return
  for run in spec.runs:
    local = read_result(ResultsDir(results_dir).run(run.run_id).path)
    copy = ResultsDir(published).run(run.run_id).result
    if copy.exists() and read_result(copy.parent) is None:  # Cut or edited by hand: not trusted.
      print(f"{copy}: unreadable; " + ("published again from the finished run" if local and
            local.get("status") == "done" else "the run counts as not done"), file=sys.stderr)
    if local and local.get("status") == "done" and read_result(copy.parent) is None:
      publish_run(results_dir, run.run_id, published)


def report_sweep(spec: SweepSpec, results_dir: Path, log=lambda s: print(s, file=sys.stderr)):
  """The table, report and publication of the runs finished so far; trains nothing (a sweep
  still running elsewhere keeps going)."""
  results_dir = Path(results_dir)
  ResultsDir(results_dir).runs.mkdir(parents=True, exist_ok=True)
  claim_results_dir(spec, results_dir)
  from parscale_jax.sweep.report import analyze_sweep, refuse_to_shrink
  if spec.publish_dir is not None:  # Before anything is written there, the owner's mark too.
    with table_turn(results_dir):
      refuse_to_shrink(write_table(results_dir, spec.runs, spec.publish_dir, turn_held=True),
                       spec.publish_dir)
  claim_publish_dir(spec)
  publish_finished(spec, results_dir)
  publish_unfinished(spec, results_dir)
  with table_turn(results_dir):
    rows = write_table(results_dir, spec.runs, spec.publish_dir, turn_held=True)
    analyze_sweep(spec, results_dir, rows, log=log)
  return rows


# A run whose worker process died this many times (the OOM killer, a kill -9) is failed, not
# started again: the sweep goes on without it.
MAX_WORKER_DEATHS = 2


def _stage_batches(spec, results_dir, state, todo_states, executor, log):
  """(stage, runs to start) in stage order; a stage is offered again after the executor lost a
  worker, with the runs it interrupted, until none is left to start."""
  for stage in spec.stages:
    while True:
      todo = [r for r in spec.runs if r.stage == stage and state(results_dir, r) in todo_states]
      todo = [r for r in todo if not _gave_up(results_dir, r, log)]
      if not todo:
        break
      broken_before = executor.broken
      yield stage, todo
      if executor.broken == broken_before:
        break


def _gave_up(results_dir: Path, run, log) -> bool:
  """Marks a run failed once the worker training it died MAX_WORKER_DEATHS times (deaths.jsonl,
  written when a pool breaks; a killed sweep kills no worker in this sense); True when failed."""
  from parscale_jax.train.run_record import RunRecord, read_result
  workdir = ResultsDir(results_dir).run(run.run_id).path
  deaths = workdir / DEATHS
  result = read_result(workdir) or {}
  if not deaths.exists() or result.get("status") in ("done", "failed"):
    return False
  count = len(deaths.read_text().splitlines())
  if count < MAX_WORKER_DEATHS:
    return False
  reason = (f"its worker process died {count} times without finishing (killed, e.g. by the "
            f"out-of-memory killer); rerun with --retry-failed")
  RunRecord(workdir, run.run_id).fail(reason)
  log(f"{run.run_id}: failed ({reason})")
  return True
