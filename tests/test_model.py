"""The model against the reference's golden outputs, and its invariants."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import parscale_jax as pj
from parscale_jax.configlib import ConfigError
from parscale_jax.model import ModelConfig, ParScaleParam, init_cache
from parscale_jax.model.accounting import param_counts
from parscale_jax.model.decode import decode_step
from parscale_jax.model.layers import rope_tables, static_rope_tables

from conftest import fixture_dir

# One layer keeps compiles short; the golden fixtures cover the multi-layer paths.
TINY = ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=1, num_heads=4,
                   num_kv_heads=2, P=3, prefix_tokens=5)


@nnx.jit
def forward(model, ids):
  return model(ids)


@pytest.mark.parametrize("name,scan", [("qwen2_parscale_tiny_p4", True), ("qwen2_parscale_tiny_p1", True),
                                       ("qwen2_parscale_tiny_p4", False)])
def test_golden_logits_and_greedy_generation(name, scan):
  path = fixture_dir(name)
  expected = np.load(path / "expected.npz")
  model = pj.load_pretrained(path, scan_layers=scan)
  logits = forward(model, jnp.asarray(expected["input_ids"]))
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, expected["logits"], atol=1e-4, rtol=0)
  generated = pj.generate(model, expected["input_ids"], 8)
  np.testing.assert_array_equal(generated, expected["generated_ids"])
  np.testing.assert_allclose(forward(model, generated), expected["generated_full_logits"], atol=1e-4,
                             rtol=0)


@pytest.mark.parametrize("name,scan", [("qwen2_parscale_tiny_p4", True), ("qwen2_parscale_tiny_p1", True),
                                       ("qwen2_parscale_tiny_p4", False)])
def test_golden_gradients(name, scan, tmp_path):
  """The training gradient at the golden weights equals the reference implementation's."""
  from safetensors.numpy import load_file

  path = fixture_dir(name)
  ids = jnp.asarray(np.load(path / "expected.npz")["input_ids"])
  model = pj.load_pretrained(path, scan_layers=scan)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(params):
    logits = nnx.merge(graphdef, params, rest)(ids)
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:]).mean()

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
  expected_loss = json.loads((path / "grads_loss.json").read_text())["loss"]
  np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-6)
  # Written through the checkpoint exporter, so gradients get the reference's names and layouts.
  pj.save_pretrained(nnx.merge(graphdef, grads, rest), tmp_path)
  ours, reference = load_file(str(tmp_path / "model.safetensors")), load_file(str(path / "grads.safetensors"))
  assert sorted(ours) == sorted(reference)
  for key, want in reference.items():
    scale = float(np.abs(want).max())
    assert scale > 0, key
    np.testing.assert_allclose(ours[key] / scale, want / scale, atol=1e-5, rtol=0, err_msg=key)


@pytest.mark.parametrize("P,impl,scan", [(1, "vmap", True), (3, "vmap", True), (3, "fold", True),
                                         (3, "loop", True), (3, "vmap", False)])
def test_cached_logits_equal_uncached(P, impl, scan):
  config = dataclasses.replace(TINY, P=P, stream_impl=impl, scan_layers=scan, num_layers=2)
  model = pj.create_model(config, seed=1)
  ids = jax.random.randint(jax.random.key(0), (2, 9), 0, config.vocab_size)
  full = forward(model, ids)
  graphdef, state = nnx.split(model)
  cache = init_cache(config, 2, 12)
  # Prompt of 5 tokens, then one token at a time.
  _, last, cache = decode_step(graphdef, state, ids[:, :5], cache, jax.random.key(0))
  np.testing.assert_allclose(last, full[:, 4], atol=1e-5)
  for t in range(5, 9):
    _, last, cache = decode_step(graphdef, state, ids[:, t:t + 1], cache, jax.random.key(0))
    np.testing.assert_allclose(last, full[:, t], atol=1e-5)
  assert int(cache["index"]) == 9


