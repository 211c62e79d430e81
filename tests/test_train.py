"""The trainer: end to end on the built-in corpus, exact resume after SIGKILL, NaN handling,
two-stage and frozen-backbone starts, sharded = unsharded, bad configs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx
from safetensors.numpy import load_file

from parscale_jax.configlib import ConfigError
from parscale_jax.train import trainer
from parscale_jax.train.config import config_from_dict, load_config
from parscale_jax.train.trainer import train

from conftest import REPO, tiny_train_dict


def _cli(*args, **kw):
  return subprocess.Popen([sys.executable, "-m", "parscale_jax.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kw)


def _write(tmp_path, config, name="config.yaml"):
  path = tmp_path / name
  path.write_text(yaml.safe_dump(config))
  return path


def test_result_names_the_preset_the_config_gave(tmp_path, data_dir):
  data = tiny_train_dict(data_dir, tokens=8 * 32 * 2)
  data["model"] = {"size": "l4-50k", "P": 2, "prefix_tokens": 4}
  assert train(config_from_dict(data), tmp_path / "run", progress=False)["size"] == "l4-50k"


def test_a_run_lists_and_opens_its_corpus_once(tmp_path, data_dir, monkeypatch):
  from parscale_jax.data import corpus
  from parscale_jax.data.pipeline import prepare_corpus
  config = config_from_dict(tiny_train_dict(data_dir, tokens=8 * 32 * 2))
  prepare_corpus(config.data)  # Built already, as in any run after the first (a build lists more).
  listings = []
  real = corpus.list_source
  monkeypatch.setattr(corpus, "list_source", lambda source: listings.append(source) or real(source))
  assert train(config, tmp_path / "run", progress=False)["status"] == "done"
  assert listings == [config.data.source]  # Training rows, validation rows and description share it.


def test_train_end_to_end_loss_falls(tmp_path, data_dir):
  config = config_from_dict(tiny_train_dict(data_dir, tensorboard=True, eval_every=10))
  result = train(config, tmp_path / "run", progress=False)
  assert result["status"] == "done"
  lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  losses = [l["loss"] for l in lines if "loss" in l]
  assert len(losses) == 30 and np.mean(losses[:3]) > np.log(257) - 0.5
  evals = [l["eval_loss"] for l in lines if "eval_loss" in l]
  assert len(evals) == 3 and evals[-1] < evals[0] < np.log(257)
  assert result["eval_loss"] == evals[-1] and result["eval_loss_sem"] > 0
  assert result["eval_loss"] < 3.6  # From ln 257 = 5.55: the model learned byte statistics.
  assert 0 < result["eval_bits_per_byte"] < 8
  on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
  assert on_disk == json.loads(json.dumps(result))
  for key in ("run_id", "size", "N", "P", "tokens", "train_loss", "eval_loss", "eval_loss_sem",
              "flops", "wall_seconds", "status"):
    assert key in on_disk
  assert on_disk["size"] == "custom"  # Built field by field, not from a preset.
  assert list((tmp_path / "run" / "tensorboard").iterdir())
  assert (tmp_path / "run" / "final" / "model.safetensors").exists()
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == ["20", "30"]
  # The same workdir with another config is refused, and nothing in it changes.
  before = (tmp_path / "run" / "result.json").read_text()
  with pytest.raises(ConfigError, match="different config"):
    train(config_from_dict(tiny_train_dict(data_dir, tokens=8 * 32 * 4)), tmp_path / "run", progress=False)
  assert (tmp_path / "run" / "result.json").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize("prefix_param", ["raw", "mlp"])
def test_resume_after_sigkill_is_exact(tmp_path, data_dir, prefix_param):
  cfg = _write(tmp_path, tiny_train_dict(data_dir, checkpoint_every=5,
                                         model={"prefix_param": prefix_param, "prefix_mlp_dim": 8,
                                                "prefix_mlp_hidden": 16}))
  ref = _cli("train", str(cfg), "--workdir", str(tmp_path / "ref"), "--no-progress")
  killed = _cli("train", str(cfg), "--workdir", str(tmp_path / "killed"), "--no-progress")
  ckpt = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 300
  while not (ckpt.exists() and any(p.name.isdigit() and int(p.name) >= 10 for p in ckpt.iterdir())):
    assert killed.poll() is None and time.time() < deadline, killed.communicate()
    time.sleep(0.05)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  resumed = _cli("train", str(cfg), "--workdir", str(tmp_path / "killed"), "--no-progress")
  out, err = resumed.communicate()
  assert resumed.returncode == 0, err
  ref_out, ref_err = ref.communicate()
  assert ref.returncode == 0, ref_err
  a = json.loads((tmp_path / "ref" / "result.json").read_text())
  b = json.loads((tmp_path / "killed" / "result.json").read_text())
  assert a["eval_loss"] == b["eval_loss"] and abs(a["train_loss"] - b["train_loss"]) <= 1e-6
  wa = load_file(str(tmp_path / "ref" / "final" / "model.safetensors"))
  wb = load_file(str(tmp_path / "killed" / "final" / "model.safetensors"))
  for k in wa:
    np.testing.assert_array_equal(wa[k], wb[k])
  steps = [json.loads(l)["step"] for l in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
           if "loss" in json.loads(l)]
  assert steps == list(range(1, 31))  # No step lost or logged twice.


def test_nan_loss_stops_with_failed_status_and_keeps_last_good_checkpoint(tmp_path, data_dir,
                                                                           monkeypatch):
  real = trainer.jit_train_step

  def poisoned(*args, **kwargs):
    step = real(*args, **kwargs)

    def run(state, rows):
      state, metrics = step(state, rows)
      if int(state.step) >= 13:
        metrics = dict(metrics, loss=jnp.float32(jnp.nan))
      return state, metrics
    return run

  monkeypatch.setattr(trainer, "jit_train_step", poisoned)
  config = config_from_dict(tiny_train_dict(data_dir, checkpoint_every=5))
  result = train(config, tmp_path / "run", progress=False)
  assert result["status"] == "failed" and result["reason"] == "loss is nan at step 13"
  assert result["last_good_step"] == 10
  saved = json.loads((tmp_path / "run" / "result.json").read_text())
  assert saved["status"] == "failed" and "nan" in saved["reason"]
  assert (tmp_path / "run" / "checkpoints" / "10").exists()
  assert not (tmp_path / "run" / "final").exists()


def _p1_run(tmp_path, data_dir):
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 4)
  base["model"] = {**base["model"], "P": 1}
  train(config_from_dict(base), tmp_path / "p1", progress=False)
  return tmp_path / "p1"


@pytest.mark.slow
def test_two_stage_and_frozen_backbone(tmp_path, data_dir, monkeypatch):
  p1 = _p1_run(tmp_path, data_dir)
  p1_weights = load_file(str(p1 / "final" / "model.safetensors"))

  # Two-stage start: the backbone equals the P = 1 checkpoint, the ParScale parameters are fresh.
  config = config_from_dict(tiny_train_dict(data_dir, init_from=str(p1), tokens=8 * 32 * 5))
  training = trainer.build_training(config, trainer.sharding.make_mesh(config.mesh))
  state = training.fresh_state()
  model = nnx.merge(training.graphdef, state.params, state.frozen)
  np.testing.assert_array_equal(model.embed_tokens.embedding[...], p1_weights["model.embed_tokens.weight"])
  np.testing.assert_array_equal(model.backbone.layers[1].mlp.up_proj.weight[...],
                                p1_weights["model.layers.1.mlp.up_proj.weight"])
  from parscale_jax.model import create_model
  scratch = create_model(config.model, seed=config.seed)
  np.testing.assert_array_equal(model.prefix_k[...], scratch.prefix_k[...])
  np.testing.assert_array_equal(model.aggregator.w1[...], scratch.aggregator.w1[...])

  # Frozen backbone: after training, every backbone tensor is bit-identical; the prefix moved.
  frozen_cfg = config_from_dict(tiny_train_dict(data_dir, init_from=str(p1), freeze_backbone=True,
                                                tokens=8 * 32 * 3, model={"dtype": "bfloat16"}))
  monkeypatch.chdir(tmp_path)  # A relative workdir, as `--workdir runs/x` gives, checkpoints too.
  result = train(frozen_cfg, Path("frozen"), progress=False)
  assert result["status"] == "done" and (tmp_path / "frozen" / "checkpoints" / "3").is_dir()
  after = load_file(str(tmp_path / "frozen" / "final" / "model.safetensors"))
  for name, value in p1_weights.items():
    np.testing.assert_array_equal(after[name], value)
  assert np.abs(after["model.layers.0.self_attn.prefix_k"] - np.asarray(scratch.prefix_k[...])[:, 0]).max() > 0

  with pytest.raises(ConfigError, match="hidden_size=32 in .* but 48"):
    bad = tiny_train_dict(data_dir, init_from=str(p1))
    bad["model"] = {**bad["model"], "hidden_size": 48}
    train(config_from_dict(bad), tmp_path / "bad", progress=False)


SHARDED_SCRIPT = """
import json, sys
import jax
from parscale_jax.data.pipeline import train_dataset
from parscale_jax.train import sharding, trainer
from parscale_jax.train.config import MeshConfig, config_from_dict

