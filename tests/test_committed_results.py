"""Checks of committed results: every committed fit, report and number in the README is what its
committed table, and the code, give today."""
import json
import re

import pytest

from parscale_jax.analysis import load_fit
from parscale_jax.analysis.fit_table import fit_table

from conftest import REPO

PAPER_FIT = REPO / "analysis" / "results" / "paper" / "fit.json"


@pytest.fixture(scope="module")
def fresh_paper_fit(tmp_path_factory):
  return fit_table("paper", tmp_path_factory.mktemp("paper"), n_bootstrap=0, log=lambda s: None)


def test_committed_paper_fit_is_current(fresh_paper_fit):
  committed = load_fit(PAPER_FIT).doc
  for name in ("stack-v2-python", "pile"):
    for key in ("E", "A", "alpha", "k", "objective"):
      assert committed["groups"][name][key] == pytest.approx(fresh_paper_fit["groups"][name][key], rel=1e-6)


def test_the_package_ships_the_committed_paper_fit():
  from parscale_jax.analysis.results import paper_fit
  assert paper_fit().doc == json.loads(PAPER_FIT.read_text())


def test_committed_cpu_fit_is_current(tmp_path):
  """The committed CPU sweep fit is what its committed table gives: main stage, seeds averaged,
  seed standard errors as weights (sweeps/cpu.yaml). The law is not identified there: k runs off
  along a flat direction, so its value is not compared, only that it runs off."""
  from parscale_jax.tablefile import read_table
  cpu = REPO / "analysis" / "results" / "cpu"
  rows = [r for r in read_table(cpu / "table.csv") if r["stage"] == "main"]
  assert len(rows) == 32 and all(r["status"] == "done" for r in rows)
  table = tmp_path / "main.jsonl"
  table.write_text("".join(json.dumps(r) + "\n" for r in rows))
  fresh = fit_table(str(table), tmp_path / "fit", n_bootstrap=100, weights="sem", log=lambda s: None)
  committed = load_fit(cpu / "fit.json").doc
  c, f = committed["groups"]["all"], fresh["groups"]["all"]
  assert c["n_points"] == 16 and c["weights"] == "sem"
  for key in ("E", "A", "alpha", "objective"):
    assert c[key] == pytest.approx(f[key], rel=1e-6)
  assert not f["identified"] and any("runs off" in r for r in f["not_identified"])
  assert c["k"] > 1e6 and f["k"] > 1e6


def test_committed_cpu_long_report_is_current():
  """The committed follow-up sweep (sweeps/cpu_long.yaml): four seeds of P = 1 and P = 4 at 6M tokens,
  and a report whose paired tables are what its committed table gives."""
  from parscale_jax.sweep.comparisons import axis_comparison, pooled_p_gain
  from parscale_jax.tablefile import read_table
  folder = REPO / "analysis" / "results" / "cpu_long"
  rows = read_table(folder / "table.csv")
  long = [r for r in rows if r["stage"] == "long"]
  assert len(long) == 8 and all(r["status"] == "done" and r["tokens"] >= 5.99e6 for r in long)
  assert {r["P"] for r in long} == {1, 4} and {r["seed"] for r in long} == {0, 1, 2, 3}
  report = (folder / "report.md").read_text()
  gain = pooled_p_gain(rows, "long")
  assert gain and gain in report
  prefix = axis_comparison(rows)
  assert "by `model.prefix_tokens`" in prefix and prefix in report
  assert (folder / "curves.png").stat().st_size > 0


def test_readme_numbers_are_the_committed_results():
  """The README quotes the paper refit (k, alpha, E with intervals, R², multipliers) and the CPU
  grid's k; each is the committed fit's, at the precision shown."""
  readme = (REPO / "README.md").read_text()
  paper = load_fit(PAPER_FIT).doc["groups"]
  for name in ("stack-v2-python", "pile"):
    g = paper[name]
    cells = [f"{g[k]:.3f} [{g['ci95'][k][0]:.3f}, {g['ci95'][k][1]:.3f}]" for k in ("k", "alpha", "E")]
    assert f"| {name} | {' | '.join(cells)} | {g['r2']:.3f} |" in readme, name
  mult = paper["stack-v2-python"]["multiplier"]
  assert f"{mult['2']:.2f}×, {mult['4']:.2f}×, {mult['8']:.2f}×" in readme
  k = paper["stack-v2-python"]
  assert f"k = {k['k']:.3f} [{k['ci95']['k'][0]:.3f}, {k['ci95']['k'][1]:.3f}]" in readme
  grid = load_fit(REPO / "analysis" / "results" / "cpu_grid" / "fit.json").doc["groups"]["all"]
  match = re.search(r"k = (\d\.\d+) \[0, (\d\.\d+)\]", readme)
  assert match and float(match.group(1)) == round(grid["k"], 3)
  assert float(match.group(2)) == round(grid["ci95"]["k"][1], 2)


