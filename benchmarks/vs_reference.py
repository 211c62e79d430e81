"""This project against the reference PyTorch implementation (QwenLM/ParScale) on the same machine,
same shapes, taking turns: one AdamW train step at each P in float32 and bfloat16, and batch-1
greedy decoding (ms per new token).

    python benchmarks/vs_reference.py --reference-dir ~/src/ParScale   # a checkout of QwenLM/ParScale
    python benchmarks/vs_reference.py --reference-dir DIR --P 1,8 --steps 3 --no-decode
    python benchmarks/vs_reference.py --reference-dir DIR --no-decode --stream-impl loop --devices 2

The reference is not part of this project: its two files (`modeling_qwen2_parscale.py`,
`configuration_qwen2_parscale.py`) are imported from --reference-dir; it needs torch,
transformers 4.51 and einops (`pip install -e '.[bench]'` in an environment of its own:
transformers 4.51 pins an older `tokenizers` than the test extras).

Train step (defaults as in the issue that asked for this comparison): hidden 128, 4 layers, 4 heads,
4 kv heads, FFN 512, vocabulary 256, sequence 256, batch 16, prefix 48. Ours is the trainer's
jitted step (`benchmarks/train_step.py` builds it); the reference runs forward, cross-entropy,
backward, gradient clipping and AdamW (β2 0.95, weight decay 0.1), with SDPA attention, in
float32: ours in bfloat16 is compared with that, the reference's fastest step on a CPU (under CPU
autocast its bfloat16 step took 7.6 s against 0.74 s in float32 at P = 1; --reference-autocast
measures it). Each time is the median over --steps turns, each an untimed and a timed step of both.
Decode: hidden 1024, 8 layers, FFN 4096, 16 heads, 4 kv heads, vocabulary 256, 64-token prompt;
ms per token = (time for --new-tokens tokens − time for 1) / (--new-tokens − 1), prefill excluded.
Target: ours / reference <= 1.0 in every row. --stream-impl and --devices run our train step as a
CPU user can choose it (model.stream_impl, mesh.cpu_devices); the defaults are the trainer's.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args, get_type_hints

import jax
import jax.numpy as jnp
import numpy as np

from common import report, write_record
from parscale_jax.configlib import comma_choices, positive_int, positive_ints
from parscale_jax.hostmem import restart_with_huge_pages
from parscale_jax.model.config import ModelConfig
from parscale_jax.train.sharding import use_cpu_devices
from train_step import interleaved_medians, prepared_step

REFERENCE_FILES = ("modeling_qwen2_parscale.py", "configuration_qwen2_parscale.py")


def import_reference(directory: str):
  """(model class, config class) from a checkout of QwenLM/ParScale. Its modeling file imports its
  configuration relatively, so both are copied into a temporary package and imported from there."""
  src = Path(directory).expanduser()
  missing = [f for f in REFERENCE_FILES if not (src / f).is_file()]
  if missing:
    raise SystemExit(f"--reference-dir {src}: no {', '.join(missing)} (a checkout of QwenLM/ParScale)")
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


def reference_train_step(classes, shape, P, prefix, dtype, batch, seq):
  """Calling it runs one reference train step and returns its seconds."""
  import torch
  import torch.nn.functional as F
  model = reference_model(classes, shape, P, prefix).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
  ids = torch.randint(0, shape["vocab"], (batch, seq + 1))
  autocast = dtype == "bfloat16"  # Only with --reference-autocast; else the reference runs float32.

  def run() -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      logits = model(input_ids=ids[:, :-1], use_cache=False).logits
    loss = F.cross_entropy(logits.float().reshape(-1, shape["vocab"]), ids[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return time.perf_counter() - start
  run()
  return run


def our_config(shape, P, prefix, dtype, stream_impl=ModelConfig.stream_impl) -> ModelConfig:
  return ModelConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                     intermediate_size=shape["ffn"], num_layers=shape["layers"],
                     num_heads=shape["heads"], num_kv_heads=shape["kv_heads"], P=P,
                     prefix_tokens=prefix, dtype=dtype, stream_impl=stream_impl)


def decode_timers(classes, shape, P, prefix, prompt_len, new_tokens):
  """{"reference": f, "ours": f}: f(n) greedily decodes n tokens after the prompt, returns seconds."""
  import torch

  import parscale_jax as pj
  ref = reference_model(classes, shape, P, prefix).eval()
  prompt = np.random.default_rng(0).integers(0, shape["vocab"], (1, prompt_len)).astype(np.int32)
  ref_prompt = torch.from_numpy(prompt.astype(np.int64))
  ours = pj.create_model(our_config(shape, P, prefix, "float32"))
  our_prompt = jnp.asarray(prompt)

  def reference(n: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
      ref.generate(ref_prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                   pad_token_id=0)
    return time.perf_counter() - start

  def mine(n: int) -> float:
    start = time.perf_counter()
    jax.block_until_ready(pj.generate(ours, our_prompt, n))
    return time.perf_counter() - start
  for f in (reference, mine):  # Compile / warm up both lengths.
    f(1)
    f(new_tokens)
  return {"reference": reference, "ours": mine}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--reference-dir", required=True, help="a checkout of QwenLM/ParScale")
  parser.add_argument("--P", type=positive_ints, default="1,2,4,8")
  parser.add_argument("--dtypes", type=comma_choices("float32", "bfloat16"), default="float32,bfloat16")
  parser.add_argument("--hidden", type=positive_int, default=128)
  parser.add_argument("--layers", type=positive_int, default=4)
  parser.add_argument("--batch", type=positive_int, default=16)
  parser.add_argument("--seq", type=positive_int, default=256)
  parser.add_argument("--prefix", type=positive_int, default=48)
  parser.add_argument("--steps", type=positive_int, default=5, help="timed turns per train step")
  parser.add_argument("--no-decode", action="store_true", help="train steps only")
  parser.add_argument("--stream-impl", choices=get_args(get_type_hints(ModelConfig)["stream_impl"]),
                      default=ModelConfig.stream_impl,
                      help="our train step's model.stream_impl (decoding always runs the default)")
  parser.add_argument("--devices", type=positive_int, default=1,
                      help="our train step data-parallel over this many CPU devices (mesh.cpu_devices)")
  parser.add_argument("--reference-autocast", action="store_true",
                      help="run the reference's bfloat16 rows under CPU autocast instead of float32")
  parser.add_argument("--decode-hidden", type=positive_int, default=1024)
  parser.add_argument("--decode-layers", type=positive_int, default=8)
  parser.add_argument("--new-tokens", type=positive_int, default=32)
  parser.add_argument("--decode-turns", type=positive_int, default=3)
  parser.add_argument("--out")
  args = parser.parse_args()
  if args.new_tokens < 2:
    parser.error("--new-tokens must be >= 2 (the time per token is a difference of two lengths)")
  if args.batch % args.devices:
    parser.error(f"--batch {args.batch} does not split evenly over {args.devices} devices")
  use_cpu_devices(args.devices)
  classes = import_reference(args.reference_dir)
  import torch
  train_shape = {"vocab": 256, "hidden": args.hidden, "ffn": 4 * args.hidden, "layers": args.layers,
                 "heads": 4, "kv_heads": 4}
  decode_shape = {"vocab": 256, "hidden": args.decode_hidden, "ffn": 4 * args.decode_hidden,
                  "layers": args.decode_layers, "heads": 16, "kv_heads": 4}
  extra = {"train_shape": train_shape, "batch": args.batch, "seq": args.seq, "prefix": args.prefix,
           "decode_shape": decode_shape, "new_tokens": args.new_tokens, "torch": torch.__version__,
           "jax": jax.__version__, "torch_threads": torch.get_num_threads(),
           "stream_impl": args.stream_impl, "devices": args.devices}
  rows = []
  for P in args.P:
    for dtype in args.dtypes:
      ref_dtype = dtype if args.reference_autocast else "float32"
      runs = {"reference": reference_train_step(classes, train_shape, P, args.prefix, ref_dtype,
                                                args.batch, args.seq),
              "ours": prepared_step(our_config(train_shape, P, args.prefix, dtype, args.stream_impl),
                                    args.batch, args.seq, args.devices)}
      t = interleaved_medians(runs, args.steps)
      rows.append({"task": "train step", "P": P, "dtype": dtype, "reference_dtype": ref_dtype,
                   "reference_ms": 1e3 * t["reference"],
                   "ours_ms": 1e3 * t["ours"], "ours_vs_reference": t["ours"] / t["reference"]})
      print(rows[-1], flush=True)
      write_record("vs_reference", rows, args.out, {**extra, "complete": False})
  if not args.no_decode:
    for P in args.P:
      timers = decode_timers(classes, decode_shape, P, args.prefix, 64, args.new_tokens)
      per_token = {k: [] for k in timers}
      for _ in range(args.decode_turns):
        for key, f in timers.items():
          per_token[key].append((f(args.new_tokens) - f(1)) / (args.new_tokens - 1))
      ref_ms, our_ms = (1e3 * statistics.median(per_token[k]) for k in ("reference", "ours"))
      rows.append({"task": "decode", "P": P, "dtype": "float32", "reference_dtype": "float32",
                   "reference_ms": ref_ms,
                   "ours_ms": our_ms, "ours_vs_reference": our_ms / ref_ms})
      print(rows[-1], flush=True)
      write_record("vs_reference", rows, args.out, {**extra, "complete": False})
  report("vs_reference", rows, args.out, {**extra, "complete": True})


if __name__ == "__main__":
  restart_with_huge_pages()  # As the `parscale` command runs (parscale_jax/hostmem.py).
  main()
