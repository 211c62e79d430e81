"""The ParScale language model: one shared backbone run over P streams by `nnx.vmap`.

Token embedding runs once; the P streams share every backbone weight and differ only by their
per-layer key/value prefix (the only mapped parameters); a learned aggregator mixes the P final
hidden states per position before the LM head, which also runs once.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from parscale_jax.errors import UserError
from parscale_jax.model.config import ModelConfig
from parscale_jax.model.keys import KeySequence, ParamKeys
from parscale_jax.model.layers import DecoderLayer, Dense, dtype_of, rms_norm, static_rope_tables
from parscale_jax.model.prefix import PREFIX_FORMS, ParScaleParam


class Backbone(nnx.Module):
  """The decoder stack and final norm, shared by all streams.

  With config.scan_layers, `layers` is one DecoderLayer whose weights carry a leading layer axis,
  run by `jax.lax.scan`: XLA compiles one layer whatever the depth. Either way the layers are
  drawn one after another, so a seed gives the same weights scanned or not."""

  def __init__(self, config: ModelConfig, rngs: ParamKeys):
    layers = [DecoderLayer(config, rngs) for _ in range(config.num_layers)]
    self.scanned = config.scanned
    self.remat = config.remat
    self.layers = stack_modules(layers) if self.scanned else nnx.List(layers)
    self.norm = rms_norm(config, rngs)

  def __call__(self, x_BxSxD, positions_BxS, prefix_k=None, prefix_v=None, cache=None, rope=None):
    """One stream. prefix_k/v: [L, K, T, H] or per-row [B, L, K, T, H]; cache: (k_LxBxCxKxH,
    v_LxBxCxKxH, index) or None; rope: rotary tables for positions_BxS, or None.
    Returns (h_BxSxD, (k, v) or None): each layer writes its new keys into the cache in place."""
    if self.scanned:
      x_BxSxD, new_cache = self._scan(x_BxSxD, positions_BxS, prefix_k, prefix_v, cache, rope)
      return self.norm(x_BxSxD), new_cache
    kv = None if cache is None else cache[:2]
    for i, layer in enumerate(self.layers):
      pk = None if prefix_k is None else prefix_k[..., i, :, :, :]
      pv = None if prefix_v is None else prefix_v[..., i, :, :, :]
      graphdef, weights = nnx.split(layer)
      call = lambda weights, x, pk, pv, kv, graphdef=graphdef, i=i: nnx.merge(graphdef, weights)(
          x, positions_BxS, pk, pv, None if kv is None else (*kv, cache[2], i), rope)
      x_BxSxD, kv = rematerialised(call, self.remat)(weights, x_BxSxD, pk, pv, kv)
    return self.norm(x_BxSxD), kv

  def _scan(self, x_BxSxD, positions_BxS, prefix_k, prefix_v, cache, rope):
    """The layers as one scan. The cache rides in the carry, where XLA updates it in place; as a
    scanned input and output it would be copied whole at every call."""
    graphdef, weights_L = nnx.split(self.layers)
    layer_first = lambda a: None if a is None else jnp.moveaxis(a, -4, 0)
    index = None if cache is None else cache[2]

    def one_layer(carry, per_layer):
      x_BxSxD, kv = carry
      weights, pk, pv, layer = per_layer
      layer_cache = None if kv is None else (*kv, index, layer)
      return nnx.merge(graphdef, weights)(x_BxSxD, positions_BxS, pk, pv, layer_cache, rope), None

    layers = jnp.arange(jax.tree.leaves(weights_L)[0].shape[0], dtype=jnp.int32)
    per_layer = (weights_L, layer_first(prefix_k), layer_first(prefix_v), layers)
    carry = (x_BxSxD, None if cache is None else cache[:2])
    (x_BxSxD, kv), _ = jax.lax.scan(rematerialised(one_layer, self.remat, in_scan=True), carry, per_layer)
    return x_BxSxD, kv


# What a layer's backward pass keeps from its forward (model.remat); the rest is recomputed.
# dots: the outputs of the weight matmuls (no batch dimensions), not attention's batched products.
REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def rematerialised(layer_fn, remat: str, in_scan: bool = False):
  """layer_fn under jax.checkpoint with model.remat's policy; itself for "none". (Inside a scan
  XLA cannot merge the recomputation into the forward pass, so no CSE barrier is needed there.)"""
  if remat == "none":
    return layer_fn
  return jax.checkpoint(layer_fn, policy=REMAT_POLICIES[remat], prevent_cse=not in_scan)


def stack_modules(modules: list[nnx.Module]) -> nnx.Module:
  """One module of the same type whose every variable stacks the modules' values on axis 0."""
  graphdef, _ = nnx.split(modules[0])
  stacked = jax.tree.map(lambda *values: jnp.stack(values), *[nnx.state(m) for m in modules])
  return nnx.merge(graphdef, stacked)


