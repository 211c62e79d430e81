"""Sweeps beyond a grid: the variant axis, paired contrasts with intervals, and finished runs
published with the sweep so that a fresh clone of the repository does not train them again."""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from parscale_jax.configlib import ConfigError
from parscale_jax.sweep.report import analyze_sweep
from parscale_jax.sweep.spec import load_sweep

from conftest import REPO, tiny_train_dict

VARIANTS = {"P1": {"model.P": 1}, "prefix": {"model.P": 1, "model.single_stream_prefix": True,
                                              "export_final": False},
            "P2_mlp": {"model.P": 2, "model.prefix_param": "mlp", "optim.prefix_lr_scale": 0.1}}


def _write(tmp_path, data_dir, **sweep):
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 4)
  (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
  doc = {"name": "v", "base": "base.yaml", "variants": VARIANTS,
         "grid": {"seed": [0, 1], "variant": ["P2_mlp", "prefix", "P1"]},
         "analysis": {"fit": False, "contrasts": [["P2_mlp", "P1"], ["prefix", "P1"]]}}
  doc.update(sweep)
  (tmp_path / "v.yaml").write_text(yaml.safe_dump(doc))
  return tmp_path / "v.yaml"


def test_variants_expand_to_their_overrides_and_are_validated(tmp_path, data_dir):
  spec = load_sweep(_write(tmp_path, data_dir))
  assert [r.run_id for r in spec.runs][:3] == ["seed=0_variant=P2_mlp", "seed=0_variant=prefix",
                                               "seed=0_variant=P1"]
  by_id = {r.run_id: r.train_config(tmp_path) for r in spec.runs}
  mlp = by_id["seed=1_variant=P2_mlp"]
  assert (mlp.model.P, mlp.model.prefix_param, mlp.optim.prefix_lr_scale, mlp.seed) == (2, "mlp", 0.1, 1)
  assert by_id["seed=0_variant=prefix"].model.single_stream_prefix
  assert by_id["seed=0_variant=P1"].model.prefix_param == "raw"
  with pytest.raises(ConfigError, match="grid variant 'P4' is not defined"):
    load_sweep(_write(tmp_path, data_dir, grid={"variant": ["P1", "P4"]}))
  with pytest.raises(ConfigError, match=r"contrasts entry \['P1', 'P8'\] must name two variants"):
    load_sweep(_write(tmp_path, data_dir, analysis={"contrasts": [["P1", "P8"]]}))
  # A variant that sets a grid axis would give runs named for a P they do not have.
  with pytest.raises(ConfigError, match="variant 'P1' sets model.P, which is also a grid axis"):
    load_sweep(_write(tmp_path, data_dir, grid={"model.P": [1, 4], "variant": ["P1", "prefix"]},
                      analysis={"fit": False}))


def test_contrasts_are_paired_by_seed_with_t_intervals(tmp_path, data_dir):
  spec = load_sweep(_write(tmp_path, data_dir))
  rng = np.random.default_rng(0)
  rows, shift = [], {"P1": 0.0, "prefix": -0.01, "P2_mlp": -0.03}
  for size in ("l4-50k", "l4-200k"):
    for seed in range(3):
      seed_effect = rng.normal(0, 0.05)  # Shared by a seed's variants: pairing removes it.
      for variant, d in shift.items():
        rows.append({"run_id": f"{size}{seed}{variant}", "stage": "main", "size": size, "P": 1,
                     "N": 1e5, "seed": seed, "status": "done", "grid.model.size": size,
                     "grid.seed": seed, "grid.variant": variant,
                     "loss": 1.5 + seed_effect + d + rng.normal(0, 1e-3)})
  results = tmp_path / "results"
  results.mkdir()
  report = analyze_sweep(spec, results, rows, log=lambda s: None).read_text()
  lines = [l for l in report.splitlines() if l.startswith("| P2_mlp − P1 |")]
  assert len(lines) == 3  # Each size, and both pooled.
  pooled = next(l for l in lines if "sizes pooled" in l)
  cell = pooled.split("|")[3]  # "-0.0300 ± 0.0004 [-0.0310, -0.0290]"
  mean = float(cell.split("±")[0])
  lo, hi = (float(x) for x in cell.split("[")[1].split("]")[0].split(","))
  assert mean == pytest.approx(-0.03, abs=2e-3) and lo < -0.03 < hi and hi < 0
  assert pooled.rstrip().endswith("| 6 |")
  assert "No fit" not in report


def _git(cwd, *args):
  subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                 env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                      "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(cwd), "PATH": "/usr/bin:/bin"})


def _parscale(cwd, *args):
  return subprocess.run([sys.executable, "-m", "parscale_jax.cli", *args], cwd=cwd,
                        capture_output=True, text=True)


@pytest.mark.slow
def test_published_runs_count_as_done_in_a_fresh_clone(tmp_path, data_dir):
  repo = tmp_path / "repo"
  (repo / "sweeps").mkdir(parents=True)
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 3, model={"P": 1})
  (repo / "sweeps" / "base.yaml").write_text(yaml.safe_dump(base))
  sweep = {"name": "pub", "base": "base.yaml", "grid": {"model.hidden_size": [32, 48]},
           "analysis": {"fit": False, "publish": "../analysis/results/pub"}}
  (repo / "sweeps" / "pub.yaml").write_text(yaml.safe_dump(sweep))
  out = _parscale(repo, "sweep", "run", "sweeps/pub.yaml", "--no-progress")
  assert out.returncode == 0, out.stderr
  published = repo / "analysis" / "results" / "pub" / "runs"
  assert sorted(p.name for p in published.iterdir()) == ["hidden_size=32", "hidden_size=48"]
  files = sorted(p.name for p in (published / "hidden_size=32").iterdir())
  assert files == ["config.yaml", "metrics.jsonl", "result.json"]  # No checkpoints, no model.
  local = repo / "results" / "pub" / "runs" / "hidden_size=32"  # Done: the model, no checkpoints.
  assert (local / "final" / "model.safetensors").exists() and not (local / "checkpoints").exists()
  losses = {p.name: json.loads((p / "result.json").read_text())["eval_loss"] for p in published.iterdir()}

  (repo / ".gitignore").write_text("/results/\n")
  _git(repo, "init", "-q")
  _git(repo, "add", "-A")
  _git(repo, "commit", "-qm", "runs")
  clone = tmp_path / "clone"
  _git(tmp_path, "clone", "-q", str(repo), str(clone))
  assert not (clone / "results").exists()
  status = _parscale(clone, "sweep", "status", "sweeps/pub.yaml")
  assert status.returncode == 0, status.stderr
  assert "done: 2" in status.stdout and f"{losses['hidden_size=48']:.4f}" in status.stdout
  again = _parscale(clone, "sweep", "run", "sweeps/pub.yaml", "--no-progress")
  assert again.returncode == 0, again.stderr
  assert "2/2 runs done" in again.stdout
  trained = [p for p in (clone / "results" / "pub" / "runs").glob("*/metrics.jsonl")]
  assert trained == []
  table = (clone / "results" / "pub" / "table.csv").read_text()
  assert f"{losses['hidden_size=32']}" in table

  # A table published without its run folders, here nowhere else: a report on no finished runs
  # must not replace it.
  import shutil
  shutil.rmtree(clone / "analysis" / "results" / "pub" / "runs")
  shutil.rmtree(clone / "results")
  (clone / "analysis" / "results" / "pub" / "sweep.json").unlink()  # As before sweeps marked theirs.
  before = {p.name: p.read_bytes() for p in (clone / "analysis" / "results" / "pub").iterdir()}
  report = _parscale(clone, "sweep", "report", "sweeps/pub.yaml")
  assert report.returncode == 2 and report.stderr.count("\n") == 1, report.stderr
  assert "holds 2 finished runs that are not finished here" in report.stderr
  assert {p.name: p.read_bytes() for p in (clone / "analysis" / "results" / "pub").iterdir()} == before


