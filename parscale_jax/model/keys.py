"""Where initialisation draws its keys."""
from __future__ import annotations

from typing import Protocol

import jax


class ParamKeys(Protocol):
  """What a module's constructor draws its parameters' keys from: `nnx.Rngs` or `KeySequence`."""

  def params(self) -> jax.Array: ...


class KeySequence:
  """The keys that `nnx.Rngs(params=seed).params()` gives, fold_in(key, 0), fold_in(key, 1), ...,
  with the count kept in Python. nnx.Rngs keeps it in a Variable, and each update under a trace
  makes jax describe the tracer's origin by walking the whole trace so far: initialising a
  36-layer model spent 4 of its 5 s of tracing there."""

  def __init__(self, seed: int | jax.Array):
    is_key = isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)
    self.key = seed if is_key else jax.random.key(seed)
    self.count = 0

  def params(self) -> jax.Array:
    key = jax.random.fold_in(self.key, self.count)
    self.count += 1
    return key