class Aggregator(nnx.Module):
  """Linear(P·D → D) → SiLU → Linear(D → P) over the (hidden, stream)-ordered concatenation."""

  def __init__(self, config: ModelConfig, rngs: ParamKeys):
    d, p = config.hidden_size, config.P
    init = nnx.initializers.normal(config.init_std)
    self.w1 = ParScaleParam(init(rngs.params(), (p * d, d)))
    self.b1 = ParScaleParam(jnp.zeros((d,)))
    self.w2 = ParScaleParam(init(rngs.params(), (d, p)))
    self.b2 = ParScaleParam(jnp.zeros((p,)))
    self.compute_dtype = dtype_of(config)

  def __call__(self, h_PxBxSxD):
    p, b, s, d = h_PxBxSxD.shape
    # Feature index i·P + p, the reference's concatenation order.
    cat_BxSxDP = jnp.transpose(h_PxBxSxD, (1, 2, 3, 0)).reshape(b, s, d * p)
    dt = self.compute_dtype
    hidden = jax.nn.silu(cat_BxSxDP.astype(dt) @ self.w1[...].astype(dt) + self.b1[...].astype(dt))
    logits_BxSxP = hidden @ self.w2[...].astype(dt) + self.b2[...].astype(dt)
    return logits_BxSxP.astype(jnp.float32)


