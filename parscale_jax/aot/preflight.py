"""A sweep's preflight: each distinct training program of the sweep compiled once for its target
slice, and the runs that will not fit named before anything trains."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from importlib import metadata
import json
import os
from pathlib import Path

import parscale_jax
from parscale_jax.aot.check import check_training
from parscale_jax.aot.topology import chip, topology_devices
from parscale_jax.atomic import write_json_atomic
from parscale_jax.train.config import config_to_dict


# Reports of programs compiled before, so that `sweep run` after `sweep check` (or a second sweep of
# the same programs) does not compile them again: hours on a CPU host at the paper's sizes.
CACHE_DIR = Path("~/.cache/parscale_jax/preflight")


def program_key(config) -> str:
  """Runs whose configs differ only in seed, budget or logging share one compiled step."""
  data = config_to_dict(dataclasses.replace(config, seed=0, tokens=config.tokens_per_step))
  data.pop("wandb", None)
  data.pop("init_from", None)
  data["data"] = {"seq_len": config.data.seq_len}
  data["optim"] = {"prefix_lr_scale": config.optim.prefix_lr_scale,
                   "clip_norm": config.optim.clip_norm}
  return repr(sorted((k, repr(v)) for k, v in data.items()))


def report_key(program: str, topology: str) -> str:
  """A program on a topology, compiled by these versions of JAX and libtpu, with these compiler
  flags from the environment, from this package's code: a change to any of them compiles again."""
  versions = []
  for name in ("jax", "jaxlib", "libtpu"):
    try:
      versions.append(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
      versions.append(f"{name} absent")
  flags = [f"{name}={os.environ.get(name, '')}" for name in ("XLA_FLAGS", "LIBTPU_INIT_ARGS")]
  text = "\n".join([program, topology, *versions, *flags, _code_digest()])
  return hashlib.sha256(text.encode()).hexdigest()[:32]


@functools.cache
def _code_digest() -> str:
  """This package's code, read once (at the first check): a file edited while a long check runs
  does not change the key of what the check compiled."""
  code = hashlib.sha256()
  for path in sorted(Path(parscale_jax.__file__).parent.rglob("*.py")):
    code.update(path.read_bytes())
  return code.hexdigest()


def _cached_check(config, topology: str, devices, device, cache_dir: Path | None) -> tuple[dict, bool]:
  """(report, whether it came from the cache)."""
  if cache_dir is None:
    return check_training(config, devices, device), False
  path = cache_dir.expanduser() / f"{report_key(program_key(config), topology)}.json"
  if path.exists():
    try:
      return json.loads(path.read_text()), True
    except (OSError, ValueError):
      pass  # A torn or unreadable entry: compile again.
  report = check_training(config, devices, device)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_json_atomic(path, report)
  return report, False


def preflight(spec, topology: str, results_dir, log=print,
              cache_dir: Path | None = CACHE_DIR) -> list[tuple[str, dict]]:
  """[(run_id, report)] of the runs that do not fit `topology`; each distinct program compiled
  once (its report logged as it comes), or read from `cache_dir` where the same program was
  compiled before by the same code and versions (None: always compile)."""
  devices = topology_devices(topology)
  device = chip(devices)
  programs: dict[str, list] = {}
  for run in spec.runs:
    config = run.train_config(results_dir)
    programs.setdefault(program_key(config), []).append((run.run_id, config))
  refused = []
  for i, runs in enumerate(programs.values(), 1):
    run_ids = [rid for rid, _ in runs]
    report, cached = _cached_check(runs[0][1], topology, devices, device, cache_dir)
    peak = report.get("peak_bytes")
    log(f"[{i}/{len(programs)}] {run_ids[0]}{f' (+{len(runs) - 1} alike)' if len(runs) > 1 else ''}: "
        + (f"{peak / 2**30:.1f} of {device.memory / 2**30:.0f} GiB per chip, " if peak else "")
        + ("fits" if report["fits"] else "DOES NOT FIT") + (" (compiled before)" if cached else ""))
    if not report["fits"]:
      refused += [(rid, report) for rid in run_ids]
  return refused
