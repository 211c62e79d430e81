"""One prepared check of an accelerator, in at most about 8 minutes: the bfloat16 matmul peak, the
train step's model FLOP utilisation (MFU) of paper-0.5b at its full 36 layers for P = 1, 2, 4, 8
(target >= 50 %), and batch-1 decode latency against P. Results go to JSON as they come in, so a
run stopped by its time limit keeps what it measured.

    bash scripts/gpu_check.sh                   # on a GPU or TPU machine; JSON in benchmarks/results/
    python benchmarks/gpu_check.py --dry-run    # tiny shapes on any machine (the test suite runs it)

MFU: model FLOPs per step (parscale_jax.model.accounting, training = 3x forward) over the step
time, divided by the bfloat16 peak measured here (a jitted n^3 matmul with float32 accumulation),
not by a datasheet number. Each step time is the median of --steps steps after compilation.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import write_record
from parscale_jax.configlib import positive_ints
from parscale_jax.model.accounting import flops_per_token
from parscale_jax.model.config import preset
from train_step import prepared_matmul, prepared_step

FULL = dict(size="paper-0.5b", layers=None, batch=4, seq=1024, matmul_n=8192, decode_tokens=32)
DRY = dict(size="cpu-55k", layers=1, batch=2, seq=32, matmul_n=256, decode_tokens=4)


def median_time(run, steps: int) -> float:
  return statistics.median(run() for _ in range(steps))


def decode_seconds_per_token(config, tokens: int) -> float:
  """Greedy batch-1 decoding after an 8-token prompt, per generated token (compiled, then timed)."""
  from parscale_jax.model import create_model, generate

  model = create_model(config, seed=0)
  prompt = jnp.zeros((1, 8), jnp.int32)
  jax.block_until_ready(generate(model, prompt, max_new_tokens=tokens))
  start = time.perf_counter()
  jax.block_until_ready(generate(model, prompt, max_new_tokens=tokens))
  return (time.perf_counter() - start) / tokens


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dry-run", action="store_true", help="tiny shapes: checks the script, not the machine")
  parser.add_argument("--P", type=positive_ints, default="1,2,4,8")
  parser.add_argument("--steps", type=int, default=5, help="timed train steps per P")
  parser.add_argument("--budget-s", type=float, default=420.0,
                      help="stop starting new measurements after this many seconds")
  parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
  args = parser.parse_args()
  shape = DRY if args.dry_run else FULL
  start = time.perf_counter()
  device = jax.devices()[0]
  record = {"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
            "dry_run": args.dry_run, "shape": shape, "complete": False}
  rows: list[dict] = []
  save = lambda: write_record("gpu_check", rows, args.out, record)

  peak_run = prepared_matmul(jnp.bfloat16, n=shape["matmul_n"], reps=4)
  peak = peak_run.flops / median_time(peak_run, 5)
  record["bf16_matmul_peak_tflops"] = peak / 1e12
  print(f"{device.device_kind}: bfloat16 matmul peak {peak / 1e12:.1f} TFLOP/s (n = {shape['matmul_n']})")
  save()

  base = preset(shape["size"], prefix_tokens=48, dtype="bfloat16")
  if shape["layers"]:
    base = dataclasses.replace(base, num_layers=shape["layers"])
  for P in args.P:
    if time.perf_counter() - start > args.budget_s:
      record["stopped"] = f"time budget reached before train P = {P}"
      break
    config = dataclasses.replace(base, P=P)
    seconds = median_time(prepared_step(config, shape["batch"], shape["seq"]), args.steps)
    flops = flops_per_token(config, shape["seq"], training=True) * shape["batch"] * shape["seq"]
    rows.append({"what": "train", "P": P, "step_ms": 1e3 * seconds,
                 "tokens_per_s": shape["batch"] * shape["seq"] / seconds,
                 "mfu": flops / seconds / peak})
    print(f"train P = {P}: {1e3 * seconds:.1f} ms/step, MFU {100 * rows[-1]['mfu']:.1f} %")
    save()
  for P in args.P:
    if time.perf_counter() - start > args.budget_s:
      record["stopped"] = f"time budget reached before decode P = {P}"
      break
    ms = 1e3 * decode_seconds_per_token(dataclasses.replace(base, P=P), shape["decode_tokens"])
    p1 = next((r["decode_ms"] for r in rows if r["what"] == "decode" and r["P"] == 1), ms)
    rows.append({"what": "decode", "P": P, "decode_ms": ms, "decode_vs_P1": ms / p1})
    print(f"decode P = {P}: {ms:.2f} ms/token ({ms / p1:.2f}x P = 1)")
    save()
  record["complete"] = "stopped" not in record
  record["seconds"] = time.perf_counter() - start
  print(f"wrote {save()}")


if __name__ == "__main__":
  main()
