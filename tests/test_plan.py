"""`parscale plan`: choices a synthetic law makes obvious, and the paper's 1.6B at P = 8 against
`parscale cost`."""
import dataclasses
import json

import numpy as np
import pytest

from conftest import REPO

from parscale_jax.cli import main
from parscale_jax.cost.devices import DEVICES
from parscale_jax.cost.model import Workload, compare, inference_cost
from parscale_jax.cost.plan import Constraint, candidate, plan
from parscale_jax.errors import UserError
from parscale_jax.model.accounting import param_counts
from parscale_jax.model.config import preset

A100 = DEVICES["a100-80gb"]
BASE = preset("paper-1.6b", prefix_tokens=48)
SIZES = np.geomspace(2e8, 6e9, 12)


def test_memory_budget_that_only_streams_meet_at_the_best_loss():
  """With streams worth a lot (k = 1) and memory almost all weights, streams are nearly free in
  memory: the best loss within the budget is a P > 1 model's, no P = 1 model that fits reaches it,
  and the P = 1 model of equal loss needs more memory than the budget."""
  theta = (1.0, 0.02, 0.2, 1.0)
  budget = 6.0
  result = plan(theta, BASE, A100, Constraint(max_memory_gb=budget), Ps=(1, 2, 4, 8), n_values=SIZES)
  best, runner = result.recommended, result.runner_up
  assert best.P > 1 and best.memory_gb <= budget
  assert runner.P == 1 and runner.memory_gb > budget
  assert runner.loss == pytest.approx(best.loss, abs=2e-3)  # Equal predicted loss, by construction.
  p1_fitting = [c for c in result.front if c.P == 1 and c.memory_gb <= budget]
  assert all(c.loss > best.loss for c in p1_fitting)
  assert "for the same predicted loss" in result.comparison


def test_compute_budget_where_one_stream_wins():
  """Streams worth almost nothing (k = 0.01) but costing P times the FLOPs per token: under a
  training-compute budget the best model is P = 1, the largest one the budget pays for."""
  theta = (1.0, 0.02, 0.2, 0.01)
  tokens = 2e10
  flops = candidate(dataclasses.replace(BASE, P=1), theta, None, A100, Workload(), 4096, tokens).train_flops
  result = plan(theta, BASE, A100, Constraint(train_flops=flops * 1.01, train_tokens=tokens),
                Ps=(1, 2, 4, 8), n_values=SIZES)
  best = result.recommended
  assert best.P == 1 and best.train_flops <= flops * 1.01
  affordable = [c for c in result.front if c.train_flops is not None]
  assert result.runner_up.P > 1 and result.runner_up.loss > best.loss


def test_paper_1_6b_at_p8_reproduces_the_cost_ratios():
  from parscale_jax.analysis.fit_table import fit_table
  g = fit_table("paper", n_bootstrap=0, compare=False, log=lambda s: None)["groups"]["stack-v2-python"]
  theta = [g[k] for k in ("E", "A", "alpha", "k")]
  workload = Workload(prefix_mode="prompt")
  backbone = param_counts(dataclasses.replace(BASE, P=1)).backbone
  at_p8 = candidate(dataclasses.replace(BASE, P=8), theta, None, A100, workload, 4096, None)
  result = plan(theta, BASE, A100, Constraint(target_loss=at_p8.loss + 1e-9), Ps=(8,),
                n_values=[backbone], workload=workload)
  best, runner = result.recommended, result.runner_up
  assert best.P == 8 and best.hidden == BASE.hidden_size and best.loss == pytest.approx(at_p8.loss)
  cost = compare(BASE, 8, theta[3], A100, workload)
  assert (runner.hidden, runner.P) == (cost["parameter_scaled_shape"]["hidden"], 1)
  base_memory = inference_cost(dataclasses.replace(BASE, P=1), A100, workload)["memory"]["total"] / 1e9
  base_latency = inference_cost(dataclasses.replace(BASE, P=1), A100, workload)["latency"]["total"] * 1e3
  memory_ratio = (runner.memory_gb - base_memory) / (best.memory_gb - base_memory)
  latency_ratio = (runner.latency_ms - base_latency) / (best.latency_ms - base_latency)
  assert memory_ratio == pytest.approx(cost["memory_increase_ratio"], rel=1e-9)
  assert latency_ratio == pytest.approx(cost["latency_increase_ratio"], rel=1e-9)
  assert memory_ratio > 20 and latency_ratio > 5  # The paper's 22x and 6x, as `parscale cost` finds.


def test_plan_cli_json_and_bad_budgets(tmp_path, capsys):
  code = main(["plan", "--max-memory-gb", "8", "--P", "1,8", "--json", "--plot", str(tmp_path)])
  assert code == 0
  out = capsys.readouterr().out
  doc = json.loads(out[out.index("{"):])
  keys = {"N", "P", "hidden", "layers", "loss", "loss_ci95", "memory_gb", "prefill_ms", "decode_ms",
          "train_flops"}
  assert keys <= set(doc["recommended"]) and keys <= set(doc["runner_up"])
  assert doc["recommended"]["memory_gb"] <= 8 and doc["front"]
  lo, hi = doc["recommended"]["loss_ci95"]
  assert lo <= doc["recommended"]["loss"] <= hi
  assert doc["assumptions"]["device"]["name"].startswith("A100")
  assert (tmp_path / "plan.png").stat().st_size > 0
  with pytest.raises(SystemExit):
    main(["plan", "--max-memory-gb", "-1"])
  with pytest.raises(UserError, match="needs the training tokens"):
    Constraint(train_flops=1e20)
  from parscale_jax.analysis import load_fit
  from conftest import REPO
  law = load_fit(REPO / "analysis" / "results" / "paper" / "fit.json").law("stack-v2-python")
  by_law = plan(law, BASE, A100, Constraint(max_memory_gb=8), Ps=(1, 8), n_values=SIZES)
  by_theta = plan((law.E, law.A, law.alpha, law.k), BASE, A100, Constraint(max_memory_gb=8), Ps=(1, 8),
                  n_values=SIZES)
  assert by_law.recommended == by_theta.recommended
  with pytest.raises(UserError, match="no candidate meets the budget"):
    plan((1.0, 0.02, 0.2, 0.4), BASE, A100, Constraint(max_memory_gb=0.01), n_values=SIZES)


def test_plan_and_cost_refuse_a_fit_that_does_not_identify_the_law(capsys):
  """cpu_grid_mlp with every parameter counted puts k at its bound: no plan or cost from it."""
  from parscale_jax.cli import main
  fit = str(REPO / "analysis" / "results" / "cpu_grid_mlp" / "fit.json")
  for argv in (["plan", "--max-memory-gb", "8", "--fit", fit],
               ["cost", "--size", "paper-1.6b", "--P", "8", "--fit", fit]):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "does not identify the law" in err and "lower bound" in err and "\n" not in err


def test_a_budget_that_binds_nothing_is_said(capsys):
  from parscale_jax.cli import main
  assert main(["plan", "--max-memory-gb", "1e9", "--json"]) == 0
  doc = json.loads(capsys.readouterr().out)
  assert doc["unbound"].startswith("the budget binds nothing")
  assert main(["plan", "--max-memory-gb", "8", "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["unbound"] is None


def test_cost_and_plan_cost_the_prefix_the_same_way_by_default():
  from parscale_jax.cli import build_parser
  parser = build_parser()
  cost = parser.parse_args(["cost"])
  plan_args = parser.parse_args(["plan", "--max-memory-gb", "8"])
  assert cost.prefix_mode == plan_args.prefix_mode == Workload().prefix_mode == "prompt"
