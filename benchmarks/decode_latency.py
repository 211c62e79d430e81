"""Batch-1 decode latency and peak memory, measured on the real model: P in {1, 2, 4, 8} of a base
shape against the parameter-scaled model of equal predicted loss (Stack-V2 fit).

    python benchmarks/decode_latency.py [--size paper-0.5b --layers 12] [--tokens 16]

Each configuration runs in its own process (peak memory = that process's max RSS). The base is
chosen so that decoding is memory-bound here (the weights are streamed once per token). Target:
P = 8 within 1.5x of P = 1.
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
config = ModelConfig(**json.loads(sys.argv[1]))
tokens = int(sys.argv[2])
model = nnx.jit(lambda: ParScaleLM(config, nnx.Rngs(params=0)))()
graphdef, state = nnx.split(model)
cache = init_cache(config, 1, 8 + tokens + 1)
prompt = jnp.zeros((1, 8), jnp.int32)
nxt, _, cache = decode_step(graphdef, state, prompt, cache, jax.random.key(0))
tok = nxt[:, None]
nxt, _, cache = decode_step(graphdef, state, tok, cache, jax.random.key(0))  # Compile the step.
jax.block_until_ready(nxt)
times = []
for _ in range(tokens - 1):
    t = time.perf_counter()
    nxt, _, cache = decode_step(graphdef, state, nxt[:, None], cache, jax.random.key(0))
    jax.block_until_ready(nxt)
    times.append(time.perf_counter() - t)
print(json.dumps({"decode_s": statistics.median(times),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


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
  configs = []
  for p in (int(x) for x in args.P.split(",")):
    configs.append((f"parallel P={p}", dataclasses.replace(base, P=p)))
    if p > 1:
      n_equal = param_counts(dataclasses.replace(base, P=p)).non_embedding * (args.k * math.log(p) + 1)
      configs.append((f"parameter-scaled = P={p}", scaled_config(base, n_equal)))
  rows = []
  for name, config in configs:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(dataclasses.asdict(config)),
                           str(args.tokens)], capture_output=True, text=True)
    if proc.returncode:
      raise SystemExit(proc.stderr[-2000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rows.append({"model": name, "P": config.P, "hidden": config.hidden_size,
                 "params_total": param_counts(config).total, "decode_ms": out["decode_s"] * 1e3,
                 "peak_rss_GB": out["peak_rss_bytes"] / 1e9})
    print(rows[-1], flush=True)
  p1 = rows[0]
  for r in rows:
    r["decode_vs_P1"] = r["decode_ms"] / p1["decode_ms"]
    r["memory_vs_P1"] = r["peak_rss_GB"] / p1["peak_rss_GB"]
  report("decode_latency", rows, args.out, {"size": args.size, "layers": args.layers, "k": args.k})


if __name__ == "__main__":
  main()