def test_a_results_folder_holds_one_sweep_with_one_set_of_settings(tmp_path, data_dir):
  first = _write(tmp_path, data_dir)
  results = tmp_path / "res"
  (results / "runs" / "seed=0_variant=P1").mkdir(parents=True)
  (results / "sweep.json").write_text(json.dumps({"name": "other"}))
  out = _parscale(tmp_path, "sweep", "run", str(first), "--results", str(results), "--no-progress")
  assert out.returncode == 2 and "holds the runs of sweep 'other', not 'v'" in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1
  (results / "sweep.json").unlink()
  spec = load_sweep(first)
  run = next(r for r in spec.runs if r.run_id == "seed=0_variant=P1")
  from parscale_jax.train.config import config_to_dict
  saved = config_to_dict(run.train_config(results))
  saved["optim"]["lr"] = 0.5
  (results / "runs" / run.run_id / "config.yaml").write_text(yaml.safe_dump(saved))
  out = _parscale(tmp_path, "sweep", "run", str(first), "--results", str(results), "--no-progress")
  assert out.returncode == 2 and "differs in: optim.lr" in out.stderr
  assert not (results / "runs" / "seed=0_variant=P2_mlp").exists()  # Nothing trained.


def test_of_two_sweeps_claiming_a_new_folder_at_once_one_is_refused(tmp_path, data_dir, monkeypatch):
  """The second sweep's claim lands between the first's check and its claim: the first is refused
  instead of both writing rows into one folder."""
  from parscale_jax import atomic
  from parscale_jax.errors import UserError
  from parscale_jax.sweep import runner
  from parscale_jax.sweep.runner import claim_results_dir
  spec, results = load_sweep(_write(tmp_path, data_dir)), tmp_path / "new"
  results.mkdir()
  real = atomic.create_json_exclusive

  def other_sweep_claims_first(path, data):
    assert real(path, {"name": "other"})
    return real(path, data)

  monkeypatch.setattr(runner, "create_json_exclusive", other_sweep_claims_first)
  with pytest.raises(UserError, match="holds the runs of sweep 'other', not 'v'"):
    claim_results_dir(spec, results)
  assert json.loads((results / "sweep.json").read_text()) == {"name": "other"}
  assert [p.name for p in results.iterdir()] == ["sweep.json"]  # No temporary left.