def test_a_prompt_scored_in_chunks_equals_the_uncached_forward(monkeypatch):
  """Prefill scores a prompt against the cache PREFILL_CHUNK queries at a time (here 2: a prompt
  of 7 in 4 chunks, the last one short), after the prompt's first tokens are already cached."""
  from parscale_jax.model import layers
  monkeypatch.setattr(layers, "PREFILL_CHUNK", 2)
  config = dataclasses.replace(TINY, P=2, num_layers=2, scan_layers=True)
  model = pj.create_model(config, seed=5)
  ids = jax.random.randint(jax.random.key(1), (3, 10), 0, config.vocab_size)
  full = forward(model, ids)
  graphdef, state = nnx.split(model)
  jax.clear_caches()  # decode_step traced before with the default chunk would be reused.
  cache = init_cache(config, 3, 10)
  _, last, cache = decode_step(graphdef, state, ids[:, :3], cache, jax.random.key(0))
  _, last, cache = decode_step(graphdef, state, ids[:, 3:], cache, jax.random.key(0))
  np.testing.assert_allclose(last, full[:, 9], atol=1e-5)
  # Every position of a whole prompt from an empty cache, not only the last.
  logits, _ = nnx.merge(graphdef, state).forward_with_cache(ids, init_cache(config, 3, 10))
  np.testing.assert_allclose(logits, full, atol=1e-5)


@pytest.mark.parametrize("impl", ["vmap", "fold", "loop"])
def test_rotary_tables_fixed_while_tracing_equal_the_traced_ones(impl):
  """model(ids) uses constant rotary tables; explicit positions make the program compute them."""
  cos, sin = static_rope_tables(9, TINY.head_dim, TINY.rope_theta)
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
  traced_cos, traced_sin = jax.jit(rope_tables, static_argnums=(1, 2))(
      positions, TINY.head_dim, TINY.rope_theta)
  np.testing.assert_allclose(traced_cos, jnp.broadcast_to(cos, traced_cos.shape), atol=1e-6)
  np.testing.assert_allclose(traced_sin, jnp.broadcast_to(sin, traced_sin.shape), atol=1e-6)
  model = pj.create_model(dataclasses.replace(TINY, stream_impl=impl), seed=3)
  ids = jax.random.randint(jax.random.key(2), (2, 9), 0, TINY.vocab_size)
  explicit = nnx.jit(lambda m, i, p: m(i, p))(model, ids, positions)
  np.testing.assert_allclose(forward(model, ids), explicit, atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", ["loop", "fold"])
def test_vmap_streams_equal_explicit_loop_and_folded_batch(impl):
  model = pj.create_model(TINY, seed=2)
  other = pj.create_model(dataclasses.replace(TINY, stream_impl=impl), seed=2)
  ids = jax.random.randint(jax.random.key(1), (2, 7), 0, TINY.vocab_size)
  np.testing.assert_allclose(forward(model, ids), forward(other, ids), atol=1e-5)

  def loss(m):
    return jnp.mean(jax.nn.log_softmax(m(ids))[..., 0])

  grad = nnx.jit(nnx.grad(loss))
  g1 = nnx.state(grad(model), nnx.Param)
  g2 = nnx.state(grad(other), nnx.Param)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g1, g2)


def test_shared_weights_receive_sum_of_per_stream_gradients():
  model = pj.create_model(TINY, seed=3)
  ids = jax.random.randint(jax.random.key(2), (2, 6), 0, TINY.vocab_size)
  bb_def, bb_state = nnx.split(model.backbone)

  def loss_with_copies(copies):
    # Each stream runs its own copy of the backbone weights (all equal to the shared ones).
    x = model.embed_tokens(ids)
    pos = jnp.broadcast_to(jnp.arange(6), ids.shape)
    h = jnp.stack([nnx.merge(bb_def, copies[p])(x, pos, model.prefix_k[p], model.prefix_v[p])[0]
                   for p in range(TINY.P)])
    return jnp.mean(jax.nn.log_softmax(model.head(model.aggregate(h)))[..., 1])

  per_copy = jax.jit(jax.grad(loss_with_copies))([bb_state] * TINY.P)
  summed = jax.tree.map(lambda *g: sum(g), *per_copy)
  grad = nnx.jit(nnx.grad(lambda m: jnp.mean(jax.nn.log_softmax(m(ids))[..., 1])))
  shared = nnx.state(grad(model))["backbone"]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), summed, shared)
  # The copies' gradients differ from each other: each stream contributes its own share.
  q0 = per_copy[0]["layers"][0]["self_attn"]["q_proj"]["weight"][...]
  q1 = per_copy[1]["layers"][0]["self_attn"]["q_proj"]["weight"][...]
  assert np.abs(q0 - q1).max() > 1e-6


