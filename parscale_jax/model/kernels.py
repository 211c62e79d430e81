"""The dense product and the attention softmax, chosen by backend: XLA:CPU gets hand-written
backward passes and a skinny-row layout (model/cpu_kernels.py); GPUs and TPUs get the plain
forms, which their compilers handle well. Both give the same numbers (tests/test_model.py)."""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from parscale_jax.model.cpu_kernels import attention_softmax
from parscale_jax.model.cpu_kernels import dense as cpu_dense


_TARGETS: list[str] = []  # Platforms of the programs being traced for other devices than this host's.


@contextlib.contextmanager
def traced_for(platform: str):
  """Within it, programs are traced with `platform`'s kernels: a TPU program compiled on a CPU host
  is the program a TPU host would trace."""
  _TARGETS.append(platform)
  try:
    yield
  finally:
    _TARGETS.pop()


def on_cpu() -> bool:
  """Whether this trace's arrays live on XLA:CPU (the default backend, unless `traced_for`)."""
  return (_TARGETS[-1] if _TARGETS else jax.default_backend()) == "cpu"


def plain_dense(x_NxI: jax.Array, w_OxI: jax.Array, b_O: jax.Array | None) -> jax.Array:
  """x·Wᵀ + b, differentiated automatically."""
  y_NxO = jnp.einsum("...i,oi->...o", x_NxI, w_OxI)
  return y_NxO if b_O is None else y_NxO + b_O


def dense(x_NxI: jax.Array, w_OxI: jax.Array, b_O: jax.Array | None) -> jax.Array:
  """x·Wᵀ + b (b None: no bias), by the backend's kernel."""
  return cpu_dense(x_NxI, w_OxI, b_O) if on_cpu() else plain_dense(x_NxI, w_OxI, b_O)


def softmax(scores: jax.Array) -> jax.Array:
  """Softmax over the last axis, by the backend's kernel."""
  return attention_softmax(scores) if on_cpu() else jax.nn.softmax(scores, axis=-1)
