"""Tiny-model sweeps: what training several seeds of one configuration as one program would gain.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        taskset -c 0 python benchmarks/seed_batching.py     # one core, as a sweep worker runs

For each size and P of the science grid (sweeps/cpu_grid.yaml: batch 8 x 128, prefix 48,
bfloat16), S seeds trained one after another (S calls of the trainer's jitted step) against the
same S seeds as one program (the same step under jax.vmap over stacked states and batches), the
two taking turns. Prints tokens per second of each, their ratio, and how far the two programs'
parameters are apart after the same steps (they train the same models); writes JSON.
"""
from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np

from common import report, write_record
from parscale_jax.configlib import comma_choices, positive_int, positive_ints
from parscale_jax.hostmem import restart_with_huge_pages
from parscale_jax.model.config import PRESETS, preset
from parscale_jax.train import sharding, trainer
from parscale_jax.train.config import MeshConfig, TrainConfig
from parscale_jax.train.step import train_step
from train_step import interleaved_medians


def prepared_runs(config, seeds: int, batch: int, seq: int):
  """(sequential, batched, param_gap): calling either of the first two trains `seeds` models one
  step and returns seconds; param_gap() is the largest difference between their parameters."""
  mesh = sharding.make_mesh(MeshConfig(), jax.devices()[:1])
  trainings = [trainer.build_training(TrainConfig(model=config, seed=seed), mesh)
               for seed in range(seeds)]
  states = [t.fresh_state() for t in trainings]
  graphdef, optimizer = trainings[0].graphdef, trainings[0].optimizer
  rng = np.random.default_rng(0)
  rows = [rng.integers(0, config.vocab_size, (1, batch, seq + 1)).astype(np.int32)
          for _ in range(seeds)]
  one = trainings[0].train_step
  many = jax.jit(jax.vmap(functools.partial(train_step, graphdef=graphdef, optimizer=optimizer)),
                 donate_argnums=(0,))
  # Copies: the single-seed steps donate their states.
  seq_box = [jax.tree.map(lambda a: a.copy(), s) for s in states]
  vec_box = [jax.tree.map(lambda *a: np.stack(a), *states), np.stack(rows)]
  rows = [jax.device_put(r) for r in rows]

  def sequential() -> float:
    t = time.perf_counter()
    metrics = None
    for i in range(seeds):
      seq_box[i], metrics = one(seq_box[i], rows[i])
    jax.block_until_ready((seq_box, metrics))
    return time.perf_counter() - t

  def batched() -> float:
    t = time.perf_counter()
    vec_box[0], metrics = many(vec_box[0], vec_box[1])
    jax.block_until_ready(metrics)
    return time.perf_counter() - t

  def param_gap() -> float:
    stacked = jax.tree.map(lambda *a: np.stack(a), *[s.params for s in seq_box])
    gaps = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                        stacked, vec_box[0].params)
    return max(jax.tree.leaves(gaps))

  sequential(), batched()  # Compile.
  return sequential, batched, param_gap


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--sizes", type=comma_choices(*PRESETS), default="l4-50k,l4-200k,l4-440k")
  parser.add_argument("--P", type=positive_ints, default="1,4,8")
  parser.add_argument("--seeds", type=positive_int, default=3)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--prefix", type=int, default=48)
  parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--out")
  args = parser.parse_args()
  extra = {"seeds": args.seeds, "batch": args.batch, "seq": args.seq, "prefix": args.prefix,
           "dtype": args.dtype, "backend": jax.default_backend()}
  rows = []
  for size in args.sizes:
    for p in args.P:
      config = preset(size, P=p, prefix_tokens=args.prefix, dtype=args.dtype)
      sequential, batched, param_gap = prepared_runs(config, args.seeds, args.batch, args.seq)
      med = interleaved_medians({"sequential": sequential, "batched": batched}, args.steps)
      tokens = args.seeds * args.batch * args.seq
      rows.append({"size": size, "P": p, "sequential_tok_s": tokens / med["sequential"],
                   "batched_tok_s": tokens / med["batched"],
                   "speedup": med["sequential"] / med["batched"], "param_gap": param_gap()})
      print(rows[-1], flush=True)
      write_record("seed_batching", rows, args.out, {**extra, "complete": False})
  report("seed_batching", rows, args.out, {**extra, "complete": True})


if __name__ == "__main__":
  restart_with_huge_pages()  # As the `parscale` command runs (parscale_jax/hostmem.py).
  main()
