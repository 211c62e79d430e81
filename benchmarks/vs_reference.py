"""This project against the reference PyTorch implementation (QwenLM/ParScale), the way a user
compares them: each implementation in a process of its own, both under the same allocator setting,
taking turns.

    python benchmarks/vs_reference.py --reference-dir ~/src/ParScale   # a checkout of QwenLM/ParScale
    python benchmarks/vs_reference.py --reference-dir DIR --settings hugetlb --tasks train --P 1,8

The reference is not part of this project: its two files (`modeling_qwen2_parscale.py`,
`configuration_qwen2_parscale.py`) are imported from --reference-dir; it needs torch,
transformers 4.51 and einops (`pip install -e '.[bench]'` in an environment of its own:
transformers 4.51 pins an older `tokenizers` than the test extras).

Rows (target: ours / reference <= 1.0 in every one):
- train: one AdamW step, hidden 128, 4 layers, 4 heads, 4 kv heads, FFN 512, vocabulary 256,
  batch 16 x 256, prefix 48, all cores. Ours is the trainer's jitted step; the reference runs
  forward, cross-entropy, backward, gradient clipping and AdamW (beta2 0.95, weight decay 0.1)
  with SDPA attention.
- grid: the same step at the science grid's shapes (l4-200k and l4-440k: byte vocabulary,
  4 layers, 2 heads sharing 1 kv head), batch 8 x 128, prefix 48, one thread pinned to one core,
  as a sweep worker runs.
- decode: batch-1 greedy decoding, hidden 1024, 8 layers, FFN 4096, 16 heads, 4 kv heads,
  vocabulary 256, 64-token prompt; ms per token = (time for --new-tokens tokens - time for 1) /
  (--new-tokens - 1), prefill excluded.
All float32 (--dtypes bfloat16 adds our bfloat16 step against the reference's float32 one, its
fastest on a CPU: under CPU autocast its bfloat16 step was about 10x slower).

Method: per setting, one worker process per implementation and thread count, started once. For each
row both workers build and warm up their model; then --turns turns, in each of which each worker
runs an untimed and a timed step (a decode row: both lengths), the worker going first alternating;
the median per side. Settings: `glibc` (no tunable for either: a Python session of one's own) and
`hugetlb` (GLIBC_TUNABLES=glibc.malloc.hugetlb=1 for both, as `parscale` runs). In both, our worker
keeps its step memory as `parscale_jax.train` does (`parscale_jax.hostmem.reuse_step_memory`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report, write_record

REFERENCE_FILES = ("modeling_qwen2_parscale.py", "configuration_qwen2_parscale.py")
SETTINGS = ("glibc", "hugetlb")
TRAIN_SHAPE = {"vocab": 256, "hidden": 128, "ffn": 512, "layers": 4, "heads": 4, "kv_heads": 4}
DECODE_SHAPE = {"vocab": 256, "hidden": 1024, "ffn": 4096, "layers": 8, "heads": 16, "kv_heads": 4}
GRID_SIZES = ("l4-200k", "l4-440k")


def check_reference_dir(directory: str) -> Path:
  src = Path(directory).expanduser()
  missing = [f for f in REFERENCE_FILES if not (src / f).is_file()]
  if missing:
    raise SystemExit(f"--reference-dir {src}: no {', '.join(missing)} (a checkout of QwenLM/ParScale)")
  return src


def grid_shape(size: str) -> dict:
  from parscale_jax.model.config import PRESETS
  c = PRESETS[size]
  return {"vocab": c["vocab_size"], "hidden": c["hidden_size"], "ffn": c["intermediate_size"],
          "layers": c["num_layers"], "heads": c["num_heads"], "kv_heads": c["num_kv_heads"]}


# ---------------------------------------------------------------- worker side (its own process)

def import_reference(directory: str):
  """(model class, config class) from a checkout of QwenLM/ParScale. Its modeling file imports its
  configuration relatively, so both are copied into a temporary package and imported from there."""
  src = check_reference_dir(directory)
  try:
    import einops  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
  except ImportError as e:
    raise SystemExit(f"the reference needs torch, transformers 4.51 and einops ({e}); "
                     "pip install -e '.[bench]'") from None
  package = Path(tempfile.mkdtemp()) / "parscale_reference"
  package.mkdir()
  (package / "__init__.py").write_text("")
  for name in REFERENCE_FILES:
    shutil.copyfile(src / name, package / name)
  sys.path.insert(0, str(package.parent))
  from parscale_reference.configuration_qwen2_parscale import Qwen2ParScaleConfig
  from parscale_reference.modeling_qwen2_parscale import Qwen2ParScaleForCausalLM
  return Qwen2ParScaleForCausalLM, Qwen2ParScaleConfig


def reference_model(classes, shape: dict, P: int, prefix: int):
  import torch
  model_cls, config_cls = classes
  torch.manual_seed(0)
  config = config_cls(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                      intermediate_size=shape["ffn"], num_hidden_layers=shape["layers"],
                      num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                      parscale_n=P, parscale_n_tokens=prefix, tie_word_embeddings=False,
                      attn_implementation="sdpa")
  model = model_cls(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "prefix" in name:  # Allocated with torch.empty; the released checkpoints fill them.
        p.normal_(0.0, 0.02)
  return model


def reference_train_step(classes, shape, P, prefix, batch, seq):
  """Calling it runs one reference train step (float32) and returns its seconds."""
  import torch
  import torch.nn.functional as F
  model = reference_model(classes, shape, P, prefix).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
  ids = torch.randint(0, shape["vocab"], (batch, seq + 1))

  def run() -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    logits = model(input_ids=ids[:, :-1], use_cache=False).logits
    loss = F.cross_entropy(logits.float().reshape(-1, shape["vocab"]), ids[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return time.perf_counter() - start
  run()
  return run


def our_config(shape, P, prefix, dtype):
  from parscale_jax.model.config import ModelConfig
  return ModelConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                     intermediate_size=shape["ffn"], num_layers=shape["layers"],
                     num_heads=shape["heads"], num_kv_heads=shape["kv_heads"], P=P,
                     prefix_tokens=prefix, dtype=dtype)


def decode_timer(side: str, classes, shape, P, prefix, prompt_len, new_tokens):
  """f(n): greedily decodes n tokens after the prompt, returns seconds; warmed up at both lengths."""
  import numpy as np
  prompt = np.random.default_rng(0).integers(0, shape["vocab"], (1, prompt_len))
  if side == "reference":
    import torch
    ref = reference_model(classes, shape, P, prefix).eval()
    ids = torch.from_numpy(prompt.astype(np.int64))

    def f(n: int) -> float:
      start = time.perf_counter()
      with torch.no_grad():
        ref.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
      return time.perf_counter() - start
  else:
    import jax
    import jax.numpy as jnp

    import parscale_jax as pj
    ours = pj.create_model(our_config(shape, P, prefix, "float32"))
    ids = jnp.asarray(prompt.astype(np.int32))

    def f(n: int) -> float:
      start = time.perf_counter()
      jax.block_until_ready(pj.generate(ours, ids, n))
      return time.perf_counter() - start
  f(1)
  f(new_tokens)
  return f


def prepare(side: str, classes, row: dict):
  """A callable running one turn of `row` and returning its seconds."""
  shape, P, prefix = row["shape"], row["P"], row["prefix"]
  if row["task"] == "decode":
    f = decode_timer(side, classes, shape, P, prefix, row["prompt"], row["new_tokens"])
    return lambda: (f(row["new_tokens"]) - f(1)) / (row["new_tokens"] - 1)
  if side == "reference":
    step = reference_train_step(classes, shape, P, prefix, row["batch"], row["seq"])
  else:
    from train_step import prepared_step
    step = prepared_step(our_config(shape, P, prefix, row["dtype"]), row["batch"], row["seq"])

  def turn() -> float:
    step()  # Untimed: the timed step finds the caches as consecutive steps leave them.
    return step()
  return turn


def worker(side: str, threads: int, reference_dir: str) -> None:
  """Answers JSON lines on stdin: {"row": ...} builds a row's timer, {"turn": true} times it."""
  protocol = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)  # What the libraries print goes to stderr, not into the protocol.
  if threads:
    from parscale_jax.sweep.worker import limit_threads
    limit_threads(threads, sorted(os.sched_getaffinity(0))[:threads])  # As a sweep worker.
  classes = None
  if side == "ours":
    from parscale_jax.hostmem import reuse_step_memory
    reuse_step_memory()  # As training does, before JAX starts.
  if side == "reference":
    classes = import_reference(reference_dir)
    if threads:
      import torch
      torch.set_num_threads(threads)
  timer = None
  for line in sys.stdin:
    msg = json.loads(line)
    try:
      if "row" in msg:
        timer = prepare(side, classes, msg["row"])
        protocol.write(json.dumps({"ready": True}) + "\n")
      else:
        protocol.write(json.dumps({"seconds": timer()}) + "\n")
    except Exception as e:  # Reported to the driver, which stops with it.
      protocol.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
      return


