"""The paper's six sizes x P in {1, 2, 4, 8} at its training shape (experiments/paper.yaml: sequence
2048, batch 1024, bf16), compiled by the real XLA:TPU compiler for TPU topologies on this CPU: for
each cell the cheapest remat / grad_accum setting that fits (parameters sharded over every chip),
its memory per chip, the compiler's FLOPs against the project's accounting, and the roofline MFU
bound. Resumable: cells already in the JSON are kept; each new cell is written as it lands.

    python benchmarks/tpu_compile.py --topologies v5p:2x2x2 v5e:4x4   # hours on 2 cores
    python benchmarks/tpu_compile.py --topologies v5e:4x4 --P 4 8 &   # more processes: other cells
    python benchmarks/tpu_compile.py --sizes paper-0.5b --P 1 2 --no-flops   # a corner
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import parscale_jax  # noqa: F401  (before jax: no TPU runtime on a host without TPUs)
from parscale_jax.aot.check import fitting_setting, roofline, settings, with_setting
from parscale_jax.aot.cli import PAPER_SHAPE
from parscale_jax.aot.programs import step_cost
from parscale_jax.aot.topology import chip, topology_devices
from parscale_jax.locks import held
from parscale_jax.train.config import config_from_dict

sys.path.insert(0, str(Path(__file__).parent))
from common import write_record  # noqa: E402

# What the FLOP counts (two more compiles) add to a cell; a fitting cell without them is counted
# when the script runs again.
COUNTED = ("step_flops", "flops_ratio", "roofline_seconds", "bound", "mfu_bound")
SIZES = ["paper-0.5b", "paper-0.7b", "paper-1.1b", "paper-1.6b", "paper-2.8b", "paper-4.4b"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--topologies", nargs="+", default=["v5p:2x2x2", "v5e:4x4"])
  parser.add_argument("--sizes", nargs="+", default=SIZES)
  parser.add_argument("--P", nargs="+", type=int, default=[1, 2, 4, 8])
  parser.add_argument("--no-flops", action="store_true", help="skip the FLOP counts (2 compiles a cell)")
  parser.add_argument("--out", default="benchmarks/results/tpu_compile.json")
  args = parser.parse_args()
  out = Path(args.out)
  log = lambda s: print(s, file=sys.stderr, flush=True)
  for topology in args.topologies:
    devices = topology_devices(topology)
    device = chip(devices)
    for size in args.sizes:
      start = 0  # Memory grows with P: a larger P starts where the smaller one fitted.
      for P in sorted(args.P):
        base = config_from_dict({**json.loads(json.dumps(PAPER_SHAPE)), "mesh": {"data": 1, "fsdp": len(devices)}})
        base = dataclasses.replace(base, model=dataclasses.replace(base.model, **_preset(size), P=P))
        rows = _rows(out)  # Another process may have added the cell since.
        have = {(r["topology"], r["size"], r["P"]) for r in rows}
        if (topology, size, P) in have:
          done = next(r for r in rows if (r["topology"], r["size"], r["P"]) == (topology, size, P))
          start = settings(1024, len(devices)).index((done["remat"], done["grad_accum"])) if done["fits"] else 0
          if done["fits"] and done.get("step_flops") is None and not args.no_flops:  # Not counted yet.
            log(f"{topology} {size} P={P}: counting FLOPs of {done['remat']} x{done['grad_accum']}")
            config = with_setting(base, done["remat"], done["grad_accum"])
            report = roofline({"accounted_flops": done["accounted_flops"]}, *step_cost(config, devices), device)
            rows = _add_row(out, {**done, **{k: report[k] for k in COUNTED}})
          continue
        log(f"{topology} {size} P={P}")
        index, config, report = fitting_setting(base, devices, device, log, start)
        row = {"topology": topology, "chips": len(devices), "chip": device.name, "size": size, "P": P,
               "fits": index is not None}
        if index is not None:
          start = index
          if not args.no_flops:
            report = roofline(report, *step_cost(config, devices), device)
          row.update(remat=config.model.remat, grad_accum=config.grad_accum,
                     mesh=f"data=1 fsdp={len(devices)}",
                     **{k: report.get(k) for k in ("peak_bytes", "state_bytes", "param_bytes", "temp_bytes",
                                                   "margin_bytes", "chip_memory_bytes", "accounted_flops",
                                                   "compile_seconds", *COUNTED)})
        else:
          row.update(peak_bytes=report.get("peak_bytes") if report else None)
        rows = _add_row(out, row)
        log(f"  -> {row.get('remat')} x{row.get('grad_accum')}: "
            + (f"{row['peak_bytes'] / 2**30:.1f} GiB" if row.get("peak_bytes") else "")
            + (f", FLOPs ratio {row['flops_ratio']:.3f}, MFU <= {row['mfu_bound']:.2f}" if row.get("flops_ratio") else ""))


def _rows(out: Path) -> list[dict]:
  return json.loads(out.read_text())["rows"] if out.exists() else []


def _add_row(out: Path, row: dict) -> list[dict]:
  """Adds a cell to the table as it is on disk now: processes on other cells may fill it too."""
  with held(out.parent, out.name + ".lock"):
    rows = _rows(out)
    key = lambda r: (r["topology"], r["size"], r["P"])
    rows = [r for r in rows if key(r) != key(row)] + [row]
    write_record("tpu_compile", rows, str(out),
                 {"shape": {"seq_len": 2048, "batch_size": 1024, "dtype": "bfloat16"}})
  return rows


def _preset(size: str) -> dict:
  from parscale_jax.model.config import PRESETS
  return {**PRESETS[size], "size": size}


if __name__ == "__main__":
  main()
