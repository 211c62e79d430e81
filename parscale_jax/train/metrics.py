"""Run metrics: JSON lines per logged step, TensorBoard events, and result.json."""
from __future__ import annotations

import json
from pathlib import Path

from parscale_jax.atomic import write_text_atomic


def write_json_atomic(path: Path, data) -> None:
  write_text_atomic(path, json.dumps(data, indent=2) + "\n")


class MetricsWriter:
  """Appends metric lines; on resume, first drops the lines written after the restored step."""

  def __init__(self, workdir: Path, resume_step: int, tensorboard: bool):
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

  def write(self, record: dict) -> None:
    self.file.write(json.dumps(record) + "\n")
    self.file.flush()
    if self.tb is not None:
      for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)):
          self.tb.add_scalar(key, value, record["step"])

  def close(self) -> None:
    self.file.close()
    if self.tb is not None:
      self.tb.close()