# ---------------------------------------------------------------- driver side

def setting_env(setting: str) -> dict:
  env = dict(os.environ)
  tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and "malloc.hugetlb" not in t]
  if setting == "hugetlb":
    tunables.append("glibc.malloc.hugetlb=1")
  env.pop("PARSCALE_SYSTEM_MALLOC", None)
  env["GLIBC_TUNABLES"] = ":".join(tunables)
  env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
  return env


class Worker:
  def __init__(self, side: str, threads: int, reference_dir: str, env: dict, log_dir: Path):
    self.side = side
    self.log = log_dir / f"{side}-{threads or 'all'}.log"
    self.proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", side, "--threads", str(threads),
         "--reference-dir", reference_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=open(self.log, "w"), env=env, text=True, bufsize=1)

  def ask(self, msg: dict) -> dict:
    self.proc.stdin.write(json.dumps(msg) + "\n")
    answer = self.proc.stdout.readline()
    if not answer:
      tail = self.log.read_text().strip().splitlines()[-3:]
      raise SystemExit(f"the {self.side} worker stopped: {' | '.join(tail)}")
    out = json.loads(answer)
    if "error" in out:
      raise SystemExit(f"the {self.side} worker failed: {out['error']}")
    return out

  def close(self) -> None:
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def measure(workers: dict, row: dict, turns: int) -> dict:
  """Median seconds per side, the sides taking turns and alternating which goes first."""
  for w in workers.values():
    w.ask({"row": row})
  times = {side: [] for side in workers}
  order = list(workers)
  for i in range(turns):
    for side in (order if i % 2 == 0 else order[::-1]):
      times[side].append(workers[side].ask({"turn": True})["seconds"])
  return {side: statistics.median(t) for side, t in times.items()}


