"""Bad values, faults and misuse: each gets a one-line error and a non-zero exit, or a `failed` run
with its reason; never a traceback or a silently wrong number."""
import json
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import parscale_jax as pj
from parscale_jax.cli import main
from parscale_jax.configlib import ConfigError, load_yaml
from parscale_jax.data.corpus import build_code_corpus
from parscale_jax.data.pipeline import DataConfig, train_dataset
from parscale_jax.errors import UserError
from parscale_jax.locks import DirLock
from parscale_jax.train import checkpointing, trainer
from parscale_jax.train.config import config_from_dict, load_config
from parscale_jax.train.trainer import train

from conftest import REPO, tiny_train_dict


def _one_line_error(capsys, code, *fragments):
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  lines = err.splitlines()
  assert "Traceback" not in err
  assert all(f in lines[-1] for f in fragments), err
  return lines[-1]


@pytest.mark.parametrize("key,value,fragment", [
    ("batch_size", 0, "batch_size must be >= 1"),
    ("grad_accum", 0, "grad_accum must be >= 1"),
    ("mesh.fsdp", 0, "mesh.fsdp must be >= 1"),
    ("mesh.data", 0, "mesh.data must be >= 1 or -1"),
    ("checkpoint_every", 0, "checkpoint_every must be >= 1"),
    ("log_every", 0, "log_every must be >= 1"),
    ("keep_checkpoints", 0, "keep_checkpoints must be >= 1"),  # 0 would turn resume off.
    ("eval_every", -1, "eval_every must be >= 0"),
    ("tokens", -5, "tokens must be >= 1"),
    ("optim.b2", 1.0, "optim.b2 must be in [0, 1)"),
    ("data.shuffle_window", 0, "data.shuffle_window must be >= 1"),
    ("data.row_order", "random", "data.row_order: 'random' is not one of"),
])
def test_bad_values_are_refused_before_anything_is_written(tmp_path, data_dir, capsys, key, value,
                                                           fragment):
  config = tmp_path / "c.yaml"
  config.write_text(yaml.safe_dump(tiny_train_dict(data_dir)))
  workdir = tmp_path / "w"
  code = main(["train", str(config), "--workdir", str(workdir), "--set", f"{key}={value}"])
  _one_line_error(capsys, code, fragment)
  assert not workdir.exists()


def test_numbers_in_yaml_1_2_form_are_numbers(tmp_path):
  config = load_config(REPO / "experiments" / "tiny.yaml", ["optim.lr=1e-3", "tokens=4e5"])
  assert config.optim.lr == 0.001 and config.tokens == 400000
  (tmp_path / "c.yaml").write_text("a: 2e-4\nb: 1.5E+3\nc: '1e-3'\nd: 1_000\n")
  assert load_yaml(tmp_path / "c.yaml") == {"a": 2e-4, "b": 1500.0, "c": "1e-3", "d": 1000}


@pytest.mark.slow
def test_a_run_whose_final_evaluation_is_not_finite_is_failed_and_not_exported(tmp_path, data_dir,
                                                                                monkeypatch):
  """The last update diverges: every training loss was finite, the final weights are not."""
  monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: (float("nan"), float("nan")))
  result = train(config_from_dict(tiny_train_dict(data_dir, tokens=8 * 32 * 3)), tmp_path / "run",
                 progress=False)
  assert result["status"] == "failed" and "final validation loss is nan" in result["reason"]
  assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "failed"
  assert not (tmp_path / "run" / "final").exists()


def test_a_nonfinite_intermediate_evaluation_fails_the_run(tmp_path, data_dir, monkeypatch):
  monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: (float("inf"), 0.0))
  result = train(config_from_dict(tiny_train_dict(data_dir, tokens=8 * 32 * 6, eval_every=2)),
                 tmp_path / "run", progress=False)
  assert result["status"] == "failed" and result["reason"] == "validation loss is inf at step 2"


