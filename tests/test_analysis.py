"""The scaling-law fit against the paper's published optimum, and its tooling."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parscale_jax.analysis import load_fit
from parscale_jax.analysis.fit_table import fit_table
from parscale_jax.analysis.fitting import fit_data_terms, fit_group
from parscale_jax.analysis.law import DATA_FORMS, FORMS
from parscale_jax.analysis.optimize import fit_point
from parscale_jax.analysis.tables import Points, load_points
from parscale_jax.errors import UserError

# The fitting code's own numerics must not reach users as RuntimeWarnings (log of 0, overflow).
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

PAPER = {"stack-v2-python": dict(E=0.691237, A=0.0113062, alpha=0.189371, k=0.393463,
                                 objective=3.6767e-5, r2=0.9978),
         "pile": dict(E=1.288766, A=0.197352, alpha=0.196333, k=0.334456,
                      objective=1.8139e-5, r2=0.9987)}


@pytest.fixture(scope="module")
def paper_fit(tmp_path_factory):
  out = tmp_path_factory.mktemp("paper")
  doc = fit_table("paper", out, n_bootstrap=300, log=lambda s: None)
  return out, doc


def test_paper_fit_reaches_the_published_optimum(paper_fit):
  _, doc = paper_fit
  assert set(doc["groups"]) == set(PAPER)
  for name, expected in PAPER.items():
    got = doc["groups"][name]
    for key in ("E", "A", "alpha", "k"):
      assert abs(got[key] / expected[key] - 1) < 0.005, (name, key, got[key])
    assert got["objective"] <= expected["objective"] + 1e-9
    assert round(got["r2"], 4) == expected["r2"]
    assert got["n_points"] == 24


def test_bootstrap_intervals_and_multipliers(paper_fit):
  _, doc = paper_fit
  for name, g in doc["groups"].items():
    for key in ("E", "A", "alpha", "k"):
      lo, hi = g["ci95"][key]
      assert lo <= g[key] <= hi and lo < hi
    assert g["k_excludes_zero"]
    for p in ("2", "4", "8"):
      lo, hi = g["multiplier_ci95"][p]
      assert lo <= g["multiplier"][p] <= hi
      assert g["multiplier"][p] == pytest.approx(g["k"] * np.log(int(p)) + 1)
    assert g["bootstrap"]["n"] >= 290


def test_extrapolation_and_form_comparison(paper_fit):
  _, doc = paper_fit
  g = doc["groups"]["stack-v2-python"]
  assert len(g["extrapolation"]["points"]) == 4  # The largest size at each P.
  assert g["extrapolation"]["mean_rel_error"] < 0.02
  forms = g["comparison"]["forms"]
  assert set(forms) == set(FORMS)
  assert forms["parscale"]["objective"] == pytest.approx(g["objective"], rel=1e-6)
  # Streams matter on the paper's data: the P-independent law is the worst by far.
  assert max(forms, key=lambda f: forms[f]["aic"]) == "p_independent"
  assert g["comparison"]["best_by_aic"] == "parscale"


def test_synthetic_law_is_recovered_and_ln_p_wins():
  truth = np.array([[1.2, 0.05, 0.3, 0.5]])
  N = np.repeat(np.geomspace(1e6, 3e7, 5), 4)
  P = np.tile([1.0, 2.0, 4.0, 8.0], 5)
  L = FORMS["parscale"].predict(truth, N, P)[0]
  theta, f = fit_point(FORMS["parscale"], (N, P), L)
  np.testing.assert_allclose(theta, truth[0], rtol=1e-3)
  assert f < 1e-12
  noisy = L * np.exp(np.random.default_rng(0).normal(0, 2e-4, L.shape))
  g = fit_group("synthetic", Points(N, P, noisy), n_bootstrap=100)
  assert g["comparison"]["best_by_aic"] in ("parscale", "diversity")
  assert abs(g["k"] - 0.5) < 0.05 and g["ci95"]["k"][0] <= g["k"] <= g["ci95"]["k"][1]


def test_load_fit_predicts_and_inverts(paper_fit):
  out, doc = paper_fit
  fit = load_fit(out / "fit.json")
  law = fit.law("pile")
  for point in doc["groups"]["pile"]["points"]:
    assert law.predict(point["N"], point["P"]) == pytest.approx(point["predicted"], rel=1e-12)
  assert law.equivalent_params(1e9, 8) == pytest.approx(1e9 * (law.k * np.log(8) + 1))
  n = law.params_for_loss(law.predict(2e9, 4), P=4)
  assert n == pytest.approx(2e9, rel=1e-9)
  # P streams at N predict the same loss as one stream at the equivalent N.
  assert law.predict(law.equivalent_params(1e9, 4), 1) == pytest.approx(law.predict(1e9, 4))
  with pytest.raises(UserError, match="no group"):
    fit.law("c4")


def test_plots_are_written(paper_fit, tmp_path):
  out, _ = paper_fit
  from parscale_jax.analysis.plots import plot_all
  paths = plot_all(load_fit(out / "fit.json"), tmp_path)
  names = {p.name for p in paths}
  for stem in ("loss_vs_N", "loss_vs_P", "multiplier", "residuals"):
    assert {f"{stem}.png", f"{stem}.pdf"} <= names
  assert all(p.stat().st_size > 5000 for p in paths)


def _table(path, rows, header="N,P,loss"):
  path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
  return path


@pytest.mark.parametrize("rows, header, message", [
    ([(1e6, 1, 2.0), (2e6, 2, 1.9), (3e6, 1, 1.8)], "N,P,loss", "3 points for 4 parameters"),
    ([(1e6 * i, 1, 2.0 - 0.1 * i) for i in range(1, 7)], "N,P,loss", "one P only"),
    ([(-1, 1, 2.0)], "N,P,loss", "must be positive"),
    ([(1e6, 1, "nan")], "N,P,loss", "column 'loss' is 'nan'"),
    ([(1e6, 1)], "N,P", "missing column 'loss'"),
    ([(1e6, 1, "abc")], "N,P,loss", "non-number 'abc'"),
])
def test_bad_tables_are_refused(tmp_path, rows, header, message):
  path = _table(tmp_path / "t.csv", rows, header)
  with pytest.raises(UserError, match=message):
    fit_table(str(path), tmp_path / "out", n_bootstrap=0, log=lambda s: None)
  assert not (tmp_path / "out" / "fit.json").exists()


@pytest.mark.slow
def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
  (tmp_path / "bad.jsonl").write_text('{"N": 1, "P": 1, "loss": 2}\n{"N": 2, "P"\n')
  proc = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "fit", str(tmp_path / "bad.jsonl"),
                         "--out", str(tmp_path / "out")], capture_output=True, text=True)
  assert proc.returncode == 2 and "bad.jsonl:2: malformed JSON line" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
  (tmp_path / "fit.json").write_text('{"version": 1, "groups": {"a": {"E": 1}}}')
  proc = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "plot", str(tmp_path / "fit.json")],
                        capture_output=True, text=True)
  assert proc.returncode == 2 and "no valid 'A'" in proc.stderr
  with pytest.raises(UserError, match="not valid JSON"):
    (tmp_path / "cut.json").write_text('{"version": 1, "groups": {')
    load_fit(tmp_path / "cut.json")


def test_sweep_table_with_seeds_and_sem_weights(tmp_path):
  truth = np.array([[1.0, 0.02, 0.35, 0.4]])
  rng = np.random.default_rng(1)
  lines = []
  for n in (1e5, 3e5, 1e6, 3e6):
    for p in (1, 2, 4):
      loss = FORMS["parscale"].predict(truth, np.array([n]), np.array([float(p)]))[0, 0]
      for seed in (0, 1, 2):
        lines.append({"run_id": f"n{n:g}-p{p}-s{seed}", "N": n, "P": p, "seed": seed,
                      "loss": loss + rng.normal(0, 1e-3), "status": "done"})
  lines.append({"run_id": "broken", "N": 1e5, "P": 8, "seed": 0, "loss": None, "status": "failed"})
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(l) + "\n" for l in lines))
  points = load_points(path)["all"]
  assert len(points) == 12 and set(points.seeds) == {3}
  assert np.all(points.seed_sem > 0) and points.val_sem is None and np.array_equal(points.sem, points.seed_sem)
  doc = fit_table(str(path), tmp_path / "out", n_bootstrap=100, weights="sem", log=lambda s: None)
  g = doc["groups"]["all"]
  assert g["weights"] == "sem" and abs(g["k"] - 0.4) < 0.2 and g["k_excludes_zero"]


def _execute_notebook(path, out):
  """The notebook executed by `parscale notebook`'s own function (on the committed results), its
  code cells' outputs."""
  nbformat = pytest.importorskip("nbformat")
  pytest.importorskip("nbclient")
  from parscale_jax.analysis.notebook import run_notebook
  nb = nbformat.read(run_notebook(None, out, path), as_version=4)
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
  assert not [o for o in outputs if o.get("output_type") == "error"], outputs
  return outputs


