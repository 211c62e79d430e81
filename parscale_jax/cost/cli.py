"""`parscale cost`: parallel vs parameter scaling at equal predicted loss, memory and latency."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from parscale_jax.analysis.results import load_fit, paper_fit
from parscale_jax.configlib import (bounded, fraction, nonnegative_int, positive_float, positive_int,
                                    positive_ints)
from parscale_jax.cost import DEFAULT_PREFIX_MODE, PREFIX_MODES
from parscale_jax.errors import UserError
from parscale_jax.model.config import PRESETS, preset


# P = 1 has no streams to compare with more parameters.
_streams = bounded(int, lambda v: v >= 2, "an integer >= 2")


def _fitted_group(fit: str, group: str | None):
  """(law, its fit.json group) of --fit (paper: the published table's fit, Stack-V2-Python unless
  a group is named); refused when the group's data do not identify the law."""
  result = paper_fit() if fit == "paper" else load_fit(fit)
  name = result.group_name(group or ("stack-v2-python" if fit == "paper" else None))
  _require_identified(fit, name, result.doc["groups"][name])
  return result.law(name), result.doc["groups"][name]


def _law(fit: str, group: str | None):
  law, _ = _fitted_group(fit, group)
  return law.k, (f"paper table, {law.group}" if fit == "paper" else f"{fit}, {law.group}")


def _require_identified(fit: str, group, g: dict) -> None:
  """Costs and plans from a law the data do not pin down would read as findings: refused."""
  if not g.get("identified", True):
    raise UserError(f"--fit {fit}: group {group!r} does not identify the law "
                    f"({'; '.join(g.get('not_identified', []))}); its k is no basis for a cost or plan")


def _cost(args) -> None:
  from parscale_jax.cost.devices import DEVICES, measure_cpu
  from parscale_jax.cost.model import Workload, compare

  k, source = _law(args.fit, args.group)
  device = measure_cpu() if args.device == "cpu" else DEVICES[args.device]
  base = preset(args.size, prefix_tokens=args.prefix_tokens)
  batches = args.batches
  rows = []
  for batch in batches:
    by_mode = {}
    for mode in ("prompt", "cache"):
      w = Workload(batch, args.input_tokens, args.output_tokens, args.bytes, args.flops_efficiency,
                   args.bandwidth_efficiency, mode)
      by_mode[mode] = compare(base, args.P, k, device, w)
    rows.append(by_mode)
  assumptions = {"fit": source, "k": k, "size": args.size, "P": args.P,
                 "device": dataclasses.asdict(device), "input_tokens": args.input_tokens,
                 "output_tokens": args.output_tokens, "prefix_tokens": args.prefix_tokens,
                 "bytes_per_value": args.bytes, "flops_efficiency": args.flops_efficiency,
                 "bandwidth_efficiency": args.bandwidth_efficiency, "prefix_mode": args.prefix_mode}
  main = rows[0][args.prefix_mode]
  out = {"assumptions": assumptions, "batch": batches[0],
         "memory_increase_ratio": main["memory_increase_ratio"],
         "latency_increase_ratio": main["latency_increase_ratio"],
         "by_batch": [{"batch": b, **{m: {key: r[m][key] for key in (
             "memory_increase_ratio", "latency_increase_ratio", "memory_increase", "latency_increase",
             "equal_loss_non_embedding", "parameter_scaled_shape")} for m in r}}
                      for b, r in zip(batches, rows)]}
  if args.plot:
    from parscale_jax.cost.plot import plot_cost
    out["plots"] = [str(p) for p in plot_cost(out, Path(args.plot))]
  if args.json:
    print(json.dumps(out, indent=2))
    return
  a = assumptions
  print(f"Assumptions: {a['size']} at P={a['P']} vs the parameter-scaled model of equal predicted loss "
        f"(k={k:.4f} from {source}); {device.name}: {device.peak_flops / 1e12:.1f} TFLOP/s x "
        f"{a['flops_efficiency']}, {device.bandwidth / 1e9:.0f} GB/s x {a['bandwidth_efficiency']}; "
        f"{a['input_tokens']} in + {a['output_tokens']} out tokens, {a['prefix_tokens']} prefix tokens "
        f"({args.prefix_mode} accounting), {a['bytes_per_value']}-byte values.")
  shape = main["parameter_scaled_shape"]
  print(f"Equal loss: {main['equal_loss_non_embedding'] / 1e9:.3f}B non-embedding parameters "
        f"(hidden {shape['hidden']}, ffn {shape['ffn']}, {shape['layers']} layers).")
  print("Cost over the base model at P = 1: extra memory (MB) and extra decode latency per token (ms)")
  print(f"{'batch':>5} {'mem, P streams':>15} {'mem, more params':>17} {'ratio':>7} "
        f"{'lat, P streams':>15} {'lat, more params':>17} {'ratio':>7}   (cache accounting: mem, lat ratio)")
  for b, r in zip(batches, rows):
    m, c = r[args.prefix_mode], r["cache"]
    print(f"{b:>5} {m['memory_increase']['parallel'] / 1e6:>15.1f} {m['memory_increase']['parameter'] / 1e6:>17.1f} "
          f"{m['memory_increase_ratio']:>7.1f} {m['latency_increase']['parallel'] * 1e3:>15.2f} "
          f"{m['latency_increase']['parameter'] * 1e3:>17.2f} {m['latency_increase_ratio']:>7.1f}"
          f"   ({c['memory_increase_ratio']:.1f}, {c['latency_increase_ratio']:.1f})")
  for path in out.get("plots", []):
    print(f"wrote {path}")