def test_causality():
  model = pj.create_model(TINY, seed=4)
  ids = jax.random.randint(jax.random.key(3), (1, 10), 0, TINY.vocab_size)
  changed = ids.at[0, 6].set((ids[0, 6] + 1) % TINY.vocab_size)
  a, b = forward(model, ids), forward(model, changed)
  np.testing.assert_array_equal(a[:, :6], b[:, :6])
  assert np.abs(a[:, 6:] - b[:, 6:]).max() > 1e-4


def test_streams_differ_and_aggregation_weights_are_smoothed():
  model = pj.create_model(TINY, seed=5)
  ids = jax.random.randint(jax.random.key(4), (2, 5), 0, TINY.vocab_size)
  streams = nnx.jit(lambda m, x, pos: m.streams(x, pos)[0])
  h = streams(model, model.embed_tokens(ids), jnp.broadcast_to(jnp.arange(5), ids.shape))
  assert h.shape == (TINY.P, 2, 5, TINY.hidden_size)
  assert np.abs(h[0] - h[1]).max() > 1e-3  # The prefix makes the streams differ.
  w = jax.nn.softmax(nnx.jit(lambda m, h: m.aggregator(h))(model, h), -1) * (1 - TINY.smoothing) + TINY.smoothing / TINY.P
  assert float(w.min()) >= TINY.smoothing / TINY.P - 1e-7
  np.testing.assert_allclose(nnx.jit(lambda m, h: m.aggregate(h))(model, h), jnp.einsum("pbsd,bsp->bsd", h, w), atol=1e-6)


def test_param_tree_matches_accounting_and_p1_is_plain():
  for config in [TINY, dataclasses.replace(TINY, P=1), dataclasses.replace(TINY, tie_embeddings=True),
                 dataclasses.replace(TINY, aggregation="mean")]:
    model = pj.model.abstract_model(config)
    sizes = {k: sum(int(np.prod(v.get_value().shape)) for v in jax.tree.leaves(
        nnx.state(model, f), is_leaf=lambda x: isinstance(x, nnx.Variable)))
             for k, f in [("all", nnx.Param), ("parscale", ParScaleParam)]}
    counts = param_counts(config)
    assert sizes["all"] == counts.total
    assert sizes["parscale"] == counts.prefix + counts.aggregator
  p1 = pj.model.abstract_model(dataclasses.replace(TINY, P=1))
  assert not hasattr(p1, "prefix_k") and not hasattr(p1, "aggregator")
  assert param_counts(dataclasses.replace(TINY, aggregation="mean")).aggregator == 0


def test_shared_weights_are_not_copied_per_stream():
  # Backbone parameters have no stream axis: only the prefix and the aggregator depend on P.
  small, big = (pj.model.abstract_model(dataclasses.replace(TINY, P=p)) for p in (2, 8))
  bb = lambda m: jax.tree.map(lambda v: v.shape, nnx.state(m.backbone))
  assert bb(small) == bb(big)