def test_notebook_on_the_committed_results_says_which_fits_identify_the_law(tmp_path):
  from conftest import REPO
  outputs = _execute_notebook(REPO / "analysis" / "scaling_laws.ipynb", tmp_path / "run.ipynb")
  text = json.dumps([o.get("data", {}) for o in outputs], ensure_ascii=False)
  # The paper's fit identifies the law; the committed CPU grids do not, and show no multipliers.
  assert "above 0: P streams" in text and "law not identified" in text
  assert "| all | – | – | – | not identified |" in text
  assert "### cpu_grid_mlp" in text  # The headline grid, every parameter counted.
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # Embedded, not linked.


def test_notebook_pointed_at_a_sweep_shows_its_table_fit_and_plots(tmp_path):
  """A small sweep's results folder (a table from a known law, fitted as `sweep run` fits it)."""
  from conftest import REPO
  from parscale_jax.analysis.fit_table import fit_table
  from parscale_jax.analysis.law import parscale
  from parscale_jax.analysis.plots import plot_all
  from parscale_jax.analysis.results import FitResult
  truth = np.array([[1.2, 2e-4, 0.3, 0.4]])
  rows = [{"run_id": f"P={p}_N={n:g}", "stage": "main", "size": f"n{n:g}", "N": n, "P": p,
           "seed": 0, "loss": float(parscale(truth, np.array([n]), np.array([p]))[0, 0]),
           "status": "done"} for n in (5e4, 1e5, 2e5, 4e5) for p in (1, 2, 4)]
  results = tmp_path / "results" / "quick"
  results.mkdir(parents=True)
  (results / "table.csv").write_text(
      "run_id,stage,size,N,P,seed,loss,status\n" +
      "".join(f"{r['run_id']},main,{r['size']},{r['N']},{r['P']},0,{r['loss']},done\n" for r in rows))
  doc = fit_table(rows, results / "fit", n_bootstrap=100, log=lambda s: None)
  plot_all(FitResult(doc), results / "fit")
  pytest.importorskip("nbconvert")
  # As a user runs it: `parscale notebook results/quick` from the folder above, a relative path.
  notebook = str(REPO / "analysis" / "scaling_laws.ipynb")
  out = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "notebook", "results/quick",
                        "--notebook", notebook], capture_output=True, text=True, cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  html = (results / "scaling_laws.html").read_text()
  assert f"wrote {Path('results/quick/scaling_laws.html')}" in out.stdout
  assert '<h3 id="quick">quick' in html and "n400000" in html and "(['quick'], ['quick'])" in html
  assert html.count('src="data:image/png;base64') == 4  # Embedded, not linked.
  assert "Traceback" not in html
  # Not a results folder: one line, nothing written.
  bad = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "notebook", "results",
                        "--notebook", notebook], capture_output=True, text=True, cwd=tmp_path)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith(
      "results: no table.csv (not a sweep's results folder)")
  assert not (tmp_path / "results" / "scaling_laws.html").exists()


