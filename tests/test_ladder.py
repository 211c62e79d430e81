"""Token ladders: a budget's run, branched from the shared stable run, is the wsd run of that
length trained from scratch; sweeps expand, resume and publish them like any run, and report how
the gains move with tokens."""
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from parscale_jax.configlib import ConfigError
from parscale_jax.sweep.spec import load_sweep
from parscale_jax.train.config import config_from_dict
from parscale_jax.train.optimizer import decay_start, lr_schedule

from conftest import REPO, tiny_train_dict

ROW = 8 * 32  # Tokens per step of the tiny config.


def _sweep(tmp_path, data_dir, **doc):
  base = tiny_train_dict(data_dir, model={"P": 1})
  (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
  sweep = {"name": "lad", "base": "base.yaml", "grid": {"model.P": [1, 2]},
           "ladder": {"budgets": [ROW * 10, ROW * 20], "cooldown": 0.2},
           "executor": {"workers": 1}, "analysis": {"fit": False}}
  sweep.update(doc)
  (tmp_path / "lad.yaml").write_text(yaml.safe_dump(sweep))
  return tmp_path / "lad.yaml"


def test_ladder_expands_to_one_run_per_budget_sharing_a_stable_run(tmp_path, data_dir):
  spec = load_sweep(_sweep(tmp_path, data_dir))
  assert [r.run_id for r in spec.runs] == ["P=1_tokens=2560", "P=1_tokens=5120",
                                           "P=2_tokens=2560", "P=2_tokens=5120"]
  short, long = (r.train_config(tmp_path) for r in spec.runs[:2])
  assert (short.steps, long.steps) == (10, 20)
  assert short.optim.schedule == long.optim.schedule == "wsd"
  # One warmup for every budget (5 % of the smallest budget's steps, at least one step).
  assert short.optim.warmup_steps == long.optim.warmup_steps == 1
  assert [r.branch.start_step for r in spec.runs[:2]] == [8, 16]
  assert spec.runs[0].branch.trunk_id == spec.runs[1].branch.trunk_id == "P=1"
  # Before each cooldown, every budget's learning rate is the trunk's, bit for bit.
  trunk = config_from_dict(spec.runs[0].branch.trunk_config)
  trunk_lr = lr_schedule(trunk.optim, trunk.steps)
  for config in (short, long):
    lr = lr_schedule(config.optim, config.steps)
    start = decay_start(config.optim, config.steps)
    assert all(float(lr(t)) == float(trunk_lr(t)) for t in range(start))
    assert float(lr(config.steps - 1)) < float(lr(start - 1))


def test_progress_counts_a_ladders_shared_stable_run_once(tmp_path, data_dir):
  """The sweep's work and ETA: each budget's own work is its cooldown, its trunk's (once) the steps
  to the last cooldown start, in FLOPs (so P = 2 weighs more), read from what each has logged."""
  from parscale_jax.model.accounting import flops_per_token
  from parscale_jax.sweep.progress import SweepProgress
  spec = load_sweep(_sweep(tmp_path, data_dir))
  cost = {}
  for run in spec.runs:
    config = run.train_config(tmp_path)
    cost[config.model.P] = config.tokens_per_step * flops_per_token(config.model, config.data.seq_len)
  assert cost[2] > cost[1]
  progress = SweepProgress(spec.runs, tmp_path, lambda *_: "pending")
  states = {r.run_id: "pending" for r in spec.runs}
  # Per P: budgets of 10 and 20 steps cool down from steps 8 and 16; the trunk trains 16 once.
  total = (2 + 4 + 16) * (cost[1] + cost[2])
  assert progress.work(states) == (0, total)

  def logged(folder, step):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"step": step, "loss": 1.0}) + "\n")

  logged(tmp_path / "trunks" / "P=1", 12)
  assert progress.work(states) == (12 * cost[1], total)
  states["P=1_tokens=2560"] = "done"
  assert progress.work(states) == ((12 + 2) * cost[1], total)
  logged(tmp_path / "runs" / "P=2_tokens=5120", 18)  # Its trunk, removed, reached step 16.
  assert progress.work(states) == ((12 + 2) * cost[1] + (16 + 2) * cost[2], total)
  assert progress.work({rid: "done" for rid in states}) == (total, total)
  assert "0 % of the work" in SweepProgress(spec.runs, tmp_path / "empty", lambda *_: "pending").summary()