def test_one_seed_gives_every_p_the_same_shared_weights():
  """Models of one seed differ only in ParScale's own parameters, whatever P: a P > 1 run and the
  P = 1 run of its seed start from the same embedding, backbone and head (sweeps pair them)."""
  def shared(p):
    model = pj.model.create_model(dataclasses.replace(TINY, P=p), seed=3)
    state = nnx.state(model, nnx.Param)
    parscale = nnx.state(model, ParScaleParam)
    flat = dict(nnx.to_flat_state(state))
    for path in dict(nnx.to_flat_state(parscale)):
      flat.pop(path)
    return {path: np.asarray(v.get_value()) for path, v in flat.items()}
  one, four, eight = shared(1), shared(4), shared(8)
  assert set(one) == set(four) == set(eight) and any("lm_head" in str(path) for path in one)
  for path in one:
    np.testing.assert_array_equal(one[path], four[path], err_msg=str(path))
    np.testing.assert_array_equal(one[path], eight[path], err_msg=str(path))
  head = next(path for path in one if "lm_head" in str(path))
  other_seed = pj.model.create_model(dataclasses.replace(TINY, P=1), seed=4)
  assert not np.array_equal(np.asarray(other_seed.lm_head.weight.get_value()), one[head])


def test_dense_skinny_and_wide_products_agree_and_init_matches_nnx_linear():
  from parscale_jax.model.cpu_kernels import SKINNY_ROWS
  from parscale_jax.model.layers import Dense
  dense = Dense(32, 48, TINY, nnx.Rngs(params=3), bias=True)
  linear = nnx.Linear(32, 48, kernel_init=nnx.initializers.normal(TINY.init_std),
                      rngs=nnx.Rngs(params=3))
  np.testing.assert_array_equal(dense.weight[...], linear.kernel[...].T)
  dense.bias[...] = jnp.linspace(-1.0, 1.0, 48)
  x = jax.random.normal(jax.random.key(0), (2, SKINNY_ROWS, 32))
  wide = dense(x)  # 2 * SKINNY_ROWS rows: x·Wᵀ.
  skinny = jnp.concatenate([dense(x[:1]), dense(x[1:])])  # SKINNY_ROWS rows each: W·xᵀ.
  assert wide.shape == skinny.shape == (2, SKINNY_ROWS, 48)
  np.testing.assert_allclose(skinny, wide, atol=1e-5, rtol=0)
  np.testing.assert_allclose(wide, x @ dense.weight[...].T + dense.bias[...], atol=1e-5, rtol=0)


@pytest.mark.parametrize("din,dout", [(8, 24), (24, 8)])  # Both branches of the weight gradient.
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_product_gradients_equal_autodiff(din, dout, dtype):
  from parscale_jax.model.cpu_kernels import dense_product
  kx, kw, kb, kc = jax.random.split(jax.random.key(8), 4)
  # A stream axis mapped over a shared weight and bias, as nnx.vmap runs the streams.
  x = jax.random.normal(kx, (3, 2, 5, din)).astype(dtype)
  w = jax.random.normal(kw, (dout, din)).astype(dtype)
  b = jax.random.normal(kb, (dout,)).astype(dtype)
  cotangent = jax.random.normal(kc, (3, 2, 5, dout)).astype(dtype)

  def grads(product):
    streams = jax.vmap(product, in_axes=(0, None, None))
    return jax.grad(lambda x, w, b: jnp.sum(streams(x, w, b).astype(jnp.float32) * cotangent),
                    argnums=(0, 1, 2))(x, w, b)
  dx, dw, db = grads(dense_product)
  dx_auto, dw_auto, db_auto = grads(lambda x, w, b: jnp.einsum("...i,oi->...o", x, w) + b)
  assert dx.dtype == dw.dtype == db.dtype == dtype
  assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
  tol = 1e-5 if dtype == jnp.float32 else 0.1
  for ours, auto in [(dx, dx_auto), (dw, dw_auto), (db, db_auto)]:
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(auto, np.float32), atol=tol)
  assert np.abs(np.asarray(dw_auto, np.float32)).max() > 1.0  # Not a trivially small comparison.
  # Without a bias: the same product, no bias gradient.
  y = dense_product(x, w, None)
  np.testing.assert_array_equal(y, jnp.einsum("...i,oi->...o", x, w))
  dx_plain = jax.grad(lambda x: jnp.sum(dense_product(x, w, None).astype(jnp.float32) * cotangent))(x)
  np.testing.assert_allclose(np.asarray(dx_plain, np.float32), np.asarray(dx, np.float32), atol=tol)