def test_fit_on_a_sweeps_table_leaves_the_sweeps_fit_alone(tmp_path):
  """`parscale fit FOLDER/table.csv` on a sweep's (published) folder writes refit/, says so, and
  leaves the sweep's fit.json as it was."""
  import shutil

  from conftest import REPO
  folder = tmp_path / "cpu_grid_mlp"
  source = REPO / "analysis" / "results" / "cpu_grid_mlp"
  folder.mkdir()
  for name in ("table.csv", "fit.json"):
    shutil.copy(source / name, folder / name)
  (folder / "sweep.json").write_text('{"name": "cpu_grid_mlp"}')
  before = (folder / "fit.json").read_bytes()
  out = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "fit", str(folder / "table.csv"),
                        "--n-column", "N_backbone", "--bootstrap", "0", "--no-plots"],
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert "its fit stays as the sweep wrote it" in out.stderr
  assert (folder / "fit.json").read_bytes() == before and not (folder / "fit").exists()
  assert json.loads((folder / "refit" / "fit.json").read_text())["groups"]["all"]["k"] > 0


@pytest.mark.parametrize("key, value, message", [
    ("k", -0.1, "has k = -0.1; the law needs k > 0"), ("alpha", 0.0, "alpha = 0"),
    ("E", -1.0, "E = -1"), ("k", True, "no valid 'k'")])
