"""`parscale compile [CONFIG] --topology NAME`: does a run fit a slice, before renting it."""
from __future__ import annotations

import json
import math
import sys

from parscale_jax.configlib import apply_overrides, load_yaml, positive_int
from parscale_jax.model.config import PRESETS
from parscale_jax.train.config import config_from_dict


# The paper's training shape (experiments/paper.yaml) where no config file is given, rematerialised
# with 32 micro-batches a step as sweeps/paper_*.yaml train it (without, no paper size fits a slice).
PAPER_SHAPE = {"model": {"size": "paper-0.5b", "dtype": "bfloat16", "prefix_tokens": 48, "remat": "full"},
               "data": {"seq_len": 2048},
               "optim": {"lr": 3.0e-4, "schedule": "wsd", "warmup_fraction": 0.1},
               "tokens": 42_000_000_000, "batch_size": 1024, "grad_accum": 32}

GIB = 2 ** 30


def compile_config(args, chips: int):
  """The run config from CONFIG (or the paper's shape) and the flags, as `parscale train` takes
  them; with no mesh given, parameters are sharded over all `chips` (ZeRO-3 style)."""
  data = load_yaml(args.config) if args.config else json.loads(json.dumps(PAPER_SHAPE))
  overrides = list(args.set)
  for flag, key in ((args.size, "model.size"), (args.P, "model.P"), (args.batch, "batch_size"),
                    (args.seq, "data.seq_len")):
    if flag is not None:
      overrides.insert(0, f"{key}={flag}")
  data = apply_overrides(data, overrides)
  if not args.config and "grad_accum=" not in " ".join(overrides):  # --batch 8: 8 micro-batches at most
    data["grad_accum"] = math.gcd(data["grad_accum"], data["batch_size"])
  data.setdefault("mesh", {"data": 1, "fsdp": chips})
  return config_from_dict(data)


def _compile(args) -> None:
  from parscale_jax.aot.check import check
  from parscale_jax.aot.topology import topology_devices

  config = compile_config(args, len(topology_devices(args.topology)))
  log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.search and not args.json else (lambda s: None)
  report = check(config, args.topology, search=args.search, flops=not args.no_flops,
                 decode=not args.no_decode,
                 decode_batch=args.decode_batch,
                 prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, log=log)
  if args.json:
    print(json.dumps(report, indent=1))
  else:
    print(render(report))


def render(report: dict) -> str:
  chip = report["chip"]
  lines = [f"{report['size'] or 'custom'} P={report['P']} on {report['topology']}: {report['chips']} x "
           f"{chip['name']} ({chip['memory'] / GIB:.0f} GiB, {chip['peak_flops'] / 1e12:.0f} TFLOP/s bf16, "
           f"{chip['bandwidth'] / 1e9:.0f} GB/s; {chip['source']})",
           f"train step: batch {report['batch_size']} x seq {report['seq_len']}, grad_accum "
           f"{report['grad_accum']}, remat {report['remat']}, mesh data={report['mesh']['data']} "
           f"fsdp={report['mesh']['fsdp']}, {report['dtype']}"]
  t = report["train"]
  lines.append("  " + _memory_line(t))
  if "step_flops" in t:
    lines.append(f"  FLOPs per chip and step: compiler {t['step_flops']:.3e}, accounting "
                 f"{t['accounted_flops']:.3e} (ratio {t['flops_ratio']:.3f}"
                 + (f"; {t['flops_ratio_with_recompute']:.3f} with remat's recompute"
                    if t.get("recompute_flops") else "")
                 + f"); roofline "
                 f"{t['roofline_seconds'] * 1e3:.0f} ms ({t['bound']}-bound), MFU at most "
                 f"{100 * t['mfu_bound']:.0f} %")
  elif "accounted_flops" in t:
    lines.append(f"  FLOPs per chip and step (accounting): {t['accounted_flops']:.3e}")
  for d in report["decoding"]:
    lines.append(f"{d['name']}: " + _memory_line(d))
  lines.append("verdict: " + ("fits" if report["fits"] else "does NOT fit (--search finds the remat "
                                                            "and grad_accum that fit, if any)"))
  return "\n".join(lines)


def _memory_line(p: dict) -> str:
  if p.get("peak_bytes") is None:
    return p.get("error", "does not fit")
  parts = f"{p['peak_bytes'] / GIB:.2f} GiB per chip"
  if "temp_bytes" in p:
    parts += (f" (state {p['state_bytes'] / GIB:.2f}, arguments {p['argument_bytes'] / GIB:.2f}, "
              f"temporaries {p['temp_bytes'] / GIB:.2f})")
  verdict = "fits" if p["fits"] else "does not fit"
  return f"{parts} of {p['chip_memory_bytes'] / GIB:.0f}: {verdict}, margin {p['margin_bytes'] / GIB:+.2f} GiB"


def register(sub) -> None:
  c = sub.add_parser("compile", help="compile a run's training and decoding for a TPU topology (or "
                                     "this process's devices): memory per chip, FLOPs, fits or not")
  c.add_argument("config", nargs="?", help="experiment YAML (default: the paper's training shape, "
                                           "sequence 2048, batch 1024, bf16)")
  c.add_argument("--topology", required=True,
                 help="a TPU topology (v5e:2x2, v5e:4x4, v5p:2x2x2, v6e:2x2, ...) or local")
  c.add_argument("--size", choices=list(PRESETS), metavar="SIZE", help="size preset (model.size)")
  c.add_argument("--P", type=positive_int, help="parallel streams (model.P)")
  c.add_argument("--batch", type=positive_int, help="rows per optimizer step (batch_size)")
  c.add_argument("--seq", type=positive_int, help="tokens per row (data.seq_len)")
  c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config key, e.g. --set model.remat=full --set grad_accum=8")
  c.add_argument("--search", action="store_true",
                 help="find the cheapest remat / grad_accum that fits (compiles several times)")
  c.add_argument("--no-flops", action="store_true",
                 help="skip the compiler's FLOP count (two more compiles of one and two layers)")
  c.add_argument("--no-decode", action="store_true", help="skip the decoding programs")
  c.add_argument("--decode-batch", type=positive_int, default=64, help="serving batch for decoding")
  c.add_argument("--prompt-tokens", type=positive_int, default=2048, help="prefill length")
  c.add_argument("--new-tokens", type=positive_int, default=256, help="cache room beyond the prompt")
  c.add_argument("--json", action="store_true", help="print JSON")
  c.set_defaults(func=_compile)