@pytest.mark.parametrize("doc, message", [
    ({"ladder": {"budgets": [5120, 2560]}}, "must increase"),
    ({"ladder": {"budgets": [2560], "cooldown": 1.0}}, r"cooldown must be in \(0, 1\)"),
    ({"ladder": {"budgets": [512]}}, "too short"),
    ({"grid": {"tokens": [2560]}}, "drop 'tokens' from the grid"),
    ({"ladder": {"budgets": [2560], "cooldwn": 0.2}}, "unknown key 'ladder.cooldwn'"),
    ({"analysis": {"fit_variants": ["P3"]}}, "fit_variants names unknown variant 'P3'"),
    ({"analysis": {"fit_variants": ["P1", "prefix"]}},
     "variant .prefix. sets export_final, model.single_stream_prefix; a fitted grid's variants may set only model.P"),
])
def test_bad_ladders_are_refused(tmp_path, data_dir, doc, message):
  if "analysis" in doc:
    doc.update(VARIANTS)
  with pytest.raises(ConfigError, match=message):
    load_sweep(_sweep(tmp_path, data_dir, **doc))


VARIANTS = {"variants": {"P1": {"model.P": 1}, "P2": {"model.P": 2}, "P4": {"model.P": 4},
                         "prefix": {"model.P": 1, "model.single_stream_prefix": True, "export_final": False}},
            "grid": {"variant": ["P1", "prefix", "P2", "P4"], "seed": [0, 1]}}


def test_ladder_report_fits_the_variants_over_every_budget(tmp_path, data_dir):
  """The fitted variants form one N x P x D grid (the prefix variant stays out): the law at the
  longest budget, and the law with a data term over all of them."""
  from parscale_jax.analysis.law import DATA_FORMS
  from parscale_jax.sweep.report import fit_section

  spec = load_sweep(_sweep(tmp_path, data_dir, analysis={"fit_variants": ["P1", "P2", "P4"],
                                                         "bootstrap": 0}, **VARIANTS))
  truth = np.array([[1.0, 0.02, 0.4, 0.4, 0.005, 0.5]])
  rng = np.random.default_rng(0)
  rows = []
  for N in (2e5, 4e5, 8e5):
    for variant, P in (("P1", 1), ("prefix", 1), ("P2", 2), ("P4", 4)):
      for D in (614400, 1228800, 2457600, 4915200):
        for seed in (0, 1):
          loss = DATA_FORMS["parscale_data"].predict(truth, np.array([N]), np.array([float(P)]),
                                                      np.array([float(D)]))[0, 0]
          rows.append({"run_id": f"{N}_{variant}_{D}_{seed}", "stage": "main", "size": f"s{N:g}",
                       "N": N, "N_backbone": N, "P": P, "seed": seed, "tokens": D, "status": "done",
                       "loss": loss * np.exp(rng.normal(0, 3e-4)) + (0.5 if variant == "prefix" else 0),
                       "grid.variant": variant, "grid.tokens": D, "grid.seed": seed})
  lines = fit_section(spec, tmp_path / "fit", rows, log=lambda s: None)
  doc = json.loads((tmp_path / "fit" / "fit.json").read_text())
  g = doc["groups"]["all"]  # One group: neither the variant nor the budget is a setting.
  assert g["tokens"] == 4915200 and g["n_points"] == 9  # 3 sizes x P 1, 2, 4; no prefix rows.
  assert len(g["data_term"]["forms"]["parscale_data"]["points"]) == 36
  assert abs(g["data_term"]["forms"]["parscale_data"]["params"]["k"] - 0.4) < 0.1
  assert any("Token axis (all)" in line for line in lines)
  assert (tmp_path / "fit" / "loss_vs_D.png").exists()


