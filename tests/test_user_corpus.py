"""A researcher's own corpus end to end: the README's "Your data" lines, run in order on a JSON-lines
corpus whose text field is `content`, and a sweep over it that trains and fits."""
import json
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
  """~4 MB of the standard library's Python as JSON lines, each function a record."""
  root = tmp_path_factory.mktemp("corpus")
  lib = Path(sysconfig.get_paths()["stdlib"])
  records, size = [], 0
  for path in sorted(lib.glob("*.py")):
    for i, chunk in enumerate(path.read_text(errors="replace").split("\ndef ")):
      records.append({"content": chunk, "id": f"{path.name}:{i}"})
      size += len(chunk)
    if size > 4_000_000:
      break
  (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  (root / "experiments").symlink_to(REPO / "experiments")
  return root


def _readme_lines() -> list[str]:
  text = (REPO / "README.md").read_text()
  block = re.search(r"<!-- your-data[^>]*-->\n(.*?)<!-- /your-data -->", text, re.S).group(1)
  return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_readme_your_data_lines_run_in_order(corpus, tmp_path):
  env_bin = Path(sys.executable).parent
  data_dir = tmp_path / "tfds"
  lines = _readme_lines()
  assert [l.split()[0] for l in lines] == ["parscale"] * 4 + ["python"]
  for line in lines:
    args = shlex.split(line)
    if args[:2] == ["parscale", "train"]:  # The one change: a short run.
      args += ["--set", "tokens=16384", "--set", f"data.data_dir={data_dir}"]
    elif args[0] == "parscale":
      args += ["--data-dir", str(data_dir)]
    command = [str(env_bin / "parscale"), *args[1:]] if args[0] == "parscale" else \
        [sys.executable, *args[1:]]
    out = subprocess.run(command, cwd=corpus, capture_output=True, text=True)
    assert out.returncode == 0, f"{line}\n{out.stderr[-2000:]}"
    if args[:2] == ["parscale", "eval"]:
      doc = json.loads(out.stdout)
      assert doc["tokenizer"].endswith("tokenizer.json") and doc["loss"] > 0
    if args[0] == "python":
      assert out.stdout.strip() == "(1, 4, 512)" or out.stdout.strip().endswith(", 512)")


def test_sweep_over_a_jsonl_corpus_with_another_text_key_trains_and_fits(corpus, tmp_path):
  base = {"model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
                    "num_kv_heads": 2, "prefix_tokens": 4},
          "data": {"seq_len": 32, "val_tokens": 1024, "data_dir": str(tmp_path / "tfds")},
          "tokens": 8 * 32 * 6, "batch_size": 8, "checkpoint_every": 100, "tensorboard": False}
  (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
  sweep = {"name": "mine", "base": "base.yaml",
           "set": {"data.source": str(corpus / "corpus.jsonl"), "data.text_key": "content"},
           "grid": {"model.P": [1, 2], "model.hidden_size": [32, 48, 64]},
           "analysis": {"bootstrap": 0}}
  (tmp_path / "mine.yaml").write_text(yaml.safe_dump(sweep))
  out = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "sweep", "run", "mine.yaml",
                        "--no-progress"], cwd=tmp_path, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "6/6 runs done" in out.stdout
  fit = json.loads((tmp_path / "results" / "mine" / "fit" / "fit.json").read_text())
  (group,) = fit["groups"].values()
  assert group["n_points"] == 6
  result = json.loads(next((tmp_path / "results" / "mine" / "runs").glob("*/result.json")).read_text())
  assert result["data"]["source"].endswith("corpus.jsonl")
