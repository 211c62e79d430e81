"""grain pipelines: shuffle by seed, tokenize, pack documents into fixed-length rows, batch.

Training rows are `seq_len + 1` tokens (inputs are the first seq_len, targets the last seq_len).
The training iterator is a grain DatasetIterator whose state (a small dict) is checkpointed with
the model, so a resumed run continues with exactly the batches it would have seen.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import grain
import numpy as np
import tensorflow_datasets as tfds
from grain.experimental import ConcatThenSplitIterDataset, WindowShuffleIterDataset

from parscale_jax.data.corpus import STDLIB, build_code_corpus
from parscale_jax.data.tokenizer import Tokenizer, get_tokenizer
from parscale_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the documents come from and how they become batches."""

  # "stdlib" (the built-in offline corpus), a directory or glob of text files, or "tfds:NAME"
  # for any TFDS text dataset already in data_dir.
  source: str = STDLIB
  data_dir: str = "~/.cache/parscale_jax/tfds"  # Where built datasets are stored and reused.
  text_key: str = "text"  # The text feature of a TFDS dataset.
  val_split: str = "validation"  # TFDS split used for evaluation ("stdlib"/files: 5 % of files).
  val_percent: int = 5  # Share of files, by path hash, held out for validation (built-in corpus).
  tokenizer: str = "byte"  # Tokenizer name (see data/tokenizer.py).
  seq_len: int = 128  # Tokens per training row.
  # Seed of the document order, each epoch reshuffled; None: the run's `seed`, so that seeds as a
  # sweep axis vary the data order as well as the initialisation.
  shuffle_seed: int | None = None
  # Packed rows are shuffled within windows of this many rows, so that a batch mixes many
  # documents instead of consecutive slices of one file.
  shuffle_window: int = 16384
  val_tokens: int = 65536  # Fixed validation budget, in target tokens.

  def __post_init__(self):
    from parscale_jax.configlib import ConfigError
    if self.seq_len < 2:
      raise ConfigError(f"data.seq_len must be >= 2, got {self.seq_len}")
    if self.val_tokens < self.seq_len:
      raise ConfigError(f"data.val_tokens={self.val_tokens} is less than one row (seq_len={self.seq_len})")
    if not 0 < self.val_percent < 100:
      raise ConfigError(f"data.val_percent must be in (0, 100), got {self.val_percent}")


def data_source(config: DataConfig, split: str):
  """A random-access source of documents (dicts with a text feature) for `split`."""
  data_dir = os.path.expanduser(config.data_dir)
  if config.source.startswith("tfds:"):
    name = config.source[len("tfds:"):]
    try:
      return tfds.data_source(name, data_dir=data_dir, split=split, download=False)
    except Exception as e:  # tfds raises many types; the user needs the one line.
      raise UserError(f"data.source: cannot open TFDS dataset {name!r} split {split!r} in "
                      f"{data_dir}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
  builder = build_code_corpus(config.source, data_dir, config.val_percent)
  return builder.as_data_source(split="train" if split == "train" else "validation")


class _Tokenize(grain.transforms.Map):
  def __init__(self, tokenizer: Tokenizer, text_key: str):
    self.tokenizer = tokenizer
    self.text_key = text_key

  def map(self, element):
    text = element[self.text_key] if isinstance(element, dict) else element
    ids = self.tokenizer.encode(text)
    return {"tokens": np.concatenate([ids, [self.tokenizer.eos_id]]).astype(np.int32)}


def _packed(ds: grain.IterDataset, seq_len: int) -> grain.IterDataset:
  packed = ConcatThenSplitIterDataset(ds, length_struct={"tokens": seq_len + 1})
  return packed.map(lambda x: x["tokens"])


def train_dataset(config: DataConfig, batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> grain.IterDataset:
  """Endless batches int32 [batch_size, seq_len + 1]; with several processes, each reads its own
  slice of the documents and makes batch_size rows of the global batch."""
  tokenizer = get_tokenizer(config.tokenizer)
  source = data_source(config, "train")
  if len(source) < process_count:
    raise UserError(f"data.source: the training split of {config.source!r} has {len(source)} "
                    f"documents, fewer than {process_count} processes")
  seed = 0 if config.shuffle_seed is None else config.shuffle_seed
  ds = grain.MapDataset.source(source)[process_index::process_count]
  ds = (ds.shuffle(seed=seed).repeat(None)
        .map(_Tokenize(tokenizer, config.text_key)).to_iter_dataset())
  rows = _packed(ds, config.seq_len)
  if config.shuffle_window > 1:
    rows = WindowShuffleIterDataset(rows, window_size=config.shuffle_window, seed=seed)
  return rows.batch(batch_size, drop_remainder=True)


def validation_rows(config: DataConfig) -> np.ndarray:
  """The fixed validation set: the first val_tokens target tokens of the validation split, in
  file order, as rows int32 [n, seq_len + 1]."""
  tokenizer = get_tokenizer(config.tokenizer)
  source = data_source(config, config.val_split)
  n_rows = config.val_tokens // config.seq_len
  ds = grain.MapDataset.source(source).map(_Tokenize(tokenizer, config.text_key)).to_iter_dataset()
  rows = []
  for row in _packed(ds, config.seq_len):
    rows.append(row)
    if len(rows) == n_rows:
      break
  if len(rows) < n_rows:
    raise UserError(f"data.val_tokens={config.val_tokens}: the validation split of "
                    f"{config.source!r} holds only {len(rows) * config.seq_len} tokens")
  return np.stack(rows).astype(np.int32)


def bytes_per_token(config: DataConfig, rows: np.ndarray) -> float:
  """UTF-8 bytes per target token of `rows`, to turn nats per token into bits per byte."""
  tokenizer = get_tokenizer(config.tokenizer)
  targets = rows[:, 1:]
  return tokenizer.num_bytes(targets) / targets.size


def describe_source(config: DataConfig) -> dict:
  if config.source.startswith("tfds:"):
    return {"source": config.source}
  builder = build_code_corpus(config.source, os.path.expanduser(config.data_dir), config.val_percent)
  return dict(builder.info.metadata.get("fingerprint", {}), data_dir=str(Path(builder.data_dir)))


def _lists_to_tuples(state):
  if isinstance(state, dict):
    return {k: _lists_to_tuples(v) for k, v in state.items()}
  if isinstance(state, list):
    return tuple(_lists_to_tuples(v) for v in state)
  return state


class ResumableIterator:
  """A grain iterator whose state survives a JSON round trip.

  grain checkpoints iterator state as JSON, which turns tuples into lists; ConcatThenSplit's state
  holds tuples that it compares with a tuple sentinel, so a plain round trip resumes on different
  rows. This wrapper serialises the state itself (the byte-state protocol of grain's orbax
  handler, one file per process) and restores the tuples.
  """

  def __init__(self, iterator):
    self.iterator = iterator

  def __iter__(self):
    return self

  def __next__(self):
    return next(self.iterator)

  def get_state(self) -> bytes:
    return json.dumps(self.iterator.get_state()).encode()

  def set_state(self, state: bytes) -> None:
    self.iterator.set_state(_lists_to_tuples(json.loads(state)))

  def start_prefetch(self) -> None:
    pass