@pytest.mark.slow
def test_ladder_sweep_equals_runs_from_scratch_resumes_and_publishes(tmp_path, data_dir):
  """A sweep's budgets equal the same wsd runs trained from scratch (bit for bit), a killed
  branch resumes, and a fresh folder with the published runs counts every budget done."""
  sweep = _sweep(tmp_path, data_dir, grid={"model.P": [2]},
                 analysis={"fit": False, "publish": "published"})
  spec = load_sweep(sweep)
  from parscale_jax.sweep.runner import run_sweep
  from parscale_jax.train.trainer import train

  rows = run_sweep(spec, tmp_path / "results", progress=False, analyze=False)
  assert [r["status"] for r in rows] == ["done", "done"]
  assert [r["tokens"] for r in rows] == [ROW * 10, ROW * 20]
  for run, row in zip(spec.runs, rows):
    alone = train(run.train_config(tmp_path), tmp_path / "alone" / run.run_id, progress=False)
    assert alone["eval_loss"] == row["loss"]  # The same computation: bit for bit.
  trunk = tmp_path / "results" / "trunks" / "P=2"
  assert sorted(p.name for p in (trunk / "branch_points").iterdir()) == ["16", "8"]
  # A fresh clone: the published runs only.
  clone = subprocess.run(
      [sys.executable, "-m", "parscale_jax.cli", "sweep", "status", str(sweep), "--results",
       str(tmp_path / "elsewhere")], capture_output=True, text=True, cwd=REPO)
  assert clone.returncode == 0, clone.stderr
  assert "done: 2; 100 % of the work (training FLOPs)  (results" in clone.stdout, clone.stdout
  # A finished branch keeps its model, not its checkpoints. One lost before it finished starts
  # again from the trunk's kept checkpoint at its cooldown start, to the same loss.
  long_run = spec.runs[1]
  workdir = tmp_path / "results" / "runs" / long_run.run_id
  assert (workdir / "final" / "model.safetensors").exists() and not (workdir / "checkpoints").exists()
  result = json.loads((workdir / "result.json").read_text())
  shutil.rmtree(tmp_path / "published")
  shutil.rmtree(workdir)
  rows = run_sweep(load_sweep(sweep), tmp_path / "results", progress=False, analyze=False)
  assert rows[1]["status"] == "done" and rows[1]["loss"] == result["eval_loss"]
  assert np.isfinite(rows[0]["loss"])


def test_contrast_table_lists_budgets_in_numeric_order():
  """Settings sort by value: the 614K budget before 1.23M (as text it came after)."""
  from parscale_jax.sweep.contrasts import contrast_table
  rows = [{"status": "done", "grid.variant": v, "grid.tokens": t, "grid.model.size": s, "seed": 0,
           "loss": 2.0 - 0.01 * (v == "P2") - t / 1e8}
          for t in (1228800, 614400) for s in ("g6-250k",) for v in ("P1", "P2")]
  lines = contrast_table(rows, [("P2", "P1")]).splitlines()[2:]
  assert [line.split(" | ")[1] for line in lines] == ["size=g6-250k, tokens=614400",
                                                       "size=g6-250k, tokens=1228800"]


def test_grid_values_sort_numbers_by_value_then_text():
  """One order for every table: numbers and numeric text by value, then the rest (booleans too) as text."""
  from parscale_jax.sweep.comparisons import value_order
  values = ["1228800", True, 614400, "mlp", 3e-3, False, "1e-3"]
  assert sorted(values, key=value_order) == ["1e-3", 3e-3, 614400, "1228800", False, True, "mlp"]


def test_loss_table_has_a_column_per_variant_and_budgets_in_numeric_order():
  """Named variants are the columns (by their P, then name: the one-stream prefix beside P = 1),
  so that each budget and size is one line; without variants the columns are the P values."""
  from parscale_jax.sweep.comparisons import loss_table
  P = {"P1": 1, "prefix": 1, "P2": 2}
  rows = [{"status": "done", "stage": "main", "grid.variant": v, "grid.tokens": t, "grid.model.size": "g6",
           "size": "g6", "N": 100, "P": P[v], "seed": seed, "loss": 2.0 - 0.1 * P[v] - t / 1e7 + seed / 100}
          for t in (1228800, 614400) for v in ("P2", "prefix", "P1") for seed in (0, 1)]
  lines = loss_table(rows).splitlines()
  assert lines[0] == "| setting | size | P1 | prefix | P2 |"
  assert lines[2] == ("| main, tokens=614400 | g6 | 1.8436 ± 0.0050 (n=2) | 1.8436 ± 0.0050 (n=2) | "
                      "1.7436 ± 0.0050 (n=2) |")
  assert [line.split(" | ")[0] for line in lines[2:]] == ["| main, tokens=614400", "| main, tokens=1228800"]
  plain = [{k: v for k, v in r.items() if k != "grid.variant"} for r in rows if r["grid.variant"] != "prefix"]
  assert loss_table(plain).splitlines()[0] == "| setting | size | P=1 | P=2 |"


