"""Train-step throughput vs P for three stream implementations, and model FLOP utilisation.

    python benchmarks/train_step.py [--size cpu-790k] [--P 1,2,4,8] [--steps 10]

Streams by nnx.vmap (ours), folded into the batch axis (the PyTorch reference's way), and a Python
loop over streams; float32 and bfloat16 compute. Each step time is a median over --steps steps
after compilation; MFU is model FLOPs per second over this machine's measured matmul peak for the
same dtype (jax, 1024^3 matmul). Targets: step(P) <= 1.05 * P * step(1); MFU >= 50 %.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import report
from parscale_jax.model.accounting import flops_per_token
from parscale_jax.model.config import preset
from parscale_jax.train.config import OptimConfig
from parscale_jax.train.optimizer import make_optimizer
from parscale_jax.train.step import split_model, train_step
from parscale_jax.model.parscale import create_model


def matmul_peak(dtype, seconds=2.0) -> float:
  n = 1024
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  reps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    f(a).block_until_ready()
    reps += 1
  return 2 * n ** 3 * reps / (time.perf_counter() - start)


def step_time(config, batch, seq, steps) -> float:
  model = create_model(config)
  graphdef, params, frozen = split_model(model, False)
  optimizer = make_optimizer(OptimConfig(), 1000)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "frozen": frozen,
           "opt_state": optimizer.init(params)}
  fn = jax.jit(lambda s, r: train_step(s, r, graphdef=graphdef, optimizer=optimizer), donate_argnums=0)
  rows = jnp.asarray(np.random.default_rng(0).integers(0, config.vocab_size, (1, batch, seq + 1)), jnp.int32)
  state, m = fn(state, rows)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = fn(state, rows)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--size", default="cpu-790k")
  parser.add_argument("--P", default="1,2,4,8")
  parser.add_argument("--impls", default="vmap,fold,loop")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--out")
  args = parser.parse_args()
  peaks = {d: matmul_peak(jnp.bfloat16 if d == "bfloat16" else jnp.float32) for d in args.dtypes.split(",")}
  rows, base = [], {}
  for dtype in args.dtypes.split(","):
    for impl in args.impls.split(","):
      for p in (int(x) for x in args.P.split(",")):
        config = dataclasses.replace(preset(args.size, P=p, prefix_tokens=16), stream_impl=impl, dtype=dtype)
        t = step_time(config, args.batch, args.seq, args.steps)
        base.setdefault((dtype, impl), t)
        flops = flops_per_token(config, args.seq) * args.batch * args.seq
        rows.append({"dtype": dtype, "impl": impl, "P": p, "step_s": t,
                     "vs_P1": t / base[(dtype, impl)], "target_max": 1.05 * p,
                     "tokens_per_s": args.batch * args.seq / t,
                     "mfu": flops / t / peaks[dtype]})
        print(rows[-1], flush=True)
  report("train_step", rows, args.out, {"matmul_peak_flops": peaks, "size": args.size,
                                         "batch": args.batch, "seq": args.seq})


if __name__ == "__main__":
  main()
