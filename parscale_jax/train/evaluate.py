"""Evaluating a trained model (a run directory or a Hugging Face folder) on a data source."""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path

import jax
import numpy as np

from parscale_jax.data.pipeline import DataConfig, bytes_per_token, validation_rows
from parscale_jax.data.tokenizer import check_vocabulary, tokenizer_fingerprint
from parscale_jax.errors import UserError
from parscale_jax.model.hf_checkpoint import checkpoint_folder, load_pretrained
from parscale_jax.rundir import FINAL
from parscale_jax.stats import standard_error
from parscale_jax.train.run_record import read_result
from parscale_jax.train.step import eval_step, split_model


def evaluate(eval_fn, params, frozen, rows: np.ndarray, batch: int, rows_sharding) -> tuple[float, float]:
  """Mean loss over the fixed validation rows and its standard error (over rows)."""
  n = len(rows)
  padded = np.concatenate([rows, rows[: (-n) % batch]]) if n % batch else rows
  losses = []
  for i in range(0, len(padded), batch):
    chunk = jax.device_put(padded[i:i + batch], rows_sharding)
    losses.append(np.asarray(eval_fn(params, frozen, chunk)))
  per_row = np.concatenate(losses)[:n].astype(np.float64)
  sem = standard_error(per_row)
  return float(per_row.mean()), sem


def _load(checkpoint: str | Path, data: DataConfig):
  """(folder, model, data with the folder's own tokenizer where it has one)."""
  folder = checkpoint_folder(checkpoint)
  if data.tokenizer == "byte" and (folder / "tokenizer.json").exists():
    data = dataclasses.replace(data, tokenizer=f"hf:{folder / 'tokenizer.json'}")
  model = load_pretrained(folder)
  check_vocabulary(data.tokenizer, model.config.vocab_size, "the checkpoint's vocabulary")
  run_dir = folder.parent if folder.name == FINAL else folder
  trained_with = (read_result(run_dir) or {}).get("tokenizer")
  if trained_with and trained_with != tokenizer_fingerprint(data.tokenizer):
    raise UserError(f"the run was trained with tokenizer {trained_with}, this evaluation would use "
                    f"{tokenizer_fingerprint(data.tokenizer)} ({data.tokenizer}); pass the run's "
                    f"own with --tokenizer (a Hugging Face run keeps it in final/tokenizer.json)")
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
  loss, sem = evaluate(eval_fn, params, rest, rows, batch_size, None)
  seconds = time.perf_counter() - start
  bpt = bytes_per_token(data, rows)
  return {"checkpoint": str(folder), "source": data.source, "tokenizer": data.tokenizer,
          "tokens": int(rows[:, 1:].size), "loss": loss,
          "val_sem": sem if math.isfinite(sem) else None,
          "bits_per_byte": loss / math.log(2) / bpt if bpt else None,
          "tokens_per_s": rows[:, 1:].size / seconds, "P": model.config.P}