def _minus(x: float, digits: int) -> str:
  return f"{x:.{digits}f}".replace("-", "−")


def test_readme_cpu_reparam_and_speed_numbers_are_the_committed_results():
  """The README's reparameterised-prefix contrasts (both sizes at 2.46M tokens), the fit and the
  P = 8 - P = 4 contrast of the grid on that recipe, and its speed ratios against the reference are
  what the committed tables, fit and benchmark JSON give."""
  import numpy as np
  from parscale_jax.stats import paired_differences, t_interval
  from parscale_jax.tablefile import read_table
  readme = " ".join((REPO / "README.md").read_text().split())  # Line breaks as spaces.
  rows = [r for r in read_table(REPO / "analysis" / "results" / "cpu_reparam" / "table.csv")
          if r["status"] == "done" and r["tokens"] == 2457600]
  loss = {}
  for r in rows:  # Paired by (size, seed): both sizes pooled.
    loss.setdefault(r["grid.variant"], {})[r["size"], r["seed"]] = r["loss"]
  for a, b in [("P2_mlp", "prefix_mlp"), ("P4_mlp", "prefix_mlp"), ("P4_mlp", "P1")]:
    diffs = paired_differences(loss[a], loss[b])
    assert len(diffs) == 6
    lo, hi = t_interval(diffs)
    text = f"{_minus(diffs.mean(), 4)} [{_minus(lo, 4)}, {_minus(hi, 4)}]"
    assert text in readme, text
  grid = REPO / "analysis" / "results" / "cpu_grid_mlp"
  every = json.loads((grid / "fit.json").read_text())  # The paper's count: every parameter.
  assert every["N"].endswith("ParScale's own included")
  assert not every["groups"]["all"]["identified"] and "does **not identify** the law" in readme
  assert f"R² {every['groups']['all']['r2']:.2f}" in readme
  fit = json.loads((grid / "fit_N_backbone.json").read_text())["groups"]["all"]
  assert f"Counting the backbone alone, k = {fit['k']:.3f} [{fit['ci95']['k'][0]:.3f}, {fit['ci95']['k'][1]:.3f}]" in readme
  rows = [r for r in read_table(grid / "table.csv") if r["status"] == "done"]
  by_P = {}
  for r in rows:
    by_P.setdefault(r["P"], {})[r["size"], r["seed"]] = r["loss"]
  diffs = paired_differences(by_P[8], by_P[4])
  assert len(diffs) == 12
  lo, hi = t_interval(diffs)
  signed = lambda x: f"{x:+.4f}".replace("-", "−")
  assert f"P = 8 − P = 4 is {signed(diffs.mean())} [{signed(lo)}, {signed(hi)}]" in readme
  law = lambda N, P: fit["E"] + (fit["A"] * 1e9 / (N * (fit["k"] * np.log(P) + 1))) ** fit["alpha"]
  sizes = {r["N_backbone"] for r in rows}
  predicted = np.mean([law(N, 8) - law(N, 4) for N in sizes])
  assert f"that fit predicts {_minus(predicted, 4)}" in readme and not lo <= predicted <= hi
  speed = json.loads((REPO / "benchmarks" / "results" / "vs_reference.json").read_text())["rows"]
  span = lambda task, setting: "{:.2f}–{:.2f}×".format(*(f(r["ours_vs_reference"] for r in speed
      if r["task"] == task and r["setting"] == setting) for f in (min, max)))
  assert f"train step {span('train', 'hugetlb')} at P = 1–8" in readme
  assert f"one-thread step {span('grid', 'hugetlb')}, decoding {span('decode', 'hugetlb')}" in readme


def test_readme_cost_and_plan_lines_are_what_the_commands_print(capsys):
  from parscale_jax.cli import main
  readme = " ".join((REPO / "README.md").read_text().split())
  assert main(["cost", "--P", "8", "--device", "a100-80gb", "--json"]) == 0
  cost = json.loads(capsys.readouterr().out)
  assert (f"P = 8 adds {cost['memory_increase_ratio']:.0f}× less memory and "
          f"{cost['latency_increase_ratio']:.1f}× less latency") in readme
  assert main(["plan", "--max-memory-gb", "8"]) == 0
  for line in capsys.readouterr().out.splitlines()[:2]:  # Recommended and Runner-up.
    assert " ".join(line.split()) in readme, line
