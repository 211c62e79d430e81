"""Batch-1 decode latency and peak memory, measured on the real model: P in {1, 2, 4, 8} of a base
shape against the parameter-scaled model of equal predicted loss (Stack-V2 fit).

    python benchmarks/decode_latency.py [--size paper-0.5b --layers 12] [--tokens 16]

Peak memory: each model alone in its own process (that process's max RSS). Latency: the models of
one comparison share a process and decode token by token in turn, so that a slow spell of this
shared machine hits all of them alike: the P models in one process, and P = 1 with the
parameter-scaled models in another. A model's decode time is the median over --tokens tokens. The
base is chosen so that decoding is memory-bound here (the weights are streamed once per token).
Target: P = 8 within 1.5x of P = 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys

from common import report

CHILD = r"""
import json, resource, statistics, sys, time
import jax, jax.numpy as jnp
from flax import nnx
from parscale_jax.model import ModelConfig, init_cache
from parscale_jax.model.decode import decode_step
from parscale_jax.model.parscale import ParScaleLM
tokens = int(sys.argv[2])
decoders = []
for fields in json.loads(sys.argv[1]):
    config = ModelConfig(**fields)
    graphdef, state = nnx.split(nnx.jit(lambda: ParScaleLM(config, nnx.Rngs(params=0)))())
    cache = init_cache(config, 1, 8 + tokens + 1)
    nxt, _, cache = decode_step(graphdef, state, jnp.zeros((1, 8), jnp.int32), cache, jax.random.key(0))
    nxt, _, cache = decode_step(graphdef, state, nxt[:, None], cache, jax.random.key(0))  # Compile.
    jax.block_until_ready(nxt)
    decoders.append({"graphdef": graphdef, "state": state, "cache": cache, "next": nxt, "times": []})
for _ in range(tokens - 1):
    for d in decoders:
        t = time.perf_counter()
        d["next"], _, d["cache"] = decode_step(d["graphdef"], d["state"], d["next"][:, None], d["cache"],
                                               jax.random.key(0))
        jax.block_until_ready(d["next"])
        d["times"].append(time.perf_counter() - t)
print(json.dumps({"decode_s": [statistics.median(d["times"]) for d in decoders],
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run_child(configs: list, tokens: int) -> dict:
  proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps([dataclasses.asdict(c) for c in configs]),
                         str(tokens)], capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(proc.stderr[-2000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--size", default="paper-0.5b")
  parser.add_argument("--layers", type=int, default=12, help="fewer layers than the preset, for time")
  parser.add_argument("--P", default="1,2,4,8")
  parser.add_argument("--k", type=float, default=0.393457, help="the fitted k (Stack-V2)")
  parser.add_argument("--tokens", type=int, default=16)
  parser.add_argument("--out")
  args = parser.parse_args()
  from parscale_jax.cost.model import scaled_config
  from parscale_jax.model.accounting import param_counts
  from parscale_jax.model.config import preset

  base = preset(args.size, num_layers=args.layers, prefix_tokens=48)
  # P = 1 is every comparison's reference, so it is always measured, and first.
  ps = [1, *(p for p in (int(x) for x in args.P.split(",")) if p != 1)]
  parallel = {p: dataclasses.replace(base, P=p) for p in ps}
  scaled = {p: scaled_config(base, param_counts(parallel[p]).non_embedding * (args.k * math.log(p) + 1))
            for p in ps[1:]}
  # Latency: each comparison in one process, the P = 1 model first.
  timed_parallel = run_child(list(parallel.values()), args.tokens)["decode_s"]
  timed_scaled = run_child([parallel[1], *scaled.values()], args.tokens)["decode_s"]
  print("latency, P models:", timed_parallel, "\nlatency, parameter-scaled:", timed_scaled, flush=True)
  rows = []
  for p in ps:
    entries = [(f"parallel P={p}", parallel[p], timed_parallel[ps.index(p)], timed_parallel[0])]
    if p > 1:
      entries.append((f"parameter-scaled = P={p}", scaled[p], timed_scaled[ps.index(p)], timed_scaled[0]))
    for name, config, seconds, p1_seconds in entries:
      alone = run_child([config], 2)  # Peak memory of this model alone.
      rows.append({"model": name, "P": config.P, "hidden": config.hidden_size,
                   "params_total": param_counts(config).total, "decode_ms": seconds * 1e3,
                   "P1_same_process_ms": p1_seconds * 1e3, "decode_vs_P1": seconds / p1_seconds,
                   "peak_rss_GB": alone["peak_rss_bytes"] / 1e9})
      print(rows[-1], flush=True)
  for r in rows:
    r["memory_vs_P1"] = r["peak_rss_GB"] / rows[0]["peak_rss_GB"]
  report("decode_latency", rows, args.out, {"size": args.size, "layers": args.layers, "k": args.k,
                                             "tokens": args.tokens})


if __name__ == "__main__":
  main()