@pytest.mark.slow
def test_a_fresh_clone_resumes_the_published_copies_of_runs_in_flight(tmp_path, data_dir):
  """With publish_unfinished, a branch and its trunk stopped part-way are published as their
  newest checkpoints; a folder without them (a fresh clone) resumes from those copies to the
  losses of runs trained from scratch, bit for bit, and the copies go once the runs are done."""
  from parscale_jax.rundir import ResultsDir
  from parscale_jax.sweep.ladder import prepare_branch
  from parscale_jax.sweep.runner import run_sweep
  from parscale_jax.sweep.unfinished import publish_unfinished
  from parscale_jax.train.trainer import train

  sweep = _sweep(tmp_path, data_dir, grid={"model.P": [2]},
                 analysis={"fit": False, "publish": "published", "publish_unfinished": True})
  spec = load_sweep(sweep)
  short, long = spec.runs
  stopped = ResultsDir(tmp_path / "stopped")
  prepare_branch(short.branch, stopped.path, stopped.run(short.run_id).path, short.run_id)
  assert train(short.train_config(tmp_path), stopped.run(short.run_id).path, progress=False,
               until_step=9)["status"] == "paused"
  trunk = stopped.trunk(short.branch.trunk_id)
  train(config_from_dict(short.branch.trunk_config), trunk.path, progress=False, until_step=12)
  publish_unfinished(spec, stopped.path)
  copies = tmp_path / "published" / "unfinished"
  assert sorted(p.name for p in (copies / "runs" / short.run_id / "checkpoints").iterdir()) == ["9"]
  assert sorted(p.name for p in (copies / "trunks" / "P=2" / "checkpoints").iterdir()) == ["12"]
  assert sorted(p.name for p in (copies / "trunks" / "P=2" / "branch_points").iterdir()) == ["8"]

  logs = []
  rows = run_sweep(load_sweep(sweep), tmp_path / "clone", progress=False, analyze=False,
                   log=logs.append)
  assert f"{short.run_id}: resumes from its published copy at step 9" in logs
  assert "P=2: resumes from its published copy at step 12" in logs
  for run, row in zip(spec.runs, rows):
    alone = train(run.train_config(tmp_path), tmp_path / "alone" / run.run_id, progress=False)
    assert row["status"] == "done" and row["loss"] == alone["eval_loss"]
  assert not (copies / "runs").exists() or not any((copies / "runs").iterdir())
  assert not (copies / "trunks" / "P=2").exists()
  # The clone trained the trunk on from step 12: its earlier metrics are the copy's lines.
  read = lambda folder: [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
  clone_lines = read(tmp_path / "clone" / "trunks" / "P=2")
  assert [r for r in clone_lines if r.get("step", 0) <= 12] == read(trunk.path)
  assert max(r.get("step", 0) for r in clone_lines) == 16


def test_published_copies_only_ever_move_a_run_forward(tmp_path):
  """A copy newer than a folder's own checkpoint is restored over it, and a folder's older
  checkpoint never replaces a newer published copy (two machines, one behind the other)."""
  from parscale_jax.rundir import RunDir
  from parscale_jax.sweep.unfinished import refresh_copy, restore_copy

  def run_at(folder, step, note):
    run = RunDir(tmp_path / folder)
    (run.checkpoints / str(step)).mkdir(parents=True)
    (run.checkpoints / str(step) / "state").write_text(note)
    (run / "metrics.jsonl").write_text(note)
    return run

  behind, copy = run_at("behind", 5, "five"), run_at("copy", 9, "nine")
  (copy.path / ".checkpoints.7.123.partial").mkdir()  # A copy killed half-way.
  refresh_copy(behind, copy)
  assert copy.latest_checkpoint() == 9 and (copy / "metrics.jsonl").read_text() == "nine"
  assert not (copy.path / ".checkpoints.7.123.partial").exists()
  logs = []
  restore_copy(copy, behind, logs.append)
  assert behind.latest_checkpoint() == 9 and (behind / "metrics.jsonl").read_text() == "nine"
  assert logs == ["behind: resumes from its published copy at step 9"]
  restore_copy(copy, behind, logs.append)  # Nothing newer: nothing done.
  assert len(logs) == 1


def test_gains_against_tokens_under_both_parameter_counts(tmp_path):
  """Losses from a known law: P = 1 falls 0.05 nats per e-fold of N at every seed and budget; P = 4,
  with 10 % more parameters than its backbone, leads P = 1 by a seed's constant plus 0.01 more per
  doubling of tokens. Same backbone, the tables find that lead and its slope; same total
  parameters, the lead less what 10 % more parameters buy P = 1 (0.05 ln 1.1), and the same slope.
  The one-stream prefix (P = 1, but ParScale parameters) is not taken for the baseline."""
  from parscale_jax.sweep.token_gains import (baseline_variant, matched_differences, matched_table, plot_gains,
                                               trend_table)
  rng = np.random.default_rng(0)
  seed_lead, budget_shift = rng.normal(0, 0.01, 3), rng.normal(0, 0.02, (3, 5))
  rows = []
  for size, n in (("s1", 2e5), ("s2", 4e5)):
    for seed in range(3):
      for i in range(5):
        p1 = 2.0 - 0.05 * math.log(n) + budget_shift[seed, i]
        for variant, p, total, loss in (("P1", 1, n, p1), ("prefix", 1, 1.02 * n, p1 + 0.003),
                                        ("P4", 4, 1.1 * n, p1 + seed_lead[seed] - 0.01 * i)):
          rows.append({"status": "done", "grid.variant": variant, "grid.model.size": size,
                       "grid.seed": seed, "grid.tokens": 614400 * 2 ** i, "size": size, "seed": seed,
                       "tokens": 614400 * 2 ** i, "P": p, "N": total, "N_backbone": n, "loss": loss})
  assert baseline_variant(rows) == "P1"
  matched = {tuple(c.strip() for c in line.split("|")[1:3]): line.split("|")[3:6]
             for line in matched_table(rows).splitlines()[2:]}
  for i in range(5):
    backbone, total, n = matched[("P4", f"tokens={614400 * 2 ** i}, sizes pooled")]
    lead = seed_lead.mean() - 0.01 * i
    assert float(backbone.split()[0]) == pytest.approx(lead, abs=1e-4)
    assert float(total.split()[0]) == pytest.approx(lead + 0.05 * math.log(1.1), abs=1e-4)
    assert int(n) == 6
    for size in ("s1", "s2"):  # Each size on its own: the seeds' mean lead, three pairs.
      backbone, total, n = matched[("P4", f"size={size}, tokens={614400 * 2 ** i}")]
      assert float(backbone.split()[0]) == pytest.approx(lead, abs=1e-4) and int(n) == 3
  trend = {tuple(c.strip() for c in line.split("|")[1:4]): line.split("|")[4:6]
           for line in trend_table(rows, [("P4", "P1"), ("P4", "prefix")]).splitlines()[2:]}
  for count in ("same backbone", "same total parameters"):
    slope, n = trend[("P4 − P1", count, "sizes pooled")]
    assert slope.split()[:3] == ["-0.0100", "±", "0.0000"] and int(n) == 6
  assert ("P4 − prefix", "same total parameters", "sizes pooled") not in trend
  short = [r for r in rows if r["tokens"] <= 1228800]  # Two budgets: no slope to check.
  assert trend_table(short, [("P4", "P1")]) == ""
  plots = plot_gains(rows, tmp_path)
  assert [p.name for p in plots] == ["gains_vs_D.png", "gains_vs_D.pdf"]
  assert all(p.stat().st_size for p in plots)
  one_size = [r for r in rows if r["size"] == "s1"]  # No line through P = 1's sizes: no plot, none left.
  assert plot_gains(one_size, tmp_path) == [] and not any(p.exists() for p in plots)
  assert plot_gains([r for r in rows if r["tokens"] == 614400], tmp_path) == []  # One budget.
  # P = 1's gain per e-fold of N shrinks with N: a run with the total N of a P = 1 size is
  # compared with that run, not with a line through all of them.
  convex = [{"status": "done", "grid.variant": "P1" if p == 1 else "P2", "size": size, "seed": 0,
             "tokens": 614400, "P": p, "N": n * (1 if p == 1 else 2), "N_backbone": n,
             "loss": 1.0 + 1e3 / n + 0.01 * (p - 1)}
            for size, n in (("a", 1e4), ("b", 2e4), ("c", 4e4)) for p in (1, 2)]
  (pairs,) = matched_differences(convex, "P1").values()
  assert pairs["P2"][("a", 0)][1] == pytest.approx(1e3 / 1e4 - 1e3 / 2e4 + 0.01)
  assert pairs["P2"][("b", 0)][1] == pytest.approx(1e3 / 2e4 - 1e3 / 4e4 + 0.01)
  # A grid over P without named variants (cpu_grid_mlp's kind): P=1 is the baseline, and the P
  # values are what is compared.
  grid = [{**{k: v for k, v in r.items() if k != "grid.variant"}, "grid.model.P": r["P"]}
          for r in rows if r["grid.variant"] != "prefix"]
  assert baseline_variant(grid) == "P=1"
  lines = matched_table(grid).splitlines()
  assert lines[0].startswith("| A | setting | A − P=1, same backbone | A − P=1, same total parameters |")
  assert [line.split("|")[1:6] for line in lines[2:]] == \
      [line.replace("P4", "P=4", 1).split("|")[1:6] for line in matched_table(rows).splitlines()[2:]
       if line.startswith("| P4 |")]


def test_rho_is_tabled_and_drawn_against_tokens_from_local_or_published_runs(tmp_path):
  """Each P > 1 run's diversity.json, from its folder here or else its published copy: rho's mean
  ± SE over seeds per (size, budget, variant), and rho_vs_D with a panel per size; one budget draws
  nothing and removes an old plot."""
  from parscale_jax.rundir import ResultsDir
  from parscale_jax.sweep.diversity import diversity_cells, diversity_table, plot_rho_vs_tokens
  results, published = tmp_path / "results", tmp_path / "published"
  rows, rho = [], {}
  for size in ("s1", "s2"):
    for variant, p in (("P1", 1), ("P2", 2), ("P4", 4)):
      for seed in (0, 1):
        for i, tokens in enumerate((614400, 1228800, 2457600)):
          run_id = f"{size}_{variant}_{seed}_{tokens}"
          rows.append({"run_id": run_id, "status": "done", "P": p, "seed": seed, "size": size,
                       "grid.model.size": size, "grid.variant": variant, "grid.seed": seed,
                       "grid.tokens": tokens})
          if p > 1:
            rho[run_id] = 0.9 - 0.1 * i - 0.05 * (p == 4) + 0.01 * seed
            folder = ResultsDir(results if seed == 0 else published).run(run_id).path
            folder.mkdir(parents=True)
            (folder / "diversity.json").write_text(json.dumps(
                {"rho": rho[run_id], "stream_losses": [2.0, 2.1][:p], "aggregate_loss": 1.9,
                 "predicted_multiplier": 1.5}))
  cells = diversity_cells(rows, results, published)
  assert len(cells) == 2 * 2 * 3 and all(len(docs) == 2 for docs in cells.values())
  lines = {tuple(c.strip() for c in line.split("|")[1:3]): line.split("|")[3:7]
           for line in diversity_table(cells).splitlines()[2:]}
  value, gap, _, n = lines[("size=s2, tokens=1228800", "P4")]
  assert value.split() == ["0.7550", "±", "0.0050"] and gap.split()[0] == "0.1000" and int(n) == 2
  plots = plot_rho_vs_tokens(cells, tmp_path)
  assert [p.name for p in plots] == ["rho_vs_D.png", "rho_vs_D.pdf"] and all(p.stat().st_size for p in plots)
  one_budget = {key: docs for key, docs in cells.items() if dict(key[0])["tokens"] == 614400}
  assert plot_rho_vs_tokens(one_budget, tmp_path) == [] and not any(p.exists() for p in plots)