@pytest.mark.slow
def test_a_checkpoint_with_random_bytes_in_its_files_is_refused_and_the_run_failed(
    tmp_path, data_dir, capsys):
  cfg = tmp_path / "c.yaml"
  cfg.write_text(yaml.safe_dump(tiny_train_dict(data_dir, tokens=8 * 32 * 10, checkpoint_every=5)))
  workdir = tmp_path / "run"
  assert main(["train", str(cfg), "--workdir", str(workdir), "--no-progress"]) == 0
  capsys.readouterr()
  shutil.rmtree(workdir / "checkpoints" / "10")  # Resume will start from step 5.
  shutil.rmtree(workdir / "final")
  files = sorted((p for p in (workdir / "checkpoints" / "5" / "state").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
  data = bytearray(files[-1].read_bytes())  # The largest file holds the arrays.
  rng = np.random.default_rng(0)
  at = len(data) // 2
  data[at:at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
  files[-1].write_bytes(bytes(data))
  code = main(["train", str(cfg), "--workdir", str(workdir), "--no-progress"])
  line = _one_line_error(capsys, code, "checkpoints/5")
  # Where the bytes land decides who notices: the compressed store itself, or (when orbax restores
  # them without complaint) the checksum saved with the arrays.
  assert "checkpoints/5 is damaged" in line or "checkpoints/5 cannot be restored" in line, line
  assert "TensorStore" not in line
  saved = json.loads((workdir / "result.json").read_text())
  assert saved["status"] == "failed" and "checkpoints/5" in saved["reason"]
  assert not (workdir / "final").exists()


def test_state_checksum_sees_one_flipped_bit_in_any_array():
  state = {"w": jnp.linspace(-1, 1, 300, dtype=jnp.float32).reshape(10, 30),
           "h": jnp.ones((7,), jnp.bfloat16), "step": jnp.array(12, jnp.int32),
           "key": jax.random.key(3)}
  base = checkpointing.state_checksum(state)
  assert checkpointing.state_checksum(jax.tree.map(lambda a: a, state)) == base
  flips = {"w": lambda a: a.at[4, 17].set(np.nextafter(np.float32(a[4, 17]), np.float32(9))),
           "h": lambda a: a.at[6].set(jnp.bfloat16(1.0078125)),
           "step": lambda a: a + 1,
           "key": lambda a: jax.random.key(4)}
  for name, flip in flips.items():
    assert checkpointing.state_checksum({**state, name: flip(state[name])}) != base, name
  # Two values swapped keep the plain sum: the position-weighted sum tells them apart.
  w = state["w"].reshape(-1)
  swapped = w.at[0].set(w[1]).at[1].set(w[0]).reshape(10, 30)
  assert checkpointing.state_checksum({**state, "w": swapped}) != base


def test_a_second_trainer_on_a_workdir_is_refused(tmp_path, data_dir):
  workdir = tmp_path / "run"
  held = DirLock(workdir, ".train.lock")
  assert held.acquire()
  try:
    with pytest.raises(UserError, match="another process is training in it"):
      train(config_from_dict(tiny_train_dict(data_dir)), workdir, progress=False)
  finally:
    held.release()
  assert not (workdir / "result.json").exists()


def test_workdir_that_is_a_file_is_refused(tmp_path, data_dir, capsys):
  (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_train_dict(data_dir)))
  (tmp_path / "afile").write_text("keep me")
  code = main(["train", str(tmp_path / "c.yaml"), "--workdir", str(tmp_path / "afile")])
  _one_line_error(capsys, code, "cannot be used as a run directory")
  assert (tmp_path / "afile").read_text() == "keep me"


def test_unwritable_workdir_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
  """Root ignores permission bits, so the refusal a read-only directory gives is injected."""
  (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_train_dict(data_dir)))
  (tmp_path / "ro").mkdir()

  def refuse(path, *args, **kwargs):
    raise PermissionError(13, "Permission denied", str(path))
  monkeypatch.setattr("parscale_jax.locks.open", refuse, raising=False)
  code = main(["train", str(tmp_path / "c.yaml"), "--workdir", str(tmp_path / "ro")])
  _one_line_error(capsys, code, "cannot be used as a run directory (Permission denied)")
  assert list((tmp_path / "ro").iterdir()) == []


def test_fit_out_that_is_a_file_is_one_line(tmp_path, capsys):
  (tmp_path / "out").write_text("keep me")
  code = main(["fit", "--reference", "paper", "--bootstrap", "0", "--no-plots", "--out",
               str(tmp_path / "out")])
  _one_line_error(capsys, code, str(tmp_path / "out"))
  assert (tmp_path / "out").read_text() == "keep me"


def test_edited_data_directory_is_rebuilt(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  for i in range(3):
    (src / f"f{i}.py").write_text(f"old = {i}\n" * 50)
  first = build_code_corpus(str(src), tmp_path / "tfds")
  (src / "f1.py").write_text("new = 1\n" * 70)
  second = build_code_corpus(str(src), tmp_path / "tfds")
  assert first.info.config_name != second.info.config_name
  texts = [bytes(d["text"]) for split in ("train", "validation")
           for d in second.as_data_source(split)]
  assert b"new = 1\n" * 70 in texts and b"old = 1\n" * 50 not in texts
  fingerprint = second.info.metadata["fingerprint"]
  assert fingerprint["content_hash"] in second.info.config_name and fingerprint["file_count"] == 3


def test_non_utf8_files_reach_the_byte_tokenizer_as_their_bytes(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  latin1 = "café = 'été'\n".encode("latin-1") * 40
  for i in range(3):
    (src / f"f{i}.py").write_bytes(latin1)
  config = DataConfig(source=str(src), data_dir=str(tmp_path / "tfds"), seq_len=16, val_tokens=16,
                      shuffle_window=1)
  batch = next(iter(train_dataset(config, 2)))
  assert 0xE9 in batch  # The byte itself, not U+FFFD's EF BF BD.
  assert 0xBD not in batch
  from parscale_jax.data.tokenizer import HFTokenizer
  hf = HFTokenizer.__new__(HFTokenizer)  # Its decoding step only; no tokenizer file needed.
  with pytest.raises(UserError, match="not UTF-8 text"):
    hf.encode(latin1)


@pytest.mark.parametrize("ids,fragment", [
    ([[1, 57]], "token id 57 is outside the vocabulary [0, 57)"),
    ([[-1, 2]], "token id -1 is outside the vocabulary"),
    ([1, 2, 3], "must be a [batch, sequence] array"),
    (np.ones((1, 3), np.float32), "must be integers"),
])
def test_model_refuses_bad_token_ids(ids, fragment):
  model = pj.create_model(pj.ModelConfig(vocab_size=57, hidden_size=16, intermediate_size=16,
                                         num_layers=1, num_heads=2, num_kv_heads=1, P=2,
                                         prefix_tokens=2))
  with pytest.raises(UserError, match=fragment.replace("[", r"\[").replace(")", r"\)")):
    model(ids)
  with pytest.raises(UserError):
    pj.generate(model, ids, 2)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(max_new_tokens=-1), "max_new_tokens must be an integer >= 0"),
    (dict(max_new_tokens=2, top_k=0), "top_k must be in [1, 57]"),
    (dict(max_new_tokens=2, top_p=0.0), "top_p must be in (0, 1]"),
    (dict(max_new_tokens=2, temperature=-0.5), "temperature must be >= 0"),
    (dict(max_new_tokens=2, temperature=1.0), "needs an rng key"),
    (dict(max_new_tokens=2, eos_id=57), "eos_id 57 is outside the vocabulary"),
])
def test_generate_refuses_bad_sampling_arguments(kwargs, fragment):
  model = pj.create_model(pj.ModelConfig(vocab_size=57, hidden_size=16, intermediate_size=16,
                                         num_layers=1, num_heads=2, num_kv_heads=1))
  with pytest.raises(UserError) as e:
    pj.generate(model, [[1, 2]], **kwargs)
  assert fragment in str(e.value)
  with pytest.raises(UserError, match="prompt is empty"):
    pj.generate(model, np.zeros((1, 0), np.int32), 2)


