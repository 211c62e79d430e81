"""Tokenizers. The default is byte-level: no vocabulary file, nothing to download."""
from __future__ import annotations

import functools
import hashlib
import os
from typing import Protocol

import numpy as np

from parscale_jax.configlib import ConfigError
from parscale_jax.errors import UserError


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


class HFTokenizer:
  """A local Hugging Face `tokenizer.json` (e.g. Qwen2.5's, for the paper presets), read with the
  `tokenizers` library (the `hf` extra); nothing is downloaded."""

  def __init__(self, path: str):
    from tokenizers import Tokenizer as _Tokenizer

    self.tok = _Tokenizer.from_file(os.path.expanduser(path))
    self.vocab_size = self.tok.get_vocab_size()
    eos = next((t for t in ("<|endoftext|>", "</s>", "<eos>") if self.tok.token_to_id(t) is not None), None)
    self.eos_id = self.tok.token_to_id(eos) if eos else self.vocab_size - 1

  def encode(self, text: str | bytes) -> np.ndarray:
    if isinstance(text, bytes):
      try:
        text = text.decode("utf-8")
      except UnicodeDecodeError as e:
        raise UserError(f"data: a document is not UTF-8 text ({e.reason} at byte {e.start}); "
                        f"the hf tokenizer needs text (the byte tokenizer reads any bytes)") from None
    return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, np.int32)

  def decode(self, ids) -> str:
    return self.tok.decode([int(i) for i in np.asarray(ids).reshape(-1)])

  def num_bytes(self, ids: np.ndarray) -> int:
    return len(self.decode(ids).encode("utf-8"))


TOKENIZERS = {"byte": ByteTokenizer}


def get_tokenizer(name: str) -> Tokenizer:
  """`byte`, or `hf:PATH` for a local tokenizer.json; loaded once per process while the file is
  unchanged (a run asks for it in several places)."""
  if name.startswith("hf:"):
    try:
      st = os.stat(os.path.expanduser(name[3:]))
      return _load_tokenizer(name, (st.st_mtime_ns, st.st_size))
    except OSError:
      pass  # Reported by _load_tokenizer, uncached.
  return _load_tokenizer.__wrapped__(name, None)


@functools.lru_cache(maxsize=8)
def _load_tokenizer(name: str, version) -> Tokenizer:
  """The tokenizer `name`; `version` (the file's mtime and size) keys the cache."""
  if name.startswith("hf:"):
    try:
      return HFTokenizer(name[3:])
    except ImportError:
      raise ConfigError("data.tokenizer: hf:... needs the `tokenizers` package "
                        "(pip install 'parscale-jax[hf]')") from None
    except Exception as e:
      raise ConfigError(f"data.tokenizer: cannot load {name[3:]}: {e}") from None
  if name not in TOKENIZERS:
    raise ConfigError(f"data.tokenizer: unknown tokenizer '{name}' (known: {', '.join(TOKENIZERS)}, "
                      f"hf:PATH)")
  return TOKENIZERS[name]()


def check_vocabulary(tokenizer: str, model_vocab: int, model: str = "model.vocab_size") -> None:
  """Refuses a model whose vocabulary does not cover the tokenizer's ids (they would index past
  the embedding); a larger model vocabulary is fine (Qwen2 pads its own)."""
  vocab = get_tokenizer(tokenizer).vocab_size
  if vocab > model_vocab:
    hint = f"; set model.vocab_size: {vocab}" if model == "model.vocab_size" else ""
    raise ConfigError(f"data.tokenizer {tokenizer} has {vocab} tokens but {model} is {model_vocab}{hint}")


def tokenizer_fingerprint(name: str) -> str:
  """'byte', or 'hf:' and the first 12 hex digits of the tokenizer file's SHA-256: recorded with a
  run, so that evaluation can tell another tokenizer of the same vocabulary size from its own."""
  if not name.startswith("hf:"):
    return name
  path = os.path.expanduser(name[3:])
  try:
    with open(path, "rb") as f:
      return "hf:" + hashlib.sha256(f.read()).hexdigest()[:12]
  except OSError as e:
    raise UserError(f"data.tokenizer: {path}: {e.strerror}") from None
