"""`parscale train CONFIG --workdir DIR [--set key=value ...]` and `parscale eval`."""
from __future__ import annotations

import json

from parscale_jax.configlib import positive_int
from parscale_jax.data.config import DataConfig
from parscale_jax.errors import UserError
from parscale_jax.train.config import load_config


def _train(args) -> None:
  from parscale_jax.train.run_record import read_result
  from parscale_jax.train.trainer import train

  config = load_config(args.config, args.set)
  try:
    result = train(config, args.workdir, progress=not args.no_progress)
  except KeyboardInterrupt:
    record = read_result(args.workdir) or {}
    raise KeyboardInterrupt(record.get("reason") if record.get("status") == "interrupted" else "") from None
  summary = {k: result.get(k) for k in ("run_id", "status", "reason", "N", "P", "tokens",
                                        "train_loss", "eval_loss", "eval_loss_sem",
                                        "eval_bits_per_byte", "wall_seconds")}
  print(json.dumps(summary))
  if result["status"] != "done":
    raise UserError(f"run failed: {result['reason']} (last good checkpoint: step "
                    f"{result.get('last_good_step')})")


def _eval(args) -> None:
  from parscale_jax.train.evaluate import evaluate_checkpoint

  data = DataConfig(source=args.data, text_key=args.text_key, tokenizer=args.tokenizer,
                    seq_len=args.seq_len, val_tokens=args.tokens, val_split=args.split,
                    data_dir=args.data_dir)
  print(json.dumps(evaluate_checkpoint(args.checkpoint, data, args.batch_size)))


# Fewer validation tokens leave rho and the stream losses to chance (2 tokens gave rho 0 and a
# predicted multiplier of 1,500).
def register(sub) -> None:
  e = sub.add_parser("eval", help="loss and bits per byte of a run or a pretrained folder on a dataset")
  e.add_argument("--checkpoint", required=True, help="a finished run directory or a Hugging Face folder")
  e.add_argument("--data", default="stdlib", help="data source (as data.source in a config)")
  e.add_argument("--text-key", default="text", help="text field of records or TFDS features")
  e.add_argument("--tokenizer", default="byte",
                 help="byte, or hf:PATH/tokenizer.json (a folder's own tokenizer.json is used if present)")
  e.add_argument("--split", default="validation", help="TFDS split to evaluate")
  e.add_argument("--data-dir", default="~/.cache/parscale_jax/tfds",
                 help="where data sources are built (as data.data_dir)")
  e.add_argument("--tokens", type=positive_int, default=65536, help="target tokens to evaluate")
  e.add_argument("--seq-len", type=positive_int, default=128, help="tokens per row")
  e.add_argument("--batch-size", type=positive_int, default=8, help="rows per forward pass")
  e.set_defaults(func=_eval)

  p = sub.add_parser("train", help="train one model from an experiment config")
  p.add_argument("config", help="experiment YAML, e.g. experiments/tiny.yaml")
  p.add_argument("--workdir", required=True, help="run directory (resumes if it has a checkpoint)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config key, e.g. --set model.P=4 --set optim.lr=1e-3")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=_train)