def test_attention_softmax_gradient_equals_autodiff():
  from parscale_jax.model.cpu_kernels import attention_softmax
  ks, kc = jax.random.split(jax.random.key(9))
  scores = jax.random.normal(ks, (2, 3, 7, 11))
  scores = jnp.where(jnp.arange(11) <= jnp.arange(7)[:, None] + 2, scores, -jnp.inf)  # Masked keys.
  cotangent = jax.random.normal(kc, scores.shape)
  loss = lambda softmax: lambda s: jnp.sum(softmax(s) * cotangent)
  np.testing.assert_array_equal(attention_softmax(scores), jax.nn.softmax(scores, axis=-1))
  ours = jax.grad(loss(attention_softmax))(scores)
  auto = jax.grad(loss(lambda s: jax.nn.softmax(s, axis=-1)))(scores)
  assert np.isfinite(ours).all() and np.abs(auto).max() > 0.1
  np.testing.assert_allclose(ours, auto, atol=1e-6)
  assert (ours[..., 9:] == 0).all()  # Keys 9 and 10 are masked for every query.


def test_bfloat16_compute_is_close_to_float32():
  model = pj.create_model(TINY, seed=6)
  bf16 = pj.create_model(dataclasses.replace(TINY, dtype="bfloat16"), seed=6)
  ids = jax.random.randint(jax.random.key(5), (2, 8), 0, TINY.vocab_size)
  a, b = forward(model, ids), forward(bf16, ids)
  assert b.dtype == jnp.float32
  assert np.abs(a - b).max() < 0.05


def test_sampling():
  model = pj.create_model(TINY, seed=7)
  ids = jnp.zeros((2, 3), jnp.int32)
  greedy = pj.generate(model, ids, 5)
  assert greedy.shape == (2, 8)
  np.testing.assert_array_equal(greedy[:, :3], ids)
  top1 = pj.generate(model, ids, 5, temperature=1.0, top_k=1, top_p=1e-6, rng=jax.random.key(0))
  np.testing.assert_array_equal(top1, greedy)
  s1 = pj.generate(model, ids, 5, temperature=1.0, top_k=1, top_p=1e-6, rng=jax.random.key(1))
  np.testing.assert_array_equal(s1, greedy)  # Same compiled step, another key: still greedy.
  from parscale_jax.model.decode import sample_token
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  draws = jax.jit(jax.vmap(lambda k: sample_token(logits, k, 1.0, None, None)))(
      jax.random.split(jax.random.key(2), 400))
  freq = np.bincount(np.asarray(draws).ravel(), minlength=4) / 400
  np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.07)
  nucleus = jax.jit(jax.vmap(lambda k: sample_token(logits, k, 1.0, None, 0.7)))(
      jax.random.split(jax.random.key(3), 100))
  assert set(np.asarray(nucleus).ravel()) <= {0, 1}  # 0.5 + 0.3 reaches 0.7; the rest is cut.
  with pytest.raises(ValueError):
    pj.generate(model, ids, 2, temperature=1.0)


