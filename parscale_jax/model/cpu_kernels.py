"""Kernels written for XLA:CPU (model/kernels.py picks them on that backend): dense layers with a
skinny-row layout and a hand-written backward pass, and an attention softmax differentiated from
its probabilities alone. Measured in benchmarks/README.md."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Up to this many rows, a dense layer multiplies with the weight as the left operand (out = W·xᵀ):
# for skinny inputs (decoding P streams) XLA:CPU picks a faster kernel that way round.
SKINNY_ROWS = 64


def dense(x_NxI: jax.Array, w_OxI: jax.Array, b_O: jax.Array | None) -> jax.Array:
  """x·Wᵀ + b: W·xᵀ for skinny inputs, else dense_product."""
  if math.prod(x_NxI.shape[:-1]) <= SKINNY_ROWS:
    # The barrier keeps XLA from folding the transpose back into the product's layout, which
    # would turn it into the slow x·Wᵀ form again.
    y_OxN = jax.lax.optimization_barrier(jnp.einsum("oi,...i->o...", w_OxI, x_NxI))
    y = jnp.moveaxis(y_OxN, 0, -1)
    return y if b_O is None else y + b_O
  return dense_product(x_NxI, w_OxI, b_O)


@jax.custom_vjp
def dense_product(x_NxI: jax.Array, w_OxI: jax.Array, b_O: jax.Array | None) -> jax.Array:
  """x·Wᵀ + b (b None: no bias), with a backward pass written for XLA:CPU.

  The weight gradient contracts the row axis, the major axis of both x and dy, so XLA copies one
  of them transposed first. Differentiated automatically, it transposes dy (fused with the
  elementwise work that produced it, in transposed order: the slowest loops of the CPU step); here
  the narrower of x and dy is the one transposed. The bias gradient sums dy in float32: XLA:CPU
  rewrites a bfloat16 sum over the rows as a slow windowed reduction."""
  y_NxO = jnp.einsum("...i,oi->...o", x_NxI, w_OxI)
  return y_NxO if b_O is None else y_NxO + b_O


def _dense_product_fwd(x_NxI, w_OxI, b_O):
  return dense_product(x_NxI, w_OxI, b_O), (x_NxI, w_OxI, b_O)


def _dense_product_bwd(residuals, dy_NxO):
  x_NxI, w_OxI, b_O = residuals
  o, i = w_OxI.shape
  dx_NxI = jnp.einsum("...o,oi->...i", dy_NxO, w_OxI)
  x_RxI, dy_RxO = x_NxI.reshape(-1, i), dy_NxO.reshape(-1, o)
  dw_OxI = (x_RxI.T @ dy_RxO).T if i <= o else dy_RxO.T @ x_RxI
  db_O = None if b_O is None else jnp.sum(dy_RxO, axis=0, dtype=jnp.float32).astype(b_O.dtype)
  return dx_NxI, dw_OxI.astype(w_OxI.dtype), db_O


dense_product.defvjp(_dense_product_fwd, _dense_product_bwd)


@jax.custom_vjp
def attention_softmax(scores: jax.Array) -> jax.Array:
  """Softmax over the last axis, differentiated from the probabilities alone: y·(g − Σ g·y).

  Autodiff of `jax.nn.softmax` reads the unnormalised exponentials and their sums as well, and
  XLA:CPU fuses that backward with the attention's dP product into one slow kernel: 13 % of the
  float32 train step at P = 1 (benchmarks/README.md)."""
  return jax.nn.softmax(scores, axis=-1)


def _attention_softmax_fwd(scores):
  probs = jax.nn.softmax(scores, axis=-1)
  return probs, probs


def _attention_softmax_bwd(probs, d_probs):
  weighted = d_probs * probs
  return (weighted - probs * jnp.sum(weighted, axis=-1, keepdims=True),)


attention_softmax.defvjp(_attention_softmax_fwd, _attention_softmax_bwd)
