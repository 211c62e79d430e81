"""Qwen2 building blocks: rotary embeddings, grouped-query attention with a per-stream prefix, SwiGLU.

Attention takes the stream's key/value prefix as an argument (not as its own parameter), so the same
layer weights serve every stream; the prefix keys carry no rotary phase and every real token sees the
whole prefix, as in the reference implementation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from parscale_jax.model.kernels import dense, softmax
from parscale_jax.model.config import ModelConfig
from parscale_jax.model.keys import ParamKeys


def dtype_of(config: ModelConfig):
  return jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32


def rope_tables(positions_BxS: jax.Array, head_dim: int, theta: float):
  """cos, sin [B, S, 1, H/2] of the rotary angles at these positions (traced: decoding)."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles_BxSxH2 = positions_BxS[..., None].astype(jnp.float32) * inv_freq
  return jnp.cos(angles_BxSxH2)[:, :, None, :], jnp.sin(angles_BxSxH2)[:, :, None, :]


def static_rope_tables(seq_len: int, head_dim: int, theta: float):
  """cos, sin [1, S, 1, H/2] for positions 0..S-1, computed while tracing: constants of the program.

  Computed inside the program instead, XLA:CPU evaluates cos and sin afresh for every element of
  every rotary fusion (each head, row and layer); benchmarks/README.md has the measurement."""
  with jax.ensure_compile_time_eval():
    return rope_tables(jnp.arange(seq_len)[None], head_dim, theta)


