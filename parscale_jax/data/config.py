"""DataConfig: where a run's documents come from and how they become batches (read by configs and
command lines without loading the data libraries)."""
from __future__ import annotations

import dataclasses
from typing import Literal

from parscale_jax.configlib import ConfigError, check_choices

STDLIB = "stdlib"  # The built-in offline corpus: this interpreter's standard library.


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the documents come from and how they become batches."""

  # "stdlib" (the built-in offline corpus); a directory or glob of text files (one document each);
  # JSON lines (.jsonl/.json) or Parquet files, or a `datasets.save_to_disk` folder (one document
  # per record, split by a hash of its text); or "tfds:NAME" for a TFDS text dataset in data_dir.
  source: str = STDLIB
  data_dir: str = "~/.cache/parscale_jax/tfds"  # Where built datasets are stored and reused.
  text_key: str = "text"  # The text field of records, or the text feature of a TFDS dataset.
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
  # How training rows are drawn: "documents" packs documents in a seeded shuffled order (rows
  # then mixed within shuffle_window); "windows" tokenises the whole training split once and
  # starts every row at a uniformly random token offset.
  row_order: Literal["documents", "windows"] = "documents"

  def __post_init__(self):
    check_choices(self, "data.")
    if self.seq_len < 2:
      raise ConfigError(f"data.seq_len must be >= 2, got {self.seq_len}")
    if self.val_tokens < self.seq_len:
      raise ConfigError(f"data.val_tokens={self.val_tokens} is less than one row (seq_len={self.seq_len})")
    if self.shuffle_window < 1:
      raise ConfigError(f"data.shuffle_window must be >= 1, got {self.shuffle_window}")
    if self.shuffle_seed is not None and self.shuffle_seed < 0:
      raise ConfigError(f"data.shuffle_seed must be >= 0, got {self.shuffle_seed}")
    if not 0 < self.val_percent < 100:
      raise ConfigError(f"data.val_percent must be in (0, 100), got {self.val_percent}")
