"""Sweep files: a base experiment, grid axes, optional stages; expanded to runs with stable ids.

    name: quick                      # results go to results/<name> unless --results is given
    base: ../experiments/tiny.yaml   # the base experiment, relative to this file
    set: {tokens: 300000}            # overrides for every run
    grid:                            # the cartesian product of these axes
      model.size: [cpu-55k, cpu-100k]
      model.P: [1, 2, 4]
    variants:                        # optional: named sets of overrides, a grid axis `variant`
      prefix: {model.P: 1, model.single_stream_prefix: true}
      P4_mlp: {model.P: 4, model.prefix_param: mlp}
    ladder: {budgets: [614400, 2457600], cooldown: 0.2}   # optional: a run per budget, cooled
                                     # down from one stable run per grid point (sweep/ladder.py)
    stages:                          # optional instead of set/grid: stages run in order
      - {name: pretrain, grid: {...}, set: {...}}
      - {name: continue, grid: {...}, set: {...}, init_from_stage: pretrain}
    executor: {workers: 2, threads_per_worker: 1}
    analysis: {bootstrap: 1000, group_by: stage, fit_stages: [...], publish: ../analysis/results/quick}

A `variant` axis runs configurations that no cartesian grid gives (P = 1 beside P = 4 with each
prefix form) in one pool, ordered with the other axes, where stages would run one after another.

A run's id joins its grid values in sorted key order (`P=2_size=cpu-55k`), so ids do
not depend on the order of the axes and stay the same when an axis gains values. Runs start in
the file's order, the first axis varying slowest: `seed` first finishes whole seeds one by one.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import re
from pathlib import Path
from typing import Any, Literal

from parscale_jax.configlib import ConfigError, from_dict, load_yaml, set_nested
from parscale_jax.rundir import ResultsDir
from parscale_jax.sweep.ladder import Branch, LadderConfig, expand
from parscale_jax.train.config import TrainConfig, config_from_dict


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
  """How runs are executed locally."""

  workers: int = 0  # Parallel worker processes; 0: one per GPU, else cores // threads_per_worker.
  threads_per_worker: int = 1  # CPU threads each worker's XLA may use.
  gpus_per_run: float = 0.0  # Ray only: GPUs requested per run.


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
  """What happens after the runs: the fit, plots and report."""

  bootstrap: int = 1000  # Bootstrap resamples of the fit.
  fit_stages: tuple[str, ...] = ()  # Stages whose runs are fitted (default: every stage).
  weights: Literal["none", "sem"] = "none"  # "sem": weight points by their standard error over seeds.
  # The parameter count fitted against: "N" counts ParScale's prefix and aggregator (the paper's
  # count), "N_backbone" leaves them out (they are a large share of a tiny model's parameters).
  n_column: Literal["N", "N_backbone"] = "N"
  # Folder, relative to the sweep file, that receives table.csv, report.md and the fit after the
  # sweep (e.g. ../analysis/results/cpu, which the notebooks load); None: results stay in place.
  publish: str | None = None
  # Pairs of variants [A, B] (the grid's `variant` axis): A minus B paired by seed at each setting
  # of the other axes, with its 95 % interval, in the report.
  contrasts: tuple[tuple[str, ...], ...] = ()
  # Fit the law; false for sweeps whose axes are no N x P grid (variant ablations).
  fit: bool = True
  # Variants fitted together as one N x P grid (each may set only model.P), e.g. [P1, P2, P4, P8];
  # default: each variant is its own setting.
  fit_variants: tuple[str, ...] = ()
  # Another sweep's published folder (relative to the sweep file): each run minus that sweep's
  # run of the same size, P, seed and tokens, paired, in the report (e.g. ladder against cosine).
  compare_to: str | None = None
  # Also publish the newest checkpoint of each run in flight (publish/unfinished/), so that a
  # fresh clone resumes it; costs a checkpoint per run in flight (sweep/unfinished.py).
  publish_unfinished: bool = False


@dataclasses.dataclass(frozen=True)
class StageSpec:
  name: str = "main"
  grid: dict = dataclasses.field(default_factory=dict)
  set: dict = dataclasses.field(default_factory=dict)
  init_from_stage: str | None = None  # Start each run from the matching run of that stage.


@dataclasses.dataclass(frozen=True)
class RunSpec:
  run_id: str
  stage: str
  values: dict  # Grid values of this run.
  config: dict  # The full experiment config (before parsing).
  init_from_run: str | None = None  # Run id whose workdir gives the backbone.
  branch: Branch | None = None  # A token ladder's budget: starts from its trunk (sweep/ladder.py).

  def train_config(self, results_dir: Path) -> TrainConfig:
    config = copy.deepcopy(self.config)
    if self.init_from_run:
      config["init_from"] = str(ResultsDir(results_dir).run(self.init_from_run).path)
    return config_from_dict(config)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
  name: str
  path: Path
  runs: tuple[RunSpec, ...]
  stages: tuple[str, ...]
  executor: ExecutorConfig
  analysis: AnalysisConfig
  # Folders of another sweep's published runs (`reuse:` in the file, relative to it): a run whose
  # saved config equals one of this sweep's is taken over as done instead of trained again.
  reuse_dirs: tuple[Path, ...] = ()
  # The slice the sweep is meant for (`target: {topology: v5p:2x2x2}`): `sweep check` and `sweep
  # run` compile each distinct program for it first and refuse runs that will not fit.
  target: str | None = None

  @property
  def publish_dir(self) -> Path | None:
    """Where the report and the finished runs are published (analysis.publish), or None."""
    if not self.analysis.publish:
      return None
    return Path(os.path.normpath(self.path.parent / self.analysis.publish))


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def run_id(stage: str, values: dict) -> str:
  parts = [f"{k.removeprefix('model.')}={v}" for k, v in sorted(values.items())]
  body = ",".join(parts) if parts else "base"
  return _ID_UNSAFE.sub("_", f"{stage}/{body}" if stage != "main" else body).replace("/", "--")


def _grid(stage: str, grid: Any) -> list[dict]:
  if not isinstance(grid, dict):
    raise ConfigError(f"stage {stage!r}: grid must be a mapping of key to list of values")
  for key, values in grid.items():
    if not isinstance(values, list) or not values:
      raise ConfigError(f"grid key '{key}': expected a non-empty list of values")
    repeated = [v for i, v in enumerate(values) if any(v == w for w in values[:i])]
    if repeated:  # By value: 1 and 1.0 would make two runs of one config.
      raise ConfigError(f"grid key '{key}': value {repeated[0]!r} is repeated")
  keys = list(grid)  # Runs start in the file's order: the first axis varies slowest.
  return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def load_sweep(path: str | Path) -> SweepSpec:
  """Parses and fully validates a sweep file: every run's config is parsed here."""
  path = Path(path)
  raw = load_yaml(path)
  known = {"name", "base", "set", "grid", "stages", "variants", "executor", "analysis",
           "description", "reuse", "ladder", "target"}
  unknown = sorted(set(raw) - known)
  if unknown:
    raise ConfigError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
  if "base" not in raw:
    raise ConfigError(f"{path}: missing key 'base' (the experiment config the runs start from)")
  base = load_yaml((path.parent / raw["base"]).resolve())
  if "stages" in raw and ("grid" in raw or "set" in raw):
    raise ConfigError(f"{path}: give either 'stages' or top-level 'grid'/'set', not both")
  stage_dicts = raw.get("stages") or [{"name": "main", "grid": raw.get("grid", {}),
                                       "set": raw.get("set", {})}]
  if not isinstance(stage_dicts, list):
    raise ConfigError(f"{path}: 'stages' must be a list")
  stages = [from_dict(StageSpec, s, prefix=f"stages[{i}].") for i, s in enumerate(stage_dicts)]
  names = [s.name for s in stages]
  if len(set(names)) != len(names):
    raise ConfigError(f"{path}: stage names repeat: {names}")
  ladder = None
  if raw.get("ladder") is not None:
    if "stages" in raw:
      raise ConfigError(f"{path}: 'ladder' works with a top-level grid, not with 'stages'")
    if "tokens" in (raw.get("grid") or {}):
      raise ConfigError(f"{path}: the ladder's budgets are its token axis; drop 'tokens' from the grid")
    if not isinstance(raw["ladder"], dict):
      raise ConfigError(f"{path}: 'ladder' must be a mapping (budgets, cooldown)")
    ladder = from_dict(LadderConfig, raw["ladder"], prefix="ladder.")
  variants = raw.get("variants") or {}
  if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
    raise ConfigError(f"{path}: 'variants' must map each name to a mapping of overrides")
  for stage in stages:  # A variant that sets a grid axis would make runs named for values they lack.
    for name, overrides in variants.items():
      clash = sorted(set(overrides) & set(stage.grid) - {"variant"}) if isinstance(stage.grid, dict) and "variant" in stage.grid else []
      if clash:
        raise ConfigError(f"{path}: variant {name!r} sets {clash[0]}, which is also a grid axis; "
                          f"set it in the variants only, or drop it from the variant")
  runs: list[RunSpec] = []
  by_stage: dict[str, list[RunSpec]] = {}
  for stage in stages:
    if stage.init_from_stage is not None and stage.init_from_stage not in by_stage:
      raise ConfigError(f"stage {stage.name!r}: init_from_stage {stage.init_from_stage!r} is not an "
                        f"earlier stage")
    for values in _grid(stage.name, stage.grid):
      config = copy.deepcopy(base)
      for key, value in {**stage.set, **values}.items():
        if key != "variant":
          set_nested(config, key, value)
          continue
        if value not in variants:
          raise ConfigError(f"{path}: grid variant {value!r} is not defined under 'variants' "
                            f"(defined: {', '.join(map(str, variants)) or 'none'})")
        for v_key, v_value in variants[value].items():
          set_nested(config, v_key, v_value)
      rid = run_id(stage.name, values)
      parent = None
      if stage.init_from_stage:
        parent = _matching_run(stage, values, by_stage[stage.init_from_stage])
      try:
        specs = [RunSpec(rid, stage.name, values, config, parent)]
        if ladder is not None:
          specs = [RunSpec(run_id(stage.name, {**values, "tokens": budget}), stage.name,
                           {**values, "tokens": budget}, branch_config, parent, branch)
                   for budget, branch_config, branch in expand(config, ladder, rid)]
        for spec in specs:
          spec.train_config(Path("."))
      except ConfigError as e:
        raise ConfigError(f"{path}: run {rid}: {e}") from None
      runs += specs
      by_stage.setdefault(stage.name, []).extend(specs)
  ids = [r.run_id for r in runs]
  if len(set(ids)) != len(ids):
    raise ConfigError(f"{path}: two runs share an id; make the grids of the stages differ")
  executor = from_dict(ExecutorConfig, raw.get("executor") or {}, prefix="executor.")
  analysis = from_dict(AnalysisConfig, raw.get("analysis") or {}, prefix="analysis.")
  for pair in analysis.contrasts:
    if len(pair) != 2 or any(v not in variants for v in pair):
      raise ConfigError(f"{path}: analysis.contrasts entry {list(pair)} must name two variants "
                        f"(defined: {', '.join(map(str, variants)) or 'none'})")
  for v in analysis.fit_variants:
    if v not in variants:
      raise ConfigError(f"{path}: analysis.fit_variants names unknown variant {v!r} "
                        f"(defined: {', '.join(map(str, variants)) or 'none'})")
    if set(variants[v]) - {"model.P"}:
      raise ConfigError(f"{path}: analysis.fit_variants: variant {v!r} sets "
                        f"{', '.join(sorted(set(variants[v]) - {'model.P'}))}; a fitted grid's "
                        f"variants may set only model.P")
  if analysis.compare_to is not None and not ResultsDir(path.parent / analysis.compare_to).table.exists():
    raise ConfigError(f"{path}: analysis.compare_to: {analysis.compare_to} has no table.csv")
  bad = [s for s in analysis.fit_stages if s not in names]
  if bad:
    raise ConfigError(f"{path}: analysis.fit_stages names unknown stage {bad[0]!r}")
  reuse = raw.get("reuse") or []
  if not isinstance(reuse, list) or not all(isinstance(f, str) for f in reuse):
    raise ConfigError(f"{path}: 'reuse' must be a list of folders of published runs")
  reuse_dirs = tuple(Path(os.path.normpath(path.parent / f)) for f in reuse)
  for folder in reuse_dirs:
    if not ResultsDir(folder).runs.is_dir():
      raise ConfigError(f"{path}: reuse: {folder} holds no published runs (no runs/ folder)")
  target = raw.get("target")
  if target is not None:
    if not isinstance(target, dict) or set(target) != {"topology"} or not isinstance(target["topology"], str):
      raise ConfigError(f"{path}: 'target' must be {{topology: NAME}}, e.g. {{topology: v5p:2x2x2}}")
    target = target["topology"]
  return SweepSpec(raw.get("name") or path.stem, path, tuple(runs), tuple(names), executor, analysis,
                   reuse_dirs, target)


def _matching_run(stage: StageSpec, values: dict, candidates: list[RunSpec]) -> str:
  """The run of the earlier stage whose grid values agree on every shared axis but model.P; where
  several do, the one at P = 1 (the backbone that streams are added to)."""
  shared = lambda r: all(r.values[k] == v for k, v in values.items()
                         if k in r.values and k != "model.P")
  matches = [r for r in candidates if shared(r)]
  if len(matches) > 1:
    matches = [r for r in matches if (r.config.get("model") or {}).get("P", 1) == 1]
  if len(matches) != 1:
    raise ConfigError(f"stage {stage.name!r}: run {values} matches {len(matches)} runs of stage "
                      f"{stage.init_from_stage!r}; it needs exactly one")
  return matches[0].run_id