config = config_from_dict(json.loads(sys.argv[1]))
rows = next(iter(train_dataset(config.data, config.batch_size)))
out = {}
for name, devices, mesh_config in [("one", jax.devices()[:1], MeshConfig(1, 1)),
                                   ("eight", jax.devices(), MeshConfig(4, 2))]:
  mesh = sharding.make_mesh(mesh_config, devices)
  training = trainer.build_training(config, mesh)
  state = training.fresh_state()
  specs = {str(l.sharding.spec) for l in jax.tree.leaves(state.params)}
  step = training.train_step
  losses = []
  for _ in range(3):
    state, metrics = step(state, jax.device_put(rows[None], sharding.batch_sharding(mesh)))
    losses.append([float(metrics["loss"]), float(metrics["grad_norm"])])
  out[name] = {"losses": losses, "specs": sorted(specs), "devices": len(mesh.devices.flat)}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sharded_step_equals_single_device(data_dir):
  config = tiny_train_dict(data_dir)
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") +
             " --xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, json.dumps(config)], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["one"]["devices"] == 1 and out["eight"]["devices"] == 8
  assert any("fsdp" in spec for spec in out["eight"]["specs"])  # Parameters really are sharded.
  for (loss1, norm1), (loss8, norm8) in zip(out["one"]["losses"], out["eight"]["losses"]):
    assert abs(loss1 - loss8) <= 1e-5 and abs(norm1 - norm8) <= 1e-4
  assert out["one"]["losses"][2][0] < out["one"]["losses"][0][0]