def test_load_fit_refuses_parameters_the_law_cannot_have(tmp_path, key, value, message):
  from conftest import REPO
  from parscale_jax.analysis.results import load_fit
  from parscale_jax.errors import UserError
  doc = json.loads((REPO / "analysis" / "results" / "paper" / "fit.json").read_text())
  doc["groups"]["pile"][key] = value
  (tmp_path / "fit.json").write_text(json.dumps(doc))
  with pytest.raises(UserError, match=message):
    load_fit(tmp_path / "fit.json")


def test_a_sweep_ends_on_its_verdicts_and_the_paper_refit(tmp_path):
  import shutil

  from conftest import REPO
  from parscale_jax.sweep.cli import verdict_lines
  source = REPO / "analysis" / "results" / "cpu_grid_mlp"
  for name in ("fit.json", "fit_N_backbone.json"):
    shutil.copy(source / name, tmp_path / name)
  lines = verdict_lines(tmp_path)
  assert len(lines) == 3
  assert lines[0].startswith("verdict (N: non-embedding parameters, ParScale's own included)")
  assert "law not identified" in lines[0] and "No claim about k" in lines[0]
  assert "k = 0.109, 95 % interval [0.012, 0.266]" in lines[1]
  assert lines[2].startswith("the paper's losses, refitted by the same code: k = 0.393 [0.343, 0.459]")
  assert verdict_lines(tmp_path / "nothing") == []


def _ladder_rows(truth, sizes, noise=0.0, form="parscale_data"):
  """A budget ladder's table: every (N, P, D) from a law with a data term, 2 seeds."""
  rng = np.random.default_rng(1)
  rows = []
  for n in sizes:
    for p in (1, 2, 4, 8):
      for d in (614400, 1228800, 2457600, 4915200, 9830400):
        loss = DATA_FORMS[form].predict(truth, np.array([n]), np.array([float(p)]),
                                                   np.array([float(d)]))[0, 0]
        for seed in (0, 1):
          rows.append({"N": n, "P": p, "tokens": d, "seed": seed, "status": "done",
                       "loss": loss * np.exp(rng.normal(0, noise))})
  return rows