class ParScaleLM(nnx.Module):
  """Qwen2 decoder with P parallel streams. `model(input_ids_BxS)` returns float32 logits_BxSxV."""

  def __init__(self, config: ModelConfig, rngs: ParamKeys):
    self.config = config
    c = config
    self.embed_tokens = nnx.Embed(c.vocab_size, c.hidden_size, param_dtype=jnp.float32,
                                  embedding_init=nnx.initializers.normal(c.init_std), rngs=rngs)
    self.backbone = Backbone(c, rngs)
    # Every shared weight is drawn before ParScale's own, so that models of one seed start from the
    # same backbone, embedding and head whatever their P (paired comparisons rely on it).
    if not c.tie_embeddings:
      self.lm_head = Dense(c.hidden_size, c.vocab_size, c, rngs, bias=False)
    if c.has_prefix:  # The form's own attributes (prefix_k/prefix_v, prefix_mlp, ...).
      for name, value in PREFIX_FORMS[c.prefix_param].build(c, rngs).items():
        setattr(self, name, value)
    if c.has_aggregator:
      self.aggregator = Aggregator(c, rngs)

  def __call__(self, input_ids_BxS: jax.Array, positions_BxS: jax.Array | None = None) -> jax.Array:
    input_ids_BxS = check_token_ids(input_ids_BxS, self.config.vocab_size)
    rope = None
    if positions_BxS is None:
      s, c = input_ids_BxS.shape[1], self.config
      positions_BxS = jnp.broadcast_to(jnp.arange(s), input_ids_BxS.shape)
      rope = static_rope_tables(s, c.head_dim, c.rope_theta)
    h_PxBxSxD, _ = self.streams(self.embed(input_ids_BxS), positions_BxS, rope=rope)
    return self.head(self.aggregate(h_PxBxSxD))

  def forward_with_cache(self, input_ids_BxS: jax.Array, cache: dict,
                         last_only: bool = False) -> tuple[jax.Array, dict]:
    """Runs tokens at positions [index, index + S) against a cache from `init_cache`; returns
    logits [B, S, V], or [B, 1, V] for the last position alone with `last_only` (what decoding
    needs: a prompt's head over every position would be a [S, vocabulary] product per row)."""
    b, s = input_ids_BxS.shape
    index = cache["index"]
    positions_BxS = jnp.broadcast_to(index + jnp.arange(s, dtype=jnp.int32), (b, s))
    h_PxBxSxD, (k, v) = self.streams(self.embed(input_ids_BxS), positions_BxS,
                                     (cache["k"], cache["v"], index))
    if last_only:
      h_PxBxSxD = h_PxBxSxD[:, :, -1:]
    logits = self.head(self.aggregate(h_PxBxSxD))
    return logits, {"k": k, "v": v, "index": index + s}

  def embed(self, input_ids_BxS: jax.Array) -> jax.Array:
    """The tokens' embeddings, at least float32. Rows are taken before they are cast: casting the
    table first (as nnx.Embed does) would convert all of it at every call of a bf16-weight model."""
    table_VxD = self.embed_tokens.embedding[...]
    return jnp.take(table_VxD, input_ids_BxS, axis=0).astype(jnp.promote_types(table_VxD.dtype, jnp.float32))

  def streams(self, x_BxSxD, positions_BxS, cache=None, rope=None):
    """Runs the backbone once per stream. cache: (k_LxRxCxKxH, v_LxRxCxKxH, index) or None, rows
    R = B·P ordered b·P + p (init_cache); rope: rotary tables [1, S, 1, H/2] (the same for every
    row), or None to compute them.

    Returns (h_PxBxSxD, (k, v) or None)."""
    c = self.config
    backbone = self.backbone
    if not c.has_prefix:  # P = 1: the plain transformer.
      h_BxSxD, new = backbone(x_BxSxD, positions_BxS, None, None, cache, rope)
      return h_BxSxD[None], new
    pk, pv = self.prefixes()
    # Cached decoding always runs folded: the cache's rows are the folded ones, which any other
    # arrangement of the streams would copy (a whole cache per call) to read and write.
    if cache is not None or c.stream_impl == "fold":
      return self._folded_streams(x_BxSxD, positions_BxS, pk, pv, cache, rope)
    one_stream = lambda backbone, pk, pv: backbone(x_BxSxD, positions_BxS, pk, pv, None, rope)
    if c.stream_impl == "vmap":
      # Backbone broadcast (in_axes None): its weights are shared, never copied P times.
      return nnx.vmap(one_stream, in_axes=(None, 0, 0))(backbone, pk, pv)[0], None
    return jnp.stack([one_stream(backbone, pk[p], pv[p])[0] for p in range(c.P)]), None

  def _folded_streams(self, x_BxSxD, positions_BxS, pk, pv, cache, rope):
    """Streams folded into the batch axis, as the PyTorch reference runs them. Row b·P + p, batch
    major (the reference stacks stream-major): a batch sharded over devices then stays sharded,
    where stream-major rows would interleave the shards and make XLA gather the whole batch."""
    p = self.config.P
    b, s, d = x_BxSxD.shape
    fold = lambda a: jnp.broadcast_to(a[:, None], (b, p, *a.shape[1:])).reshape(b * p, *a.shape[1:])
    x, positions = fold(x_BxSxD), fold(positions_BxS)
    pk_rows, pv_rows = jnp.tile(pk, (b, 1, 1, 1, 1)), jnp.tile(pv, (b, 1, 1, 1, 1))
    h, new = self.backbone(x, positions, pk_rows, pv_rows, cache, rope)
    return jnp.swapaxes(h.reshape(b, p, s, d), 0, 1), new

  def prefixes(self) -> tuple[jax.Array, jax.Array]:
    """Every stream's key and value prefix, [P, L, K, T, H] each (the MLP's output with mlp)."""
    return PREFIX_FORMS[self.config.prefix_param].prefixes(self)

  def aggregate(self, h_PxBxSxD):
    c = self.config
    if c.P == 1:
      return h_PxBxSxD[0]
    if c.aggregation == "mean":
      return jnp.mean(h_PxBxSxD, axis=0)
    w_BxSxP = jax.nn.softmax(self.aggregator(h_PxBxSxD), axis=-1)
    w_BxSxP = w_BxSxP * (1.0 - c.smoothing) + c.smoothing / c.P
    return jnp.einsum("pbsd,bsp->bsd", h_PxBxSxD, w_BxSxP.astype(h_PxBxSxD.dtype))

  def head(self, h_BxSxD):
    dt = dtype_of(self.config)
    if self.config.tie_embeddings:
      logits = h_BxSxD.astype(dt) @ self.embed_tokens.embedding[...].astype(dt).T
    else:
      logits = self.lm_head(h_BxSxD.astype(dt))
    return logits.astype(jnp.float32)