def test_sweep_axis_values_equal_by_value_are_refused(tmp_path, capsys):
  (tmp_path / "base.yaml").write_text("tokens: 4096\n")
  (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"model.P": [1, 1.0]}}))
  code = main(["sweep", "status", str(tmp_path / "s.yaml")])
  _one_line_error(capsys, code, "grid key 'model.P': value 1.0 is repeated")


def test_other_grid_axes_are_fitted_apart_never_averaged_as_seeds(tmp_path):
  from parscale_jax.analysis.law import parscale
  from parscale_jax.sweep.report import analyze_sweep
  from parscale_jax.sweep.spec import load_sweep
  rows = []
  for lr, k in ((1e-3, 0.2), (1e-2, 0.6)):  # Two learning rates with different laws.
    truth = np.array([[1.2, 2e-4, 0.3, k]])
    for n in (5e4, 1e5, 2e5, 4e5):
      for p in (1, 2, 4, 8):
        loss = float(parscale(truth, np.array([n]), np.array([p]))[0, 0])
        rows.append({"run_id": f"lr={lr}_P={p}_N={n:g}", "stage": "main", "size": f"n{n:g}", "N": n,
                     "P": p, "seed": 0, "loss": loss, "status": "done", "grid.optim.lr": lr})
  (tmp_path / "base.yaml").write_text("tokens: 4096\n")
  (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"model.P": [1]},
                                                   "analysis": {"bootstrap": 0}}))
  results = tmp_path / "results"
  results.mkdir()
  analyze_sweep(load_sweep(tmp_path / "s.yaml"), results, rows, log=lambda s: None)
  groups = json.loads((results / "fit" / "fit.json").read_text())["groups"]
  assert sorted(groups) == ["main, optim.lr=0.001", "main, optim.lr=0.01"]
  assert abs(groups["main, optim.lr=0.001"]["k"] - 0.2) < 0.01
  assert abs(groups["main, optim.lr=0.01"]["k"] - 0.6) < 0.01


