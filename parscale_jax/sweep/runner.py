"""Running a sweep: stages in order, runs in parallel workers (local processes or Ray tasks),
the table after every finished run, then the fit, plots and report."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
from pathlib import Path

from parscale_jax.errors import UserError
from parscale_jax.rundir import ATTEMPTS, DEATHS, PUBLISHED_FILES, RESULT, ResultsDir
from parscale_jax.sweep.executor import chains, execute_chain, execute_chain_ray, init_worker, is_locked
from parscale_jax.sweep.spec import SweepSpec
from parscale_jax.sweep.table import publish_run, run_result, write_table
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
  from parscale_jax.data.pipeline import prepare_corpus

  seen = set()
  for run in spec.runs:
    data = run.train_config(results_dir).data
    key = (data.source, data.data_dir, data.val_percent, data.text_key)
    if key not in seen:
      seen.add(key)
      prepare_corpus(data)


def _local_pool(spec: SweepSpec, n_runs: int):
  threads = max(1, spec.executor.threads_per_worker)
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
  workers = spec.executor.workers or max(1, len(cores) // threads)
  workers = max(1, min(workers, n_runs))
  ctx = multiprocessing.get_context("spawn")
  cpu_queue = ctx.Queue()
  for i in range(workers):
    cpu_queue.put([cores[(i * threads + j) % len(cores)] for j in range(threads)])
  return cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                                initargs=(threads, cpu_queue)), workers


def run_sweep(spec: SweepSpec, results_dir: Path, *, executor: str = "local",
              address: str | None = None, retry_failed: bool = False, progress: bool = True,
              analyze: bool = True, log=lambda s: print(s, file=sys.stderr)) -> list[dict]:
  ray = None
  if executor == "ray":
    try:
      import ray as ray_module
    except ImportError:
      raise UserError("--executor ray needs Ray: pip install 'parscale-jax[ray]'") from None
    ray = ray_module
    if not ray.is_initialized():
      ray.init(address=address, log_to_driver=False)
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
  if any(state(results_dir, r) in todo_states for r in spec.runs):
    _prepare_data(spec, results_dir)
  publish_finished(spec, results_dir)
  rows = write_table(results_dir, spec.runs, published)
  bar = live = None
  if progress:
    from tqdm import tqdm

    from parscale_jax.sweep.progress import SweepProgress
    finished = sum(r["status"] in ("done", "failed") for r in rows)
    bar = tqdm(total=len(spec.runs), initial=finished, desc=f"sweep {spec.name}", unit="run")
    live = SweepProgress(spec.runs, results_dir, state)
  try:
    for stage, todo in _stage_batches(spec, results_dir, state, todo_states, log):
      for result in _execute(todo, spec, results_dir, retry_failed, ray):
        if result is None:  # No task finished within the polling interval.
          # A ladder's budgets finish inside one task: publish each as it lands.
          publish_finished(spec, results_dir)
          write_table(results_dir, spec.runs, published)
          if bar is not None:
            bar.set_postfix_str(live.summary())
          continue
        if published is not None and result.get("status") == "done" and not result.get("skipped"):
          publish_run(results_dir, result["run_id"], published)
        write_table(results_dir, spec.runs, published)
        if bar is not None:
          bar.set_postfix_str(live.summary())
        if result.get("skipped"):
          continue
        if bar is not None:
          bar.update(1)
        loss = result.get("eval_loss")
        log(f"{result['run_id']}: {result['status']}"
            + (f" loss={loss:.4f}" if isinstance(loss, float) else "")
            + (f" ({result['reason']})" if result.get("reason") else ""))
  finally:
    if bar is not None:
      bar.close()
  rows = write_table(results_dir, spec.runs, published)
  if analyze:
    from parscale_jax.sweep.report import analyze_sweep
    analyze_sweep(spec, results_dir, rows, log=log)
  return rows


def check_target(spec: SweepSpec, results_dir: Path) -> None:
  """Nothing trains until every run is known to fit the sweep's target slice. The compiles run in
  a process of their own on JAX's CPU platform, so that this one never takes a host's chips."""
  import subprocess

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
  import json

  from parscale_jax.atomic import create_json_exclusive
  from parscale_jax.train.config import config_differences

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
  from parscale_jax.train.config import config_differences
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
  claim_publish_dir(spec)
  publish_finished(spec, results_dir)
  rows = write_table(results_dir, spec.runs, spec.publish_dir)
  from parscale_jax.sweep.report import analyze_sweep
  analyze_sweep(spec, results_dir, rows, log=log)
  return rows


POLL_SECONDS = 15.0


# A run whose worker process died this many times (the OOM killer, a kill -9) is failed, not
# started again: the sweep goes on without it.
MAX_WORKER_DEATHS = 2


def _stage_batches(spec, results_dir, state, todo_states, log):
  """(stage, runs to start) in stage order; a stage is offered again after its pool broke (a
  worker was killed), with the runs it interrupted, until none is left to start."""
  for stage in spec.stages:
    while True:
      todo = [r for r in spec.runs if r.stage == stage and state(results_dir, r) in todo_states]
      todo = [r for r in todo if not _gave_up(results_dir, r, log)]
      if not todo:
        break
      broken_before = _PoolBroke.count
      yield stage, todo
      if _PoolBroke.count == broken_before:
        break


class _PoolBroke:
  """How many local pools broke in this process (a worker died)."""
  count = 0


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


def _killed(workers: dict) -> set:
  """The pids of the workers that died on their own (killed, e.g. by the out-of-memory killer);
  not those the broken pool then stopped itself (SIGTERM), whose runs did nothing wrong."""
  import signal
  return {pid for pid, process in workers.items()
          if process.exitcode not in (None, 0, -signal.SIGTERM)}


def _record_deaths(todo, results_dir: Path, workers: set) -> None:
  """Notes a death in deaths.jsonl of each run whose latest attempt ran in one of the killed
  workers and did not finish."""
  import json
  import time

  from parscale_jax.train.run_record import read_result
  for run in todo:
    workdir = ResultsDir(results_dir).run(run.run_id).path
    attempts = workdir / ATTEMPTS
    if not attempts.exists() or (read_result(workdir) or {}).get("status") in ("done", "failed"):
      continue
    lines = attempts.read_text().splitlines()
    if lines and json.loads(lines[-1]).get("pid") in workers:
      with open(workdir / DEATHS, "a") as f:
        f.write(json.dumps({"time": time.time(), "pid": json.loads(lines[-1])["pid"]}) + "\n")


def _execute(todo, spec, results_dir, retry_failed, ray):
  """Yields each run's result as its task (a run, or a ladder's budgets) finishes, and None every
  POLL_SECONDS without one."""
  tasks = chains(todo)
  if ray is not None:
    remote = ray.remote(num_cpus=spec.executor.threads_per_worker,
                        num_gpus=spec.executor.gpus_per_run)(execute_chain_ray)
    pending = [remote.remote(t, str(results_dir), retry_failed, spec.executor.threads_per_worker)
               for t in tasks]
    while pending:
      ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_SECONDS)
      if not ready:
        yield None
      for result in ray.get(ready[0]) if ready else ():
        yield result
    return
  pool, _ = _local_pool(spec, len(tasks))
  with pool:
    try:
      pending = {pool.submit(execute_chain, t, str(results_dir), retry_failed) for t in tasks}
      workers = {}
      while pending:
        workers.update(getattr(pool, "_processes", None) or {})  # pid -> Process, as they start.
        done, pending = cf.wait(pending, timeout=POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
        if not done:
          yield None
        for future in done:
          try:
            results = future.result()
          except cf.process.BrokenProcessPool:  # A worker was killed: the pool is gone.
            _PoolBroke.count += 1
            pool.shutdown(wait=True)  # The pool reaps its workers: their exit codes are known.
            _record_deaths(todo, results_dir, _killed(workers))
            return
          yield from results
    # GeneratorExit: the interrupt came while the caller held a result.
    except (KeyboardInterrupt, GeneratorExit):
      _stop_workers(pool)
      raise


def _stop_workers(pool) -> None:
  """Ctrl-C: no queued run starts, and the running ones stop now; they resume from their last
  checkpoint when the sweep is started again, as after a kill. (Left alone, a worker that got the
  interrupt too would report it and take the next queued run, and the pool's exit would wait for
  every queued run.)"""
  processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them.
  pool.shutdown(wait=False, cancel_futures=True)
  for process in processes:
    process.kill()