def rotary(x_BxSxNxH: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Applies rotary position embeddings, half-split layout (as in Hugging Face Qwen2).

  cos, sin: [B or 1, S, 1, H/2], from `rope_tables` or `static_rope_tables`."""
  x = x_BxSxNxH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxSxNxH.dtype)


class Dense(nnx.Module):
  """y = x·Wᵀ + b with the weight stored [out, in], the torch layout.

  Initialised exactly as `nnx.Linear` (the same draws, transposed), so a seed gives the same model."""

  def __init__(self, din: int, dout: int, config: ModelConfig, rngs: ParamKeys, bias: bool):
    init = nnx.initializers.normal(config.init_std)
    self.weight = nnx.Param(init(rngs.params(), (din, dout), jnp.float32).T)
    self.bias = nnx.Param(jnp.zeros((dout,), jnp.float32)) if bias else None
    if bias:
      rngs.params()  # nnx.Linear draws a key for its (zero) bias; keep the key sequence.
    self.compute_dtype = dtype_of(config)

  def __call__(self, x_NxI: jax.Array) -> jax.Array:
    dt = self.compute_dtype
    bias = None if self.bias is None else self.bias[...].astype(dt)
    return dense(x_NxI.astype(dt), self.weight[...].astype(dt), bias)


class Attention(nnx.Module):
  """Grouped-query self-attention, with an optional learned prefix and an optional KV cache."""

  def __init__(self, config: ModelConfig, rngs: ParamKeys):
    self.config = config
    d, h, kv = config.hidden_size, config.head_dim, config.num_kv_heads
    self.q_proj = Dense(d, config.num_heads * h, config, rngs, bias=True)
    self.k_proj = Dense(d, kv * h, config, rngs, bias=True)
    self.v_proj = Dense(d, kv * h, config, rngs, bias=True)
    self.o_proj = Dense(config.num_heads * h, d, config, rngs, bias=False)

  def __call__(self, x_BxSxD, positions_BxS, prefix_k=None, prefix_v=None, cache=None, rope=None):
    """Returns (out_BxSxD, new_cache).

    prefix_k/prefix_v: [K, T, H] shared by the batch, or [B, K, T, H]; None for no prefix.
    cache: None, or (k_LxBxCxKxH, v_LxBxCxKxH, index, layer) — every layer's cache, this layer's
      keys of earlier tokens in slots [0, index) of entry `layer`; this call's keys are written at
      slots [index, index + S) in place, and the whole cache is returned (no copy of it is made).
    rope: (cos, sin) tables from `static_rope_tables`, given only when positions_BxS are 0..S-1;
      None to compute them from positions_BxS.
    """
    c = self.config
    b, s, _ = x_BxSxD.shape
    kv, g, h = c.num_kv_heads, c.num_heads // c.num_kv_heads, c.head_dim
    cos, sin = rope if rope is not None else rope_tables(positions_BxS, h, c.rope_theta)
    q_BxSxNxH = rotary(self.q_proj(x_BxSxD).reshape(b, s, kv * g, h), cos, sin)
    k_BxSxKxH = rotary(self.k_proj(x_BxSxD).reshape(b, s, kv, h), cos, sin)
    v_BxSxKxH = self.v_proj(x_BxSxD).reshape(b, s, kv, h)
    q_BxSxKxGxH = q_BxSxNxH.reshape(b, s, kv, g, h) * (h ** -0.5)
    as_keys = lambda a, dtype: jnp.broadcast_to(jnp.swapaxes(a, -3, -2), (b, a.shape[-2], kv, h)).astype(dtype)

    if cache is not None:
      cache_k, cache_v, index, layer = cache
      write = lambda all_LxBxCxKxH, new_BxSxKxH: jax.lax.dynamic_update_slice(
          all_LxBxCxKxH, new_BxSxKxH.astype(all_LxBxCxKxH.dtype)[None], (layer, 0, index, 0, 0))
      cache_k, cache_v = write(cache_k, k_BxSxKxH), write(cache_v, v_BxSxKxH)
      keys = jax.lax.dynamic_index_in_dim(cache_k, layer, 0, keepdims=False)
      values = jax.lax.dynamic_index_in_dim(cache_v, layer, 0, keepdims=False)
      # Slot j holds the token at position j; unwritten slots lie in every query's future.
      key_pos_BxT = jnp.broadcast_to(jnp.arange(keys.shape[1]), (b, keys.shape[1]))
      prefix = None if prefix_k is None else (as_keys(prefix_k, keys.dtype), as_keys(prefix_v, keys.dtype))
      # The cached keys are attended where they lie: joining the prefix to them would copy every
      # layer's cache once per decoded token.
      out = attend_in_chunks(q_BxSxKxGxH, keys, values, positions_BxS, key_pos_BxT, prefix)
      return self.o_proj(out.reshape(b, s, kv * g * h)), (cache_k, cache_v)

    keys, values, key_pos_BxT = k_BxSxKxH, v_BxSxKxH, positions_BxS
    if prefix_k is not None:
      # The prefix joins the keys at position -1, so every query sees all of it. One score tensor
      # over [prefix, tokens] costs less than scoring the two apart and concatenating the scores.
      t = prefix_k.shape[-2]
      keys = jnp.concatenate([as_keys(prefix_k, keys.dtype), keys], axis=1)
      values = jnp.concatenate([as_keys(prefix_v, keys.dtype), values], axis=1)
      key_pos_BxT = jnp.concatenate([jnp.full((b, t), -1, key_pos_BxT.dtype), key_pos_BxT], axis=1)

    # With positions 0..S-1 (rope given), query block i only needs the keys up to its last
    # position: scoring in blocks skips the masked upper triangle.
    blocks = causal_blocks(s) if rope is not None else 1
    size, extra = s // blocks, keys.shape[1] - s  # extra: the prefix, placed before the tokens.
    outs = [attend(q_BxSxKxGxH[:, i * size:(i + 1) * size], keys[:, :extra + (i + 1) * size],
                   values[:, :extra + (i + 1) * size], positions_BxS[:, i * size:(i + 1) * size],
                   key_pos_BxT[:, :extra + (i + 1) * size])
            for i in range(blocks)]
    out = outs[0] if blocks == 1 else jnp.concatenate(outs, axis=1)
    return self.o_proj(out.reshape(b, s, kv * g * h)), None


# Queries per chunk of a prompt scored against a KV cache (prefill).
PREFILL_CHUNK = 256

# Query block of causal attention in training: measured on a 2-core CPU at sequence 256, four
# blocks made the train step 9 % (P = 1) and 13 % (P = 8) faster than one.
CAUSAL_BLOCK = 64
MAX_CAUSAL_BLOCKS = 8


def causal_blocks(seq_len: int) -> int:
  """How many query blocks causal attention over seq_len tokens is split into (1: unsplit)."""
  blocks = min(seq_len // CAUSAL_BLOCK, MAX_CAUSAL_BLOCKS)
  return blocks if blocks > 1 and seq_len % blocks == 0 else 1


def attend(q_BxSxKxGxH, keys_BxTxKxH, values_BxTxKxH, positions_BxS, key_pos_BxT, prefix=None):
  """Softmax attention of scaled queries over keys, each query seeing the keys at or before its
  position; scores and softmax in float32. prefix: (keys, values) [B, T', K, H] that every query
  sees, scored apart from the others and normalised with them. Returns [B, S, K, G, H] in the
  queries' dtype."""
  dt = q_BxSxKxGxH.dtype
  score = lambda keys: jnp.einsum("bskgh,btkh->bkgst", q_BxSxKxGxH, keys.astype(dt),
                                  preferred_element_type=jnp.float32)
  scores = score(keys_BxTxKxH)
  causal_BxSxT = key_pos_BxT[:, None, :] <= positions_BxS[:, :, None]
  scores = jnp.where(causal_BxSxT[:, None, None], scores, -jnp.inf)
  if prefix is None:
    probs = softmax(scores).astype(dt)
    return jnp.einsum("bkgst,btkh->bskgh", probs, values_BxTxKxH.astype(dt))
  # One softmax over both key sets without joining their scores: a joined tensor would need the
  # prefix's scores laid out (sharded) as the cache's, and XLA gathers the cache's instead.
  prefix_scores = score(prefix[0])
  top = jnp.maximum(prefix_scores.max(-1, keepdims=True), scores.max(-1, keepdims=True))
  prefix_e, cache_e = jnp.exp(prefix_scores - top), jnp.exp(scores - top)
  total = prefix_e.sum(-1, keepdims=True) + cache_e.sum(-1, keepdims=True)
  return (jnp.einsum("bkgst,btkh->bskgh", (prefix_e / total).astype(dt), prefix[1].astype(dt))
          + jnp.einsum("bkgst,btkh->bskgh", (cache_e / total).astype(dt), values_BxTxKxH.astype(dt)))


def attend_in_chunks(q_BxSxKxGxH, keys_BxTxKxH, values_BxTxKxH, positions_BxS, key_pos_BxT, prefix):
  """`attend`, PREFILL_CHUNK queries at a time: a long prompt's float32 scores against the whole
  cache (rows x heads x prompt x cache) would outgrow the weights. The whole chunks run as a loop
  (jax.lax.map), so that one chunk's scores are alive at a time; the rest as one more call."""
  b, s = positions_BxS.shape
  whole = s // PREFILL_CHUNK
  call = lambda q, pos: attend(q, keys_BxTxKxH, values_BxTxKxH, pos, key_pos_BxT, prefix)
  if whole <= 1:
    return call(q_BxSxKxGxH, positions_BxS)
  cut = whole * PREFILL_CHUNK
  chunks = lambda a: jnp.moveaxis(a[:, :cut].reshape(b, whole, PREFILL_CHUNK, *a.shape[2:]), 1, 0)
  out_NxBxCx = jax.lax.map(lambda qp: call(*qp), (chunks(q_BxSxKxGxH), chunks(positions_BxS)))
  out = jnp.moveaxis(out_NxBxCx, 0, 1).reshape(b, cut, *out_NxBxCx.shape[3:])
  if cut == s:
    return out
  return jnp.concatenate([out, call(q_BxSxKxGxH[:, cut:], positions_BxS[:, cut:])], axis=1)


class MLP(nnx.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  def __init__(self, config: ModelConfig, rngs: ParamKeys):
    d, f = config.hidden_size, config.intermediate_size
    self.gate_proj = Dense(d, f, config, rngs, bias=False)
    self.up_proj = Dense(d, f, config, rngs, bias=False)
    self.down_proj = Dense(f, d, config, rngs, bias=False)

  def __call__(self, x_BxSxD):
    return self.down_proj(jax.nn.silu(self.gate_proj(x_BxSxD)) * self.up_proj(x_BxSxD))


def rms_norm(config: ModelConfig, rngs: ParamKeys) -> nnx.RMSNorm:
  return nnx.RMSNorm(config.hidden_size, epsilon=config.rms_norm_eps, dtype=jnp.float32,
                     param_dtype=jnp.float32, use_fast_variance=False, rngs=rngs)


class DecoderLayer(nnx.Module):
  """Pre-norm residual block: attention then SwiGLU."""

  def __init__(self, config: ModelConfig, rngs: ParamKeys):
    self.input_layernorm = rms_norm(config, rngs)
    self.self_attn = Attention(config, rngs)
    self.post_attention_layernorm = rms_norm(config, rngs)
    self.mlp = MLP(config, rngs)
    self.compute_dtype = dtype_of(config)

  def __call__(self, x_BxSxD, positions_BxS, prefix_k=None, prefix_v=None, cache=None, rope=None):
    normed = self.input_layernorm(x_BxSxD).astype(self.compute_dtype)
    attn, new_cache = self.self_attn(normed, positions_BxS, prefix_k, prefix_v, cache, rope)
    x_BxSxD = x_BxSxD + attn.astype(x_BxSxD.dtype)
    normed = self.post_attention_layernorm(x_BxSxD).astype(self.compute_dtype)
    return x_BxSxD + self.mlp(normed).astype(x_BxSxD.dtype), new_cache
