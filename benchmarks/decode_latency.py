"""Batch-1 decode latency and memory, measured on the real model: P in {1, 2, 4, 8} of a base shape
against the parameter-scaled model of equal predicted loss (Stack-V2 fit).

    python benchmarks/decode_latency.py [--size paper-0.5b --layers 12] [--tokens 16]
    python benchmarks/decode_latency.py --size paper-1.6b --layers 36 --dtype bfloat16 --roofline h200

Latency: the models of one comparison share a process and decode token by token in turn, so that a
slow spell of a shared machine hits all of them alike: the P models in one process, and P = 1 with
the parameter-scaled models in another. A model's decode time is the median over --tokens tokens.
Memory: what XLA allocates for one compiled decode step (weights, KV cache with the prefix, outputs
and temporaries, from the executable's memory analysis), the same measure on every backend.
The default base (0.45B parameters in float32) reads 1.26 GB of weights per token (all but the
embedding table), so decoding is memory-bound on a CPU. With --dtype bfloat16 the weights and the
cache are stored in bfloat16, as for serving.
--roofline DEVICE adds the cost model's decode time per token on that device for each model.
Target: P = 8 within 1.5x of P = 1. The increase ratios are the paper's: parameter scaling's
increase over P = 1 divided by parallel scaling's.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

from common import report, write_record
from parscale_jax.analysis.law import multiplier
from parscale_jax.configlib import positive_ints
from parscale_jax.hostmem import restart_with_huge_pages

CHILD = r"""
import json, statistics, sys, time
import jax, jax.numpy as jnp
from flax import nnx
from parscale_jax.model import ModelConfig, init_cache
from parscale_jax.model.decode import decode_step
from parscale_jax.model.parscale import abstract_model
tokens, prompt = int(sys.argv[2]), jnp.zeros((1, 8), jnp.int32)
decoders = []
for fields in json.loads(sys.argv[1]):
    start = time.perf_counter()
    config = ModelConfig(**fields)
    dtype = jnp.dtype(config.dtype)
    # Weights drawn leaf by leaf at the compute dtype, as for serving (values do not change the
    # latency): one compiled initialiser of paper-1.6b was not compiled after minutes on a GPU.
    graphdef, abstract = nnx.split(abstract_model(config))
    state = jax.tree.map(lambda a: 0.02 * jax.random.normal(jax.random.key(0), a.shape, dtype), abstract)
    cache = init_cache(config, 1, prompt.shape[1] + tokens + 1, dtype)
    nxt, _, cache = decode_step(graphdef, state, prompt, cache, jax.random.key(0))
    # The one-token step, compiled ahead of time: its memory analysis, and the executable timed.
    step = decode_step.lower(graphdef, state, nxt[:, None], cache, jax.random.key(0)).compile()
    m = step.memory_analysis()
    memory = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
              + m.temp_size_in_bytes)
    nxt, _, cache = step(state, nxt[:, None], cache, jax.random.key(0))
    jax.block_until_ready(nxt)
    decoders.append({"step": step, "state": state, "cache": cache, "next": nxt, "times": [],
                     "memory": memory})
    print(f"P={config.P} hidden={config.hidden_size}: ready in {time.perf_counter() - start:.0f} s",
          file=sys.stderr, flush=True)
for _ in range(tokens - 1):
    for d in decoders:
        t = time.perf_counter()
        d["next"], _, d["cache"] = d["step"](d["state"], d["next"][:, None], d["cache"], jax.random.key(0))
        jax.block_until_ready(d["next"])
        d["times"].append(time.perf_counter() - t)
print(json.dumps({"decode_s": [statistics.median(d["times"]) for d in decoders],
                  "memory_bytes": [d["memory"] for d in decoders], "backend": jax.default_backend()}))
