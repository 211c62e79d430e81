"""A sweep's preflight: each distinct training program of the sweep compiled once for its target
slice, and the runs that will not fit named before anything trains."""
from __future__ import annotations

import dataclasses

from parscale_jax.aot.check import check_training
from parscale_jax.aot.topology import chip, topology_devices
from parscale_jax.train.config import config_to_dict

def program_key(config) -> str:
  """Runs whose configs differ only in seed, budget or logging share one compiled step."""
  data = config_to_dict(dataclasses.replace(config, seed=0, tokens=config.tokens_per_step))
  data.pop("wandb", None)
  data.pop("init_from", None)
  data["data"] = {"seq_len": config.data.seq_len}
  data["optim"] = {"prefix_lr_scale": config.optim.prefix_lr_scale,
                   "clip_norm": config.optim.clip_norm}
  return repr(sorted((k, repr(v)) for k, v in data.items()))


def preflight(spec, topology: str, results_dir, log=print) -> list[tuple[str, dict]]:
  """[(run_id, report)] of the runs that do not fit `topology`; each distinct program compiled
  once (its report logged as it comes)."""
  devices = topology_devices(topology)
  device = chip(devices)
  programs: dict[str, list] = {}
  for run in spec.runs:
    config = run.train_config(results_dir)
    programs.setdefault(program_key(config), []).append((run.run_id, config))
  refused = []
  for i, runs in enumerate(programs.values(), 1):
    run_ids = [rid for rid, _ in runs]
    report = check_training(runs[0][1], devices, device)
    peak = report.get("peak_bytes")
    log(f"[{i}/{len(programs)}] {run_ids[0]}{f' (+{len(runs) - 1} alike)' if len(runs) > 1 else ''}: "
        + (f"{peak / 2**30:.1f} of {device.memory / 2**30:.0f} GiB per chip, " if peak else "")
        + ("fits" if report["fits"] else "DOES NOT FIT"))
    if not report["fits"]:
      refused += [(rid, report) for rid in run_ids]
  return refused
