"""Tokenizers. The default is byte-level: no vocabulary file, nothing to download."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Tokenizer(Protocol):
  vocab_size: int
  eos_id: int

  def encode(self, text: str | bytes) -> np.ndarray: ...

  def decode(self, ids) -> str: ...

  def num_bytes(self, ids: np.ndarray) -> int:
    """UTF-8 bytes that `ids` stand for (for bits per byte)."""


class ByteTokenizer:
  """UTF-8 bytes as tokens 0..255, plus an end-of-document token 256."""

  vocab_size = 257
  eos_id = 256

  def encode(self, text: str | bytes) -> np.ndarray:
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    ids = np.asarray(ids).reshape(-1)
    return bytes(int(i) for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

  def num_bytes(self, ids: np.ndarray) -> int:
    return int(np.sum(np.asarray(ids) < 256))


TOKENIZERS = {"byte": ByteTokenizer}


def get_tokenizer(name: str) -> Tokenizer:
  from parscale_jax.configlib import ConfigError

  if name not in TOKENIZERS:
    raise ConfigError(f"data.tokenizer: unknown tokenizer '{name}' (known: {', '.join(TOKENIZERS)})")
  return TOKENIZERS[name]()
