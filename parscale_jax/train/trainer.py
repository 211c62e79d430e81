"""The training loop: initialise (abstractly, then sharded), resume, train, evaluate, checkpoint.

`parscale train CONFIG --workdir DIR` calls `train`; sweep workers call it directly.
"""
from __future__ import annotations

import math
import os
import dataclasses
import shutil
import sys
import time
from typing import Any, Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx

from parscale_jax import bars
from parscale_jax.atomic import write_text_atomic
from parscale_jax.configlib import ConfigError
from parscale_jax.errors import UserError
from parscale_jax.hostmem import reuse_step_memory
from parscale_jax.locks import DirLock
from parscale_jax.rundir import TRAIN_LOCK, RunDir
from parscale_jax.data.pipeline import (ResumableIterator, bytes_per_token, describe_source,
                                        one_build_per_corpus, train_dataset, validation_rows)
from parscale_jax.data.tokenizer import check_vocabulary, tokenizer_fingerprint
from parscale_jax.model.accounting import flops_per_token, param_counts
from parscale_jax.model.hf_checkpoint import (CheckpointError, checkpoint_folder, load_pretrained,
                                              save_pretrained)
from parscale_jax.model.keys import KeySequence
from parscale_jax.model.parscale import ParScaleLM, abstract_model
from parscale_jax.train import checkpointing, sharding
from parscale_jax.train.config import TrainConfig, config_differences, config_to_dict
from parscale_jax.train.evaluate import evaluate
from parscale_jax.train.metrics import MetricsWriter
from parscale_jax.train.run_record import RunRecord, failure_reason
from parscale_jax.train.optimizer import lr_schedule, make_optimizer
from parscale_jax.train.step import TrainState, jit_eval_step, jit_train_step, split_model

BACKBONE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                   "num_kv_heads", "rope_theta", "rms_norm_eps", "tie_embeddings")


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


@dataclasses.dataclass(frozen=True)
class Training:
  """What a run trains with on a mesh: the model's graph, the state's abstract shapes and
  shardings, the optimizer, and the jitted steps (the trainer's, the benchmarks' and the tests').
  `build_training` makes one; `fresh_state` is the one way to a new run's state."""

  config: TrainConfig
  graphdef: Any
  abstract_state: TrainState  # Of ShapeDtypeStructs.
  state_shardings: TrainState  # Of NamedShardings.
  optimizer: Any  # optax.GradientTransformation
  train_step: Callable  # (state, rows_AxBxS1) -> (state, metrics); donates state.
  eval_step: Callable  # (params, frozen, rows_BxS1) -> per-row mean loss [B].
  rows_sharding: Any
  eval_rows_sharding: Any

  def _create(self, key):
    _, params, frozen = split_model(ParScaleLM(self.config.model, KeySequence(key)),
                                    self.config.freeze_backbone)
    return params, frozen

  def fresh_state(self) -> TrainState:
    """A new run's state: parameters created in place (init_from applied) and their optimizer
    state, under the train step's shardings."""
    config, shardings = self.config, self.state_shardings
    create = jax.jit(self._create, out_shardings=(shardings.params, shardings.frozen))
    # The key is an argument, not a constant, so that XLA cannot constant-fold the random numbers
    # (see create_model).
    params, frozen = create(jax.random.key(config.seed))
    if config.init_from:
      base = _load_backbone_source(config.init_from, config.model)
      model = nnx.merge(self.graphdef, params, frozen)
      nnx.update(model.embed_tokens, nnx.state(base.embed_tokens))
      nnx.update(model.backbone, nnx.state(base.backbone))
      if not config.model.tie_embeddings:
        nnx.update(model.lm_head, nnx.state(base.lm_head))
      _, params, frozen = split_model(model, config.freeze_backbone)
      params = jax.device_put(params, shardings.params)
      frozen = jax.device_put(frozen, shardings.frozen)
    opt_state = jax.jit(self.optimizer.init, out_shardings=shardings.opt_state)(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
    return TrainState(step=step, params=params, frozen=frozen, opt_state=opt_state)


def build_training(config: TrainConfig, mesh) -> Training:
  """The public seam to a run's training: everything `train` compiles, without data or files.
  Abstract shapes and shardings first: no parameter exists until fresh_state or a restore."""
  optimizer = make_optimizer(config.optim, config.steps)
  abstract = abstract_model(config.model)
  graphdef, abs_params, abs_frozen = split_model(abstract, config.freeze_backbone)
  abstract_state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abs_params,
                              frozen=abs_frozen, opt_state=jax.eval_shape(optimizer.init, abs_params))
  state_shardings = sharding.tree_shardings(mesh, abstract_state)
  rows_sharding, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  eval_rows_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  return Training(
      config, graphdef, abstract_state, state_shardings, optimizer,
      jit_train_step(graphdef, optimizer, state_shardings, rows_sharding, repl),
      jit_eval_step(graphdef, state_shardings.params, state_shardings.frozen,
                    eval_rows_sharding, repl),
      rows_sharding, eval_rows_sharding)