def register(sub) -> None:
  p = sub.add_parser("cost", help="memory and latency of parallel vs parameter scaling at equal loss")
  p.add_argument("--fit", default="paper", help="fit.json, or 'paper' for the published table's fit")
  p.add_argument("--group", help="group of the fit (paper: stack-v2-python or pile)")
  p.add_argument("--size", default="paper-1.6b", choices=list(PRESETS), metavar="SIZE",
                 help=f"base model preset, one of: {', '.join(PRESETS)}")
  p.add_argument("--P", type=_streams, default=8, help="parallel streams of the base model")
  p.add_argument("--device", choices=["a100-80gb", "h100", "h200", "cpu"], default="a100-80gb")
  p.add_argument("--batches", type=positive_ints, default="1,2,4,8",
                 help="batch sizes; the first is the headline")
  p.add_argument("--input-tokens", type=nonnegative_int, default=64, help="prompt tokens")
  p.add_argument("--output-tokens", type=positive_int, default=64, help="generated tokens")
  p.add_argument("--prefix-tokens", type=positive_int, default=48, help="prefix length per stream")
  p.add_argument("--bytes", type=positive_int, default=2, help="bytes per weight / cache value (fp16: 2)")
  p.add_argument("--flops-efficiency", type=fraction, default=0.7, help="share of peak FLOP/s reached")
  p.add_argument("--bandwidth-efficiency", type=fraction, default=0.9,
                 help="share of peak memory bandwidth reached")
  p.add_argument("--prefix-mode", choices=PREFIX_MODES, default=DEFAULT_PREFIX_MODE,
                 help="prompt: prefix costed as prompt tokens (the paper's accounting); cache: as "
                      "this implementation runs it (prefix in the KV cache, never computed)")
  p.add_argument("--plot", help="directory for the cost figure (PNG and PDF)")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cost)


