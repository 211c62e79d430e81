"""Token ladders: one warmup-stable-decay run per grid point, branched into a cooldown per budget.

    ladder: {budgets: [614400, 1228800, 2457600], cooldown: 0.2}

Each budget B is a run of its own (its own table row, `tokens` = B): the wsd schedule of length B
with the ladder's warmup, whose learning rate decays over the last `cooldown` share of its steps.
Before its cooldown starts, that schedule does not depend on B, so every budget shares one stable
run (the trunk, in `trunks/`): it trains once, pauses at each budget's cooldown start, and leaves
a copy of its checkpoint there, from which the budget's run resumes (Hägele et al. 2024,
"Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"). A budget's run is
the same computation as training that wsd run from scratch (tests/test_ladder.py), for a fraction
of the tokens. The warmup is `optim.warmup_steps`, or `optim.warmup_fraction` of the smallest
budget's steps.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from parscale_jax.atomic import copy_tree_atomic
from parscale_jax.configlib import ConfigError, set_nested
from parscale_jax.errors import UserError
from parscale_jax.rundir import BRANCH_POINTS, ResultsDir, RunDir
from parscale_jax.train.config import config_from_dict


@dataclasses.dataclass(frozen=True)
class LadderConfig:
  """The budgets of a token ladder and the share of each that cools down."""

  budgets: tuple[int, ...] = ()  # Training tokens of each branch, ascending.
  cooldown: float = 0.2  # Share of a branch's steps over which the learning rate decays.

  def __post_init__(self):
    if not self.budgets:
      raise ConfigError("ladder.budgets: give at least one token budget")
    if any(not isinstance(b, int) or b < 1 for b in self.budgets):
      raise ConfigError(f"ladder.budgets must be positive token counts, got {list(self.budgets)}")
    if list(self.budgets) != sorted(set(self.budgets)):
      raise ConfigError(f"ladder.budgets must increase, without repeats: {list(self.budgets)}")
    if not 0.0 < self.cooldown < 1.0:
      raise ConfigError(f"ladder.cooldown must be in (0, 1), got {self.cooldown}")


@dataclasses.dataclass(frozen=True)
class Branch:
  """Where a ladder run starts: its trunk and the trunk's step at the cooldown start."""

  trunk_id: str  # Folder name under results/<sweep>/trunks/.
  trunk_config: dict  # The trunk's experiment config (constant schedule after the warmup).
  start_step: int  # The branch's first step is start_step + 1.


def expand(config: dict, ladder: LadderConfig, trunk_id: str) -> list[tuple[int, dict, Branch]]:
  """(budget, branch config, Branch) for each budget of one grid point's config."""
  from parscale_jax.train.optimizer import decay_start

  first = config_from_dict(_with(config, tokens=ladder.budgets[0]))
  warmup = first.optim.warmup_steps or max(int(round(first.optim.warmup_fraction * first.steps)), 1)
  out = []
  for budget in ladder.budgets:
    branch = _with(config, **{"tokens": budget, "optim.schedule": "wsd",
                              "optim.decay_fraction": ladder.cooldown, "optim.warmup_steps": warmup})
    parsed = config_from_dict(branch)
    start = decay_start(parsed.optim, parsed.steps)
    if parsed.steps - start < 1 or start <= warmup:
      raise ConfigError(f"ladder: budget {budget} ({parsed.steps} steps) is too short for a "
                        f"{warmup}-step warmup and a {ladder.cooldown:g} cooldown")
    out.append((budget, branch, start))
  # The trunk is never finished: it pauses at each cooldown start (its length only bounds them).
  trunk = _with(config, **{"tokens": ladder.budgets[-1], "optim.schedule": "constant",
                           "optim.warmup_steps": warmup, "export_final": False})
  return [(budget, branch, Branch(trunk_id, trunk, start)) for budget, branch, start in out]


def _with(config: dict, **values) -> dict:
  config = copy.deepcopy(config)
  for key, value in values.items():
    set_nested(config, key, value)
  return config


def prepare_branch(branch: Branch, results_dir: Path, workdir: Path, run_id: str) -> None:
  """Gives a branch with no checkpoint of its own the trunk's checkpoint at its cooldown start,
  training the trunk that far first if needed. Nothing to do for a branch that has begun."""
  from parscale_jax.train.trainer import train

  if RunDir(workdir).latest_checkpoint() is not None:
    return
  trunk = ResultsDir(results_dir).trunk(branch.trunk_id)
  trunk_dir = trunk.path
  point = trunk_dir / BRANCH_POINTS / str(branch.start_step)
  if not point.is_dir():
    reached = trunk.latest_checkpoint()
    if reached is not None and reached > branch.start_step:
      raise UserError(f"{run_id}: its trunk {trunk_dir} is past step {branch.start_step} and kept "
                      f"no checkpoint there; remove the trunk folder to train it again")
    result = train(config_from_dict(branch.trunk_config), trunk_dir, run_id=f"trunk {branch.trunk_id}",
                   progress=False, until_step=branch.start_step)
    if result.get("status") == "failed":
      raise UserError(f"{run_id}: its trunk failed: {result.get('reason')}")
    copy_tree_atomic(trunk.checkpoints / str(branch.start_step), point)
  copy_tree_atomic(point, RunDir(workdir).checkpoints / str(branch.start_step))

