"""Train-step throughput vs P for three stream implementations, and model FLOP utilisation.

    python benchmarks/train_step.py [--size cpu-790k] [--P 1,2,4,8] [--steps 10]

Streams by nnx.vmap (ours), folded into the batch axis (the PyTorch reference's way), and a Python
loop over streams; float32 and bfloat16 compute. Each step time is a median over --steps steps
after compilation, the P values of one dtype and implementation taking turns. MFU is
model FLOPs per second over this machine's matmul peak for the same dtype: the faster of two jax
1024^3 matmul measurements, one before and one after the steps. Targets: step(P) <= 1.05 * P *
step(1); MFU >= 50 %.
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


def prepared_step(config, batch, seq):
  """A compiled, warmed-up train step of a fresh model; calling it runs one step, returns seconds."""
  model = create_model(config)
  graphdef, params, frozen = split_model(model, False)
  optimizer = make_optimizer(OptimConfig(), 1000)
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "frozen": frozen,
           "opt_state": optimizer.init(params)}
  fn = jax.jit(lambda s, r: train_step(s, r, graphdef=graphdef, optimizer=optimizer), donate_argnums=0)
  rows = jnp.asarray(np.random.default_rng(0).integers(0, config.vocab_size, (1, batch, seq + 1)), jnp.int32)
  state, m = fn(state, rows)
  jax.block_until_ready(m)
  box = [state]

  def run() -> float:
    t = time.perf_counter()
    box[0], metrics = fn(box[0], rows)
    jax.block_until_ready(metrics)
    return time.perf_counter() - t
  return run


def interleaved_medians(runs: dict, steps: int) -> dict:
  """Median step time of each run, the runs taking turns: a slow spell of this shared machine then
  hits every configuration alike instead of skewing the ratios between them. Each turn is an
  untimed step and a timed one, so that the timed step finds the caches as consecutive training
  steps leave them, not as the other configuration left them."""
  times = {key: [] for key in runs}
  for _ in range(steps):
    for key, run in runs.items():
      run()
      times[key].append(run())
  return {key: statistics.median(t) for key, t in times.items()}


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
  dtypes = args.dtypes.split(",")
  measure_peaks = lambda: {d: matmul_peak(jnp.bfloat16 if d == "bfloat16" else jnp.float32) for d in dtypes}
  peaks_before = measure_peaks()
  rows = []
  for dtype in dtypes:
    for impl in args.impls.split(","):
      configs = {p: dataclasses.replace(preset(args.size, P=p, prefix_tokens=16), stream_impl=impl,
                                        dtype=dtype) for p in (int(x) for x in args.P.split(","))}
      medians = interleaved_medians(
          {p: prepared_step(c, args.batch, args.seq) for p, c in configs.items()}, args.steps)
      base = next(iter(medians.values()))
      for p, t in medians.items():
        flops = flops_per_token(configs[p], args.seq) * args.batch * args.seq
        rows.append({"dtype": dtype, "impl": impl, "P": p, "step_s": t, "vs_P1": t / base,
                     "target_max": 1.05 * p, "tokens_per_s": args.batch * args.seq / t,
                     "model_flops_per_s": flops / t})
        print(rows[-1], flush=True)
  peaks_after = measure_peaks()
  peaks = {d: max(peaks_before[d], peaks_after[d]) for d in dtypes}
  for row in rows:
    row["mfu"] = row.pop("model_flops_per_s") / peaks[row["dtype"]]
  report("train_step", rows, args.out, {"matmul_peak_flops": peaks, "peaks_before": peaks_before,
                                         "peaks_after": peaks_after, "size": args.size,
                                         "batch": args.batch, "seq": args.seq})


if __name__ == "__main__":
  main()