"""


def run_child(configs: list, tokens: int) -> dict:
  proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps([dataclasses.asdict(c) for c in configs]),
                         str(tokens)], stdout=subprocess.PIPE, text=True)  # Progress on stderr.
  if proc.returncode:
    raise SystemExit(f"decode child failed (exit {proc.returncode})")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  from parscale_jax.cost.devices import DEVICES
  from parscale_jax.model.config import PRESETS, preset
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--size", default="paper-0.5b", choices=PRESETS)
  parser.add_argument("--layers", type=int, default=12, help="fewer layers than the preset, for time")
  parser.add_argument("--P", type=positive_ints, default="1,2,4,8")
  parser.add_argument("--k", type=float, default=0.393457, help="the fitted k (Stack-V2)")
  parser.add_argument("--tokens", type=int, default=16)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--roofline", choices=sorted(DEVICES), help="add the cost model's decode time")
  parser.add_argument("--out")
  args = parser.parse_args()
  from parscale_jax.cost.model import Workload, inference_cost, scaled_config
  from parscale_jax.model.accounting import param_counts

  base = preset(args.size, num_layers=args.layers, prefix_tokens=48, dtype=args.dtype)
  # P = 1 is every comparison's reference, so it is always measured, and first.
  ps = [1, *(p for p in args.P if p != 1)]
  parallel = {p: dataclasses.replace(base, P=p) for p in ps}
  scaled = {p: scaled_config(base, param_counts(parallel[p]).non_embedding * float(multiplier(args.k, p)))
            for p in ps[1:]}
  # The cost model's decode step at this benchmark's context (an 8-token prompt, then --tokens).
  workload = Workload(input_tokens=8, output_tokens=args.tokens, prefix_mode="cache",
                      bytes_per_value=2 if args.dtype == "bfloat16" else 4)
  extra = {"size": args.size, "layers": args.layers, "dtype": args.dtype, "k": args.k,
           "tokens": args.tokens, "roofline_device": args.roofline}

  def measured(names_configs: list, timed: dict) -> list:
    rows = []
    for i, (name, config) in enumerate(names_configs):
      seconds, p1_seconds = timed["decode_s"][i], timed["decode_s"][0]
      rows.append({"model": name, "P": config.P, "hidden": config.hidden_size,
                   "params_total": param_counts(config).total, "decode_ms": seconds * 1e3,
                   "P1_same_process_ms": p1_seconds * 1e3, "decode_vs_P1": seconds / p1_seconds,
                   "memory_GB": timed["memory_bytes"][i] / 1e9,
                   "memory_vs_P1": timed["memory_bytes"][i] / timed["memory_bytes"][0]})
      if args.roofline:
        cost = inference_cost(config, DEVICES[args.roofline], workload)
        rows[-1]["roofline_ms"] = cost["latency"]["decode"] / args.tokens * 1e3
    return rows

  timed = run_child(list(parallel.values()), args.tokens)
  rows = measured([(f"parallel P={p}", c) for p, c in parallel.items()], timed)
  extra["backend"] = timed["backend"]
  write_record("decode_latency", rows, args.out, {**extra, "complete": False})
  names_configs = [("parallel P=1", parallel[1]),
                   *((f"parameter-scaled = P={p}", c) for p, c in scaled.items())]
  rows += measured(names_configs, run_child([c for _, c in names_configs], args.tokens))[1:]
  by_name = {r["model"]: r for r in rows}
  rows = [by_name[n] for p in ps for n in (f"parallel P={p}", f"parameter-scaled = P={p}")
          if n in by_name]
  increase = {}
  for p in ps[1:]:
    par, sca = by_name[f"parallel P={p}"], by_name[f"parameter-scaled = P={p}"]
    increase[p] = {"memory_increase_ratio": (sca["memory_vs_P1"] - 1) / (par["memory_vs_P1"] - 1),
                   "latency_increase_ratio": (sca["decode_vs_P1"] - 1) / (par["decode_vs_P1"] - 1)}
    print(f"P={p}: parameter scaling's increase / parallel scaling's: memory "
          f"{increase[p]['memory_increase_ratio']:.1f}x, "
          f"decode latency {increase[p]['latency_increase_ratio']:.1f}x")
  report("decode_latency", rows, args.out, {**extra, "complete": True, "increase_ratios": increase})


if __name__ == "__main__":
  restart_with_huge_pages()  # As the `parscale` command runs (parscale_jax/hostmem.py).
  main()
