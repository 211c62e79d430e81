"""Live progress of a sweep: runs done / running / left, work done inside running runs, an ETA.

Work is counted in training FLOPs, since a run's cost grows with its size and its P. A token
ladder's budgets share their stable run: each budget's own work is its cooldown, and its trunk's
(once per trunk) the steps up to the last cooldown start. The progress of work in flight is read
from the last line of its metrics.jsonl, so the estimate moves between finished runs."""
from __future__ import annotations

import time
from pathlib import Path

from parscale_jax.model.accounting import flops_per_token
from parscale_jax.rundir import ResultsDir
from parscale_jax.train.metrics import read_metrics


def _last_step(workdir: Path) -> int:
  for record in reversed(read_metrics(workdir, tail_bytes=4096)):
    if isinstance(record.get("step"), int):
      return record["step"]
  return 0


class SweepProgress:
  """Summarises the runs of a sweep for a progress bar."""

  def __init__(self, runs, results_dir: Path, run_state):
    self.runs, self.results_dir, self.run_state = runs, Path(results_dir), run_state
    self.first_step, self.steps, self.step_cost = {}, {}, {}
    self.trunk_steps: dict[str, int] = {}  # Up to its last cooldown start.
    self.trunk_cost: dict[str, float] = {}
    for run in runs:
      config = run.train_config(self.results_dir)
      cost = config.tokens_per_step * flops_per_token(config.model, config.data.seq_len)
      start = run.branch.start_step if run.branch else 0
      self.first_step[run.run_id], self.steps[run.run_id] = start, config.steps
      self.step_cost[run.run_id] = cost
      if run.branch:
        trunk = run.branch.trunk_id
        self.trunk_steps[trunk] = max(self.trunk_steps.get(trunk, 0), start)
        self.trunk_cost[trunk] = cost
    self.started = time.time()
    self.work_at_start = None
    self.finished = 0  # Runs done or failed, as of the last summary.

  def work(self, states: dict[str, str]) -> tuple[float, float]:
    """(FLOPs trained, FLOPs in all) of the sweep's runs, given each run's state."""
    results = ResultsDir(self.results_dir)
    done = total = 0.0
    trunk_reached: dict[str, int] = {}
    for run in self.runs:
      rid, start, end = run.run_id, self.first_step[run.run_id], self.steps[run.run_id]
      finished = states[rid] in ("done", "failed")
      step = end if finished else _last_step(results.run(rid).path)
      total += (end - start) * self.step_cost[rid]
      done += max(step - start, 0) * self.step_cost[rid]
      if run.branch:  # A budget that has begun (or ended) had its trunk reach its cooldown start.
        trunk = run.branch.trunk_id
        reached = start if finished or step > start else 0
        trunk_reached[trunk] = max(trunk_reached.get(trunk, 0), reached)
    for trunk, end in self.trunk_steps.items():
      step = max(trunk_reached.get(trunk, 0), _last_step(results.trunk(trunk).path))
      total += end * self.trunk_cost[trunk]
      done += min(step, end) * self.trunk_cost[trunk]
    return done, total

  def summary(self) -> str:
    states = {r.run_id: self.run_state(self.results_dir, r) for r in self.runs}
    work_done, work_total = self.work(states)
    if self.work_at_start is None:
      self.work_at_start = work_done
    count = lambda s: sum(v == s for v in states.values())
    self.finished = count("done") + count("failed")
    left = count("pending")
    text = (f"{count('done')} done, {count('failed')} failed, {count('running')} running, {left} left; "
            f"{100 * work_done / max(work_total, 1):.0f} % of the work")
    rate = (work_done - self.work_at_start) / max(time.time() - self.started, 1e-9)
    if rate > 0 and work_done < work_total:
      text += f", ETA {_duration((work_total - work_done) / rate)}"
    return text


def _duration(seconds: float) -> str:
  minutes = int(seconds // 60)
  return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds % 60):02d}s"
