"""The training loop: initialise (abstractly, then sharded), resume, train, evaluate, checkpoint.

`parscale train CONFIG --workdir DIR` calls `train`; sweep workers call it directly.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx

from parscale_jax.configlib import ConfigError
from parscale_jax.errors import UserError
from parscale_jax.locks import DirLock
from parscale_jax.data.pipeline import (ResumableIterator, bytes_per_token, describe_source,
                                        train_dataset, validation_rows)
from parscale_jax.data.tokenizer import check_vocabulary
from parscale_jax.model.accounting import flops_per_token, param_counts
from parscale_jax.model.config import PRESETS
from parscale_jax.model.hf_checkpoint import (CheckpointError, checkpoint_folder, load_pretrained,
                                              save_pretrained)
from parscale_jax.model.parscale import ParScaleLM
from parscale_jax.train import checkpointing, sharding
from parscale_jax.train.config import TrainConfig, config_to_dict
from parscale_jax.train.metrics import MetricsWriter, write_json_atomic
from parscale_jax.train.optimizer import lr_schedule, make_optimizer
from parscale_jax.train.step import jit_eval_step, jit_train_step, split_model

BACKBONE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                   "num_kv_heads", "rope_theta", "rms_norm_eps", "tie_embeddings")


def size_name(config) -> str:
  """The preset a model config was made from, or 'custom'."""
  for name, fields in PRESETS.items():
    if all(getattr(config, k) == v for k, v in fields.items()):
      return name
  return "custom"


def _load_backbone_source(init_from: str, config) -> ParScaleLM:
  try:
    path = checkpoint_folder(init_from)
  except CheckpointError:
    raise ConfigError(f"init_from: {init_from} is neither a finished run directory nor a "
                      f"Hugging Face checkpoint folder") from None
  base = load_pretrained(path, scan_layers=config.scan_layers)
  if base.config.P != 1:
    raise ConfigError(f"init_from: {init_from} has P={base.config.P}; two-stage training starts "
                      f"from a P = 1 backbone")
  for field in BACKBONE_FIELDS:
    if getattr(base.config, field) != getattr(config, field):
      raise ConfigError(f"init_from: {field}={getattr(base.config, field)} in {init_from} but "
                        f"{getattr(config, field)} in this run's model")
  return base


def _init_state(config: TrainConfig, mesh, optimizer):
  """Abstract shapes and shardings first; then parameters created directly in place."""
  model_config = config.model
  abstract = nnx.eval_shape(lambda: ParScaleLM(model_config, nnx.Rngs(params=config.seed)))
  graphdef, abs_params, abs_frozen = split_model(abstract, config.freeze_backbone)
  abs_state = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": abs_params,
               "frozen": abs_frozen,
               "opt_state": jax.eval_shape(optimizer.init, abs_params)}
  state_shardings = sharding.tree_shardings(mesh, abs_state)

  def create(key):
    model = ParScaleLM(model_config, nnx.Rngs(params=key))
    _, params, frozen = split_model(model, config.freeze_backbone)
    return params, frozen

  return graphdef, abs_state, state_shardings, create


def _fresh_state(config, create, state_shardings, optimizer, graphdef):
  create_jit = jax.jit(create, out_shardings=(state_shardings["params"], state_shardings["frozen"]))
  # The key is an argument, not a constant, so that XLA cannot constant-fold the random numbers
  # (see create_model).
  params, frozen = create_jit(jax.random.key(config.seed))
  if config.init_from:
    base = _load_backbone_source(config.init_from, config.model)
    model = nnx.merge(graphdef, params, frozen)
    nnx.update(model.embed_tokens, nnx.state(base.embed_tokens))
    nnx.update(model.backbone, nnx.state(base.backbone))
    if not config.model.tie_embeddings:
      nnx.update(model.lm_head, nnx.state(base.lm_head))
    _, params, frozen = split_model(model, config.freeze_backbone)
    params = jax.device_put(params, state_shardings["params"])
    frozen = jax.device_put(frozen, state_shardings["frozen"])
  opt_state = jax.jit(optimizer.init, out_shardings=state_shardings["opt_state"])(params)
  step = jax.device_put(jnp.zeros((), jnp.int32), state_shardings["step"])
  return {"step": step, "params": params, "frozen": frozen, "opt_state": opt_state}


def fresh_train_state(config: TrainConfig, mesh, optimizer):
  """(graphdef, state, state_shardings) of a new run: the parameters `train` starts from (init_from
  applied), its optimizer state, and the shardings of the train step's state argument."""
  graphdef, _, state_shardings, create = _init_state(config, mesh, optimizer)
  return graphdef, _fresh_state(config, create, state_shardings, optimizer, graphdef), state_shardings


