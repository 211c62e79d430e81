"""A byte-level BPE trained on a source, offline: round trip, training and evaluating with it,
bits per byte, and one-line errors for a tokenizer that does not load or does not fit the model."""
import json
import math

import numpy as np
import pytest
import yaml

from parscale_jax.cli import main
from parscale_jax.data.tokenizer import HFTokenizer

from conftest import tiny_train_dict

VOCAB = 320


@pytest.fixture(scope="module")
def bpe(tmp_path_factory, data_dir):
  out = tmp_path_factory.mktemp("bpe")
  assert main(["tokenizer", "train", "--source", "stdlib", "--data-dir", data_dir, "--vocab-size",
               str(VOCAB), "--max-documents", "200", "--out", str(out)]) == 0
  return out / "tokenizer.json"


def test_bpe_round_trip_and_compression(bpe):
  tok = HFTokenizer(str(bpe))
  assert tok.vocab_size == VOCAB and tok.eos_id == 0
  for text in ["def f(x):\n    return x  # é ✓ 日本\n\t\r\n", " leading space", "\x00\x7f bytes"]:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.num_bytes(ids) == len(text.encode("utf-8"))
    assert ids.min() >= 0 and ids.max() < VOCAB
  code = "    def __init__(self, name):\n        self.name = name\n        return None\n"
  assert len(tok.encode(code)) < 0.75 * len(code.encode())  # Merges learned from Python code.


def test_tokenizer_train_refuses_to_overwrite_or_a_tiny_vocabulary(bpe, tmp_path, data_dir, capsys):
  before = bpe.read_bytes()
  assert main(["tokenizer", "train", "--source", "stdlib", "--data-dir", data_dir,
               "--vocab-size", "400", "--out", str(bpe.parent)]) == 2
  assert "already holds a tokenizer.json" in capsys.readouterr().err
  assert bpe.read_bytes() == before
  assert main(["tokenizer", "train", "--source", "stdlib", "--data-dir", data_dir,
               "--vocab-size", "100", "--out", str(tmp_path / "t")]) == 2
  assert "--vocab-size must be >= 257" in capsys.readouterr().err


@pytest.mark.slow
def test_train_and_eval_with_a_trained_bpe(bpe, tmp_path, data_dir, capsys):
  config = tiny_train_dict(data_dir, tokens=8 * 32 * 6, checkpoint_every=6)
  config["data"] = {**config["data"], "tokenizer": f"hf:{bpe}", "val_tokens": 256}
  config["model"] = {**config["model"], "vocab_size": VOCAB}
  (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
  assert main(["train", str(tmp_path / "c.yaml"), "--workdir", str(tmp_path / "run"), "--no-progress"]) == 0
  result = json.loads((tmp_path / "run" / "result.json").read_text())
  assert result["status"] == "done"
  # A BPE token stands for more than one byte: bits per byte < bits per token.
  bits_per_token = result["eval_loss"] / math.log(2)
  assert 0 < result["eval_bits_per_byte"] < bits_per_token / 1.2
  assert (tmp_path / "run" / "final" / "tokenizer.json").read_bytes() == bpe.read_bytes()
  capsys.readouterr()
  # `parscale eval` picks up the run's tokenizer and reproduces the run's own evaluation.
  assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--tokens", "256", "--seq-len", "32",
               "--data", "stdlib", "--data-dir", data_dir]) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["tokenizer"].endswith("final/tokenizer.json")
  assert out["tokens"] == result["eval_tokens"]
  assert out["loss"] == pytest.approx(result["eval_loss"], rel=1e-5)
  assert out["bits_per_byte"] == pytest.approx(result["eval_bits_per_byte"], rel=1e-5)


def test_a_model_vocabulary_smaller_than_the_tokenizer_is_one_line(bpe, tmp_path, data_dir, capsys):
  config = tiny_train_dict(data_dir)
  config["data"] = {**config["data"], "tokenizer": f"hf:{bpe}"}  # model.vocab_size stays 257.
  (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
  assert main(["train", str(tmp_path / "c.yaml"), "--workdir", str(tmp_path / "run")]) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert f"has {VOCAB} tokens but model.vocab_size is 257; set model.vocab_size: {VOCAB}" in err
  assert not (tmp_path / "run").exists()
  # The same for a checkpoint: a byte-level model evaluated with the BPE.
  import parscale_jax as pj
  pj.save_pretrained(pj.create_model(pj.ModelConfig(hidden_size=32, intermediate_size=48, num_layers=1,
                                                    num_heads=2, num_kv_heads=1)), tmp_path / "ckpt")
  assert main(["eval", "--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", f"hf:{bpe}",
               "--data", "stdlib", "--data-dir", data_dir]) == 2
  assert "but the checkpoint's vocabulary is 257" in capsys.readouterr().err


def test_a_tokenizer_file_that_does_not_load_is_one_line(tmp_path, data_dir, capsys):
  (tmp_path / "tokenizer.json").write_text("{not json")
  config = tiny_train_dict(data_dir)
  config["data"] = {**config["data"], "tokenizer": f"hf:{tmp_path / 'tokenizer.json'}"}
  (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
  assert main(["train", str(tmp_path / "c.yaml"), "--workdir", str(tmp_path / "run")]) == 2
  err = capsys.readouterr().err.strip()
  assert "Traceback" not in err and f"cannot load {tmp_path / 'tokenizer.json'}" in err.splitlines()[-1]