def test_budget_ladder_fits_the_law_with_a_data_term():
  truth = np.array([[1.0, 0.02, 0.4, 0.4, 0.005, 0.5]])  # E, A, alpha, k, B, beta
  rows = _ladder_rows(truth, (2e5, 4e5, 8e5))
  points = load_points(rows)["all"]
  assert points.D is not None and len(points) == 3 * 4 * 5
  # Exact data: the data-term form recovers its parameters.
  theta, f = fit_point(DATA_FORMS["parscale_data"], points.X, points.loss)
  np.testing.assert_allclose(theta, truth[0], rtol=2e-3)
  g = fit_group("ladder", load_points(_ladder_rows(truth, (2e5, 4e5, 8e5), noise=3e-4))["all"],
                n_bootstrap=100, compare=False)
  # The (N, P) law is fitted at the longest budget only; its points are that budget's.
  assert g["tokens"] == 9830400 and g["n_points"] == 12
  form = g["data_term"]["forms"]["parscale_data"]
  assert len(form["points"]) == 60 and form["r2"] > 0.99
  lo, hi = form["ci95"]["k"]
  assert lo <= 0.4 <= hi and abs(form["params"]["k"] - 0.4) < 0.1
  assert form["longest_budget_from_shorter"]["mean_abs_error"] < 0.01
  assert g["data_term"]["budgets"] == [614400, 1228800, 2457600, 4915200, 9830400]
  assert "diversity_data" in g["data_term"]["forms"]


def test_a_decorrelation_done_before_the_shortest_budget_is_not_identified():
  """rho(D) that reached rho_end long before 614K tokens leaves D_rho free: the fit's D_rho and
  its bootstrap draws do not move, so only the flatness check can say the data do not pin it."""
  verdicts = {}
  for d_rho in (0.01, 2.0):  # Millions of tokens: 10K (done before any budget) and 2M (inside).
    truth = np.array([[1.0, 0.02, 0.4, 0.005, 0.5, 0.6, d_rho]])  # E A alpha B beta rho_end D_rho
    rows = _ladder_rows(truth, (2e5, 4e5, 8e5), noise=1e-4, form="diversity_data")
    forms = fit_data_terms("ladder", load_points(rows)["all"], n_bootstrap=0)["forms"]
    verdicts[d_rho] = forms["diversity_data"]["not_identified"]
  assert any(reason.startswith("the data do not pin D_rho") and "over before the shortest budget" in reason
             for reason in verdicts[0.01])
  assert not any("do not pin" in reason for reason in verdicts[2.0])


def test_only_the_diversity_data_form_checks_that_its_budgets_see_rho_fall():
  budgets = (614400, 9830400)
  unseen = DATA_FORMS["diversity_data"].unseen
  assert "over before the shortest budget" in unseen({"D_rho": 0.1}, budgets)[0]
  assert "barely begun at the longest budget" in unseen({"D_rho": 1e4}, budgets)[0]
  assert unseen({"D_rho": 2.0}, budgets) == []
  assert all(form.unseen is None for name, form in DATA_FORMS.items() if name != "diversity_data")


def test_one_budget_is_no_token_axis():
  rows = [{"N": n, "P": p, "loss": 3.0 - 0.1 * p - n / 1e6, "tokens": 2457600}
          for n in (1e5, 2e5, 4e5) for p in (1, 2, 4)]
  assert load_points(rows)["all"].D is None


def test_budget_ladder_report_and_plot(tmp_path):
  from parscale_jax.analysis.plots import plot_all
  from parscale_jax.analysis.report import fit_markdown
  from parscale_jax.analysis.results import FitResult

  truth = np.array([[1.0, 0.02, 0.4, 0.4, 0.005, 0.5]])
  doc = fit_table(_ladder_rows(truth, (2e5, 4e5), noise=3e-4), tmp_path, n_bootstrap=0,
                  compare=False, log=lambda s: None)
  assert load_fit(tmp_path / "fit.json").law().k == pytest.approx(doc["groups"]["all"]["k"])
  paths = plot_all(FitResult(doc), tmp_path)
  assert tmp_path / "loss_vs_D.png" in paths
  text = fit_markdown(doc)
  assert "Token axis (all): the law above is fitted at the longest budget, D = 9.83e+06" in text
  assert "| parscale_data | E " in text and "loss_vs_D.png" in text


