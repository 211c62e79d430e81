"""Run metrics: JSON lines per logged step, TensorBoard events, and result.json."""
from __future__ import annotations

import json
from pathlib import Path

from parscale_jax.atomic import write_text_atomic


def write_json_atomic(path: Path, data) -> None:
  write_text_atomic(path, json.dumps(data, indent=2) + "\n")


class MetricsWriter:
  """Appends metric lines; on resume, first drops the lines written after the restored step."""

  def __init__(self, workdir: Path, resume_step: int, tensorboard: bool, wandb=None,
               run_id: str = "", config: dict | None = None):
    """wandb: a WandbConfig with a project, or None; the W&B run id is `run_id`, so that a resumed
    run appends to the same W&B run."""
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():
      kept = []
      for line in self.path.read_text().splitlines():
        try:
          if json.loads(line).get("step", 0) <= resume_step:
            kept.append(line)
        except json.JSONDecodeError:
          pass  # A line cut by a kill.
      self.path.write_text("".join(k + "\n" for k in kept))
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
    from parscale_jax.errors import UserError
    raise UserError("wandb.project is set but wandb is not installed "
                    "(pip install 'parscale-jax[wandb]')") from None
  # The id must be stable across resumes and unique within a project: the workdir's name alone
  # repeats across sweeps, so its absolute path is hashed in.
  import hashlib
  wid = f"{run_id}-{hashlib.sha256(str(workdir.absolute()).encode()).hexdigest()[:8]}"
  wid = "".join(c if c.isalnum() or c in "-_." else "_" for c in wid)
  return wandb.init(project=config.project, entity=config.entity, mode=config.mode, dir=str(workdir),
                    id=wid, name=run_id, resume="allow", config=run_config,
                    settings=wandb.Settings(silent=True))