def planned_rows(args) -> list[dict]:
  rows = []
  if "train" in args.tasks:
    rows += [{"task": "train", "shape": TRAIN_SHAPE, "P": p, "dtype": d, "batch": args.batch,
              "seq": args.seq, "threads": 0} for p in args.P for d in args.dtypes]
  if "grid" in args.tasks:
    rows += [{"task": "grid", "size": s, "shape": grid_shape(s), "P": p, "dtype": d, "batch": 8,
              "seq": 128, "threads": 1} for s in GRID_SIZES for p in args.grid_P for d in args.dtypes]
  if "decode" in args.tasks:
    rows += [{"task": "decode", "shape": DECODE_SHAPE, "P": p, "dtype": "float32", "prompt": 64,
              "new_tokens": args.new_tokens, "threads": 0} for p in args.P]
  for r in rows:
    r["prefix"] = args.prefix
  return rows


def main() -> None:
  from parscale_jax.configlib import comma_choices, positive_int, positive_ints
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--reference-dir", required=True, help="a checkout of QwenLM/ParScale")
  parser.add_argument("--settings", type=comma_choices(*SETTINGS), default=",".join(SETTINGS))
  parser.add_argument("--tasks", type=comma_choices("train", "grid", "decode"), default="train,grid,decode")
  parser.add_argument("--P", type=positive_ints, default="1,2,4,8", help="streams of train and decode rows")
  parser.add_argument("--grid-P", type=positive_ints, default="1,4", help="streams of grid rows")
  parser.add_argument("--dtypes", type=comma_choices("float32", "bfloat16"), default="float32",
                      help="our compute dtype in train and grid rows (the reference's is float32)")
  parser.add_argument("--batch", type=positive_int, default=16)
  parser.add_argument("--seq", type=positive_int, default=256)
  parser.add_argument("--prefix", type=positive_int, default=48)
  parser.add_argument("--turns", type=positive_int, default=5, help="timed turns per row and side")
  parser.add_argument("--new-tokens", type=positive_int, default=32)
  parser.add_argument("--out")
  parser.add_argument("--worker", choices=("ours", "reference"), help=argparse.SUPPRESS)
  parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args.worker, args.threads, args.reference_dir)
  if args.new_tokens < 2:
    parser.error("--new-tokens must be >= 2 (the time per token is a difference of two lengths)")
  check_reference_dir(args.reference_dir)
  extra = {"method": "each side in its own process, taking turns", "turns": args.turns,
           "train_shape": TRAIN_SHAPE, "decode_shape": DECODE_SHAPE, "prefix": args.prefix}
  rows, log_dir = [], Path(tempfile.mkdtemp(prefix="vs_reference-"))
  for setting in args.settings:
    env, workers = setting_env(setting), {}
    for row in planned_rows(args):
      for side in ("ours", "reference"):
        if (side, row["threads"]) not in workers:
          workers[side, row["threads"]] = Worker(side, row["threads"], args.reference_dir, env, log_dir)
      t = measure({s: workers[s, row["threads"]] for s in ("ours", "reference")}, row, args.turns)
      rows.append({"setting": setting, "task": row["task"], "size": row.get("size", ""), "P": row["P"],
                   "dtype": row["dtype"], "threads": row["threads"] or "all",
                   "reference_ms": 1e3 * t["reference"], "ours_ms": 1e3 * t["ours"],
                   "ours_vs_reference": t["ours"] / t["reference"]})
      print(rows[-1], flush=True)
      write_record("vs_reference", rows, args.out, {**extra, "complete": False})
    for w in workers.values():
      w.close()
  report("vs_reference", rows, args.out, {**extra, "complete": True})


if __name__ == "__main__":
  main()