def _check_workdir(workdir: Path, config: TrainConfig) -> None:
  """Refuses to resume a run under another config; a workdir with nothing to resume is reused."""
  saved = workdir / "config.yaml"
  current = config_to_dict(config)
  has_checkpoint = (workdir / "checkpoints").exists() and any(
      p.name.isdigit() for p in (workdir / "checkpoints").iterdir())
  if saved.exists() and has_checkpoint:
    previous = yaml.safe_load(saved.read_text())
    # W&B logging may be turned on for a resumed run; a key the saved config lacks (written by
    # an earlier version) counts as its default.
    defaults = config_to_dict(TrainConfig())
    changed = sorted(k for k in (set(previous) | set(current)) - {"wandb"}
                     if previous.get(k, defaults.get(k)) != current.get(k))
    if changed:
      raise ConfigError(f"{workdir} holds a run with a different config (differs in: "
                        f"{', '.join(changed)}); use another --workdir")
  else:
    saved.write_text(yaml.safe_dump(current, sort_keys=False))


def _check_mesh(config: TrainConfig, mesh) -> int:
  n_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  micro_rows = config.batch_size // config.grad_accum
  if micro_rows % n_shards:
    raise ConfigError(f"batch_size / grad_accum = {micro_rows} rows is not divisible by the "
                      f"{n_shards} data shards of the mesh")
  return n_shards


