"""The cost model against the paper's reported ratios, and its invariants."""
import json
import subprocess
import sys

import pytest

from parscale_jax.cost.devices import DEVICES, measure_cpu
from parscale_jax.cost.model import Workload, compare, inference_cost, scaled_config
from parscale_jax.model.accounting import param_counts
from parscale_jax.model.config import preset

K_STACK = 0.393457  # The Stack-V2 fit (tests/test_analysis.py checks it against the paper).


def test_paper_ratios_are_reproduced_within_a_factor_of_1_5():
  proc = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "cost", "--json"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert out["assumptions"]["k"] == pytest.approx(K_STACK, rel=1e-4)
  assert 22 / 1.5 <= out["memory_increase_ratio"] <= 22 * 1.5
  assert 6 / 1.5 <= out["latency_increase_ratio"] <= 6 * 1.5
  assert [r["batch"] for r in out["by_batch"]] == [1, 2, 4, 8]
  # Parallel scaling's advantage shrinks with batch size, as in the paper's figure.
  ratios = [r["prompt"]["latency_increase_ratio"] for r in out["by_batch"]]
  assert ratios == sorted(ratios, reverse=True)


def test_parameter_scaled_model_has_the_equal_loss_size():
  base = preset("paper-1.6b")
  target = 2.9e9
  scaled = scaled_config(base, target)
  assert abs(param_counts(scaled).non_embedding / target - 1) < 0.01
  assert scaled.num_layers == base.num_layers and scaled.head_dim % 2 == 0


def test_cost_invariants():
  base = preset("paper-1.6b")
  w = Workload(batch=1)
  one = inference_cost(base, DEVICES["a100-80gb"], w)
  eight = inference_cost(preset("paper-1.6b", P=8), DEVICES["a100-80gb"], w)
  # Eight streams keep the weights (plus ParScale's own) and multiply the cache.
  assert eight["memory"]["weights"] - one["memory"]["weights"] == 2 * (
      param_counts(preset("paper-1.6b", P=8)).total - param_counts(base).total)
  assert eight["memory"]["kv_cache"] > 8 * one["memory"]["kv_cache"]
  assert eight["latency"]["total"] > one["latency"]["total"]
  small, large = (compare(base, p, K_STACK, DEVICES["h100"], w) for p in (2, 8))
  assert small["memory_increase"]["parameter"] < large["memory_increase"]["parameter"]
  assert small["memory_increase"]["parallel"] < large["memory_increase"]["parallel"]


def test_cpu_is_measured():
  cpu = measure_cpu(seconds=0.2)
  assert cpu.peak_flops > 1e8 and cpu.bandwidth > 1e8 and cpu.memory > 1e9


@pytest.mark.parametrize("batches", ["1,x", "0,2"])
def test_bad_batch_list_is_refused_with_one_line(batches):
  proc = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "cost", "--batches", batches],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stdout == ""
  assert proc.stderr.strip().splitlines()[-1].endswith(
      f"argument --batches: '{batches}' is not a comma-separated list of positive integers")
