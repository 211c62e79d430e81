"""Compile time of the train step and of `generate` for a deep preset, layers scanned or unrolled.

    python benchmarks/compile_time.py                       # paper-1.6b, 36 layers, P = 1 and 4
    python benchmarks/compile_time.py --size paper-0.5b --P 2 --layers 8,36

Everything is abstract (shapes only, no weights): the train step is lowered and compiled exactly as
the trainer builds it (its shardings and donation), `generate` as one program for a batch-1 prompt.
Each row is one lowering and one XLA compile, timed apart; the unrolled and scanned versions of a
configuration take turns. Target: the scanned compile time does not grow with depth.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
from flax import nnx

from common import report
from parscale_jax.configlib import positive_ints
from parscale_jax.hostmem import restart_with_huge_pages
from parscale_jax.model.config import PRESETS, preset
from parscale_jax.model.decode import generate_program
from parscale_jax.model.parscale import abstract_model
from parscale_jax.train import sharding, trainer
from parscale_jax.train.config import TrainConfig


def _timed(lower) -> tuple[float, float]:
  t = time.perf_counter()
  lowered = lower()
  t_lower = time.perf_counter() - t
  t = time.perf_counter()
  lowered.compile()
  return t_lower, time.perf_counter() - t


def train_step_times(config, batch: int, seq: int) -> tuple[float, float]:
  train_config = TrainConfig(model=config, batch_size=batch)
  training = trainer.build_training(train_config, sharding.make_mesh(train_config.mesh))
  rows = jax.ShapeDtypeStruct((1, batch, seq + 1), jnp.int32)
  return _timed(lambda: training.train_step.lower(training.abstract_state, rows))


def generate_times(config, prompt: int, new_tokens: int) -> tuple[float, float]:
  graphdef, abs_state = nnx.split(abstract_model(config))
  ids = jax.ShapeDtypeStruct((1, prompt), jnp.int32)
  return _timed(lambda: generate_program.lower(graphdef, abs_state, ids, jax.random.key(0), new_tokens,
                                        0.0, None, None, None, jnp.dtype(jnp.float32)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--size", default="paper-1.6b", choices=PRESETS)
  parser.add_argument("--layers", type=positive_ints, help="depths to measure (default: the preset's)")
  parser.add_argument("--P", type=positive_ints, default="1,4")
  parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--out")
  args = parser.parse_args()
  base = preset(args.size)
  rows = []
  for layers in args.layers or [base.num_layers]:
    for p in args.P:
      for scan in (False, True):
        config = dataclasses.replace(base, num_layers=layers, P=p, dtype=args.dtype, scan_layers=scan)
        for what, times in (("train_step", lambda: train_step_times(config, args.batch, args.seq)),
                            ("generate", lambda: generate_times(config, 64, 32))):
          lower_s, compile_s = times()
          rows.append({"what": what, "layers": layers, "P": p,
                       "layer_stack": "scan" if scan else "unrolled",
                       "lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2)})
          print(rows[-1], flush=True)
  report("compile_time", rows, args.out,
         {"size": args.size, "dtype": args.dtype, "batch": args.batch, "seq": args.seq,
          "backend": jax.default_backend()})


if __name__ == "__main__":
  restart_with_huge_pages()  # As the `parscale` command runs (parscale_jax/hostmem.py).
  main()
