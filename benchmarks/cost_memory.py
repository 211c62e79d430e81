"""The cost model's serving memory (`parscale cost`, `parscale plan`) against the XLA:TPU compiler's:
prefill of 2,048 tokens and one decode step with a cache of 2,304, bf16 weights and cache, on one
v5p chip, for paper sizes x P x batch. Each cell keeps the compiler's bytes; the model's side is
recomputed by tests/test_benchmarks.py from the code, so a change to the model is checked against
the compiler without compiling again. Resumable: cells already in the JSON are kept.

    python benchmarks/cost_memory.py            # 16 cells, about 2 min each on 2 cores
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import parscale_jax  # noqa: F401  (before jax: no TPU runtime on a host without TPUs)
import jax.numpy as jnp

from parscale_jax.aot.programs import OutOfMemory, compile_decoding
from parscale_jax.aot.topology import topology_devices
from parscale_jax.cost.devices import DEVICES
from parscale_jax.cost.model import Workload, inference_cost
from parscale_jax.model.config import PRESETS, ModelConfig

sys.path.insert(0, str(Path(__file__).parent))
from common import write_record  # noqa: E402

PROMPT, NEW = 2048, 256


def model_config(size: str, P: int) -> ModelConfig:
  """The paper's model at `size` and P, as experiments/paper.yaml trains it (bf16 compute)."""
  return ModelConfig(**PRESETS[size], size=size, P=P, dtype="bfloat16")


def model_memory(size: str, P: int, batch: int) -> dict:
  """The cost model's serving memory for a cell (bytes), as `parscale cost` computes it."""
  workload = Workload(batch=batch, input_tokens=PROMPT, output_tokens=NEW, prefix_mode="cache")
  return inference_cost(model_config(size, P), DEVICES["tpu-v5p"], workload)["memory"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", nargs="+", default=["paper-0.5b", "paper-4.4b"])
  parser.add_argument("--P", nargs="+", type=int, default=[1, 2, 4, 8])
  parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
  parser.add_argument("--out", default="benchmarks/results/cost_memory.json")
  args = parser.parse_args()
  out = Path(args.out)
  rows = json.loads(out.read_text())["rows"] if out.exists() else []
  have = {(r["size"], r["P"], r["batch"]) for r in rows}
  device = topology_devices("v5p:2x2x1")[:1]  # One chip: the model's totals are per model.
  for size in args.sizes:
    for P in args.P:
      for batch in args.batches:
        if (size, P, batch) in have:
          continue
        from parscale_jax.train.config import TrainConfig
        config = TrainConfig(model=model_config(size, P))
        try:
          prefill, step = compile_decoding(config, device, batch, PROMPT, PROMPT + NEW,
                                           weights_dtype=jnp.bfloat16)
        except OutOfMemory as e:
          print(f"{size} P={P} batch {batch}: {e}", file=sys.stderr)
          continue
        row = {"size": size, "P": P, "batch": batch,
               "prefill": {k: v for k, v in prefill.as_dict().items() if k.endswith("bytes")},
               "decode_step": {k: v for k, v in step.as_dict().items() if k.endswith("bytes")}}
        rows.append(row)
        write_record("cost_memory", rows, str(out),
                     {"prompt_tokens": PROMPT, "new_tokens": NEW, "chip": "TPU v5p (one)",
                      "weights": "bfloat16", "cache": "bfloat16"})
        compiler = max(prefill.peak_bytes, step.peak_bytes)
        model = model_memory(size, P, batch)["total"]
        print(f"{size} P={P} batch {batch}: compiler {compiler / 2**30:.2f} GiB, "
              f"model {model / 2**30:.2f} GiB ({model / compiler:.2f})", file=sys.stderr, flush=True)


if __name__ == "__main__":
  main()
