"""Users' data formats: JSON lines, Parquet and `datasets.save_to_disk` folders, split by document,
rebuilt when changed, with one-line errors for a missing or empty text field."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from parscale_jax.cli import main
from parscale_jax.data.corpus import build_code_corpus
from parscale_jax.data.pipeline import DataConfig, train_dataset, validation_rows
from parscale_jax.errors import UserError

from conftest import tiny_train_dict

DOCS = [f"def f{i}(x):\n    return x * {i}  # document {i}\n" * 3 for i in range(60)]


def _write(kind, root, key="content", docs=DOCS):
  root.mkdir(parents=True, exist_ok=True)
  if kind == "jsonl":
    path = root / "corpus.jsonl"
    path.write_text("".join(json.dumps({key: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return str(path)
  table = pa.table({key: docs, "id": list(range(len(docs)))})
  if kind == "parquet":
    pq.write_table(table, root / "corpus.parquet")
    return str(root / "corpus.parquet")
  # The layout `datasets.save_to_disk` writes: arrow stream files, state.json, dataset_info.json.
  with pa.ipc.new_stream(str(root / "data-00000-of-00001.arrow"), table.schema) as writer:
    writer.write_table(table)
  (root / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
  (root / "dataset_info.json").write_text("{}")
  return str(root)


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "arrow"])
def test_record_sources_split_by_document(tmp_path, kind):
  source = _write(kind, tmp_path / "src")
  builder = build_code_corpus(source, tmp_path / "tfds", 20, text_key="content")
  texts = {split: [bytes(d["text"]).decode() for d in builder.as_data_source(split)]
           for split in ("train", "validation")}
  assert sorted(texts["train"] + texts["validation"]) == sorted(DOCS)
  assert 0 < len(texts["validation"]) < 30  # About 20 % of the 60 documents.
  config = DataConfig(source=source, data_dir=str(tmp_path / "tfds"), text_key="content", seq_len=16,
                      val_tokens=64, val_percent=20, shuffle_window=4)
  batch = next(iter(train_dataset(config, 2)))
  assert batch.shape == (2, 17) and batch.max() <= 256
  assert validation_rows(config).shape == (4, 17)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["jsonl", "parquet", "arrow"])
def test_a_tiny_model_trains_on_each_record_format(tmp_path, data_dir, kind, capsys):
  source = _write(kind, tmp_path / "src")
  config = tiny_train_dict(data_dir, tokens=8 * 32 * 4, checkpoint_every=4)
  config["data"] = {**config["data"], "source": source, "text_key": "content", "val_tokens": 64,
                    "val_percent": 20, "data_dir": str(tmp_path / "tfds")}
  (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
  assert main(["train", str(tmp_path / "c.yaml"), "--workdir", str(tmp_path / "run")]) == 0
  result = json.loads((tmp_path / "run" / "result.json").read_text())
  assert result["status"] == "done" and np.isfinite(result["eval_loss"])
  assert result["data"]["content_hash"]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_missing_or_empty_text_field_is_one_line(tmp_path, kind):
  source = _write(kind, tmp_path / "src")
  with pytest.raises(UserError, match="has no (field|column) 'text'"):
    build_code_corpus(source, tmp_path / "tfds", 20, text_key="text")
  empty = _write(kind, tmp_path / "empty", docs=[""] * 5)
  with pytest.raises(UserError, match="empty|non-empty document"):
    build_code_corpus(empty, tmp_path / "tfds", 20, text_key="content")


def test_a_changed_record_file_is_rebuilt(tmp_path):
  source = _write("jsonl", tmp_path / "src")
  first = build_code_corpus(source, tmp_path / "tfds", 20, text_key="content")
  _write("jsonl", tmp_path / "src", docs=DOCS[:40] + ["new document\n" * 5] * 20)
  second = build_code_corpus(source, tmp_path / "tfds", 20, text_key="content")
  assert first.info.config_name != second.info.config_name
  texts = [bytes(d["text"]) for s in ("train", "validation") for d in second.as_data_source(s)]
  assert b"new document\n" * 5 in texts


def test_eval_command_equals_python_evaluation(tmp_path, capsys):
  import jax.numpy as jnp
  import optax

  import parscale_jax as pj
  source = _write("jsonl", tmp_path / "src", key="text")
  model = pj.create_model(pj.ModelConfig(hidden_size=32, intermediate_size=48, num_layers=1, num_heads=2,
                                         num_kv_heads=1, P=2, prefix_tokens=4), seed=3)
  pj.save_pretrained(model, tmp_path / "ckpt")
  assert main(["eval", "--checkpoint", str(tmp_path / "ckpt"), "--data", source, "--tokens", "256",
               "--seq-len", "32"]) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  config = DataConfig(source=source, seq_len=32, val_tokens=256)
  rows = validation_rows(config)
  logits = model(rows[:, :-1])
  expected = float(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(rows[:, 1:])).mean())
  assert out["loss"] == pytest.approx(expected, rel=1e-5) and out["tokens"] == 256
  # Byte tokens stand for one byte each, end-of-document tokens for none.
  bytes_per_token = np.mean(rows[:, 1:] < 256)
  assert out["bits_per_byte"] == pytest.approx(expected / np.log(2) / bytes_per_token, rel=1e-5)
  assert main(["eval", "--checkpoint", str(tmp_path / "src"), "--data", source]) == 2
  assert "neither a finished run directory" in capsys.readouterr().err


def test_jsonl_opening_with_a_byte_order_mark_is_read(tmp_path):
  from parscale_jax.data.corpus import read_records
  path = tmp_path / "bom.jsonl"
  path.write_bytes(b"\xef\xbb\xbf" + b'{"text": "first"}\n{"text": "second"}\n')
  assert list(read_records("jsonl", [path], tmp_path, "text")) == [("bom.jsonl:1", b"first"),
                                                                   ("bom.jsonl:2", b"second")]


def test_file_names_that_are_not_utf8_and_lone_surrogates_build(tmp_path):
  """A folder with a Latin-1 file name, and JSON lines with a "\\ud800" escape: both build."""
  import os

  from parscale_jax.data.corpus import read_records, source_files, utf8_name
  folder = tmp_path / "files"
  folder.mkdir()
  for name, text in ((b"caf\xe9.py", b"x = 1\n" * 20), (b"plain.py", b"y = 2\n" * 20)):
    with open(os.path.join(os.fsencode(folder), name), "wb") as f:
      f.write(text)
  root, files = source_files(str(folder))
  assert sorted(utf8_name(p.relative_to(root).as_posix()) for p in files) == ["caf\\xe9.py", "plain.py"]
  path = tmp_path / "odd.jsonl"
  path.write_text('{"text": "a \\ud800 b"}\n{"text": "fine"}\n')
  assert [t for _, t in read_records("jsonl", [path], tmp_path, "text")] == [b"a ? b", b"fine"]
  from parscale_jax.data.pipeline import DataConfig, prepare_corpus
  prepare_corpus(DataConfig(source=str(folder), data_dir=str(tmp_path / "built"), val_percent=50))


def test_an_edit_that_keeps_size_and_mtime_changes_the_corpus_hash(tmp_path):
  import os
  import time

  from parscale_jax.data.corpus import content_hash
  folder = tmp_path / "src"
  folder.mkdir()
  (folder / "a.py").write_text("x = 1\n")
  (folder / "b.py").write_text("y = 2\n")
  before = content_hash(str(folder))
  stat = (folder / "a.py").stat()
  time.sleep(0.01)
  (folder / "a.py").write_text("x = 9\n")  # Same size...
  os.utime(folder / "a.py", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and mtime put back.
  assert (folder / "a.py").stat().st_mtime_ns == stat.st_mtime_ns
  assert content_hash(str(folder)) != before


def test_a_build_lists_its_files_once_and_shows_progress(tmp_path, monkeypatch, capsys):
  from parscale_jax.data import corpus
  folder = tmp_path / "src"
  folder.mkdir()
  for i in range(300):
    (folder / f"f{i:03d}.py").write_text(f"x = {i}\n")
  listings = []
  real = corpus.list_source
  monkeypatch.setattr(corpus, "list_source", lambda source: listings.append(source) or real(source))
  builder = build_code_corpus(str(folder), tmp_path / "tfds", 10)
  assert listings == [str(folder)]  # Name, lock, fingerprint and splits share one listing.
  splits = {s: sorted(bytes(d["path"]).decode() for d in builder.as_data_source(s))
            for s in ("train", "validation")}
  assert sorted(splits["train"] + splits["validation"]) == [f"f{i:03d}.py" for i in range(300)]
  assert not set(splits["train"]) & set(splits["validation"])
  assert splits["validation"] == sorted(f"f{i:03d}.py" for i in range(300)
                                        if corpus.is_validation(f"f{i:03d}.py", 10))
  lines = capsys.readouterr().err.splitlines()  # Not a terminal: whole lines, the last one complete.
  assert lines[-1].startswith(f"building the corpus of {folder}: 300/300 files")
