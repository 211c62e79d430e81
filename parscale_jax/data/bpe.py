"""Training a byte-level BPE tokenizer on a data source, offline, with the `tokenizers` library."""
from __future__ import annotations

import os
from pathlib import Path

from parscale_jax.configlib import ConfigError
from parscale_jax.data.pipeline import DataConfig, data_source, stored_text_key
from parscale_jax.errors import UserError

EOS = "<|endoftext|>"  # Id 0; `HFTokenizer` ends every document with it.
MIN_VOCAB = 257  # The 256 byte symbols and EOS: every text stays encodable.
MAX_VOCAB = 1 << 20  # Past this, `tokenizers` aborts the process; Qwen2.5's is 151,936.


def train_bpe(data: DataConfig, vocab_size: int, out_dir: str | Path,
              max_documents: int | None = None) -> dict:
  """Trains a byte-level BPE of `vocab_size` tokens on the training split of `data.source` (its
  first `max_documents` documents) and writes out_dir/tokenizer.json; returns a summary.

  Byte-level: every byte has a symbol, so any UTF-8 text encodes with no unknown token, as with
  GPT-2 and Qwen2's tokenizers."""
  if vocab_size < MIN_VOCAB:
    raise ConfigError(f"--vocab-size must be >= {MIN_VOCAB} (256 bytes and {EOS}), got {vocab_size}")
  if vocab_size > MAX_VOCAB:
    raise ConfigError(f"--vocab-size must be <= {MAX_VOCAB}, got {vocab_size}")
  out = Path(out_dir).expanduser() / "tokenizer.json"
  if out.exists():
    raise UserError(f"--out {out.parent}: already holds a tokenizer.json (not overwritten)")
  try:  # Before the training: a folder that cannot take the file is found out now.
    out.parent.mkdir(parents=True, exist_ok=True)
    probe = out.parent / f".write-test-{os.getpid()}"
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise UserError(f"--out {out.parent}: cannot write ({e.strerror})") from None
  try:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  except ImportError:
    raise UserError("tokenizer training needs the `tokenizers` package "
                    "(pip install 'parscale-jax[hf]')") from None

  source = data_source(data, "train")
  key = stored_text_key(data)
  n = len(source) if max_documents is None else min(len(source), max_documents)
  skipped = [0]

  def texts():
    for i in range(n):
      text = source[i][key]
      if isinstance(text, bytes):
        try:
          text = text.decode("utf-8")
        except UnicodeDecodeError:  # Not text: such a document could not be encoded either.
          skipped[0] += 1
          continue
      yield text

  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(texts(), trainer, length=n)
  if n == skipped[0]:
    raise UserError(f"data.source {data.source}: no UTF-8 text among {n} training documents")
  tmp = out.with_name(f".tokenizer.json.{os.getpid()}.tmp")
  try:  # Written beside and renamed: a full disk leaves no truncated tokenizer.json to block a retry.
    tokenizer.save(str(tmp))
    os.replace(tmp, out)
  except Exception as e:
    tmp.unlink(missing_ok=True)
    raise UserError(f"--out {out.parent}: cannot write tokenizer.json ({getattr(e, 'strerror', None) or e})") from None
  return {"tokenizer": str(out), "vocab_size": tokenizer.get_vocab_size(), "documents": n - skipped[0],
          "skipped_non_utf8": skipped[0]}
