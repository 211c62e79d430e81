"""The reparameterised (mlp) prefix: its gradient, its export in the reference's format, two-stage
and frozen-backbone training with it; stream diversity (rho) of P > 1 models."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from safetensors.numpy import load_file

import parscale_jax as pj
from parscale_jax.model import ModelConfig, create_model
from parscale_jax.model.parscale import combine_prefix
from parscale_jax.train import trainer
from parscale_jax.train.config import config_from_dict
from parscale_jax.train.diversity import predicted_multiplier, stream_diversity
from parscale_jax.train.trainer import train

from conftest import tiny_train_dict

CONFIG = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                     P=3, prefix_tokens=5, prefix_param="mlp", prefix_mlp_dim=8,
                     prefix_mlp_hidden=16)


def _ids(b=2, s=12, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, CONFIG.vocab_size, (b, s + 1)))


def _loss(model, rows):
  logits = model(rows[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, rows[:, 1:]).mean()


@pytest.mark.slow
def test_mlp_prefix_gradient_equals_autodiff_of_the_explicit_composition():
  model = create_model(CONFIG, seed=1)
  rows = _ids()
  grads = nnx.grad(_loss)(model, rows).prefix_mlp

  # The same loss written as two explicit steps: the MLP, written out here with numpy's layout,
  # then a raw-prefix model fed its output; the chain rule by jax.vjp.
  raw = combine_prefix(model)
  mlp = {k: getattr(model.prefix_mlp, k)[...] for k in ("table", "w1", "b1", "w2", "b2")}
  c = CONFIG

  def compose(p):
    out = []
    for layer in range(c.num_layers):
      hidden = jnp.tanh(p["table"][:, layer] @ p["w1"][layer] + p["b1"][layer])
      out.append(hidden @ p["w2"][layer] + p["b2"][layer])
    kv = jnp.stack(out, axis=1).reshape(c.P, c.num_layers, 2, c.num_kv_heads, c.prefix_tokens,
                                        c.head_dim)
    return kv[:, :, 0], kv[:, :, 1]

  graphdef, prefix_state, rest = nnx.split(
      raw, lambda path, _: path[-1] in ("prefix_k", "prefix_v"), ...)
  treedef = jax.tree.structure(prefix_state)

  def loss_of_prefix(kv, rest):  # Leaves in key order: prefix_k, prefix_v.
    return _loss(nnx.merge(graphdef, jax.tree.unflatten(treedef, list(kv)), rest), rows)

  prefixes, pullback = jax.vjp(compose, mlp)
  np.testing.assert_allclose(prefixes[0], model.prefixes()[0], rtol=1e-6, atol=1e-7)
  # Both arguments differentiated: nnx.vmap wants every variable at the same trace level.
  d_prefix, _ = jax.grad(loss_of_prefix, argnums=(0, 1))(prefixes, rest)
  (expected,) = pullback(d_prefix)
  for name, value in expected.items():
    got = getattr(grads, name)[...]
    assert np.abs(value).max() > 0, name
    np.testing.assert_allclose(got, value, rtol=2e-4, atol=1e-7, err_msg=name)


def test_mlp_prefix_starts_with_the_raw_prefix_std_and_exports_in_the_reference_format(tmp_path):
  config = ModelConfig(**{**CONFIG.__dict__, "prefix_tokens": 48, "prefix_mlp_dim": 128,
                          "prefix_mlp_hidden": 512})
  pk, pv = create_model(config, seed=0).prefixes()
  assert abs(float(jnp.std(pk)) / config.prefix_init_std - 1) < 0.1
  model = create_model(CONFIG, seed=0)
  pj.save_pretrained(model, tmp_path / "mlp")
  pj.save_pretrained(create_model(ModelConfig(**{**CONFIG.__dict__, "prefix_param": "raw"})),
                     tmp_path / "raw")
  mlp_file, raw_file = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("mlp", "raw"))
  assert {k: v.shape for k, v in mlp_file.items()} == {k: v.shape for k, v in raw_file.items()}
  assert json.loads((tmp_path / "mlp" / "config.json").read_text())["parscale_n"] == CONFIG.P
  loaded = pj.load_pretrained(tmp_path / "mlp")
  assert loaded.config.prefix_param == "raw"
  ids = _ids()[:, :-1]
  np.testing.assert_allclose(loaded(ids), model(ids), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(mlp_file["model.layers.1.self_attn.prefix_v"],
                                np.asarray(model.prefixes()[1])[:, 1])


@pytest.mark.slow
def test_mlp_prefix_two_stage_with_a_frozen_backbone(tmp_path, data_dir):
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 4)
  base["model"] = {**base["model"], "P": 1}
  train(config_from_dict(base), tmp_path / "p1", progress=False)
  p1 = load_file(str(tmp_path / "p1" / "final" / "model.safetensors"))
  mlp = {"prefix_param": "mlp", "prefix_mlp_dim": 8, "prefix_mlp_hidden": 16}
  config = config_from_dict(tiny_train_dict(data_dir, init_from=str(tmp_path / "p1"),
                                            freeze_backbone=True, tokens=8 * 32 * 3, model=mlp))
  scratch = create_model(config.model, seed=config.seed)
  result = train(config, tmp_path / "frozen", progress=False)
  assert result["status"] == "done"
  after = load_file(str(tmp_path / "frozen" / "final" / "model.safetensors"))
  for name, value in p1.items():
    np.testing.assert_array_equal(after[name], value)
  moved = after["model.layers.0.self_attn.prefix_k"] - np.asarray(scratch.prefixes()[0])[:, 0]
  assert np.abs(moved).max() > 0


def _identical_streams(model):
  """The model with every stream's prefix set to stream 0's: the streams compute the same thing."""
  pk, pv = model.prefix_k[...], model.prefix_v[...]
  model.prefix_k.set_value(jnp.broadcast_to(pk[:1], pk.shape))
  model.prefix_v.set_value(jnp.broadcast_to(pv[:1], pv.shape))
  return model


def test_identical_streams_have_rho_one_and_predict_no_gain():
  model = _identical_streams(create_model(ModelConfig(**{**CONFIG.__dict__, "prefix_param": "raw"})))
  rows = np.asarray(_ids(b=6, s=16, seed=3))
  doc = stream_diversity(model, rows, alpha=0.2, batch_size=4)
  assert doc["rho"] == pytest.approx(1.0, abs=1e-6)
  assert doc["predicted_multiplier"] == pytest.approx(1.0, abs=1e-4)
  assert max(doc["stream_losses"]) - min(doc["stream_losses"]) < 1e-5
  # Identical streams aggregate to themselves: the aggregate's loss is each stream's.
  assert doc["aggregate_loss"] == pytest.approx(doc["stream_losses"][0], abs=1e-5)
  assert doc["tokens"] == 6 * 16
  # Different prefixes make different streams.
  doc = stream_diversity(create_model(CONFIG, seed=2), rows, alpha=0.2)
  assert -1.0 <= doc["rho"] < 1.0 - 1e-6
  assert predicted_multiplier(4, 0.0, 0.5) == pytest.approx(16.0)
  assert predicted_multiplier(4, 1.0, 0.5) == pytest.approx(1.0)


@pytest.mark.slow
def test_diversity_cli_on_a_trained_p4_run(tmp_path, data_dir):
  config = tiny_train_dict(data_dir, model={"P": 4}, tokens=8 * 32 * 3)
  assert train(config_from_dict(config), tmp_path / "run", progress=False)["status"] == "done"
  out = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "diversity", "--checkpoint",
                        str(tmp_path / "run"), "--data-dir", data_dir, "--tokens", "2048",
                        "--seq-len", "32", "--json"], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  doc = json.loads(out.stdout)
  assert -1.0 <= doc["rho"] <= 1.0 and len(doc["stream_losses"]) == 4
  assert doc["aggregate_loss"] > 0 and doc["predicted_multiplier"] > 0
  one = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "diversity", "--checkpoint",
                        str(tmp_path / "nothing"), "--json"], capture_output=True, text=True)
  assert one.returncode == 2 and one.stderr.count("\n") == 1, one.stderr
  few = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "diversity", "--checkpoint",
                        str(tmp_path / "run"), "--tokens", "2"], capture_output=True, text=True)
  assert few.returncode == 2 and few.stderr.count("\n") == 1 and "at least 1024" in few.stderr