def test_a_new_law_form_is_one_entry(monkeypatch, tmp_path):
  """A toy competitor added to law.FORMS alone is fitted, compared and given its multiplier."""
  from parscale_jax.analysis import law

  def linear_in_p(theta, N, P):  # L = E + (A*1e9 / (N*(1 + c*(P - 1))))^alpha
    p = toy.params(theta)
    return p["E"] + (p["A"] * 1e9 / (N * (1 + p["c"] * (P - 1)))) ** p["alpha"]

  toy = law.LawForm("linear", ("E", "A", "alpha", "c"), linear_in_p,
                    (law.E0, law.A0, law.ALPHA0, (0.1, 0.3)), "L = E + (A*1e9/(N*(1+c*(P-1))))^alpha",
                    n_multiplier=lambda p, P: 1 + p["c"] * (P - 1))
  monkeypatch.setitem(law.FORMS, "linear", toy)
  truth = np.array([1.2, 0.05, 0.3, 0.2])
  N = np.repeat(np.geomspace(1e6, 3e7, 4), 4)
  P = np.tile([1.0, 2.0, 4.0, 8.0], 4)
  L = toy.predict(truth[None], N, P)[0]
  g = fit_group("toy", Points(N, P, L), n_bootstrap=0)
  assert g["comparison"]["best_by_aic"] == "linear"
  fitted = g["comparison"]["forms"]["linear"]["params"]
  assert fitted["c"] == pytest.approx(0.2, rel=1e-3)
  assert toy.multiplier(toy.theta(fitted), 8) == pytest.approx(1 + 0.2 * 7, rel=1e-3)
  # The same inverse serves every form: N at which P = 4 reaches the predicted loss of N = 5e6.
  n = toy.params_for_loss(truth, toy.predict(truth[None], np.array([5e6]), np.array([4.0]))[0, 0], 4)
  assert n == pytest.approx(5e6, rel=1e-9)
  # A fit.json of the new form reads back as a law with its own parameter names.
  path = tmp_path / "fit.json"
  path.write_text(json.dumps({"version": 1, "law": toy.formula, "form": "linear",
                              "groups": {"all": {**fitted, "objective": 0.0, "r2": 1.0}}}))
  fitted_law = load_fit(path).law()
  assert fitted_law.c == pytest.approx(0.2, rel=1e-3) and fitted_law.form is toy
  assert fitted_law.predict(5e6, 4) == pytest.approx(toy.predict(toy.theta(fitted)[None], np.array([5e6]),
                                                                 np.array([4.0]))[0, 0])
  assert fitted_law.params_for_loss(fitted_law.predict(5e6, 4), 4) == pytest.approx(5e6, rel=1e-9)
  with pytest.raises(AttributeError, match="has no 'k'"):
    fitted_law.k
  path.write_text(path.read_text().replace('"linear"', '"cubic"'))
  with pytest.raises(UserError, match=f"^{path}: unknown law form 'cubic' \\(known: parscale, "):
    load_fit(path)


def test_plots_say_what_their_bars_and_axes_are(tmp_path):
  from parscale_jax.analysis.plots import error_bars, n_axis, plot_all
  from parscale_jax.analysis.results import FitResult

  rows = [{"N": n, "P": p, "loss": 3.0 - 0.1 * np.log(p) - 0.2 * np.log(n / 1e5), "val_sem": 0.01}
          for n in (1e5, 2e5, 4e5) for p in (1, 2, 4)]
  doc = fit_table(rows, tmp_path, n_bootstrap=0, compare=False, n_column="N", log=lambda s: None)
  g = doc["groups"]["all"]
  assert error_bars(g) == "bars: ± validation SE (one seed)"  # One run per point: not a seed SE.
  seeded = [dict(r, seed=s, loss=r["loss"] + 0.01 * s) for r in rows for s in (0, 1)]
  assert error_bars(fit_table(seeded, None, n_bootstrap=0, compare=False, log=lambda s: None)
                    ["groups"]["all"]) == "bars: ± SE over seeds"
  backbone = fit_table([dict(r, N_backbone=r["N"]) for r in rows], None, n_bootstrap=0, compare=False,
                       n_column="N_backbone", log=lambda s: None)
  assert "backbone" in n_axis(FitResult(backbone)) and "included" in n_axis(FitResult(doc))
  assert {p.name for p in plot_all(FitResult(doc), tmp_path)} >= {"multiplier.png", "residuals.png"}