@pytest.mark.slow
def test_compiled_generate_equals_a_loop_of_decode_steps():
  """`generate` runs as one program; driving `decode_step` token by token from the host, with the
  same keys and the same end-of-sequence rule, gives the same tokens (sampled, with an eos)."""
  from parscale_jax.model import init_cache
  model = pj.create_model(TINY, seed=8)
  ids = jax.random.randint(jax.random.key(9), (3, 4), 0, TINY.vocab_size)
  graphdef, state = nnx.split(model)
  for kwargs in (dict(), dict(temperature=1.5, top_p=0.9)):
    rng, cache = jax.random.key(4), init_cache(TINY, 3, 4 + 12)
    tokens, done, out = ids, jnp.zeros((3,), bool), [ids]
    sampled = pj.generate(model, ids, 12, rng=rng, **kwargs)
    eos = int(sampled[0, 6])  # A token the first row emits mid-way: every later one must repeat it.
    for _ in range(12):
      rng, step_rng = jax.random.split(rng)
      nxt, _, cache = decode_step(graphdef, state, tokens, cache, step_rng, kwargs.get("temperature", 0.0),
                                  None, kwargs.get("top_p"))
      nxt = jnp.where(done, eos, nxt)
      done = done | (nxt == eos)
      out.append(nxt[:, None])
      tokens = nxt[:, None]
    with_eos = pj.generate(model, ids, 12, rng=jax.random.key(4), eos_id=eos, **kwargs)
    np.testing.assert_array_equal(with_eos, jnp.concatenate(out, axis=1))
    assert (with_eos[0, 6:] == eos).all()


@pytest.mark.parametrize("bad, message", [
    (dict(hidden_size=30, num_heads=4), "does not divide hidden_size"),
    (dict(num_heads=4, num_kv_heads=3), "does not divide num_heads"),
    (dict(P=0), "P must be >= 1"),
    (dict(smoothing=1.5), "smoothing"),
    # Built in Python (not from YAML), an unknown choice used to run the folded-batch path.
    (dict(stream_impl="folded"), r"model.stream_impl: 'folded' is not one of \['vmap'"),
    (dict(dtype="float16"), "model.dtype: 'float16'"),
])
def test_impossible_configs_are_refused(bad, message):
  with pytest.raises(ConfigError, match=message):
    ModelConfig(**{**dataclasses.asdict(TINY), **bad})


def test_model_config_from_dict():
  from parscale_jax.model.config import model_config_from_dict
  config = model_config_from_dict({"size": "cpu-100k", "P": 4, "prefix_tokens": 16})
  assert (config.hidden_size, config.P, config.prefix_tokens) == (64, 4, 16)
  with pytest.raises(ConfigError, match="unknown key 'model.layers'"):
    model_config_from_dict({"size": "cpu-100k", "layers": 3})
  with pytest.raises(ConfigError, match="unknown size preset 'cpu-9'"):
    model_config_from_dict({"size": "cpu-9"})
  with pytest.raises(ConfigError, match="model.P: expected an integer"):
    model_config_from_dict({"size": "cpu-100k", "P": "four"})


def test_compiled_initialiser_equals_the_eager_one():
  """create_model, whose compiled program receives the key as an argument, gives the parameters
  that the eager initialiser gives for the same seed."""
  compiled, eager = pj.create_model(TINY, seed=7), pj.ParScaleLM(TINY, nnx.Rngs(params=7))
  for a, b in zip(jax.tree.leaves(nnx.state(compiled)), jax.tree.leaves(nnx.state(eager)), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_key_sequence_draws_the_keys_of_nnx_rngs():
  """Initialisation counts its keys in Python (fast to trace) and gives the weights that
  nnx.Rngs(params=seed) gives, bit for bit, so runs keep their initial weights."""
  from parscale_jax.model.keys import KeySequence
  for seed in (11, jax.random.key(11)):
    rngs, keys = nnx.Rngs(params=seed), KeySequence(seed)
    for _ in range(3):
      assert np.array_equal(jax.random.key_data(rngs.params()), jax.random.key_data(keys.params()))
  assert np.array_equal(jax.random.key_data(KeySequence(np.int64(11)).params()),
                        jax.random.key_data(KeySequence(11).params()))
  config = dataclasses.replace(TINY, P=3, prefix_param="mlp")
  ours, nnx_rngs = pj.ParScaleLM(config, KeySequence(5)), pj.ParScaleLM(config, nnx.Rngs(params=5))
  for a, b in zip(jax.tree.leaves(nnx.state(ours)), jax.tree.leaves(nnx.state(nnx_rngs)), strict=True):
    assert np.array_equal(a, b)


def test_causal_blocks_equal_one_score_tensor():
  """model(ids) scores queries in blocks (positions 0..S-1 known); explicit positions take the
  one-tensor path. Logits and gradients agree, with and without the prefix."""
  from parscale_jax.model.layers import causal_blocks
  assert causal_blocks(256) == 4 and causal_blocks(100) == 1 and causal_blocks(4096) == 8
  for P in (1, 3):
    model = pj.create_model(dataclasses.replace(TINY, P=P), seed=6)
    ids = jax.random.randint(jax.random.key(5), (2, 128), 0, TINY.vocab_size)
    positions = jnp.broadcast_to(jnp.arange(128), ids.shape)
    loss_blocks = lambda m: jnp.mean(jax.nn.log_softmax(m(ids))[..., 0])
    loss_one = lambda m: jnp.mean(jax.nn.log_softmax(m(ids, positions))[..., 0])
    np.testing.assert_allclose(forward(model, ids), nnx.jit(lambda m, i, p: m(i, p))(model, ids, positions),
                               atol=1e-5, rtol=0)
    g1 = nnx.state(nnx.jit(nnx.grad(loss_blocks))(model), nnx.Param)
    g2 = nnx.state(nnx.jit(nnx.grad(loss_one))(model), nnx.Param)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g1, g2)


