"""The sweep runner: expansion, stable ids, skip-and-resume after SIGKILL, failures, the lock,
the Ray executor against a local head, and every shipped sweep file."""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from parscale_jax.configlib import ConfigError
from parscale_jax.sweep.spec import load_sweep, run_id

from conftest import REPO, tiny_train_dict


def _sweep_file(tmp_path, data_dir, name="s", **extra):
  base = tiny_train_dict(data_dir, tokens=8 * 32 * 8, checkpoint_every=2, log_every=1)
  (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
  sweep = {"name": name, "base": "base.yaml",
           "grid": {"model.hidden_size": [32, 48], "model.P": [1, 2]},
           "executor": {"workers": 2}, "analysis": {"bootstrap": 100}}
  sweep.update(extra)
  path = tmp_path / f"{name}.yaml"
  path.write_text(yaml.safe_dump(sweep))
  return path


def _cli(*args, **kw):
  return subprocess.Popen([sys.executable, "-m", "parscale_jax.cli", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kw)


def _table(results):
  rows = [json.loads(l) for l in (results / "table.jsonl").read_text().splitlines()]
  return {r["run_id"]: r for r in rows}


def test_grid_expansion_and_stable_ids(tmp_path, data_dir):
  spec = load_sweep(_sweep_file(tmp_path, data_dir))
  assert len(spec.runs) == 4
  ids = {r.run_id for r in spec.runs}
  assert "P=2_hidden_size=48" in ids
  # Axis order does not change ids.
  reordered = _sweep_file(tmp_path, data_dir, name="r", grid={"model.P": [1, 2], "model.hidden_size": [32, 48]})
  assert {r.run_id for r in load_sweep(reordered).runs} == ids
  # ...but sets the order in which runs start: the first axis varies slowest.
  assert [r.run_id for r in load_sweep(reordered).runs][:2] == ["P=1_hidden_size=32", "P=1_hidden_size=48"]
  assert run_id("main", {"model.P": 4, "seed": 1}) == "P=4_seed=1"
  run = next(r for r in spec.runs if r.run_id == "P=2_hidden_size=48")
  config = run.train_config(tmp_path)
  assert config.model.hidden_size == 48 and config.model.P == 2


def test_every_shipped_sweep_parses():
  paths = sorted((REPO / "sweeps").glob("*.yaml"))
  assert {p.name for p in paths} >= {"quick.yaml", "cpu.yaml", "paper_stack_v2.yaml",
                                     "paper_pile.yaml", "two_stage.yaml"}
  for path in paths:
    spec = load_sweep(path)
    assert spec.runs
  quick = load_sweep(REPO / "sweeps" / "quick.yaml")
  assert len({r.values["model.size"] for r in quick.runs}) >= 3
  assert {r.values["model.P"] for r in quick.runs} >= {1, 2, 4}
  cpu = load_sweep(REPO / "sweeps" / "cpu.yaml")
  main = [r for r in cpu.runs if r.stage == "main"]
  assert len({r.values["model.size"] for r in main}) >= 4
  assert {r.values["model.P"] for r in main} == {1, 2, 4, 8}
  assert len({r.values["seed"] for r in main}) >= 2
  assert cpu.analysis.fit_stages == ("main",) and cpu.analysis.weights == "sem"
  by_id = {r.run_id: r for r in cpu.runs}
  frozen = [r for r in cpu.runs if r.stage == "frozen"]
  assert frozen and all(r.train_config(REPO).freeze_backbone for r in frozen)
  for run in frozen + [r for r in cpu.runs if r.stage == "continue"]:
    parent = by_id[run.init_from_run]  # The P = 1 run of the same size and seed.
    assert parent.train_config(REPO).model.P == 1 and run.train_config(REPO).model.P > 1
    assert parent.values["seed"] == run.values["seed"]
    assert parent.values["model.size"] == run.values["model.size"]
  two = load_sweep(REPO / "sweeps" / "two_stage.yaml")
  continued = [r for r in two.runs if r.init_from_run]
  assert continued and all(r.train_config(REPO).model.P > 1 for r in continued)
  for paper in ("paper_stack_v2.yaml", "paper_pile.yaml"):
    spec = load_sweep(REPO / "sweeps" / paper)
    assert len(spec.runs) == 24
    assert all(r.train_config(REPO).tokens == 42_000_000_000 for r in spec.runs)


@pytest.mark.parametrize("change, message", [
    ({"grdi": {}}, "unknown key 'grdi'"),
    ({"grid": {"model.sise": [1]}}, "unknown key 'model.sise'"),
    ({"grid": {"model.P": 2}}, "grid key 'model.P': expected a non-empty list"),
    ({"executor": {"workerz": 1}}, "unknown key 'executor.workerz'"),
])
def test_malformed_sweep_files_name_the_key(tmp_path, data_dir, change, message):
  path = _sweep_file(tmp_path, data_dir, **change)
  with pytest.raises(ConfigError, match=message):
    load_sweep(path)
  proc = _cli("sweep", "run", str(path), "--results", str(tmp_path / "res"))
  _, err = proc.communicate()
  assert proc.returncode == 2 and message in err and len(err.strip().splitlines()) == 1
  assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_sweep_survives_sigkill_and_matches_uninterrupted(tmp_path, data_dir):
  path = _sweep_file(tmp_path, data_dir, grid={"model.hidden_size": [32], "model.P": [1, 2, 3]})
  ref = _cli("sweep", "run", str(path), "--results", str(tmp_path / "ref"), "--no-progress",
             "--no-analysis")
  _, err = ref.communicate()
  assert ref.returncode == 0, err
  rng = random.Random(0)
  runs = tmp_path / "killed" / "runs"
  for attempt in range(2):  # Killed twice, at random moments once runs are under way.
    victim = _cli("sweep", "run", str(path), "--results", str(tmp_path / "killed"), "--no-progress",
                  "--no-analysis", start_new_session=True)
    deadline = time.time() + 300
    while not any((d / "checkpoints").exists() and any((d / "checkpoints").iterdir())
                  for d in (runs.iterdir() if runs.exists() else [])
                  if not (d / "final").exists()):
      assert victim.poll() is None and time.time() < deadline, victim.communicate()
      time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
  final = _cli("sweep", "run", str(path), "--results", str(tmp_path / "killed"), "--no-progress",
               "--no-analysis")
  out, err = final.communicate()
  assert final.returncode == 0, err
  a, b = _table(tmp_path / "ref"), _table(tmp_path / "killed")
  assert a.keys() == b.keys() and len(a) == 3
  for rid in a:
    assert a[rid]["status"] == b[rid]["status"] == "done"
    assert a[rid]["loss"] == b[rid]["loss"] and abs(a[rid]["train_loss"] - b[rid]["train_loss"]) <= 1e-6
    steps = [json.loads(l)["step"] for l in (runs / rid / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == list(range(1, 9))  # Nothing lost, nothing logged twice.
  # table.csv reads back to the same typed rows as table.jsonl.
  from parscale_jax.tablefile import read_table
  for row in read_table(tmp_path / "killed" / "table.csv"):
    assert {k: row[k] for k in ("P", "seed", "N", "loss", "reason")} == \
        {k: b[row["run_id"]][k] for k in ("P", "seed", "N", "loss", "reason")}
  # Running it again changes nothing: every run is skipped.
  again = _cli("sweep", "run", str(path), "--results", str(tmp_path / "killed"), "--no-progress",
               "--no-analysis")
  again.communicate()
  assert _table(tmp_path / "killed") == b
  status = _cli("sweep", "status", str(path), "--results", str(tmp_path / "killed"))
  out, _ = status.communicate()
  assert "done: 3" in out


def _interrupted_sweep(folder, path):
  """Starts the sweep, sends Ctrl-C once a run has begun checkpointing; (sweep, stderr, runs
  folder, time of the interrupt)."""
  sweep = _cli("sweep", "run", str(path), "--results", str(folder), "--no-progress", "--no-analysis",
               start_new_session=True)
  runs, deadline = folder / "runs", time.time() + 300
  while not any(any(d.glob("checkpoints/*")) for d in (runs.iterdir() if runs.exists() else [])):
    assert sweep.poll() is None and time.time() < deadline, sweep.communicate()
    time.sleep(0.1)
  interrupted = time.time()
  os.killpg(sweep.pid, signal.SIGINT)  # What Ctrl-C in a terminal sends: the whole group.
  try:
    _, err = sweep.communicate(timeout=120)
  finally:
    if sweep.poll() is None:
      os.killpg(sweep.pid, signal.SIGKILL)
  return sweep, err, runs, interrupted


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_at_once_and_starts_no_queued_run(tmp_path, data_dir, ctrl_c_reaches_children):
  path = _sweep_file(tmp_path, data_dir, grid={"model.hidden_size": [32], "model.P": [1, 2, 3]},
                     executor={"workers": 1}, set={"tokens": 8 * 32 * 4000})  # Minutes a run.
  sweep, err, runs, interrupted = _interrupted_sweep(tmp_path / "res", path)
  assert sweep.returncode == 130 and "interrupted" in err, err
  assert time.time() - interrupted < 30
  started = [d.name for d in runs.iterdir() if (d / "attempts.jsonl").exists()]
  assert len(started) == 1, started  # The queued runs were not started.
  def group_alive():
    try:
      os.killpg(sweep.pid, 0)
      return True
    except ProcessLookupError:
      return False
  deadline = time.time() + 10
  while group_alive() and time.time() < deadline:  # No worker trains on.
    time.sleep(0.1)
  assert not group_alive()


def test_a_worker_that_got_ctrl_c_starts_no_further_run(monkeypatch):
  """A pool worker hands the interrupt back as its task's exception and takes the next queued
  task; once interrupted, it starts nothing more, whenever the sweep process stops it."""
  from parscale_jax.sweep import worker
  started = []

  def execute_run(run, results_dir, retry_failed):
    started.append(run)
    if run == "first":
      raise KeyboardInterrupt
    return {"run_id": run}

  monkeypatch.setattr(worker, "execute_run", execute_run)
  monkeypatch.setattr(worker, "_interrupted", False)
  with pytest.raises(KeyboardInterrupt):
    worker.execute_chain(["first", "its next budget"], "results")
  assert worker.execute_chain(["queued"], "results") == [] and started == ["first"]


@pytest.mark.slow
def test_failing_run_is_recorded_and_others_finish_with_two_processes(tmp_path, data_dir):
  # One run points its two-stage init at a directory that does not exist: it fails at run time.
  path = _sweep_file(tmp_path, data_dir, grid={"model.hidden_size": [32], "model.P": [1, 2],
                                               "init_from": [None, str(tmp_path / "missing")]})
  procs = [_cli("sweep", "run", str(path), "--results", str(tmp_path / "res"), "--no-progress")
           for _ in range(2)]  # Two sweep processes on one results directory.
  for proc in procs:
    _, err = proc.communicate()
    assert proc.returncode == 0, err
  rows = _table(tmp_path / "res")
  failed = [r for r in rows.values() if r["status"] == "failed"]
  assert len(failed) == 2 and all("neither a finished run directory" in r["reason"] for r in failed)
  assert sum(r["status"] == "done" for r in rows.values()) == 2
  for rid in rows:  # The lock: every run was attempted exactly once.
    attempts = (tmp_path / "res" / "runs" / rid / "attempts.jsonl").read_text().splitlines()
    assert len(attempts) == 1, rid
  report = (tmp_path / "res" / "report.md").read_text()
  assert "failed" in report and "No fit" in report


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_ray_executor_against_a_local_head(tmp_path, data_dir):
  pytest.importorskip("ray")
  ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
  assert ray_bin, "ray CLI not found"
  port = _free_port()
  env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
  start = subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                          "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                         capture_output=True, text=True, env=env, timeout=180)
  assert start.returncode == 0, start.stderr
  try:
    path = _sweep_file(tmp_path, data_dir, grid={"model.hidden_size": [32], "model.P": [1, 2]})
    proc = _cli("sweep", "run", str(path), "--results", str(tmp_path / "res"), "--executor", "ray",
                "--address", f"127.0.0.1:{port}", "--no-progress", env=env)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    rows = _table(tmp_path / "res")
    assert len(rows) == 2 and all(r["status"] == "done" and r["loss"] < 5.5 for r in rows.values())
  finally:
    subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_sweep_analysis_fits_seeds_and_publishes(tmp_path):
  """The post-sweep analysis on a table made from a known law with seed noise: the fit recovers k,
  the report carries mean ± SEM per point, and `publish` copies table, report and fit."""
  from parscale_jax.analysis.law import parscale
  from parscale_jax.sweep.report import analyze_sweep
  truth = np.array([[1.2, 2e-4, 0.3, 0.4]])  # E, A, alpha, k
  rng = np.random.default_rng(0)
  rows = []
  for n in (5e4, 1e5, 2e5, 4e5, 8e5):
    for p in (1, 2, 4, 8):
      for seed in (0, 1):
        loss = float(parscale(truth, np.array([n]), np.array([p]))[0, 0]) + rng.normal(0, 2e-4)
        rows.append({"run_id": f"P={p}_N={n:g}_seed={seed}", "stage": "main", "size": f"n{n:g}",
                     "N": n, "P": p, "seed": seed, "loss": loss, "status": "done"})
  for main_p1 in rows[:2]:  # Seeds 0 and 1 of the smallest size at P = 1.
    rows.append({**main_p1, "run_id": f"frozen--P=4_seed={main_p1['seed']}", "stage": "frozen",
                 "P": 4, "loss": main_p1["loss"] - 0.05})
  results = tmp_path / "results"
  results.mkdir()
  (results / "table.csv").write_text("run_id,loss\n")
  sweep = {"name": "s", "base": "base.yaml", "stages": [{"name": "main", "grid": {"model.P": [1]}}],
           "analysis": {"bootstrap": 100, "fit_stages": ["main"], "weights": "sem",
                        "publish": "published"}}
  (tmp_path / "base.yaml").write_text(yaml.safe_dump({"tokens": 4096}))
  (tmp_path / "s.yaml").write_text(yaml.safe_dump(sweep))
  analyze_sweep(load_sweep(tmp_path / "s.yaml"), results, rows, log=lambda s: None)
  fit = json.loads((tmp_path / "published" / "fit.json").read_text())
  (group,) = fit["groups"].values()
  assert abs(group["k"] - 0.4) < 0.05 and group["n_points"] == 20
  report = (tmp_path / "published" / "report.md").read_text()
  assert "](loss_vs_P.png)" in report and "](fit/" not in report
  assert " ± " in report and "(n=2)" in report and "| frozen | n50000 |" in report
  # Pooled over sizes, P = 8 minus P = 1 is the law's mean gain, with an interval that excludes 0.
  pooled = report[report.index("## P streams against one"):report.index("## Stages compared")]
  p8 = parscale(truth, np.array([5e4, 1e5, 2e5, 4e5, 8e5]), np.array([8.0] * 5)) - \
      parscale(truth, np.array([5e4, 1e5, 2e5, 4e5, 8e5]), np.array([1.0] * 5))
  row_p8 = next(line for line in pooled.splitlines() if line.startswith("| 8 |"))
  assert row_p8.startswith(f"| 8 | {p8.mean():+.3f}") and row_p8.endswith("| 10 |")
  # Two P = 1 runs for one size and seed (another grid axis, say lr) make the pairing ambiguous.
  from parscale_jax.sweep.comparisons import pooled_p_gain, stage_comparison
  twice = rows + [{**rows[0], "run_id": "again"}]
  assert pooled_p_gain(twice, "main") == "" and stage_comparison(twice, "main") == ""
  # The paired comparison: frozen P = 4 minus main P = 1 at the same size and seed.
  comparison = report[report.index("## Stages compared"):]
  assert "| n50000: P | main | frozen |" in comparison
  row_p4 = next(line for line in comparison.splitlines() if line.startswith("| 4 |"))
  assert row_p4.endswith("| -0.0500 ± 0.0000 |")
  assert (tmp_path / "published" / "loss_vs_P.png").stat().st_size > 0
  assert (tmp_path / "published" / "table.csv").read_text() == "run_id,loss\n"


def test_axis_comparison_pairs_runs_by_size_p_and_seed():
  """A prefix-length pilot: 48 is worse than 16 by exactly 0.03 in every pair, 4 by 0.01-0.03."""
  from parscale_jax.sweep.comparisons import axis_comparison
  rows = []
  for seed, base in enumerate((2.0, 2.3, 1.9)):
    for length, delta in ((4, 0.01 * (seed + 1)), (16, 0.0), (48, 0.03)):
      rows.append({"run_id": f"prefix_{length}_{seed}", "stage": "prefix", "size": "cpu-55k", "P": 4,
                   "seed": seed, "loss": base + delta, "status": "done",
                   "grid.model.prefix_tokens": str(length), "grid.seed": str(seed)})
  rows.append({**rows[0], "run_id": "lost", "seed": 9, "status": "failed", "loss": None})
  text = axis_comparison(rows)
  assert "`prefix`, by `model.prefix_tokens`:" in text
  lines = {line.split(" |")[0]: line for line in text.splitlines() if " minus " in line}
  assert list(lines) == ["| 16 minus 4", "| 48 minus 4", "| 48 minus 16"]  # Numeric order.
  assert lines["| 48 minus 16"].startswith("| 48 minus 16 | +0.0300 ± 0.0000 | [+0.0300, +0.0300] | 3")
  assert lines["| 16 minus 4"].startswith("| 16 minus 4 | -0.0200 ± 0.0058 |")
  # A stage whose only varying axis is the seed has nothing to compare.
  assert axis_comparison([{**r, "grid.model.prefix_tokens": "16"} for r in rows]) == ""


def test_training_curves_are_read_plotted_and_published(tmp_path):
  """Curves come from each run's metrics.jsonl (training lines only; a torn last line is skipped),
  are plotted per stage and size, and travel with the published report."""
  from parscale_jax.sweep.report import publish
  from parscale_jax.sweep.curves import plot_curves, read_curve
  rows = []
  for p in (1, 4):
    run_id = f"main_P={p}"
    run = tmp_path / "runs" / run_id
    run.mkdir(parents=True)
    lines = [json.dumps({"step": s, "tokens": 4096 * s, "loss": 3.0 - 0.01 * s * p}) for s in (20, 40, 60)]
    lines += [json.dumps({"step": 60, "eval_loss": 2.5}), '{"step": 80, "tok']
    (run / "metrics.jsonl").write_text("\n".join(lines))
    rows.append({"run_id": run_id, "stage": "main", "size": "cpu-55k", "N": 5e4, "P": p, "seed": 0,
                 "status": "done"})
  rows.append({"run_id": "main_P=8", "stage": "main", "size": "cpu-55k", "N": 5e4, "P": 8, "seed": 0,
               "status": "failed"})
  tokens, losses = read_curve(tmp_path / "runs" / "main_P=4")
  np.testing.assert_allclose(tokens, [81920, 163840, 245760])
  np.testing.assert_allclose(losses, [2.2, 1.4, 0.6])
  assert [p.name for p in plot_curves(tmp_path, rows, tmp_path)] == ["curves.png", "curves.pdf"]
  assert (tmp_path / "curves.png").stat().st_size > 0
  (tmp_path / "table.csv").write_text("run_id\n")
  (tmp_path / "report.md").write_text("![training loss against tokens](curves.png)\n")
  publish(tmp_path, tmp_path / "published", log=lambda s: None)
  assert (tmp_path / "published" / "curves.png").read_bytes() == (tmp_path / "curves.png").read_bytes()
  # With no curves left (say every run failed), the old plot goes rather than being published.
  assert plot_curves(tmp_path, [dict(r, status="failed") for r in rows], tmp_path) == []
  assert not (tmp_path / "curves.png").exists()


def test_progress_in_a_log_file_is_a_whole_line_a_minute(monkeypatch):
  """stderr not a terminal (a log file): a 2,400-step run at 0.125 s a step writes one line at the
  start and one a minute (the last at the end), no carriage returns; on a terminal, tqdm's bar."""
  import io

  from parscale_jax import bars
  clock = [1000.0]
  monkeypatch.setattr(bars.time, "time", lambda: clock[0])
  log = io.StringIO()
  bar = bars.progress_bar(2400, 0, "run", "step", stream=log)
  for step in range(1, 2401):
    clock[0] += 0.125
    bar.update(1)
    if step % 10 == 0:
      bar.set_postfix(loss=f"{5 - step / 1000:.4f}")
  bar.close()
  text = log.getvalue()
  assert "\r" not in text
  lines = text.splitlines()
  assert len(lines) == 1 + 4 + 1  # The first step, a line a minute, the end.
  assert lines[1] == "run: 481/2400 steps [0:01:00] loss=4.5200"
  assert lines[-1] == "run: 2400/2400 steps [0:05:00] loss=2.6000"

  class Terminal(io.StringIO):
    def isatty(self):
      return True

  tty = bars.progress_bar(10, 0, "sweep x", "run", eta=False, stream=Terminal())
  assert type(tty).__name__ == "tqdm" and "remaining" not in tty.bar_format
  tty.close()


def test_a_new_executor_is_one_class_and_its_registry_entry(tmp_path, data_dir, monkeypatch):
  """A toy executor that runs each task in this process, added to EXECUTORS alone: the sweep
  runs through it (every task handed to it once), publishes the table, and the CLI offers it."""
  from parscale_jax.cli import build_parser
  from parscale_jax.sweep import executors
  from parscale_jax.sweep.runner import run_sweep
  from parscale_jax.sweep.worker import execute_chain
  handed = []

  class InProcess:
    def __init__(self, spec, address=None):
      self.broken = 0

    def execute(self, tasks, results_dir, retry_failed):
      for task in tasks:
        handed.append([run.run_id for run in task])
        yield from execute_chain(task, str(results_dir), retry_failed)

  monkeypatch.setitem(executors.EXECUTORS, "in-process", lambda: InProcess)
  path = _sweep_file(tmp_path, data_dir, grid={"model.hidden_size": [32], "model.P": [1, 2]})
  rows = run_sweep(load_sweep(path), tmp_path / "res", executor="in-process", progress=False,
                   analyze=False)
  assert sorted(handed) == [["P=1_hidden_size=32"], ["P=2_hidden_size=32"]]
  assert [r["status"] for r in rows] == ["done", "done"] and all(r["loss"] > 0 for r in rows)
  assert build_parser().parse_args(["sweep", "run", str(path), "--executor", "in-process"]).executor == "in-process"


def test_two_sweeps_on_one_folder_take_turns_with_the_table(tmp_path, data_dir, monkeypatch):
  """A writer that read the runs before another sweep finished one must not put its older view
  back over the newer table: the table's readers and writers take turns."""
  import threading

  from parscale_jax.sweep import table
  from parscale_jax.train.run_record import RunRecord
  spec = load_sweep(_sweep_file(tmp_path, data_dir))
  results = tmp_path / "results"
  first = spec.runs[0].run_id
  (results / "runs" / first).mkdir(parents=True)
  table.write_table(results, spec.runs)
  read_the_runs, go_on = threading.Event(), threading.Event()
  real = table.run_result

  def slow_reader(results_dir, run_id, published=None):
    result = real(results_dir, run_id, published)
    if threading.current_thread().name == "older" and run_id == spec.runs[-1].run_id:
      read_the_runs.set()
      go_on.wait(5)
    return result

  monkeypatch.setattr(table, "run_result", slow_reader)
  older = threading.Thread(target=table.write_table, args=(results, spec.runs), name="older")
  older.start()
  assert read_the_runs.wait(5)  # It has read `first` as pending, and not written yet.
  RunRecord(results / "runs" / first, first).finish(eval_loss=2.5)
  newer = threading.Thread(target=table.write_table, args=(results, spec.runs), name="newer")
  newer.start()
  time.sleep(0.3)
  go_on.set()
  older.join(), newer.join()
  assert _table(results)[first]["status"] == "done" and _table(results)[first]["loss"] == 2.5


def test_local_workers_get_one_gpu_each_and_share_memory_when_more(monkeypatch):
  import concurrent.futures as cf
  import importlib.util
  import multiprocessing

  from parscale_jax import platforms
  from parscale_jax.sweep.executors.local import worker_slots
  from parscale_jax.sweep.worker import init_worker
  cpu = worker_slots(0, 1, 10, cores=[0, 1], gpus=[])
  assert [(s.cpus, s.env) for s in cpu] == [([0], {}), ([1], {})]
  gpu = worker_slots(0, 2, 10, cores=list(range(16)), gpus=["0", "1", "2", "3"])
  assert [s.env for s in gpu] == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(4)]
  assert [s.cpus for s in gpu] == [[0, 1], [2, 3], [4, 5], [6, 7]]
  shared = worker_slots(8, 1, 10, cores=[0, 1], gpus=["0", "1", "2", "3"])
  assert [s.env["CUDA_VISIBLE_DEVICES"] for s in shared] == ["0", "1", "2", "3"] * 2
  assert {s.env["XLA_PYTHON_CLIENT_MEM_FRACTION"] for s in shared} == {"0.450"}
  assert len(worker_slots(0, 1, 1, cores=[0, 1], gpus=["0", "1"])) == 1  # No more than tasks.
  # Which GPUs: CUDA_VISIBLE_DEVICES where set; none without a CUDA build of jax.
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None
                      if name in platforms.CUDA_PLUGINS else real_find_spec(name, *a))
  assert platforms.local_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == []
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object()
                      if name in platforms.CUDA_PLUGINS else real_find_spec(name, *a))
  assert platforms.local_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
  assert platforms.local_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
  assert platforms.local_gpus({"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "0"}) == []
  # A worker process takes its slot's environment before anything imports jax.
  ctx = multiprocessing.get_context("spawn")
  slots = ctx.Queue()
  slots.put(shared[5])
  with cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=init_worker, initargs=(1, slots)) as pool:
    assert pool.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() == "1"
    assert pool.submit(os.getenv, "XLA_PYTHON_CLIENT_MEM_FRACTION").result() == "0.450"