@pytest.mark.slow
def test_cpu_devices_split_the_batch_over_cores(tmp_path, data_dir):
  config = tiny_train_dict(data_dir, tokens=8 * 32 * 10)
  two = _cli("train", str(_write(tmp_path, config)), "--workdir", str(tmp_path / "two"),
             "--no-progress", "--set", "mesh.cpu_devices=2")
  one = train(config_from_dict(config), tmp_path / "one", progress=False)
  _, err = two.communicate()
  assert two.returncode == 0, err
  split = json.loads((tmp_path / "two" / "result.json").read_text())
  assert one["devices"] == 1 and split["devices"] == 2
  assert abs(one["train_loss"] - split["train_loss"]) <= 1e-5
  assert abs(one["eval_loss"] - split["eval_loss"]) <= 1e-5
  # JAX already runs in this process with one CPU device: another count is refused, nothing written.
  late = config_from_dict({**config, "mesh": {"cpu_devices": 2}})
  with pytest.raises(ConfigError, match=r"mesh.cpu_devices=2: JAX already runs .* 1 CPU devices"):
    train(late, tmp_path / "late", progress=False)
  assert not (tmp_path / "late").exists()


def test_bad_configs_are_refused_with_one_line(tmp_path, data_dir, capsys):
  from parscale_jax.cli import main
  cases = {
      "unknown.yaml": (tiny_train_dict(data_dir, optim={"lrr": 1.0}), "unknown key 'optim.lrr'"),
      "type.yaml": (tiny_train_dict(data_dir, batch_size="eight"), "batch_size: expected an integer"),
      "shape.yaml": (tiny_train_dict(data_dir, model={"num_heads": 3}), "does not divide"),
      "accum.yaml": (tiny_train_dict(data_dir, grad_accum=3), "not a multiple of grad_accum"),
  }
  for name, (cfg, message) in cases.items():
    code = main(["train", str(_write(tmp_path, cfg, name)), "--workdir", str(tmp_path / f"w-{name}")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / f"w-{name}").exists()  # Nothing written for a refused config.
  (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
  assert main(["train", str(tmp_path / "broken.yaml"), "--workdir", str(tmp_path / "w")]) == 2
  assert "malformed YAML" in capsys.readouterr().err
  # The installed command line exits non-zero with the same one line.
  proc = _cli("train", str(_write(tmp_path, tiny_train_dict(data_dir))), "--workdir",
              str(tmp_path / "w"), "--set", "nope=1")
  _, err = proc.communicate()
  assert proc.returncode == 2 and err.strip().endswith("unknown key 'nope' (known: batch_size, "
                                                      "checkpoint_every, data, eval_every, export_final, "
                                                      "freeze_backbone, grad_accum, init_from, "
                                                      "keep_checkpoints, log_every, mesh, model, optim, "
                                                      "seed, tensorboard, tokens, wandb)")


def test_every_experiment_config_parses():
  paths = sorted((REPO / "experiments").glob("*.yaml"))
  assert paths
  for path in paths:
    load_config(path)


def test_resume_accepts_a_config_saved_before_a_key_existed_and_new_wandb_settings(tmp_path, data_dir):
  config = config_from_dict(tiny_train_dict(data_dir, tokens=8 * 32 * 4, checkpoint_every=2))
  first = train(config, tmp_path / "run", progress=False)
  saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
  del saved["wandb"]  # As a config.yaml written before the key existed.
  (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
  again = train(config, tmp_path / "run", progress=False)
  assert again["status"] == "done" and again["eval_loss"] == first["eval_loss"]
  with pytest.raises(ConfigError, match=r"differs in: tokens\)"):
    train(config_from_dict(tiny_train_dict(data_dir, tokens=8 * 32 * 6, checkpoint_every=2,
                                           wandb={"project": "p"})), tmp_path / "run", progress=False)


@pytest.mark.slow
def _one_step_updates(data_dir, model=None) -> dict:
  """Each parameter's change in one optimizer step, at prefix_lr_scale 1 and 10."""
  updates = {}
  for scale in (1.0, 10.0):
    config = config_from_dict(tiny_train_dict(data_dir, model=model or {}, optim={"prefix_lr_scale": scale,
                                                                                     "warmup_fraction": 0.0}))
    training = trainer.build_training(config, trainer.sharding.make_mesh(config.mesh))
    state = training.fresh_state()
    before = jax.tree.map(np.asarray, state.params)
    step = training.train_step
    rows = np.random.default_rng(0).integers(0, 256, (1, 8, 33), dtype=np.int32)
    state, _ = step(state, rows)  # One step: the same gradients, so only the scale differs.
    updates[scale] = jax.tree.map(lambda a, b: np.asarray(a) - b, state.params, before)
  return updates


def test_prefix_lr_scale_multiplies_only_the_prefix_update(data_dir):
  updates = _one_step_updates(data_dir)
  flat1 = jax.tree_util.tree_flatten_with_path(updates[1.0])[0]
  flat10 = dict(jax.tree_util.tree_flatten_with_path(updates[10.0])[0])
  checked = set()
  for path, u1 in flat1:
    u10, name = flat10[path], jax.tree_util.keystr(path)
    ratio = 10.0 if "prefix_" in name else 1.0
    assert np.abs(u1).max() > 0, name
    np.testing.assert_allclose(u10, ratio * u1, rtol=2e-3, atol=1e-7, err_msg=name)
    checked.add("prefix" if ratio == 10.0 else "other")
  assert checked == {"prefix", "other"}


class ToyPrefix:
  """A prefix form for the test: one table per stream, its keys' negation as values."""

  @staticmethod
  def build(c, rngs):
    from parscale_jax.model.prefix import PrefixParam
    shape = (c.P, c.num_layers, c.num_kv_heads, c.prefix_tokens, c.head_dim)
    return {"toy_table": PrefixParam(0.02 * jax.random.normal(rngs.params(), shape))}

  @staticmethod
  def prefixes(model):
    return model.toy_table[...], -model.toy_table[...]


def test_a_new_prefix_form_is_one_class_and_trains_as_a_prefix(data_dir, monkeypatch):
  """Registered alone, a new form is built, trained at prefix_lr_scale and not weight-decayed,
  whatever its attribute is called (the optimizer selects the prefix by its parameter type)."""
  from parscale_jax.model import prefix
  from parscale_jax.train.optimizer import decay_mask, prefix_mask

  monkeypatch.setitem(prefix.PREFIX_FORMS, "toy", ToyPrefix)
  model = {"P": 2, "prefix_param": "toy"}
  updates = _one_step_updates(data_dir, model)
  for path, u1 in jax.tree_util.tree_flatten_with_path(updates[1.0])[0]:
    name = jax.tree_util.keystr(path)
    u10 = dict(jax.tree_util.tree_flatten_with_path(updates[10.0])[0])[path]
    np.testing.assert_allclose(u10, (10.0 if "toy_table" in name else 1.0) * u1, rtol=2e-3, atol=1e-7,
                               err_msg=name)
  config = config_from_dict(tiny_train_dict(data_dir, model=model))
  from parscale_jax.model import create_model
  params = nnx.state(create_model(config.model), nnx.Param)
  assert bool(prefix_mask(params)["toy_table"].get_value()) and not bool(decay_mask(params)["toy_table"].get_value())
  with pytest.raises(ConfigError, match="model.prefix_param: 'tiny' is not one of"):
    config_from_dict(tiny_train_dict(data_dir, model={"P": 2, "prefix_param": "tiny"}))


@pytest.mark.slow
def test_single_stream_prefix_is_p1_with_a_prefix(data_dir):
  from parscale_jax.model import create_model
  from parscale_jax.model.config import ModelConfig
  base = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
              num_kv_heads=2, prefix_tokens=4)
  one = create_model(ModelConfig(**base, P=1, single_stream_prefix=True), seed=3)
  # Two streams with the same prefix, mixed by a mean, are one stream with that prefix.
  two = create_model(ModelConfig(**base, P=2, aggregation="mean"), seed=3)
  for name in ("prefix_k", "prefix_v"):
    getattr(two, name)[...] = jnp.concatenate([getattr(one, name)[...]] * 2)
  ids = np.random.default_rng(0).integers(0, 256, (2, 16), dtype=np.int32)
  np.testing.assert_allclose(one(ids), two(ids), atol=1e-5)
  plain = create_model(ModelConfig(**base, P=1), seed=3)
  assert np.abs(np.asarray(one(ids)) - np.asarray(plain(ids))).max() > 1e-3
  with pytest.raises(ConfigError, match="single_stream_prefix .*export_final: false"):
    config_from_dict(tiny_train_dict(data_dir, model={"P": 1, "single_stream_prefix": True}))


def test_weight_decay_mask_is_the_same_for_scanned_and_listed_layers():
  from parscale_jax.model import create_model
  from parscale_jax.model.config import ModelConfig
  from parscale_jax.train.optimizer import decay_mask
  masks = {}
  for scan in (True, False):
    config = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, P=2, prefix_tokens=4, scan_layers=scan)
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(nnx.state(create_model(config), nnx.Param)))[0]
    # Listed layers' paths carry the layer index; drop it to compare with the scanned paths.
    names = lambda path: [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    masks[scan] = {tuple(n for n in names(path) if not n.isdigit() and n != "value"): v
                   for path, v in flat}
  assert masks[True] == masks[False]
  decayed = {"/".join(p) for p, v in masks[True].items() if v}
  assert "backbone/layers/mlp/up_proj/weight" in decayed and "lm_head/weight" in decayed
  assert not any(n.endswith(("bias", "scale", "prefix_k", "embedding")) for n in decayed)


@pytest.mark.slow
def test_a_checkpoint_saved_before_the_prefix_had_its_own_type_resumes_exactly(tmp_path, data_dir,
                                                                                 monkeypatch):
  """Checkpoints written when the prefix was a plain ParScaleParam restore into PrefixParam and
  resume to the loss of an uninterrupted run, bit for bit. (No weight decay and no prefix scale:
  the optimizer then treats both types alike, as the old code did by name.)"""
  from parscale_jax.model import prefix

  config = config_from_dict(tiny_train_dict(data_dir, optim={"weight_decay": 0.0}))
  whole = train(config, tmp_path / "whole", progress=False)
  new_build = prefix.RawPrefix.build
  as_before = lambda c, rngs: {k: prefix.ParScaleParam(v[...]) for k, v in new_build(c, rngs).items()}
  monkeypatch.setattr(prefix.RawPrefix, "build", staticmethod(as_before))
  assert train(config, tmp_path / "old", progress=False, until_step=20)["status"] == "paused"
  monkeypatch.setattr(prefix.RawPrefix, "build", staticmethod(new_build))
  assert train(config, tmp_path / "old", progress=False)["eval_loss"] == whole["eval_loss"]


@pytest.mark.slow
def test_ctrl_c_marks_the_run_interrupted_and_says_how_to_resume(tmp_path, data_dir, ctrl_c_reaches_children):
  """SIGINT to `parscale train` after its first checkpoint: exit 130, one line saying that the same
  command resumes from that checkpoint's step; result.json `interrupted` (not `running`, not
  failed), and the sweep table reads it as pending."""
  config = tmp_path / "long.yaml"
  config.write_text(yaml.safe_dump(tiny_train_dict(data_dir, tokens=8 * 32 * 100000)))
  run = tmp_path / "run"
  proc = subprocess.Popen([sys.executable, "-m", "parscale_jax.cli", "train", str(config),
                           "--workdir", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 300
  while not [p for p in run.glob("checkpoints/*") if p.name.isdigit()]:  # A finished checkpoint.
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.1)
  proc.send_signal(signal.SIGINT)
  try:
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()  # Nothing trains on after a failed test; a no-op on the exited process.
  result = json.loads((run / "result.json").read_text())
  step = int(result["reason"].rsplit(" ", 1)[1])
  assert proc.returncode == 130 and result["status"] == "interrupted" and step >= 10
  assert err.strip().splitlines()[-1] == (
      f"parscale train: interrupted; run the same command again to resume from step {step}")
  assert "\r" not in err  # stderr is a pipe here: whole progress lines, no redraws.
  from parscale_jax.sweep.table import table_row
  from parscale_jax.sweep.spec import RunSpec
  assert table_row(RunSpec("run", "main", {}, {}), result)["status"] == "pending"
