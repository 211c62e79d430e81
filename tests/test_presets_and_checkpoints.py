"""Size presets against the paper's published counts; checkpoint round trips and bad checkpoints."""
import csv
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import parscale_jax as pj
from parscale_jax.model import CheckpointError, ModelConfig
from parscale_jax.model.accounting import param_counts
from parscale_jax.model.config import PRESETS

from conftest import fixture_dir

PAPER = ["paper-0.5b", "paper-0.7b", "paper-1.1b", "paper-1.6b", "paper-2.8b", "paper-4.4b"]


def test_paper_presets_reproduce_all_24_published_counts():
  from parscale_jax.analysis.data import paper_table
  rows = [r for r in paper_table() if r["dataset"] == "stack-v2-python"]
  assert len(rows) == 24
  by_p = {}
  for row in rows:
    by_p.setdefault(int(row["P"]), []).append(int(row["N"]))
  for p, published in by_p.items():
    ours = [param_counts(pj.preset(name, P=p, prefix_tokens=48)).non_embedding for name in PAPER]
    assert sorted(published) == ours, p


def test_every_preset_builds():
  """Each preset builds as a model (abstractly: shapes only), with as many parameters as the
  accounting says, and keeps its name through a config file round trip."""
  from parscale_jax.configlib import to_dict
  from parscale_jax.model.config import model_config_from_dict
  from parscale_jax.model.parscale import abstract_model
  for name in PRESETS:
    config = pj.preset(name, P=2)
    built = abstract_model(config)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(built, nnx.Param)))
    assert n_params == param_counts(config).total > 0, name
    assert config.size == name and model_config_from_dict(to_dict(config)) == config
  small = [n for n in PRESETS if n.startswith("cpu-")]
  counts = [param_counts(pj.preset(n)).non_embedding for n in small]
  assert counts == sorted(counts) and 50e3 < counts[0] and counts[-1] < 5e6


def test_size_names_a_preset_only_while_its_fields_are_the_presets():
  import dataclasses

  from parscale_jax.model.config import model_config_from_dict
  assert model_config_from_dict({"size": "l4-200k", "P": 4}).size == "l4-200k"
  assert model_config_from_dict({"size": "l4-200k", "hidden_size": 80}).size is None
  assert dataclasses.replace(pj.preset("l4-200k"), intermediate_size=100).size is None
  assert ModelConfig(**PRESETS["l4-200k"]).size is None  # Built field by field: no name given.


def test_info_cli_json():
  out = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "info", "--size", "paper-0.5b",
                        "--P", "2", "--json"], capture_output=True, text=True, check=True)
  info = json.loads(out.stdout)
  assert info["non_embedding_params"] == 538195842
  assert info["embedding_params"] == 2 * 151936 * 896
  assert info["train_flops_per_token"] > 6 * 2 * 535813376
  bad = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "info", "--size", "paper-0.5b",
                        "--P", "0"], capture_output=True, text=True)
  assert bad.returncode == 2 and "--P: '0' is not a positive integer" in bad.stderr.splitlines()[-1]


def _params(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


@pytest.mark.parametrize("config", [
    ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=40, num_layers=2, P=3, prefix_tokens=4),
    ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=40, num_layers=2, tie_embeddings=True),
])
def test_save_load_round_trip_is_lossless(tmp_path, config):
  model = pj.create_model(config, seed=9)
  pj.save_pretrained(model, tmp_path / "ckpt")
  loaded = pj.load_pretrained(tmp_path / "ckpt")
  assert loaded.config == config
  # The weights are as readable as config.json (safetensors alone would make them owner-only).
  modes = {(tmp_path / "ckpt" / n).stat().st_mode & 0o777 for n in ("model.safetensors", "config.json")}
  assert len(modes) == 1
  jax.tree.map(np.testing.assert_array_equal, _params(model), _params(loaded))


def test_golden_checkpoint_round_trip(tmp_path):
  src = fixture_dir("qwen2_parscale_tiny_p4")
  from safetensors.numpy import load_file
  pj.save_pretrained(pj.load_pretrained(src), tmp_path / "out")
  a, b = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_bad_checkpoints_name_the_tensor(tmp_path):
  from safetensors.numpy import load_file, save_file
  config = ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=40, num_layers=2, P=2,
                       prefix_tokens=4)
  pj.save_pretrained(pj.create_model(config), tmp_path / "ok")
  tensors = load_file(str(tmp_path / "ok" / "model.safetensors"))
  cfg = (tmp_path / "ok" / "config.json").read_text()

  def write(name, ts):
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(cfg)
    save_file(ts, str(tmp_path / name / "model.safetensors"))
    return tmp_path / name

  wrong = dict(tensors, **{"model.layers.1.mlp.up_proj.weight": np.zeros((41, 32), np.float32)})
  with pytest.raises(CheckpointError, match=r"model.layers.1.mlp.up_proj.weight has shape \(41, 32\)"):
    pj.load_pretrained(write("wrong", wrong))
  missing = {k: v for k, v in tensors.items() if k != "model.layers.0.self_attn.prefix_v"}
  with pytest.raises(CheckpointError, match="model.layers.0.self_attn.prefix_v is missing"):
    pj.load_pretrained(write("missing", missing))
  extra = dict(tensors, **{"model.layers.2.mlp.up_proj.weight": np.zeros((40, 32), np.float32)})
  with pytest.raises(CheckpointError, match="model.layers.2.mlp.up_proj.weight is not part"):
    pj.load_pretrained(write("extra", extra))
  (tmp_path / "corrupt").mkdir()
  (tmp_path / "corrupt" / "config.json").write_text(cfg)
  (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"\x00garbage")
  with pytest.raises(CheckpointError, match="unreadable safetensors"):
    pj.load_pretrained(tmp_path / "corrupt")


def test_sharded_checkpoint_index(tmp_path):
  from safetensors.numpy import load_file, save_file
  src = fixture_dir("qwen2_parscale_tiny_p1")
  tensors = load_file(str(src / "model.safetensors"))
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
  for file, keys in shards.items():
    save_file({k: tensors[k] for k in keys}, str(tmp_path / file))
  weight_map = {k: f for f, keys in shards.items() for k in keys}
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  (tmp_path / "config.json").write_text((src / "config.json").read_text())
  a, b = pj.load_pretrained(src), pj.load_pretrained(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, _params(a), _params(b))
