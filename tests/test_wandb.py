"""Weights & Biases logging in offline mode: the run's files are written beside its metrics, and a
resumed run keeps its W&B id."""
import json

import pytest
import yaml

from parscale_jax.cli import main
from parscale_jax.configlib import ConfigError
from parscale_jax.train.config import config_from_dict

from conftest import tiny_train_dict


def test_wandb_offline_run_writes_its_files(tmp_path, data_dir, monkeypatch):
  monkeypatch.setenv("WANDB_SILENT", "true")
  config = tiny_train_dict(data_dir, tokens=8 * 32 * 4, wandb={"project": "parscale-test"})
  (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
  assert main(["train", str(tmp_path / "c.yaml"), "--workdir", str(tmp_path / "run"), "--no-progress"]) == 0
  assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "done"
  runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
  assert len(runs) == 1
  logs = list(runs[0].glob("run-*.wandb"))
  assert len(logs) == 1 and logs[0].name.startswith("run-run-")  # The id starts with the run id.
  data = logs[0].read_bytes()
  for key in (b"loss", b"grad_norm", b"eval_loss", b"parscale-test"):
    assert key in data, key


@pytest.mark.parametrize("bad, fragment", [({"mode": "cloud"}, "wandb.mode"),
                                           ({"project": " "}, "wandb.project")])
def test_wandb_settings_are_checked(bad, fragment):
  with pytest.raises(ConfigError, match=fragment):
    config_from_dict({"wandb": bad})


def test_wandb_online_without_an_api_key_fails_the_run_in_one_line(tmp_path, data_dir, monkeypatch, capsys):
  pytest.importorskip("wandb")
  monkeypatch.delenv("WANDB_API_KEY", raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))  # No ~/.netrc: no stored key.
  monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
  config = tiny_train_dict(data_dir, tokens=8 * 32 * 2,
                           wandb={"project": "parscale-test", "mode": "online"})
  (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
  code = main(["train", str(tmp_path / "c.yaml"), "--workdir", str(tmp_path / "run"), "--no-progress"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and "wandb (online): cannot start the run" in err, err
  result = json.loads((tmp_path / "run" / "result.json").read_text())
  assert result["status"] == "failed" and "wandb login" in result["reason"]
