"""Evaluating a trained model (a run directory or a Hugging Face folder) on a data source."""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path

import jax

from parscale_jax.data.pipeline import DataConfig, bytes_per_token, validation_rows
from parscale_jax.data.tokenizer import check_vocabulary
from parscale_jax.errors import UserError
from parscale_jax.model.hf_checkpoint import checkpoint_folder, load_pretrained
from parscale_jax.train.step import eval_step, split_model
from parscale_jax.train.trainer import evaluate


def _load(checkpoint: str | Path, data: DataConfig):
  """(folder, model, data with the folder's own tokenizer where it has one)."""
  folder = checkpoint_folder(checkpoint)
  if data.tokenizer == "byte" and (folder / "tokenizer.json").exists():
    data = dataclasses.replace(data, tokenizer=f"hf:{folder / 'tokenizer.json'}")
  model = load_pretrained(folder)
  check_vocabulary(data.tokenizer, model.config.vocab_size, "the checkpoint's vocabulary")
  return folder, model, data


def diversity_checkpoint(checkpoint: str | Path, data: DataConfig, alpha: float,
                         batch_size: int = 8) -> dict:
  """stream_diversity of a run or Hugging Face folder over data's validation rows."""
  from parscale_jax.train.diversity import stream_diversity

  folder, model, data = _load(checkpoint, data)
  return {"checkpoint": str(folder), "source": data.source,
          **stream_diversity(model, validation_rows(data, "--tokens"), alpha, batch_size)}


def evaluate_checkpoint(checkpoint: str | Path, data: DataConfig, batch_size: int = 8) -> dict:
  """Mean next-token loss (nats per token) over data's validation rows, bits per byte, tokens/s."""
  folder, model, data = _load(checkpoint, data)
  rows = validation_rows(data, "--tokens")
  graphdef, params, rest = split_model(model, freeze_backbone=False)
  eval_fn = jax.jit(functools.partial(eval_step, graphdef=graphdef))
  start = time.perf_counter()
  loss, sem = evaluate(eval_fn, {"params": params, "frozen": rest}, rows, batch_size, None)
  seconds = time.perf_counter() - start
  bpt = bytes_per_token(data, rows)
  return {"checkpoint": str(folder), "source": data.source, "tokenizer": data.tokenizer,
          "tokens": int(rows[:, 1:].size), "loss": loss,
          "loss_sem": sem if math.isfinite(sem) else None,
          "bits_per_byte": loss / math.log(2) / bpt if bpt else None,
          "tokens_per_s": rows[:, 1:].size / seconds, "P": model.config.P}
