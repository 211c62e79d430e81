"""Cached autoregressive decoding: `generate` as one compiled program, and `decode_step` (one jitted
forward at the cache's index) for callers that drive the loop themselves."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from parscale_jax.errors import UserError
from parscale_jax.model.parscale import ParScaleLM, check_token_ids, init_cache


def sample_token(logits_BxV, rng, temperature: float, top_k: int | None, top_p: float | None):
  """Greedy when temperature == 0; else temperature, then top-k and nucleus (top-p) filtering."""
  if temperature == 0.0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits = logits_BxV / temperature
  if top_k is not None:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p is not None:
    sorted_desc = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    # Keep the smallest set whose mass reaches top_p: a token stays if the mass before it < top_p.
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(mass_before < top_p, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


# How decode_step is compiled; aot/programs.py compiles it again with these and explicit layouts.
DECODE_STEP_JIT = {"static_argnums": (0, 5, 6, 7), "donate_argnums": (3,)}


@functools.partial(jax.jit, **DECODE_STEP_JIT)
def decode_step(graphdef, state, tokens_BxS, cache, rng, temperature=0.0, top_k=None, top_p=None):
  """Feeds tokens_BxS (the prompt, or the last token) at the cache's index; returns the next token
  [B], its logits [B, V] and the updated cache. The cache buffers are donated."""
  model = nnx.merge(graphdef, state)
  logits_Bx1xV, cache = model.forward_with_cache(tokens_BxS, cache, last_only=True)
  last_BxV = logits_Bx1xV[:, -1]
  return sample_token(last_BxV, rng, temperature, top_k, top_p), last_BxV, cache


def _is_key(rng) -> bool:
  """A typed key (jax.random.key) or a legacy uint32[2] one (jax.random.PRNGKey)."""
  if not isinstance(rng, jax.Array):
    return False
  return jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) or (rng.dtype == jnp.uint32 and rng.shape == (2,))


def generate(model: ParScaleLM, input_ids, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, rng: jax.Array | None = None,
             eos_id: int | None = None, cache_dtype=jnp.float32) -> jax.Array:
  """Returns the prompt [B, S] followed by `max_new_tokens` generated tokens: [B, S + new].

  Greedy by default; sampled with `temperature > 0` (needs `rng`). After `eos_id`, a row repeats it."""
  if not isinstance(model, ParScaleLM):
    raise UserError(f"generate: the first argument must be a ParScaleLM (pj.load_pretrained or "
                    f"pj.create_model), got {type(model).__name__}")
  if input_ids is None:
    raise UserError("generate: input_ids is None; give int token ids [batch, sequence]")
  input_ids = check_token_ids(input_ids, model.config.vocab_size)
  b, s = input_ids.shape
  if s == 0:
    raise UserError("generate: the prompt is empty; give at least one token per row")
  if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
    raise UserError(f"generate: max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
  if not temperature >= 0:
    raise UserError(f"generate: temperature must be >= 0, got {temperature}")
  if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= model.config.vocab_size):
    raise UserError(f"generate: top_k must be in [1, {model.config.vocab_size}], got {top_k!r}")
  if top_p is not None and not 0 < top_p <= 1:
    raise UserError(f"generate: top_p must be in (0, 1], got {top_p}")
  if eos_id is not None and not 0 <= eos_id < model.config.vocab_size:
    raise UserError(f"generate: eos_id {eos_id} is outside the vocabulary [0, {model.config.vocab_size})")
  if max_new_tokens == 0:
    return input_ids
  if temperature > 0 and rng is None:
    raise UserError("generate: sampling (temperature > 0) needs an rng key")
  if rng is not None and not _is_key(rng):
    raise UserError(f"generate: rng must be a JAX key (jax.random.key(seed)), got {rng!r}")
  if not jnp.issubdtype(jnp.dtype(cache_dtype), jnp.floating):
    raise UserError(f"generate: cache_dtype must be a floating dtype (float32, bfloat16), got "
                    f"{jnp.dtype(cache_dtype)}")
  rng = jax.random.key(0) if rng is None else rng
  graphdef, state = nnx.split(model)
  return generate_program(graphdef, state, input_ids, rng, max_new_tokens, float(temperature), top_k, top_p,
                   eos_id, jnp.dtype(cache_dtype))


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8, 9))
def generate_program(graphdef, state, input_ids_BxS, rng, max_new_tokens, temperature, top_k, top_p,
                     eos_id, cache_dtype):
  """The whole generation as one program: the prompt's forward, then a loop of one-token steps on
  device (no dispatch or host sync per token), the cache updated in place."""
  b, s = input_ids_BxS.shape
  cache = init_cache(nnx.merge(graphdef, state).config, b, s + max_new_tokens, cache_dtype)

  def step(state, tokens_BxS, cache, rng, done_B):
    rng, step_rng = jax.random.split(rng)
    next_B, _, cache = decode_step(graphdef, state, tokens_BxS, cache, step_rng, temperature, top_k, top_p)
    if eos_id is not None:  # After its end-of-sequence token, a row repeats it.
      next_B = jnp.where(done_B, eos_id, next_B)
      done_B = done_B | (next_B == eos_id)
    return next_B, cache, rng, done_B

  first_B, cache, rng, done_B = step(state, input_ids_BxS, cache, rng, jnp.zeros((b,), bool))
  new_BxN = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(first_B)

  # The weights travel in the loop's carry: nnx refuses variables traced outside the loop body.
  def body(i, carry):
    state, new_BxN, last_B, cache, rng, done_B = carry
    next_B, cache, rng, done_B = step(state, last_B[:, None], cache, rng, done_B)
    return state, new_BxN.at[:, i].set(next_B), next_B, cache, rng, done_B

  carry = (state, new_BxN, first_B, cache, rng, done_B)
  new_BxN = jax.lax.fori_loop(1, max_new_tokens, body, carry)[1]
  return jnp.concatenate([input_ids_BxS, new_BxN], axis=1)