def test_scan_layers_default_by_depth_and_parsed():
  from parscale_jax.model.config import model_config_from_dict
  assert not dataclasses.replace(TINY, num_layers=4).scanned
  assert dataclasses.replace(TINY, num_layers=36).scanned
  assert model_config_from_dict({"size": "l4-50k", "scan_layers": True}).scanned
  assert model_config_from_dict({"size": "l4-50k", "scan_layers": None}).scan_layers is None


def test_cpu_and_plain_kernels_agree_in_values_and_gradients():
  """kernels.py picks the XLA:CPU forms on a CPU and the plain ones elsewhere: both are the same
  functions (skinny and wide inputs, with and without a bias)."""
  from parscale_jax.model import cpu_kernels, kernels
  key = iter(jax.random.split(jax.random.key(0), 8))
  w, b = jax.random.normal(next(key), (24, 16)), jax.random.normal(next(key), (24,))
  for rows in (4, 300):
    x = jax.random.normal(next(key), (rows, 16))
    for bias in (None, b):
      f_cpu = lambda x, w: jnp.sum(jnp.sin(cpu_kernels.dense(x, w, bias)))
      f_plain = lambda x, w: jnp.sum(jnp.sin(kernels.plain_dense(x, w, bias)))
      np.testing.assert_allclose(cpu_kernels.dense(x, w, bias), kernels.plain_dense(x, w, bias),
                                 rtol=1e-5, atol=1e-5)
      for g_cpu, g_plain in zip(jax.grad(f_cpu, (0, 1))(x, w), jax.grad(f_plain, (0, 1))(x, w)):
        np.testing.assert_allclose(g_cpu, g_plain, rtol=1e-4, atol=1e-4)
  scores = jax.random.normal(next(key), (2, 3, 8))
  np.testing.assert_allclose(cpu_kernels.attention_softmax(scores), jax.nn.softmax(scores, -1), rtol=1e-6)
  assert kernels.on_cpu()  # This suite runs on XLA:CPU: the models above used the CPU kernels.


def test_a_program_traced_for_another_platform_gets_that_platforms_kernels():
  """A TPU program compiled on this CPU host is traced with the plain dense layer a TPU host would
  trace (the CPU kernel's custom backward pass would also hide its matmuls from remat dots)."""
  from parscale_jax.model import kernels

  args = (jnp.ones((128, 8)), jnp.ones((4, 8)))
  traced = lambda: str(jax.make_jaxpr(lambda x, w: kernels.dense(x, w, None))(*args))  # A new trace.
  assert kernels.on_cpu() and "custom_vjp" in traced()
  with kernels.traced_for("tpu"):
    assert not kernels.on_cpu() and "custom_vjp" not in traced()
  assert kernels.on_cpu()
