"""Pure training and evaluation steps: module-level functions, jitted with explicit shardings.

The model is split into (graphdef, trainable, frozen): trainable is every parameter, or only the
ParScale parameters when the backbone is frozen. Only trainable parameters get gradients and
optimizer state, so a frozen backbone stays bit-identical.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from parscale_jax.model.parscale import ParScaleLM, ParScaleParam


@struct.dataclass
class TrainState:
  """What one optimizer step reads and writes (a pytree: jit, shardings and orbax take it)."""

  step: jax.Array  # int32 scalar: optimizer steps taken.
  params: Any  # nnx.State of the trainable parameters.
  frozen: Any  # nnx.State of every other variable (the backbone when it is frozen).
  opt_state: Any  # The optimizer's state of `params`.

  def as_dict(self) -> dict:
    """The fields by name: the layout checkpoints store (and checksum)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  @classmethod
  def from_dict(cls, fields: dict) -> "TrainState":
    return cls(**fields)


def split_model(model: ParScaleLM, freeze_backbone: bool):
  """(graphdef, trainable, frozen) states of the model."""
  if freeze_backbone:
    return nnx.split(model, ParScaleParam, ...)
  return nnx.split(model, nnx.Param, ...)


def token_losses(trainable, frozen, graphdef, rows_BxS1) -> jax.Array:
  """Next-token cross-entropy per target token, [B, S], in nats."""
  model = nnx.merge(graphdef, trainable, frozen)
  logits_BxSxV = model(rows_BxS1[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxSxV, rows_BxS1[:, 1:])


def loss_fn(trainable, frozen, graphdef, rows_BxS1) -> jax.Array:
  return jnp.mean(token_losses(trainable, frozen, graphdef, rows_BxS1))


def train_step(state: TrainState, rows_AxBxS1: jax.Array, *, graphdef,
               optimizer: optax.GradientTransformation) -> tuple[TrainState, dict]:
  """One optimizer step over A accumulated micro-batches."""
  # Differentiate the frozen parameters too and drop their gradients (XLA removes the unused
  # work): nnx.vmap needs every variable it sees to live at the same trace level.
  grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1))

  def micro(grad_sum, rows_BxS1):
    loss, (grads, _) = grad_fn(state.params, state.frozen, graphdef, rows_BxS1)
    return jax.tree.map(jnp.add, grad_sum, grads), loss

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  grad_sum, losses = jax.lax.scan(micro, zeros, rows_AxBxS1)
  grads = jax.tree.map(lambda g: g / rows_AxBxS1.shape[0], grad_sum)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  metrics = {"loss": jnp.mean(losses), "grad_norm": optax.tree.norm(grads)}
  return new_state, metrics


def eval_step(params, frozen, rows_BxS1, *, graphdef) -> jax.Array:
  """Mean loss of each row, [B]."""
  return jnp.mean(token_losses(params, frozen, graphdef, rows_BxS1), axis=-1)


def jit_train_step(graphdef, optimizer, state_shardings, batch_sharding, replicated):
  return jax.jit(functools.partial(train_step, graphdef=graphdef, optimizer=optimizer),
                 in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def jit_eval_step(graphdef, param_shardings, frozen_shardings, rows_sharding, replicated):
  return jax.jit(functools.partial(eval_step, graphdef=graphdef),
                 in_shardings=(param_shardings, frozen_shardings, rows_sharding),
                 out_shardings=replicated)