def _check_workdir(workdir: Path, config: TrainConfig) -> bool:
  """Refuses to resume a run under another config; a workdir with nothing to resume is reused.
  True when config.yaml is to be written once the checkpoint has restored under this config
  (checkpoints without a config.yaml: written now, a wrong config would replace the lost one)."""
  saved = RunDir(workdir).saved_config()
  has_checkpoint = RunDir(workdir).latest_checkpoint() is not None
  if saved is not None and has_checkpoint:
    changed = config_differences(saved, config)
    if changed:
      raise ConfigError(f"{workdir} holds a run with a different config (differs in: "
                        f"{', '.join(changed)}); use another --workdir")
    return False
  if has_checkpoint:
    return True
  _write_config(workdir, config)
  return False


def _write_config(workdir: Path, config: TrainConfig) -> None:
  write_text_atomic(RunDir(workdir).config, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def check_mesh(config: TrainConfig, mesh) -> int:
  n_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  micro_rows = config.batch_size // config.grad_accum
  if micro_rows % n_shards:
    raise ConfigError(f"batch_size / grad_accum = {micro_rows} rows is not divisible by the "
                      f"{n_shards} data shards of the mesh")
  return n_shards


def train(config: TrainConfig, workdir: str | Path, *, run_id: str | None = None,
          progress: bool = True, until_step: int | None = None) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the result written to result.json.

  until_step: stop after this step with a checkpoint there, unfinished (status `paused`; a later
  call goes on from it): a token ladder's stable run pauses at each cooldown branch's start."""
  if until_step is not None and not 1 <= until_step <= config.steps:
    raise ConfigError(f"until_step={until_step} is outside the run's steps 1..{config.steps}")
  start_time = time.time()
  workdir = Path(workdir)
  run_id = run_id or workdir.name
  sharding.use_cpu_devices(config.mesh.cpu_devices)
  sharding.maybe_initialize_distributed()
  reuse_step_memory()
  mesh = sharding.make_mesh(config.mesh)
  n_shards = check_mesh(config, mesh)  # Every check that needs no files comes before any is written.
  check_vocabulary(config.data.tokenizer, config.model.vocab_size)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    lock = DirLock(workdir, TRAIN_LOCK)
  except OSError as e:
    raise UserError(f"--workdir {workdir}: cannot be used as a run directory ({e.strerror})") from None
  if not lock.acquire():
    raise UserError(f"--workdir {workdir}: another process is training in it")
  try:
    with one_build_per_corpus(), bars.quiet(not progress):
      return _train_locked(config, workdir, run_id, progress, mesh, n_shards, start_time,
                           until_step)
  finally:
    lock.release()


def _train_locked(config, workdir, run_id, progress, mesh, n_shards, start_time,
                  until_step=None) -> dict:
  config_after_restore = _check_workdir(workdir, config)
  record = RunRecord(workdir, run_id)
  run = None
  try:
    run = _Run(config, workdir, run_id, mesh, n_shards, start_time)
    state, meta = run.restore_or_init()
    if config_after_restore:
      _write_config(workdir, config)
    stop = until_step or config.steps
    if run.start_step > stop:
      raise UserError(f"{workdir}: its checkpoint is at step {run.start_step}, past the requested "
                      f"step {stop}")
    record.start(**_run_facts(config, run_id, mesh))
    failure = run.loop(state, progress, stop)
    if failure:
      return record.fail(failure, wall_seconds=run.session_wall(), last_good_step=run.mngr.latest_step())
    if stop < config.steps:
      return {**record.fields, "status": "paused", "step": stop}
    return _finish(run, record)
  except KeyboardInterrupt:  # Not a failure: the run resumes from its last checkpoint.
    if record.fields.get("status") == "running":
      # The folders, not the manager: an interrupt inside a save comes after its folder is
      # committed and before the manager has counted it.
      record.interrupt(RunDir(workdir).latest_checkpoint())
    raise
  except Exception as e:  # Anything else that stops the run leaves it failed, with why.
    record.fail(failure_reason(e))
    raise
  finally:
    if run is not None:
      run.close()


def _run_facts(config: TrainConfig, run_id: str, mesh) -> dict:
  """What result.json says of a run from its start."""
  counts, steps = param_counts(config.model), config.steps
  return {"size": config.model.size or "custom", "N": counts.non_embedding,
          "N_backbone": counts.backbone, "P": config.model.P, "params_total": counts.total,
          "devices": int(mesh.devices.size), "tokens": steps * config.tokens_per_step,
          "steps": steps, "seed": config.seed,
          "flops": flops_per_token(config.model, config.data.seq_len) * steps * config.tokens_per_step,
          "data": describe_source(config.data),
          "tokenizer": tokenizer_fingerprint(config.data.tokenizer)}


def _finish(run, record: RunRecord) -> dict:
  """Final evaluation, export and the done record; a non-finite loss fails instead."""
  config, workdir = run.config, run.workdir
  eval_loss, eval_sem = run.evaluate()
  bpt = bytes_per_token(config.data, run.val_rows)
  if run.process_index == 0:
    run.writer.write({"step": config.steps, "eval_loss": eval_loss, "eval_loss_sem": eval_sem})
  if not math.isfinite(eval_loss):  # Diverged weights are never exported as a finished model.
    return record.fail(f"final validation loss is {eval_loss}", wall_seconds=run.session_wall(),
                       last_good_step=None)
  if config.export_final and run.process_index == 0:
    save_pretrained(nnx.merge(run.graphdef, run.state.params, run.state.frozen),
                    RunDir(workdir).final)
    if config.data.tokenizer.startswith("hf:"):  # A Hugging Face folder carries its tokenizer.
      shutil.copyfile(os.path.expanduser(config.data.tokenizer[3:]), RunDir(workdir).final / "tokenizer.json")
  fields = dict(train_loss=float(np.mean(run.recent_losses)) if run.recent_losses else None,
                eval_loss=eval_loss, eval_loss_sem=eval_sem, eval_tokens=int(run.val_rows[:, 1:].size),
                eval_bits_per_byte=eval_loss / math.log(2) / bpt if bpt else None,
                wall_seconds=run.session_wall())
  if run.process_index == 0:
    return record.finish(**fields)
  return {**record.fields, **fields, "status": "done"}


class _Run:
  """One training session of a run directory: its compiled steps, data, checkpoints and metrics."""

  def __init__(self, config: TrainConfig, workdir: Path, run_id: str, mesh, n_shards: int,
               start_time: float):
    self.config, self.workdir, self.run_id = config, workdir, run_id
    self.mesh, self.start_time = mesh, start_time
    self.schedule = lr_schedule(config.optim, config.steps)
    self.training = t = build_training(config, mesh)
    self.graphdef, self.step_fn, self.eval_fn = t.graphdef, t.train_step, t.eval_step
    self.rows_sharding, self.eval_rows_sharding = t.rows_sharding, t.eval_rows_sharding
    self.mngr = checkpointing.manager(workdir, config.keep_checkpoints)
    self.process_count, self.process_index = jax.process_count(), jax.process_index()
    dataset = train_dataset(config.train_data, config.batch_size // self.process_count,
                            self.process_index, self.process_count)
    self.data_iter = ResumableIterator(iter(dataset))
    self.val_rows = validation_rows(config.data)
    self.eval_batch = max(n_shards, min(config.batch_size, len(self.val_rows)) // n_shards * n_shards)
    self.writer = None
    self.wall_before = 0.0
    self.recent_losses: list[float] = []
    self.state = None

  def restore_or_init(self):
    config = self.config
    self.start_step = self.mngr.latest_step() or 0
    meta = {"wall_seconds": 0.0, "train_losses": []}
    if self.start_step:
      state, meta = checkpointing.restore(self.mngr, self.start_step, self.training.abstract_state,
                                          self.training.state_shardings, self.data_iter)
      print(f"{self.run_id}: resuming from step {self.start_step} of {config.steps}",
            file=sys.stderr, flush=True)
    else:
      state = self.training.fresh_state()
    self.wall_before = float(meta["wall_seconds"])
    self.recent_losses = list(meta.get("train_losses", []))
    self.writer = MetricsWriter(self.workdir, self.start_step,
                                config.tensorboard and self.process_index == 0,
                                config.wandb if self.process_index == 0 else None,
                                self.run_id, config_to_dict(config))
    return state, meta

  def session_wall(self) -> float:
    return self.wall_before + time.time() - self.start_time

  def evaluate(self) -> tuple[float, float]:
    return evaluate(self.eval_fn, self.state.params, self.state.frozen, self.val_rows,
                    self.eval_batch, self.eval_rows_sharding)

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()

  def loop(self, state: TrainState, progress: bool, stop: int) -> str | None:
    """Trains from the restored step to `stop` (checkpointed there); a failure reason or None.
    Each step's metrics are read one step late, so that the host never waits for the device."""
    config = self.config
    self.state = state
    bar = None
    if progress and self.process_index == 0:
      bar = bars.progress_bar(config.steps, self.start_step, self.run_id, "step")
    self.window = _ThroughputWindow()
    pending = None  # (step, metrics still on the device)
    try:
      for step in range(self.start_step + 1, stop + 1):
        metrics = self.step(step)
        failure = self.log_metrics(*pending, bar) if pending is not None else None
        if failure:
          return failure
        pending = (step, metrics)
        if bar is not None:
          bar.update(1)
        save_now = step % config.checkpoint_every == 0 or step == stop
        eval_now = bool(config.eval_every) and step % config.eval_every == 0 and step != config.steps
        if save_now or eval_now:  # Both need this step's loss checked first.
          failure = self.log_metrics(*pending, bar) or (self.evaluate_during(step) if eval_now else None)
          pending = None
          if failure:
            return failure
          if save_now:
            self.checkpoint(step)
      return self.log_metrics(*pending, bar) if pending is not None else None
    finally:
      if bar is not None:
        bar.close()

  def step(self, step: int) -> dict:
    """One optimizer step on the next batch; its metrics stay on the device."""
    config = self.config
    rows = next(self.data_iter)
    rows = rows.reshape(config.grad_accum, -1, rows.shape[-1])
    self.state, metrics = self.step_fn(
        self.state, jax.make_array_from_process_local_data(self.rows_sharding, rows))
    self.window.tokens += config.tokens_per_step
    return metrics

  def log_metrics(self, step: int, metrics: dict, bar) -> str | None:
    """Reads a step's loss (a failure reason if it is not finite) and logs it when due."""
    config = self.config
    loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
    if not math.isfinite(loss):
      return f"loss is {loss} at step {step}"
    self.recent_losses.append(loss)
    del self.recent_losses[:-20]
    if step % config.log_every == 0 or step == config.steps:
      entry = {"step": step, "tokens": step * config.tokens_per_step, "loss": loss,
               "lr": float(self.schedule(step - 1)), "grad_norm": grad_norm,
               "tokens_per_s": self.window.rate(), "wall_seconds": self.session_wall()}
      if self.process_index == 0:
        self.writer.write(entry)
      if bar is not None:
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{entry['tokens_per_s']:.0f}")
      self.window = _ThroughputWindow()
    return None

  def evaluate_during(self, step: int) -> str | None:
    """A validation pass before the end (logged); a failure reason if its loss is not finite."""
    eval_loss, eval_sem = self.evaluate()
    if self.process_index == 0:
      self.writer.write({"step": step, "eval_loss": eval_loss, "eval_loss_sem": eval_sem})
    return None if math.isfinite(eval_loss) else f"validation loss is {eval_loss} at step {step}"

  def checkpoint(self, step: int) -> None:
    checkpointing.save(self.mngr, step, self.state, self.data_iter,
                       {"wall_seconds": self.session_wall(), "train_losses": self.recent_losses})


@dataclasses.dataclass
class _ThroughputWindow:
  """Tokens trained since the last logged step, for its tokens-per-second."""

  tokens: int = 0
  start: float = dataclasses.field(default_factory=time.time)

  def rate(self) -> float:
    return self.tokens / max(time.time() - self.start, 1e-9)