def _plan(args) -> None:
  from parscale_jax.cost.devices import DEVICES, measure_cpu
  from parscale_jax.cost.model import Workload
  from parscale_jax.cost.plan import Constraint, plan

  law, g = _fitted_group(args.fit, args.dataset)
  group = law.group
  max_fitted = max(p["P"] for p in g["points"])
  Ps = args.P or (1, 2, 4, 8, 16, 32)
  beyond = sorted(p for p in Ps if p > max_fitted)
  if beyond and args.P and not args.extrapolate:
    raise UserError(f"--P {','.join(map(str, beyond))} lies beyond the fitted P <= {max_fitted:g}; "
                    f"add --extrapolate to consider it")
  if not args.extrapolate:
    Ps = tuple(p for p in Ps if p <= max_fitted)
  samples = np.asarray(g.get("bootstrap", {}).get("samples", [])) if g.get("bootstrap") else None
  device = measure_cpu() if args.device == "cpu" else DEVICES[args.device]
  constraint = Constraint(args.max_memory_gb, args.max_latency_ms, args.target_loss, args.train_flops,
                          args.train_tokens)
  workload = Workload(args.batch, args.input_tokens, args.output_tokens, prefix_mode=args.prefix_mode)
  result = plan(law, preset(args.size, prefix_tokens=48), device,
                constraint, samples=samples, Ps=Ps, workload=workload,
                fit_source=f"{args.fit}, {group}", max_fitted_P=max_fitted)
  if args.plot:
    from parscale_jax.cost.plot import plot_plan
    for path in plot_plan(result, Path(args.plot)):
      print(f"wrote {path}")
  if args.json:
    print(json.dumps(result.as_dict(), indent=2))
    return
  r = result.recommended
  ci = f" [{r.loss_ci95[0]:.4f}, {r.loss_ci95[1]:.4f}]" if r.loss_ci95 else ""
  print(f"Recommended: N = {r.N / 1e9:.3g}B (hidden {r.hidden}, {r.layers} layers) at P = {r.P}: "
        f"predicted loss {r.loss:.4f}{ci}, {r.memory_gb:.2f} GB, prefill {r.prefill_ms:.1f} ms, "
        f"decode {r.decode_ms:.2f} ms/token" + (f", {r.train_flops:.3g} training FLOPs" if r.train_flops else "")
        + (f"  [EXTRAPOLATED: the law was fitted on P <= {max_fitted:g}]" if result.extrapolated else ""))
  if result.comparison:
    print(f"Runner-up:   {result.comparison}")
  if result.unbound:
    print(f"Note:        {result.unbound}")
  print(f"Pareto front (loss, memory, latency): {len(result.front)} models; law from {args.fit} ({group}), "
        f"{device.name}, batch {args.batch}, {args.input_tokens} in + {args.output_tokens} out tokens")


def register_plan(sub) -> None:
  p = sub.add_parser("plan", help="which (N, P) to train or deploy under a memory, latency, loss or "
                                  "compute budget")
  p.add_argument("--fit", default="paper", help="fit.json, or 'paper' for the published table's fit")
  p.add_argument("--dataset", help="group of the fit (paper: stack-v2-python or pile)")
  p.add_argument("--size", default="paper-1.6b", choices=list(PRESETS), metavar="SIZE",
                 help="preset whose family (depth, heads, vocabulary) the candidates share")
  p.add_argument("--device", choices=["a100-80gb", "h100", "h200", "cpu"], default="a100-80gb")
  p.add_argument("--batch", type=positive_int, default=1)
  p.add_argument("--input-tokens", type=nonnegative_int, default=64)
  p.add_argument("--output-tokens", type=positive_int, default=64)
  p.add_argument("--prefix-mode", choices=PREFIX_MODES, default=DEFAULT_PREFIX_MODE,
                 help="how the prefix is costed (as in parscale cost)")
  budget = p.add_mutually_exclusive_group(required=True)
  budget.add_argument("--max-memory-gb", type=positive_float)
  budget.add_argument("--max-latency-ms", type=positive_float, help="prefill + all output tokens")
  budget.add_argument("--target-loss", type=positive_float, help="reach it at the lowest latency")
  budget.add_argument("--train-flops", type=positive_float, help="training compute (with --train-tokens)")
  p.add_argument("--train-tokens", type=positive_float, help="training tokens, for FLOPs")
  p.add_argument("--P", type=positive_ints,
                 help="stream counts to consider (default: those up to the largest P fitted)")
  p.add_argument("--extrapolate", action="store_true",
                 help="also consider P beyond the fitted range (default list up to 32)")
  p.add_argument("--plot", help="directory for the Pareto-front plot (PNG and PDF)")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  p.set_defaults(func=_plan)
