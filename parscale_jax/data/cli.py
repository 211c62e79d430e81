"""`parscale tokenizer train --source SRC --vocab-size N --out DIR`."""
from __future__ import annotations

import json

from parscale_jax.configlib import positive_int
from parscale_jax.data.config import DataConfig


def _train_tokenizer(args) -> None:
  from parscale_jax.data.bpe import train_bpe

  data = DataConfig(source=args.source, text_key=args.text_key, data_dir=args.data_dir,
                    val_percent=args.val_percent)
  summary = train_bpe(data, args.vocab_size, args.out, args.max_documents)
  print(json.dumps(summary))
  print(f"use it with: --set data.tokenizer=hf:{summary['tokenizer']} "
        f"--set model.vocab_size={summary['vocab_size']}")


def register(sub) -> None:
  tok = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer on a data source")
  actions = tok.add_subparsers(dest="action", required=True)
  t = actions.add_parser("train", help="train a byte-level BPE on a source's training split")
  t.add_argument("--source", required=True, help="data source (as data.source in a config)")
  t.add_argument("--vocab-size", type=positive_int, required=True, help="tokens, including EOS")
  t.add_argument("--out", required=True, help="folder for tokenizer.json (must not hold one)")
  t.add_argument("--text-key", default="text", help="text field of records or TFDS features")
  t.add_argument("--data-dir", default="~/.cache/parscale_jax/tfds", help="where sources are built")
  t.add_argument("--val-percent", type=positive_int, default=5, help="share held out, as in training")
  t.add_argument("--max-documents", type=positive_int, help="train on the first N documents only")
  t.set_defaults(func=_train_tokenizer)