@pytest.mark.parametrize("argv,fragment", [
    (["fit", "--reference", "paper", "--bootstrap", "1", "--out", "OUT"], "needs at least 100"),
    (["fit", "--reference", "paper", "--bootstrap", "-5", "--out", "OUT"], "--bootstrap"),
    (["cost", "--P", "1"], "--P: '1' is not an integer >= 2"),
    (["cost", "--bytes", "0"], "--bytes"),
    (["cost", "--flops-efficiency", "0"], "--flops-efficiency"),
    (["cost", "--flops-efficiency", "-0.5"], "--flops-efficiency"),
    (["cost", "--input-tokens", "-3"], "--input-tokens"),
    (["info", "--size", "cpu-55k", "--seq-len", "-100"], "--seq-len"),
    (["info", "--size", "cpu-5k"], "--size"),
])
def test_cli_values_out_of_range(tmp_path, capsys, argv, fragment):
  argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
  try:
    code = main(argv)
  except SystemExit as e:  # argparse's usage error.
    code = e.code
  _one_line_error(capsys, code, fragment)
  assert not (tmp_path / "out").exists()


def test_fit_on_a_binary_file_or_a_directory(tmp_path, capsys):
  (tmp_path / "t.csv").write_bytes(bytes(range(256)) * 4)
  _one_line_error(capsys, main(["fit", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o")]),
                  "not a text table")
  _one_line_error(capsys, main(["fit", str(tmp_path), "--out", str(tmp_path / "o")]), "not a file")


def test_ray_executor_without_ray(tmp_path, capsys, monkeypatch):
  monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError.
  (tmp_path / "base.yaml").write_text("tokens: 4096\n")
  (tmp_path / "s.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"model.P": [1]}}))
  code = main(["sweep", "run", str(tmp_path / "s.yaml"), "--results", str(tmp_path / "r"),
               "--executor", "ray"])
  _one_line_error(capsys, code, "--executor ray needs Ray")


def test_degenerate_fit_is_reported_as_not_identified(tmp_path, capsys):
  """A flat table (loss independent of N and P) cannot identify the law."""
  rows = ["N,P,loss"] + [f"{n},{p},{2.0 + 0.001 * ((i * 7) % 5)}"
                         for i, (n, p) in enumerate((n, p) for n in (5e4, 1e5, 2e5, 4e5)
                                                    for p in (1, 2, 4, 8))]
  (tmp_path / "flat.csv").write_text("\n".join(rows) + "\n")
  assert main(["fit", str(tmp_path / "flat.csv"), "--bootstrap", "100", "--out", str(tmp_path / "o")]) == 0
  err = capsys.readouterr().err
  assert "law not identified" in err
  fit = json.loads((tmp_path / "o" / "fit.json").read_text())["groups"]["all"]
  assert fit["identified"] is False and fit["k_excludes_zero"] is None and fit["not_identified"]
  report = (tmp_path / "o" / "report.md").read_text()
  assert "law not identified" in report and "above 0" not in report