def test_a_sweep_reuses_another_sweeps_published_run_of_the_same_config(tmp_path, data_dir):
  """Sweep `w` shares one run's config with the finished, published sweep `v` (same variant and
  seed) and differs in the other (another seed): the shared run is taken over, not trained; the
  other trains."""
  first = _write(tmp_path, data_dir, grid={"seed": [0], "variant": ["P1"]},
                 analysis={"fit": False, "publish": "published_v"})
  out = _parscale(tmp_path, "sweep", "run", str(first), "--no-progress")
  assert out.returncode == 0, out.stderr
  source = tmp_path / "published_v" / "runs" / "seed=0_variant=P1"
  trained = json.loads((source / "result.json").read_text())
  doc = yaml.safe_load(first.read_text())
  doc.update(name="w", grid={"seed": [0, 1], "model.P": [1]}, reuse=["published_v"],
             analysis={"fit": False, "publish": "published_w"})
  doc["set"] = {"model.single_stream_prefix": False}
  second = tmp_path / "w.yaml"
  second.write_text(yaml.safe_dump(doc))
  out = _parscale(tmp_path, "sweep", "run", str(second), "--no-progress")
  assert out.returncode == 0, out.stderr
  runs = tmp_path / "results" / "w" / "runs"
  reused = json.loads((runs / "P=1_seed=0" / "result.json").read_text())
  assert reused["reused_from"] == str(source) and reused["run_id"] == "P=1_seed=0"
  assert reused["eval_loss"] == trained["eval_loss"] and not (runs / "P=1_seed=0" / "checkpoints").exists()
  other = json.loads((runs / "P=1_seed=1" / "result.json").read_text())
  assert other["status"] == "done" and "reused_from" not in other
  assert other["eval_loss"] != trained["eval_loss"]
  published = tmp_path / "published_w" / "runs" / "P=1_seed=0" / "result.json"
  assert json.loads(published.read_text())["reused_from"] == str(source)
  doc["reuse"] = ["nowhere"]
  second.write_text(yaml.safe_dump(doc))
  with pytest.raises(ConfigError, match="reuse: .*nowhere holds no published runs"):
    load_sweep(second)