def evaluate(eval_fn, state, rows: np.ndarray, batch: int, rows_sharding) -> tuple[float, float]:
  """Mean loss over the fixed validation rows and its standard error (over rows)."""
  n = len(rows)
  padded = np.concatenate([rows, rows[: (-n) % batch]]) if n % batch else rows
  losses = []
  for i in range(0, len(padded), batch):
    chunk = jax.device_put(padded[i:i + batch], rows_sharding)
    losses.append(np.asarray(eval_fn(state["params"], state["frozen"], chunk)))
  per_row = np.concatenate(losses)[:n].astype(np.float64)
  sem = float(per_row.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
  return float(per_row.mean()), sem


def train(config: TrainConfig, workdir: str | Path, *, run_id: str | None = None,
          progress: bool = True) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the result written to result.json."""
  start_time = time.time()
  workdir = Path(workdir)
  run_id = run_id or workdir.name
  sharding.use_cpu_devices(config.mesh.cpu_devices)
  sharding.maybe_initialize_distributed()
  mesh = sharding.make_mesh(config.mesh)
  n_shards = _check_mesh(config, mesh)  # Every check that needs no files comes before any is written.
  check_vocabulary(config.data.tokenizer, config.model.vocab_size)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    lock = DirLock(workdir, ".train.lock")
  except OSError as e:
    raise UserError(f"--workdir {workdir}: cannot be used as a run directory ({e.strerror})") from None
  if not lock.acquire():
    raise UserError(f"--workdir {workdir}: another process is training in it")
  try:
    return _train_locked(config, workdir, run_id, progress, mesh, n_shards, start_time)
  finally:
    lock.release()


def _train_locked(config, workdir, run_id, progress, mesh, n_shards, start_time) -> dict:
  _check_workdir(workdir, config)

  steps = config.steps
  optimizer = make_optimizer(config.optim, steps)
  schedule = lr_schedule(config.optim, steps)
  graphdef, abs_state, state_shardings, create = _init_state(config, mesh, optimizer)
  rows_sharding = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)
  step_fn = jit_train_step(graphdef, optimizer, state_shardings, rows_sharding, repl)
  eval_rows_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  eval_fn = jit_eval_step(graphdef, state_shardings["params"], state_shardings["frozen"],
                          eval_rows_sharding, repl)

  mngr = checkpointing.manager(workdir, config.keep_checkpoints)
  process_count, process_index = jax.process_count(), jax.process_index()
  dataset = train_dataset(config.train_data, config.batch_size // process_count, process_index, process_count)
  data_iter = ResumableIterator(iter(dataset))
  start_step = mngr.latest_step() or 0
  meta = {"wall_seconds": 0.0, "train_losses": []}
  if start_step:
    try:
      state, meta = checkpointing.restore(mngr, start_step, abs_state, state_shardings, data_iter)
    except UserError as e:  # The run stays failed with the reason, not `running`, for retries.
      previous = workdir / "result.json"
      result = json.loads(previous.read_text()) if previous.exists() else {"run_id": run_id}
      write_json_atomic(previous, {**result, "status": "failed", "reason": str(e)})
      raise
  else:
    state = _fresh_state(config, create, state_shardings, optimizer, graphdef)
  wall_before = float(meta["wall_seconds"])
  recent_losses: list[float] = list(meta.get("train_losses", []))

  counts = param_counts(config.model)
  val_rows = validation_rows(config.data)
  eval_batch = max(n_shards, min(config.batch_size, len(val_rows)) // n_shards * n_shards)
  writer = MetricsWriter(workdir, start_step, config.tensorboard and process_index == 0,
                         config.wandb if process_index == 0 else None, run_id, config_to_dict(config))
  result = {"run_id": run_id, "size": size_name(config.model), "N": counts.non_embedding,
            "N_backbone": counts.backbone,
            "P": config.model.P, "params_total": counts.total, "devices": int(mesh.devices.size),
            "tokens": steps * config.tokens_per_step, "steps": steps, "seed": config.seed,
            "flops": flops_per_token(config.model, config.data.seq_len) * steps * config.tokens_per_step,
            "data": describe_source(config.data), "status": "running", "reason": None}
  write_json_atomic(workdir / "result.json", result)

  def to_device(rows):
    local = rows.reshape(config.grad_accum, -1, rows.shape[-1])
    return jax.make_array_from_process_local_data(rows_sharding, local)

  def session_wall():
    return wall_before + time.time() - start_time

  bar = None
  if progress and process_index == 0:
    from tqdm import tqdm
    bar = tqdm(total=steps, initial=start_step, desc=run_id, unit="step", dynamic_ncols=True)
  pending = None  # (step, metrics on device): fetched one step late so the host never stalls.
  window_start, window_tokens = time.time(), 0
  failure = None

  def fetch(step, metrics):
    nonlocal window_start, window_tokens
    loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
    if not math.isfinite(loss):
      return f"loss is {loss} at step {step}"
    recent_losses.append(loss)
    del recent_losses[:-20]
    if step % config.log_every == 0 or step == steps:
      elapsed = max(time.time() - window_start, 1e-9)
      record = {"step": step, "tokens": step * config.tokens_per_step, "loss": loss,
                "lr": float(schedule(step - 1)), "grad_norm": grad_norm,
                "tokens_per_s": window_tokens / elapsed, "wall_seconds": session_wall()}
      if process_index == 0:
        writer.write(record)
      if bar is not None:
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
      window_start, window_tokens = time.time(), 0
    return None

  try:
    for step in range(start_step + 1, steps + 1):
      rows = next(data_iter)
      state, metrics = step_fn(state, to_device(rows))
      window_tokens += config.tokens_per_step
      if pending is not None:
        failure = fetch(*pending)
        if failure:
          break
      pending = (step, metrics)
      if bar is not None:
        bar.update(1)
      save_now = step % config.checkpoint_every == 0 or step == steps
      eval_now = bool(config.eval_every) and step % config.eval_every == 0 and step != steps
      if save_now or eval_now:  # Both need this step's loss checked first.
        failure = fetch(*pending)
        pending = None
        if failure:
          break
        if eval_now:
          eval_loss, eval_sem = evaluate(eval_fn, state, val_rows, eval_batch, eval_rows_sharding)
          if process_index == 0:
            writer.write({"step": step, "eval_loss": eval_loss, "eval_loss_sem": eval_sem})
          if not math.isfinite(eval_loss):
            failure = f"validation loss is {eval_loss} at step {step}"
            break
        if save_now:
          checkpointing.save(mngr, step, state, data_iter,
                             {"wall_seconds": session_wall(), "train_losses": recent_losses})
    if pending is not None and not failure:
      failure = fetch(*pending)
  finally:
    if bar is not None:
      bar.close()

  if failure:
    result.update(status="failed", reason=failure, wall_seconds=session_wall(),
                  last_good_step=mngr.latest_step())
    write_json_atomic(workdir / "result.json", result)
    writer.close()
    return result

  eval_loss, eval_sem = evaluate(eval_fn, state, val_rows, eval_batch, eval_rows_sharding)
  bpt = bytes_per_token(config.data, val_rows)
  if process_index == 0:
    writer.write({"step": steps, "eval_loss": eval_loss, "eval_loss_sem": eval_sem})
  writer.close()
  if not math.isfinite(eval_loss):  # Diverged weights are never exported as a finished model.
    result.update(status="failed", reason=f"final validation loss is {eval_loss}",
                  wall_seconds=session_wall(), last_good_step=None)
    write_json_atomic(workdir / "result.json", result)
    return result
  if config.export_final and process_index == 0:
    save_pretrained(nnx.merge(graphdef, state["params"], state["frozen"]), workdir / "final")
    if config.data.tokenizer.startswith("hf:"):  # A Hugging Face folder carries its tokenizer.
      shutil.copyfile(os.path.expanduser(config.data.tokenizer[3:]), workdir / "final" / "tokenizer.json")
  result.update(
      status="done", train_loss=float(np.mean(recent_losses)) if recent_losses else None,
      eval_loss=eval_loss, eval_loss_sem=eval_sem, eval_tokens=int(val_rows[:, 1:].size),
      eval_bits_per_byte=eval_loss / math.log(2) / bpt if bpt else None,
      wall_seconds=session_wall())
  if process_index == 0:
    write_json_atomic(workdir / "result.json", result)
  return result
