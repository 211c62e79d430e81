"""The forms of the key/value prefix: how each stream's per-layer prefix is parameterised.

A form is a class with a `build(config, rngs)` that returns the attributes it adds to the model
(their names are its checkpoint paths) and a `prefixes(model)` that returns every stream's key and
value prefix, [P, L, K, T, H] each, in float32. Its trainable parameters are `PrefixParam`s: the
optimizer selects them by that type (prefix_lr_scale, no weight decay), so a new form is one class
and its PREFIX_FORMS entry, whose key model.prefix_param names. ParScaleParam, the type of every
ParScale parameter (the aggregator's too), lives here as the prefix's base type.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from parscale_jax.model.keys import ParamKeys


class ParScaleParam(nnx.Param):
  """ParScale's own parameters (prefix and aggregator): what a frozen-backbone run trains."""


class PrefixParam(ParScaleParam):
  """A prefix form's parameters: a learned input, like an embedding (never weight-decayed, trained
  at optim.prefix_lr_scale)."""


class RawPrefix:
  """raw: the prefix tensors themselves, model.prefix_k and model.prefix_v [P, L, K, T, H]."""

  @staticmethod
  def build(c, rngs: ParamKeys) -> dict:
    shape = (c.P, c.num_layers, c.num_kv_heads, c.prefix_tokens, c.head_dim)
    init = nnx.initializers.normal(c.prefix_init_std)
    return {"prefix_k": PrefixParam(init(rngs.params(), shape)),
            "prefix_v": PrefixParam(init(rngs.params(), shape))}

  @staticmethod
  def prefixes(model) -> tuple[jax.Array, jax.Array]:
    return model.prefix_k[...], model.prefix_v[...]


# E[tanh(z)^2] for z ~ N(0, 1): the mean square of the prefix MLP's hidden units at initialisation.
_TANH_MEAN_SQUARE = 0.3943


class PrefixMLP(nnx.Module):
  """The reparameterised prefix: per layer l, prefix_p = W2_l · tanh(W1_l · table[p, l] + b1_l) + b2_l,
  shaped into the key and value prefix [P, L, K, T, H] of every stream.

  One MLP per layer, shared by the streams (as prefix tuning and the paper's appendix describe it:
  the layers' prefixes differ in role, the streams' only by their table vectors). Initialised so
  that the produced prefix has the raw prefix's std (prefix_init_std): the table N(0, 1), W1 with
  std dim^-1/2 (unit-variance pre-activations), W2 scaled by the tanh units' rms; biases zero. The
  two forms then start from the same prefix distribution and differ only in how they train."""

  def __init__(self, config: ModelConfig, rngs: ParamKeys):
    c = config
    m, h, layers = c.prefix_mlp_dim, c.prefix_mlp_hidden, c.num_layers
    out = 2 * c.num_kv_heads * c.prefix_tokens * c.head_dim
    normal = lambda std, shape: nnx.initializers.normal(std)(rngs.params(), shape)
    self.table = PrefixParam(normal(1.0, (c.P, layers, m)))
    self.w1 = PrefixParam(normal(m ** -0.5, (layers, m, h)))
    self.b1 = PrefixParam(jnp.zeros((layers, h)))
    self.w2 = PrefixParam(normal(c.prefix_init_std / (h * _TANH_MEAN_SQUARE) ** 0.5,
                                   (layers, h, out)))
    self.b2 = PrefixParam(jnp.zeros((layers, out)))
    self.shape = (c.P, layers, 2, c.num_kv_heads, c.prefix_tokens, c.head_dim)

  def __call__(self) -> tuple[jax.Array, jax.Array]:
    """(prefix_k, prefix_v), each [P, L, K, T, H] in float32."""
    hidden_PxLxH = jnp.tanh(jnp.einsum("plm,lmh->plh", self.table[...], self.w1[...])
                            + self.b1[...])
    out_PxLxO = jnp.einsum("plh,lho->plo", hidden_PxLxH, self.w2[...]) + self.b2[...]
    kv = out_PxLxO.reshape(self.shape)
    return kv[:, :, 0], kv[:, :, 1]


class MLPPrefix:
  """mlp: the paper's reparameterisation, model.prefix_mlp (PrefixMLP)."""

  @staticmethod
  def build(c, rngs: ParamKeys) -> dict:
    return {"prefix_mlp": PrefixMLP(c, rngs)}

  @staticmethod
  def prefixes(model) -> tuple[jax.Array, jax.Array]:
    return model.prefix_mlp()


# model.prefix_param -> its form.
PREFIX_FORMS = {"raw": RawPrefix, "mlp": MLPPrefix}
