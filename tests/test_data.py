"""The offline corpus, tokenizer and grain pipeline: determinism, packing, resumable state."""
import dataclasses

import numpy as np
import pytest

from parscale_jax.configlib import ConfigError
from parscale_jax.data.corpus import build_code_corpus, is_validation
from parscale_jax.data.pipeline import DataConfig, train_dataset, validation_rows
from parscale_jax.data.tokenizer import ByteTokenizer
from parscale_jax.errors import UserError


def test_stdlib_corpus_builds_once_with_fingerprint(data_dir):
  builder = build_code_corpus("stdlib", data_dir)
  fp = builder.info.metadata["fingerprint"]
  assert fp["file_count"] > 500 and fp["bytes"] > 5e6
  train, val = builder.info.splits["train"].num_examples, builder.info.splits["validation"].num_examples
  assert 0.02 < val / (train + val) < 0.08
  paths = {bytes(x["path"]).decode() for x in builder.as_data_source("validation")}
  assert all(is_validation(p, 5) for p in paths)
  assert not any("site-packages" in p for p in paths)
  again = build_code_corpus("stdlib", data_dir)  # Reused, not rebuilt.
  assert again.info.metadata["fingerprint"] == fp


def test_byte_tokenizer_round_trip():
  tok = ByteTokenizer()
  ids = tok.encode("def f(x): return 'ü'\n")
  assert ids.max() < 256 and tok.decode(ids) == "def f(x): return 'ü'\n"
  assert tok.num_bytes(np.append(ids, tok.eos_id)) == len("def f(x): return 'ü'\n".encode())


def _assert_resumes_exactly(config, iterator, n):
  """A new iterator set to `iterator`'s state yields exactly its next n batches."""
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(n)]
  again = iter(train_dataset(config, 4))
  again.set_state(state)
  for x in expected:
    np.testing.assert_array_equal(x, next(again))


def test_pipeline_is_deterministic_and_resumes_exactly(data_dir):
  config = DataConfig(data_dir=data_dir, seq_len=32, shuffle_window=64, val_tokens=256)
  a, b = iter(train_dataset(config, 4)), iter(train_dataset(config, 4))
  first = [next(a) for _ in range(20)]
  for x in first:
    np.testing.assert_array_equal(x, next(b))
  assert first[0].shape == (4, 33) and first[0].dtype == np.int32
  _assert_resumes_exactly(config, a, 30)
  other = next(iter(train_dataset(DataConfig(data_dir=data_dir, seq_len=32, shuffle_window=64,
                                             shuffle_seed=1), 4)))
  assert not np.array_equal(other, first[0])
  # A run's seed orders the documents too, unless data.shuffle_seed pins the order.
  from parscale_jax.train.config import TrainConfig
  assert TrainConfig(data=config, seed=1).train_data.shuffle_seed == 1
  assert TrainConfig(data=dataclasses.replace(config, shuffle_seed=5), seed=1).train_data.shuffle_seed == 5


def test_packing_concatenates_documents_with_eos(tmp_path):
  docs = {"a.py": "x = 1\n", "b.py": "def f():\n    return 2\n", "c.py": "print('hello world')\n" * 3,
          "d.py": "import os\n"}
  for name, text in docs.items():
    (tmp_path / "src" / name).parent.mkdir(exist_ok=True)
    (tmp_path / "src" / name).write_text(text)
  config = DataConfig(source=str(tmp_path / "src"), data_dir=str(tmp_path / "tfds"), seq_len=8,
                      shuffle_window=1, val_percent=1, val_tokens=8)
  ds = iter(train_dataset(config, 1))
  # One epoch, in the shuffled document order: every row is 9 tokens of the concatenation.
  stream = np.concatenate([next(ds)[0] for _ in range(12)])
  tok = ByteTokenizer()
  text = tok.decode(stream)
  held_out = {bytes(x["path"]).decode() for x in build_code_corpus(
      config.source, config.data_dir, 1).as_data_source("validation")}
  assert len(held_out) == 1  # A tiny corpus still gets a validation split.
  for name, doc in docs.items():
    assert (doc in text) != (name in held_out)
  assert np.sum(stream == tok.eos_id) >= 3  # Every document ends with end-of-document.


