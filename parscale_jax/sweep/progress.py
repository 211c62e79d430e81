"""Live progress of a sweep: runs done / running / left, work done inside running runs, an ETA.

Work is counted in stream-tokens (tokens x P), since a run's cost grows with its P; each running
run's progress is read from the last line of its metrics.jsonl, so the estimate moves between
finished runs."""
from __future__ import annotations

import time
from pathlib import Path

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
    configs = {r.run_id: r.train_config(self.results_dir) for r in runs}
    self.steps = {rid: c.steps for rid, c in configs.items()}
    self.work_per_step = {rid: c.tokens_per_step * c.model.P for rid, c in configs.items()}
    self.started = time.time()
    self.work_at_start = None
    self.finished = 0  # Runs done or failed, as of the last summary.

  def summary(self) -> str:
    states = {r.run_id: self.run_state(self.results_dir, r) for r in self.runs}
    work_done = work_total = 0.0
    for rid, state in states.items():
      total = self.steps[rid] * self.work_per_step[rid]
      step = self.steps[rid] if state in ("done", "failed") else _last_step(
          ResultsDir(self.results_dir).run(rid).path)
      work_total += total
      work_done += step * self.work_per_step[rid]
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