def test_sweep_status_reads_a_read_only_results_folder(tmp_path, data_dir):
  path = _write(tmp_path, data_dir)
  results = tmp_path / "ro"
  (results / "runs" / "seed=0_variant=P1").mkdir(parents=True)
  (results / "runs" / "seed=0_variant=P1" / ".lock").write_text("")
  (results / "runs" / "seed=0_variant=P1" / "result.json").write_text(
      json.dumps({"run_id": "seed=0_variant=P1", "status": "done", "eval_loss": 1.25}))
  for p in [results, *results.rglob("*")]:
    p.chmod(0o555 if p.is_dir() else 0o444)
  try:
    out = _parscale(tmp_path, "sweep", "status", str(path), "--results", str(results))
  finally:
    for p in [results, *results.rglob("*")]:
      p.chmod(0o755 if p.is_dir() else 0o644)
  assert out.returncode == 0, out.stderr
  assert "1.2500" in out.stdout and "done: 1" in out.stdout


def test_sweep_status_from_another_directory_says_where_it_looked(tmp_path, data_dir):
  """Results folders are relative to the directory `sweep run` ran in: asked from elsewhere,
  `sweep status` lists every run pending and says why they may be."""
  path = _write(tmp_path, data_dir)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  out = _parscale(elsewhere, "sweep", "status", str(path))
  assert out.returncode == 0, out.stderr
  assert "pending: " in out.stdout and f"under {elsewhere}: results folders" in out.stderr


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_sweep_goes_on(tmp_path, data_dir):
  import os
  import signal
  import threading
  import time
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 40, checkpoint_every=5, model={"P": 1})
  (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
  sweep = {"name": "k", "base": "base.yaml", "grid": {"model.hidden_size": [32, 48]},
           "executor": {"workers": 1}, "analysis": {"fit": False}}
  (tmp_path / "k.yaml").write_text(yaml.safe_dump(sweep))
  attempts = tmp_path / "results" / "k" / "runs" / "hidden_size=32" / "attempts.jsonl"

  def kill_first_worker():
    deadline = time.time() + 240
    while time.time() < deadline:
      metrics = attempts.parent / "metrics.jsonl"
      if attempts.exists() and metrics.exists() and metrics.read_text().count("\n") >= 3:
        os.kill(json.loads(attempts.read_text().splitlines()[0])["pid"], signal.SIGKILL)
        return
      time.sleep(0.05)

  killer = threading.Thread(target=kill_first_worker)
  killer.start()
  out = _parscale(tmp_path, "sweep", "run", "k.yaml", "--no-progress")
  killer.join()
  assert out.returncode == 0, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and "2/2 runs done" in out.stdout
  assert len(attempts.read_text().splitlines()) == 2  # Killed once, then resumed to the end.


@pytest.mark.slow
def test_a_killed_worker_charges_its_own_run_only(tmp_path, data_dir):
  """Two workers; one is killed: its run gets one death and resumes; the other run, whose worker
  the broken pool stopped, gets none and finishes."""
  import os
  import signal
  import threading
  import time
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 60, checkpoint_every=5, model={"P": 1})
  (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
  sweep = {"name": "k2", "base": "base.yaml", "grid": {"model.hidden_size": [32, 48]},
           "executor": {"workers": 2}, "analysis": {"fit": False}}
  (tmp_path / "k2.yaml").write_text(yaml.safe_dump(sweep))
  runs = tmp_path / "results" / "k2" / "runs"
  victim, other = runs / "hidden_size=32", runs / "hidden_size=48"

  def kill_one_worker():
    deadline = time.time() + 240
    while time.time() < deadline:
      ready = [(d / "metrics.jsonl").exists() and (d / "metrics.jsonl").read_text().count("\n") >= 3
               for d in (victim, other)]
      if all(ready):
        os.kill(json.loads((victim / "attempts.jsonl").read_text().splitlines()[0])["pid"], signal.SIGKILL)
        return
      time.sleep(0.05)

  killer = threading.Thread(target=kill_one_worker)
  killer.start()
  out = _parscale(tmp_path, "sweep", "run", "k2.yaml", "--no-progress")
  killer.join()
  assert out.returncode == 0, out.stderr[-2000:]
  assert "2/2 runs done" in out.stdout
  assert (victim / "deaths.jsonl").exists(), out.stderr[-3000:]
  assert len((victim / "deaths.jsonl").read_text().splitlines()) == 1
  assert not (other / "deaths.jsonl").exists()
  assert json.loads((other / "result.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_a_second_sweep_publishing_to_the_same_folder_is_refused_before_it_trains(tmp_path, data_dir):
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 3)
  (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
  for name, lr in (("first", 1e-2), ("second", 3e-3)):  # The same run ids: P=1, P=2.
    sweep = {"name": name, "base": "base.yaml", "set": {"optim.lr": lr}, "grid": {"model.P": [1, 2]},
             "analysis": {"fit": False, "publish": "published"}}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(sweep))
  assert _parscale(tmp_path, "sweep", "run", "first.yaml", "--no-progress").returncode == 0
  published = tmp_path / "published"
  before = {p: p.read_bytes() for p in published.rglob("*") if p.is_file()}
  for verb in ("run", "report"):
    out = _parscale(tmp_path, "sweep", verb, "second.yaml", *(["--no-progress"] if verb == "run" else []))
    assert out.returncode == 2, out.stderr
    assert "holds the runs of sweep 'first', not 'second'" in out.stderr and out.stderr.count("\n") == 1
  assert not (tmp_path / "results" / "second" / "runs" / "P=1" / "result.json").exists()
  assert {p: p.read_bytes() for p in published.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_an_unreadable_published_result_is_named_and_published_again(tmp_path, data_dir):
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 3)
  (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
  sweep = {"name": "c", "base": "base.yaml", "grid": {"model.P": [1]},
           "analysis": {"fit": False, "publish": "published"}}
  (tmp_path / "c.yaml").write_text(yaml.safe_dump(sweep))
  assert _parscale(tmp_path, "sweep", "run", "c.yaml", "--no-progress").returncode == 0
  copy = tmp_path / "published" / "runs" / "P=1" / "result.json"
  good = json.loads(copy.read_text())
  copy.write_text(copy.read_text()[:40])
  out = _parscale(tmp_path, "sweep", "report", "c.yaml")
  assert out.returncode == 0, out.stderr
  assert f"{copy.relative_to(tmp_path)}: unreadable; published again" in out.stderr
  assert json.loads(copy.read_text())["eval_loss"] == good["eval_loss"]


@pytest.mark.slow
def test_status_marks_runs_trained_with_other_settings(tmp_path, data_dir):
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 3)
  (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
  sweep = {"name": "s", "base": "base.yaml", "grid": {"model.P": [1]}, "analysis": {"fit": False}}
  (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep))
  assert _parscale(tmp_path, "sweep", "run", "s.yaml", "--no-progress").returncode == 0
  (tmp_path / "s.yaml").write_text(yaml.safe_dump({**sweep, "set": {"optim.lr": 1e-4}}))
  out = _parscale(tmp_path, "sweep", "status", "s.yaml")
  assert out.returncode == 0, out.stderr
  line = next(l for l in out.stdout.splitlines() if l.startswith("P=1"))
  assert " stale " in line and "trained with other settings (differs in: optim.lr)" in line
  assert "stale: 1" in out.stdout
