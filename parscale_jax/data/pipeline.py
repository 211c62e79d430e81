"""grain pipelines: shuffle by seed, tokenize, pack documents into fixed-length rows, batch.

Training rows are `seq_len + 1` tokens (inputs are the first seq_len, targets the last seq_len).
The training iterator is a grain DatasetIterator whose state (a small dict) is checkpointed with
the model, so a resumed run continues with exactly the batches it would have seen.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import grain
from grain.experimental import ConcatThenSplitIterDataset, WindowShuffleIterDataset
import numpy as np
import tensorflow_datasets as tfds

from parscale_jax.data.config import DataConfig
from parscale_jax.data.corpus import build_code_corpus
from parscale_jax.data.tokenizer import Tokenizer, get_tokenizer
from parscale_jax.errors import UserError


_built_in_scope: dict | None = None  # The builders opened inside `one_build_per_corpus`.


@contextlib.contextmanager
def one_build_per_corpus():
  """Within it, each local corpus is listed, checked against its files and opened once (a run
  asks for it three times: the training stream, the validation rows, the result's description).
  Outside, every call looks at the files again, so that a long-lived process sees edits."""
  global _built_in_scope
  outer, _built_in_scope = _built_in_scope, {} if _built_in_scope is None else _built_in_scope
  try:
    yield
  finally:
    _built_in_scope = outer


def prepare_corpus(config: DataConfig):
  """Builds (once) the corpus of a local source with every data.* option that shapes it, and
  returns its builder; None for a TFDS dataset, which is read as it is."""
  if config.source.startswith("tfds:"):
    return None
  key = (config.source, os.path.expanduser(config.data_dir), config.val_percent, config.text_key)
  if _built_in_scope is not None and key in _built_in_scope:
    return _built_in_scope[key]
  builder = build_code_corpus(*key)
  if _built_in_scope is not None:
    _built_in_scope[key] = builder
  return builder


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
  if split not in ("train", "validation"):  # A built corpus has these two splits only.
    raise UserError(f"split {split!r}: a local corpus has the splits 'train' and 'validation'")
  return prepare_corpus(config).as_data_source(split=split)


def stored_text_key(config: DataConfig) -> str:
  """The feature holding a document's text: text_key in a TFDS dataset; a built corpus stores
  every document (a file, or a record's text_key field) under "text"."""
  return config.text_key if config.source.startswith("tfds:") else "text"


class _Tokenize(grain.transforms.Map):
  def __init__(self, tokenizer: Tokenizer, text_key: str):
    self.tokenizer = tokenizer
    self.text_key = text_key

  def map(self, element):
    text = element[self.text_key] if isinstance(element, dict) else element
    ids = self.tokenizer.encode(text)
    return {"tokens": np.concatenate([ids, [self.tokenizer.eos_id]]).astype(np.int32)}


# Tokenised documents read ahead: grain's default (500, on 16 threads) held 2 GB of 1 MiB pieces;
# 16 pieces are at most 64 MiB of int32 tokens, and a train step needs only a few rows.
READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=16)


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
  docs = grain.MapDataset.source(source)[process_index::process_count]
  if config.row_order == "windows":
    return _window_rows(docs, tokenizer, config, seed).to_iter_dataset().batch(
        batch_size, drop_remainder=True)
  ds = (docs.shuffle(seed=seed).repeat(None)
        .map(_Tokenize(tokenizer, stored_text_key(config))).to_iter_dataset(READ_OPTIONS))
  rows = _packed(ds, config.seq_len)
  if config.shuffle_window > 1:
    rows = WindowShuffleIterDataset(rows, window_size=config.shuffle_window, seed=seed)
  return rows.batch(batch_size, drop_remainder=True)


def _window_rows(docs: grain.MapDataset, tokenizer: Tokenizer, config: DataConfig,
                 seed: int) -> grain.MapDataset:
  """Endless rows [seq_len + 1] at uniformly random offsets of the tokenised documents; row i's
  offset is drawn from (seed, i), so the iterator's state is just its position."""
  encode = _Tokenize(tokenizer, stored_text_key(config))
  stream = np.concatenate([encode.map(docs[i])["tokens"] for i in range(len(docs))])
  width = config.seq_len + 1
  if len(stream) <= width:
    raise UserError(f"data.source: the training split of {config.source!r} holds "
                    f"{len(stream)} tokens, fewer than one row of {width}")
  last_start = len(stream) - width

  def window(_, rng: np.random.Generator) -> np.ndarray:
    start = int(rng.integers(0, last_start + 1))
    return stream[start:start + width]

  return grain.MapDataset.range(max(1, len(stream) // width)).repeat(None).random_map(window, seed=seed)


# Validation reads at most this many documents, evenly spaced over the split, so that a large
# TFDS validation split is sampled across its whole length without tokenising all of it.
MAX_VALIDATION_DOCS = 20000


def validation_rows(config: DataConfig, size_option: str = "data.val_tokens") -> np.ndarray:
  """The fixed validation set, int32 [val_tokens // seq_len, seq_len + 1], drawn across the whole
  validation split: the split is packed into disjoint rows in document order; every document
  contributes the row holding its start, and the other rows are evenly spaced over the rest. The
  same for every run, so differences between runs carry no validation sampling error.
  size_option: how the user set val_tokens, named when the split is too small."""
  tokenizer = get_tokenizer(config.tokenizer)
  source = data_source(config, config.val_split)
  n_rows, width = config.val_tokens // config.seq_len, config.seq_len + 1
  doc_ids = np.unique(np.linspace(0, len(source) - 1, min(len(source), MAX_VALIDATION_DOCS)).astype(int))
  encode = _Tokenize(tokenizer, stored_text_key(config))
  tokens_of = lambda j: encode.map(source[int(doc_ids[j])])["tokens"]
  # Two passes, so that memory holds one document and the chosen rows, never the whole split
  # (a 256 MiB document held as int32 tokens took 2.6 GB): lengths first, then the chosen rows.
  lengths = np.array([len(tokens_of(j)) for j in range(len(doc_ids))], np.int64)
  n_packed = int(lengths.sum()) // width
  if n_packed < n_rows:
    raise UserError(f"{size_option}={config.val_tokens}: the validation split of "
                    f"{config.source!r} holds only {n_packed * config.seq_len} tokens; ask for "
                    f"at most that many")
  starts = np.cumsum(lengths) - lengths
  doc_rows = np.unique(starts // width)
  doc_rows = doc_rows[doc_rows < n_packed]
  if len(doc_rows) >= n_rows:
    chosen = doc_rows[np.linspace(0, len(doc_rows) - 1, n_rows).astype(int)]
  else:
    rest = np.setdiff1d(np.arange(n_packed), doc_rows)
    picks = rest[(np.arange(n_rows - len(doc_rows)) * len(rest)) // (n_rows - len(doc_rows))]
    chosen = np.sort(np.concatenate([doc_rows, picks]))
  return rows_of_stream(chosen, width, starts, lengths, tokens_of)


def rows_of_stream(chosen: np.ndarray, width: int, starts: np.ndarray, lengths: np.ndarray,
                    tokens_of) -> np.ndarray:
  """Rows `chosen` (sorted) of the documents' concatenated tokens cut into rows of `width`,
  tokenising only the documents they overlap, each once."""
  rows = np.empty((len(chosen), width), np.int32)
  ends = starts + lengths
  cached = (None, None)
  for out, row in enumerate(chosen):
    lo, hi = int(row) * width, (int(row) + 1) * width
    for j in range(int(np.searchsorted(ends, lo, "right")), int(np.searchsorted(starts, hi, "left"))):
      if cached[0] != j:
        cached = (j, tokens_of(j))
      a, b = max(lo, starts[j]), min(hi, ends[j])
      rows[out, a - lo:b - lo] = cached[1][a - starts[j]:b - starts[j]]
  return rows


def bytes_per_token(config: DataConfig, rows: np.ndarray) -> float:
  """UTF-8 bytes per target token of `rows`, to turn nats per token into bits per byte."""
  tokenizer = get_tokenizer(config.tokenizer)
  targets = rows[:, 1:]
  return tokenizer.num_bytes(targets) / targets.size


def describe_source(config: DataConfig) -> dict:
  builder = prepare_corpus(config)
  if builder is None:
    return {"source": config.source}
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
