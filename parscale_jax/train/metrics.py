"""Run metrics: metrics.jsonl (one JSON line per logged step or evaluation), its writer and its
reader, with TensorBoard and W&B beside it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from parscale_jax.errors import UserError
from parscale_jax.rundir import RunDir


def read_metrics(workdir: Path, tail_bytes: int | None = None) -> list[dict]:
  """The records of a run's metrics.jsonl, in order; lines cut by a kill are skipped.
  tail_bytes: read only the end of the file (a live progress read)."""
  path = RunDir(Path(workdir)).metrics
  if not path.exists():
    return []
  with open(path, "rb") as f:
    if tail_bytes is not None:
      f.seek(0, 2)
      f.seek(max(0, f.tell() - tail_bytes))
    lines = f.read().decode(errors="replace").splitlines()
  records = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict):
      records.append(record)
  return records


class MetricsWriter:
  """Appends metric lines; on resume, first drops the lines written after the restored step."""

  def __init__(self, workdir: Path, resume_step: int, tensorboard: bool, wandb=None,
               run_id: str = "", config: dict | None = None):
    """wandb: a WandbConfig with a project, or None; the W&B run id is `run_id`, so that a resumed
    run appends to the same W&B run."""
    self.path = RunDir(workdir).metrics
    if self.path.exists():
      kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= resume_step]
      self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    self.file = self.path.open("a")
    self.tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1)
    self.wandb = None
    if wandb is not None and wandb.project:
      self.wandb = _start_wandb(wandb, workdir, run_id, config)

  def write(self, record: dict) -> None:
    self.file.write(json.dumps(record) + "\n")
    self.file.flush()
    if self.tb is not None:
      for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)):
          self.tb.add_scalar(key, value, record["step"])
    if self.wandb is not None:
      self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

  def close(self) -> None:
    self.file.close()
    if self.tb is not None:
      self.tb.close()
    if self.wandb is not None:
      self.wandb.finish()


def _start_wandb(config, workdir: Path, run_id: str, run_config: dict | None):
  try:
    import wandb
  except ImportError:
    raise UserError("wandb.project is set but wandb is not installed "
                    "(pip install 'parscale-jax[wandb]')") from None
  # The id must be stable across resumes and unique within a project: the workdir's name alone
  # repeats across sweeps, so its absolute path is hashed in.
  wid = f"{run_id}-{hashlib.sha256(str(workdir.absolute()).encode()).hexdigest()[:8]}"
  wid = "".join(c if c.isalnum() or c in "-_." else "_" for c in wid)
  try:
    return wandb.init(project=config.project, entity=config.entity, mode=config.mode,
                      dir=str(workdir), id=wid, name=run_id, resume="allow", config=run_config,
                      settings=wandb.Settings(silent=True))
  except Exception as e:  # No API key, no network, a wrong entity: wandb raises many types.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"wandb ({config.mode}): cannot start the run: {first} (wandb login, or "
                    f"wandb.mode: offline)") from None
