"""Where things live on disk: a run's folder and its files, a sweep's results folder and its runs.

Every path and file name of a run is spelled here, so that training (which writes a run), sweeps
(which schedule, publish and republish runs) and the CLI (which reads them) agree by construction.

    results/<sweep>/                       ResultsDir
      sweep.json  table.csv  report.md
      runs/<run_id>/                       RunDir
        config.yaml  result.json  metrics.jsonl  diversity.json
        attempts.jsonl  deaths.jsonl  .lock  .train.lock
        checkpoints/<step>/  final/
      trunks/<trunk_id>/                   a ladder's stable run: a RunDir, plus branch_points/<step>/
    <publish>/                             a published copy: sweep.json  table.csv  report.md
      runs/<run_id>/                       PUBLISHED_FILES of each finished run
      unfinished/                          newest checkpoints of runs in flight (sweep/unfinished.py)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from parscale_jax.configlib import yaml_load


CONFIG = "config.yaml"  # The run's full TrainConfig, as trained.
RESULT = "result.json"  # Status, losses and timings (train/run_record.py).
METRICS = "metrics.jsonl"  # One line per logged step.
DIVERSITY = "diversity.json"  # Stream correlation of a finished P > 1 run.
ATTEMPTS = "attempts.jsonl"  # One line per time a sweep started the run.
DEATHS = "deaths.jsonl"  # One line per worker process that died running it.
LOCK = ".lock"  # Held by the sweep worker that runs it.
TRAIN_LOCK = ".train.lock"  # Held by the trainer.
CHECKPOINTS = "checkpoints"
FINAL = "final"  # The exported model (Hugging Face format).
BRANCH_POINTS = "branch_points"  # A ladder trunk's checkpoint at each cooldown start, kept.

SWEEP_MARK = "sweep.json"  # Names the sweep that owns a results (or published) folder.
TABLE = "table.csv"
TABLE_JSONL = "table.jsonl"
REPORT = "report.md"
TABLE_LOCK = ".table.lock"  # Held while the table, fit and report are rewritten.

# What a published run keeps (its checkpoints and exported model stay local).
PUBLISHED_FILES = (RESULT, METRICS, CONFIG, DIVERSITY)


@dataclasses.dataclass(frozen=True)
class RunDir:
  """One run's folder."""

  path: Path

  def __truediv__(self, name: str) -> Path:
    return self.path / name

  @property
  def config(self) -> Path:
    return self.path / CONFIG

  @property
  def result(self) -> Path:
    return self.path / RESULT

  @property
  def metrics(self) -> Path:
    return self.path / METRICS

  @property
  def diversity(self) -> Path:
    return self.path / DIVERSITY

  @property
  def checkpoints(self) -> Path:
    return self.path / CHECKPOINTS

  @property
  def final(self) -> Path:
    return self.path / FINAL

  @property
  def exported(self) -> bool:
    """Whether the run's final model was written (its Hugging Face config is the last file)."""
    return (self.final / "config.json").exists()

  def latest_checkpoint(self) -> int | None:
    """The highest step with a checkpoint folder, or None."""
    return latest_step(self.checkpoints)

  def saved_config(self) -> dict | None:
    """The config the run trained with, as a mapping (None when it has none)."""
    return yaml_load(self.config.read_text()) if self.config.exists() else None


def steps(folder: Path) -> set[int]:
  """The steps numbering the subfolders of `folder` (checkpoints/, branch_points/)."""
  folder = Path(folder)
  return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def latest_step(folder: Path) -> int | None:
  """The highest of `steps(folder)`, or None."""
  return max(steps(folder), default=None)


@dataclasses.dataclass(frozen=True)
class ResultsDir:
  """A sweep's results folder, or a published copy of one (the same layout, fewer files)."""

  path: Path

  def __post_init__(self):
    object.__setattr__(self, "path", Path(self.path))

  @property
  def runs(self) -> Path:
    return self.path / "runs"

  def run(self, run_id: str) -> RunDir:
    return RunDir(self.path / "runs" / run_id)

  def trunk(self, trunk_id: str) -> RunDir:
    return RunDir(self.path / "trunks" / trunk_id)

  @property
  def table(self) -> Path:
    return self.path / TABLE

  @property
  def mark(self) -> Path:
    return self.path / SWEEP_MARK

  def run_ids(self) -> list[str]:
    """The runs with a result here, sorted."""
    return sorted(p.parent.name for p in self.runs.glob(f"*/{RESULT}"))


def local_or_published(results_dir, published, run_id: str, needs: str = RESULT) -> RunDir | None:
  """The run's local folder where it holds `needs`, else its published copy where that does, else
  None: a fresh clone reads published runs, a working folder its own."""
  for folder in (results_dir, published):
    if folder is not None:
      run = ResultsDir(folder).run(run_id)
      if (run / needs).exists():
        return run
  return None