def test_a_points_standard_error_is_named_by_what_it_measures(tmp_path):
  """Seeds averaged into a point give `seed_sem`; a one-run point keeps its run's validation SE
  as `val_sem` (the table's column; `loss_sem` in tables and fits written before the names)."""
  from parscale_jax.analysis.plots import point_sem

  rows = [{"N": n, "P": p, "seed": s, "loss": 3.0 - 0.1 * np.log(p) - 0.2 * np.log(n / 1e5) + 0.01 * s,
           "val_sem": 0.002} for n in (1e5, 2e5, 4e5) for p in (1, 2, 4) for s in ((0, 1) if p < 4 else (0,))]
  points = load_points(rows)["all"]
  one_run = points.P == 4
  assert np.all(np.isnan(points.seed_sem[one_run])) and np.all(points.val_sem[one_run] == 0.002)
  assert np.allclose(points.seed_sem[~one_run], 0.005) and np.all(np.isnan(points.val_sem[~one_run]))
  assert np.allclose(points.sem, np.where(one_run, 0.002, 0.005))
  doc = fit_table(rows, None, n_bootstrap=0, compare=False, weights="sem", log=lambda s: None)
  fitted = doc["groups"]["all"]["points"]
  assert {tuple(sorted(k for k in q if k.endswith("_sem"))) for q in fitted} == {("seed_sem",), ("val_sem",)}
  assert all(("val_sem" in q) == (q["P"] == 4) for q in fitted)
  old = [{**{k: v for k, v in r.items() if k != "val_sem"}, "loss_sem": r["val_sem"]} for r in rows]
  assert np.allclose(load_points(old)["all"].sem, points.sem)  # A table from before the names.
  assert point_sem({"loss_sem": 0.003}) == 0.003 and np.isnan(point_sem({}))


def test_the_statistics_every_report_uses():
  from parscale_jax.stats import mean_se_interval, pooled_sd, standard_error, t_interval
  from parscale_jax.sweep.calibration import settings_table

  assert standard_error([1.0, 2.0, 3.0]) == pytest.approx(1 / np.sqrt(3))
  lo, hi = t_interval([1.0, 2.0, 3.0])  # t(0.975, 2) = 4.3027
  assert (lo, hi) == pytest.approx((2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)), rel=1e-6)
  assert pooled_sd([[1.0, 3.0], [5.0], [2.0, 2.0, 2.0]]) == pytest.approx(np.sqrt(1.0))  # (2 + 0) / 2
  assert np.isnan(pooled_sd([[1.0], [2.0]]))
  # Two sizes x P in {1, 2} x 2 seeds: P = 2 is 0.01 and 0.03 better, paired by seed.
  rows = [{"status": "done", "stage": "main", "size": s, "N": n, "P": p, "seed": seed,
           "loss": 3.0 - 0.1 * (s == "b") - (0.01 + 0.02 * seed) * (p == 2) + 0.001 * seed}
          for s, n in (("a", 1e5), ("b", 2e5)) for p in (1, 2) for seed in (0, 1)]
  line = settings_table(rows).splitlines()[-1]
  # Seed SD: within-cell seed differences 0.001 (P = 1) and 0.019 (P = 2), variance d²/2 each.
  sd = np.sqrt((2 * 0.001 ** 2 / 2 + 2 * 0.019 ** 2 / 2) / 4)
  assert line.startswith("| main | +0.1000 ± 0.0000") and f"| {sd:.4f} |" in line
  assert mean_se_interval(np.array([-0.01, -0.03, -0.01, -0.03])) in line
