"""Train-step throughput vs P for three stream implementations, and model FLOP utilisation.

    python benchmarks/train_step.py [--size cpu-790k] [--P 1,2,4,8] [--steps 10] [--devices 1,2]
    python benchmarks/train_step.py --size paper-0.5b --layers 8 --prefix 48 --batch 8 --seq 512 \
        --dtypes bfloat16 --peak-n 8192 --steps 5        # on one GPU

Streams by nnx.vmap (ours), folded into the batch axis (the PyTorch reference's way), and a Python
loop over streams; float32 and bfloat16 compute; with --devices 1,2 the batch is also split over
two devices (on a CPU host, one per core: mesh.cpu_devices). Each step time is a median over
--steps steps after compilation, the P values and device counts of one dtype and implementation
taking turns. MFU is model FLOPs per second over this machine's matmul peak for the same dtype:
a jax 1024^3 matmul probe that takes its turn with the steps (median over the same turns).
Targets: step(P) <= 1.05 * P * step(1); MFU >= 50 %.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import report, write_record
from parscale_jax.configlib import comma_choices, positive_ints
from parscale_jax.hostmem import restart_with_huge_pages, reuse_step_memory
from parscale_jax.model.accounting import flops_per_token
from parscale_jax.model.config import PRESETS, preset
from parscale_jax.train import sharding, trainer
from parscale_jax.train.config import MeshConfig, TrainConfig


def prepared_matmul(dtype, n: int = 1024, reps: int = 4):
  """The peak probe: calling it runs `reps` n^3 matmuls (f32 accumulation), returns seconds; its
  `flops` attribute is their FLOP count. It takes turns with the train steps, so that the peak is
  measured under the same load of this shared machine as they are."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
  f(a).block_until_ready()

  def run() -> float:
    t = time.perf_counter()
    for _ in range(reps):
      f(a).block_until_ready()
    return time.perf_counter() - t
  run.flops = 2 * n ** 3 * reps
  return run


def prepared_step(config, batch, seq, devices=1):
  """A compiled, warmed-up train step of a fresh model, data-parallel over the first `devices`
  devices (the trainer's initialisation, shardings and jitted step); calling it runs one step,
  returns seconds."""
  mesh = sharding.make_mesh(MeshConfig(), jax.devices()[:devices])
  training = trainer.build_training(TrainConfig(model=config), mesh)
  state, fn = training.fresh_state(), training.train_step
  rows = np.random.default_rng(0).integers(0, config.vocab_size, (1, batch, seq + 1)).astype(np.int32)
  rows = jax.device_put(rows, sharding.batch_sharding(mesh))
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
  parser.add_argument("--size", default="cpu-790k", choices=PRESETS)
  parser.add_argument("--layers", type=int, help="fewer layers than the preset, for time")
  parser.add_argument("--prefix", type=int, default=16, help="prefix tokens per stream and layer")
  parser.add_argument("--P", type=positive_ints, default="1,2,4,8")
  parser.add_argument("--impls", type=comma_choices("vmap", "fold", "loop"), default="vmap,fold,loop")
  parser.add_argument("--dtypes", type=comma_choices("float32", "bfloat16"),
                      default="float32,bfloat16")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--peak-n", type=int, default=1024,
                      help="matmul size of the peak probe; an accelerator needs a larger one (8192)")
  parser.add_argument("--devices", type=positive_ints, default="1",
                      help="data-parallel device counts to compare, e.g. 1,2; on a CPU host, "
                           "jax_num_cpu_devices splits the host into that many devices")
  parser.add_argument("--out")
  args = parser.parse_args()
  ps, device_counts = args.P, args.devices
  if 1 not in ps:
    parser.error("--P must include 1: every ratio is to the P = 1 step")
  for n in device_counts:
    if args.batch % n:
      parser.error(f"--batch {args.batch} does not split evenly over {n} devices")
  sharding.use_cpu_devices(max(device_counts))
  if len(jax.devices()) < max(device_counts):
    parser.error(f"--devices {max(device_counts)}: only {len(jax.devices())} devices")
  extra = {"size": args.size, "layers": args.layers or preset(args.size).num_layers,
           "prefix": args.prefix, "batch": args.batch, "seq": args.seq, "backend": jax.default_backend()}
  rows = []
  for dtype in args.dtypes:
    probe = prepared_matmul(jnp.bfloat16 if dtype == "bfloat16" else jnp.float32, args.peak_n)
    for impl in args.impls:
      layers = {"num_layers": args.layers} if args.layers else {}
      configs = {p: preset(args.size, P=p, prefix_tokens=args.prefix, stream_impl=impl, dtype=dtype,
                           **layers) for p in ps}
      runs = {(p, n): prepared_step(configs[p], args.batch, args.seq, n)
              for n in device_counts for p in ps}
      medians = interleaved_medians({**runs, "peak": probe}, args.steps)
      peak = probe.flops / medians.pop("peak")
      for (p, n), t in medians.items():
        flops = flops_per_token(configs[p], args.seq) * args.batch * args.seq
        rows.append({"dtype": dtype, "impl": impl, "devices": n, "P": p, "step_s": t,
                     "vs_P1": t / medians[(1, n)], "target_max": 1.05 * p,
                     "tokens_per_s": args.batch * args.seq / t, "mfu": flops / t / peak,
                     "peak_gflops": peak / 1e9})
        print(rows[-1], flush=True)
      write_record("train_step", rows, args.out, {**extra, "complete": False})
  report("train_step", rows, args.out, {**extra, "complete": True})


if __name__ == "__main__":
  restart_with_huge_pages()  # As the `parscale` command runs (parscale_jax/hostmem.py).
  reuse_step_memory()  # As training runs.
  main()