def combine_prefix(model: ParScaleLM) -> ParScaleLM:
  """The same model with a raw prefix: a reparameterised prefix (mlp, or any other form) evaluated
  once and stored as the prefix tensors, the form inference, export and the reference use. Other
  models unchanged."""
  c = model.config
  if not c.has_prefix or c.prefix_param == "raw":
    return model
  raw = abstract_model(dataclasses.replace(c, prefix_param="raw"))
  for name in ("embed_tokens", "backbone", "lm_head", "aggregator"):
    if hasattr(model, name):
      nnx.update(getattr(raw, name), nnx.state(getattr(model, name)))
  pk, pv = model.prefixes()
  raw.prefix_k.set_value(pk)
  raw.prefix_v.set_value(pv)
  return raw


def check_token_ids(ids, vocab_size: int) -> jax.Array:
  """ids as int32 [B, S]; refuses other ranks and, when the values are known (not traced), ids
  outside [0, vocab_size): an embedding lookup would wrap -1 to V - 1 and give NaN past V."""
  if not isinstance(ids, jax.Array):
    ids = np.asarray(ids)
  if ids.ndim != 2:
    raise UserError(f"token ids must be a [batch, sequence] array, got shape {tuple(ids.shape)}")
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise UserError(f"token ids must be integers, got {ids.dtype}")
  if not isinstance(ids, jax.core.Tracer) and ids.size:
    host = np.asarray(ids)  # On the host: inside a trace, jnp ops on a constant give tracers.
    lo, hi = int(host.min()), int(host.max())
    if lo < 0 or hi >= vocab_size:
      raise UserError(f"token id {lo if lo < 0 else hi} is outside the vocabulary [0, {vocab_size})")
  return jnp.asarray(ids, jnp.int32)


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
  """An empty KV cache for `max_len` tokens: k/v [L, B·P, max_len, K, H], row b·P + p holding
  stream p of sequence b (the streams folded into the batch, as cached decoding runs them); the
  prefix is not copied into it (attention reads it from the parameters, once per stream)."""
  shape = (config.num_layers, batch * config.P, max_len, config.num_kv_heads, config.head_dim)
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
          "index": jnp.zeros((), jnp.int32)}


def create_model(config: ModelConfig, seed: int = 0) -> ParScaleLM:
  """A freshly initialised model; initialisation runs as one compiled program, not op by op.

  The key enters that program as an argument. With the seed as a constant, XLA reported a very
  slow compile of this program for the 36-layer paper-1.6b on an H200, and it was not done after
  four minutes; a constant key lets XLA constant-fold the random numbers, the likely cause."""
  return nnx.jit(lambda key: ParScaleLM(config, KeySequence(key)))(jax.random.key(seed))


def abstract_model(config: ModelConfig) -> ParScaleLM:
  """The model with shapes only (no memory, no compute): for counting and for loading."""
  return nnx.eval_shape(lambda: ParScaleLM(config, KeySequence(0)))
