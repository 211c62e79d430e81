"""This machine's float32 and bfloat16 matmul peaks by library, and the train step's FLOP rate as a
fraction of them.

    python benchmarks/matmul_peak.py                 # all libraries found, n = 1024 and 2048
    python benchmarks/matmul_peak.py --n 2048 --turns 5

Products: square n x n x n, and the train step's own largest shape (the SwiGLU up-projection of
`vs_reference.py`'s train row: 4096 rows of width 128 into 512), float32 accumulation. Libraries:
numpy (its BLAS), torch (oneDNN / its BLAS, when installed), and XLA:CPU under each of its dot
paths, one process per XLA flag set since XLA reads its flags at start: the default, oneDNN
(`--xla_cpu_use_onednn`), XNNPACK (`--xla_cpu_use_xnnpack`) and YNNPACK dot fusions
(`--xla_cpu_experimental_ynn_fusion_type=dot`). The train step (hidden 128, 4 layers, batch 16 x 256,
P = 1, the trainer's jitted step) runs in the default process, taking turns with its probes; its
model FLOPs (`parscale info`'s count) per second over the best peak of its dtype is its fraction.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from common import report

XLA_PATHS = {"default": "", "onednn": "--xla_cpu_use_onednn=true",
             "xnnpack": "--xla_cpu_use_xnnpack=true",
             "ynnpack": "--xla_cpu_experimental_ynn_fusion_type=dot"}
STEP_SHAPE = (4096, 128, 512)  # rows x width -> FFN of the train row's up-projection.


def shapes(ns: list[int]) -> list[tuple[int, int, int]]:
  return [(n, n, n) for n in ns] + [STEP_SHAPE]


def timed(f, turns: int) -> float:
  f()
  times = []
  for _ in range(turns):
    t = time.perf_counter()
    f()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def xla_probes(path: str, ns, turns: int, with_step: bool) -> list[dict]:
  """In a process started with XLA_PATHS[path]: GFLOP/s per dtype and shape (and the step)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  rows = []
  runs = {}
  for dtype in ("float32", "bfloat16"):
    for m, k, n in shapes(ns):
      rng = np.random.default_rng(0)
      a = jnp.asarray(rng.standard_normal((m, k)), dtype)
      b = jnp.asarray(rng.standard_normal((k, n)), dtype)
      f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
      runs[dtype, (m, k, n)] = (lambda f=f, a=a, b=b: f(a, b).block_until_ready(), 2 * m * k * n)
  if with_step:
    from parscale_jax.model.accounting import flops_per_token
    from train_step import prepared_step
    from vs_reference import TRAIN_SHAPE, our_config
    for dtype in ("float32", "bfloat16"):
      config = our_config(TRAIN_SHAPE, 1, 48, dtype)
      step = prepared_step(config, 16, 256)
      runs[dtype, "train step"] = (step, flops_per_token(config, 256) * 16 * 256)
  times = {key: [] for key in runs}
  for _ in range(turns):  # Taking turns, so a slow spell of the machine hits every probe alike.
    for key, (f, _) in runs.items():
      times[key].append(timed(f, 1))
  for (dtype, shape), (_, flops) in runs.items():
    t = statistics.median(times[dtype, shape])
    rows.append({"library": f"jax ({path})", "dtype": dtype,
                 "shape": shape if isinstance(shape, str) else "x".join(map(str, shape)),
                 "ms": 1e3 * t, "gflops": flops / t / 1e9})
  return rows


def host_probes(ns, turns: int) -> list[dict]:
  """numpy, and torch where installed."""
  import numpy as np
  rows = []
  for m, k, n in shapes(ns):
    a = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)
    t = timed(lambda: a @ b, turns)
    rows.append({"library": f"numpy {np.__version__}", "dtype": "float32", "shape": f"{m}x{k}x{n}",
                 "ms": 1e3 * t, "gflops": 2 * m * k * n / t / 1e9})
  try:
    import torch
  except ImportError:
    return rows
  for dtype in ("float32", "bfloat16"):
    for m, k, n in shapes(ns):
      a = torch.randn(m, k, dtype=getattr(torch, dtype))
      b = torch.randn(k, n, dtype=getattr(torch, dtype))
      t = timed(lambda: a @ b, turns)
      rows.append({"library": f"torch {torch.__version__}", "dtype": dtype, "shape": f"{m}x{k}x{n}",
                   "ms": 1e3 * t, "gflops": 2 * m * k * n / t / 1e9})
  return rows


def main() -> None:
  from parscale_jax.configlib import comma_choices, positive_int, positive_ints
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--n", type=positive_ints, default="1024,2048", help="square product sizes")
  parser.add_argument("--turns", type=positive_int, default=7)
  parser.add_argument("--paths", type=comma_choices(*XLA_PATHS), default=",".join(XLA_PATHS))
  parser.add_argument("--out")
  parser.add_argument("--xla-path", choices=XLA_PATHS, help=argparse.SUPPRESS)  # A probe process.
  args = parser.parse_args()
  if args.xla_path:
    print(json.dumps(xla_probes(args.xla_path, args.n, args.turns, args.xla_path == "default")))
    return
  rows = host_probes(args.n, args.turns)
  for path in args.paths:
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {XLA_PATHS[path]}".strip()}
    out = subprocess.run([sys.executable, __file__, "--xla-path", path, "--n", ",".join(map(str, args.n)),
                          "--turns", str(args.turns)], env=env, capture_output=True, text=True)
    if out.returncode:
      raise SystemExit(f"XLA path {path}: {out.stderr.strip().splitlines()[-1]}")
    rows += json.loads(out.stdout.strip().splitlines()[-1])
  products = [r for r in rows if r["shape"] != "train step"]
  peaks = {d: max(r["gflops"] for r in products if r["dtype"] == d) for d in ("float32", "bfloat16")
           if any(r["dtype"] == d for r in products)}
  for r in rows:
    if r["shape"] == "train step":
      r["fraction_of_peak"] = r["gflops"] / peaks[r["dtype"]]
  report("matmul_peak", rows, args.out, {"peaks_gflops": peaks, "complete": True})


if __name__ == "__main__":
  from parscale_jax.hostmem import restart_with_huge_pages
  restart_with_huge_pages()  # As the `parscale` command runs (parscale_jax/hostmem.py).
  main()