def test_validation_rows_are_fixed_and_drawn_from_every_document(tmp_path):
  tok = ByteTokenizer()
  src = tmp_path / "src"
  src.mkdir()
  # One long file and many short ones: rows taken in file order would all come from the first.
  (src / "a_long.py").write_text("".join(f"x{i} = {i * i}\n" for i in range(800)))
  for i in range(30):
    (src / f"short_{i:02d}.py").write_text(f"def f{i}():\n    return {i}  # short file {i}\n")
  config = DataConfig(source=str(src), data_dir=str(tmp_path / "tfds"), seq_len=16, val_tokens=40 * 16,
                      val_percent=50)
  rows = validation_rows(config)
  assert rows.shape == (40, 17)
  np.testing.assert_array_equal(rows, validation_rows(config))
  held_out = [bytes(d["text"]).decode() for d in build_code_corpus(
      config.source, config.data_dir, 50).as_data_source("validation")]
  stream = np.concatenate([np.append(tok.encode(t), tok.eos_id) for t in held_out])
  # Rows are disjoint slices of the packed split, in order...
  starts = [next(i for i in range(len(stream) - 16) if np.array_equal(stream[i:i + 17], r))
            for r in rows]
  assert starts == sorted(starts) and all(s % 17 == 0 for s in starts)
  # ...and every held-out document starts inside one of them.
  doc_starts = np.cumsum([0] + [len(tok.encode(t)) + 1 for t in held_out[:-1]])
  assert set(doc_starts // 17) <= {s // 17 for s in starts}
  with pytest.raises(UserError, match="holds only"):
    validation_rows(dataclasses.replace(config, val_tokens=10**9))


def test_validation_rows_equal_the_packed_stream_and_tokenise_each_document_once():
  from parscale_jax.data.pipeline import rows_of_stream
  rng = np.random.default_rng(0)
  lengths = rng.choice([1, 3, 9, 40, 250], size=60)  # Rows spanning many documents and inside one.
  docs = [rng.integers(0, 257, n).astype(np.int32) for n in lengths]
  width = 17
  stream = np.concatenate(docs)
  packed = stream[: len(stream) // width * width].reshape(-1, width)
  chosen = np.sort(rng.choice(len(packed), 25, replace=False))
  calls = []
  rows = rows_of_stream(chosen, width, np.cumsum(lengths) - lengths, lengths,
                         lambda j: calls.append(j) or docs[j])
  np.testing.assert_array_equal(rows, packed[chosen])
  assert len(calls) == len(set(calls))


def test_window_rows_are_corpus_slices_and_resume_exactly(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  letters = np.random.default_rng(0).integers(65, 91, (4, 400))  # No repeated 9-grams.
  for i in range(4):
    (src / f"f{i}.py").write_text("".join(map(chr, letters[i])))
  config = DataConfig(source=str(src), data_dir=str(tmp_path / "tfds"), seq_len=8, row_order="windows",
                      val_tokens=8, shuffle_seed=3)
  tok = ByteTokenizer()
  train_docs = [bytes(d["text"]).decode() for d in build_code_corpus(
      config.source, config.data_dir, 5).as_data_source("train")]
  stream = np.concatenate([np.append(tok.encode(t), tok.eos_id) for t in train_docs])
  it = iter(train_dataset(config, 4))
  batches = [next(it) for _ in range(50)]
  starts = set()
  for row in np.concatenate(batches):
    hits = [i for i in range(len(stream) - 8) if np.array_equal(stream[i:i + 9], row)]
    assert hits, row
    starts.add(hits[0])
  assert len(starts) > 150  # Offsets are spread over the corpus, not a fixed tiling.
  _assert_resumes_exactly(config, it, 5)
  with pytest.raises(ConfigError, match="row_order"):
    DataConfig(row_order="random")


def test_tfds_dataset_by_name_with_mock_data(tmp_path):
  import tensorflow_datasets as tfds
  config = DataConfig(source="tfds:lm1b", data_dir=str(tmp_path), seq_len=16, val_split="test",
                      shuffle_window=8, val_tokens=32)
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    batch = next(iter(train_dataset(config, 2)))
    rows = validation_rows(config)
  assert batch.shape == (2, 17) and rows.shape == (2, 17)
  assert batch.max() <= 256


def test_bad_data_configs():
  with pytest.raises(ConfigError, match="seq_len"):
    DataConfig(seq_len=1)
  with pytest.raises(UserError, match="no files found"):
    build_code_corpus("/nonexistent/dir/*.txt", "/tmp/unused")
