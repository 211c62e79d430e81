"""Ahead-of-time compilation for TPU topologies on this CPU (libtpu from the `tpu` extra, which the
test command installs), activation rematerialisation, and a quiet start where libtpu has no TPU."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from parscale_jax.model.accounting import param_counts
from parscale_jax.model.config import ModelConfig
from parscale_jax.model.parscale import ParScaleLM
from parscale_jax.train.config import config_from_dict
from parscale_jax.train.step import loss_fn, split_model

from conftest import REPO

SMALL = {"model": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
                   "num_kv_heads": 2, "P": 2, "prefix_tokens": 4, "dtype": "bfloat16"},
         "data": {"seq_len": 64}, "batch_size": 8}


@pytest.mark.parametrize("scan", [False, True])
def test_remat_gives_the_same_gradients(scan):
  rows = jax.random.randint(jax.random.key(1), (2, 17), 0, 257)
  results = {}
  for remat in ("none", "full", "dots"):
    config = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4,
                         num_kv_heads=2, P=2, prefix_tokens=4, scan_layers=scan, remat=remat)
    graphdef, params, frozen = split_model(ParScaleLM(config, nnx.Rngs(params=0)), False)
    results[remat] = jax.value_and_grad(loss_fn)(params, frozen, graphdef, rows)
  for remat in ("full", "dots"):
    assert results[remat][0] == results["none"][0]
    for a, b in zip(jax.tree.leaves(results[remat][1]), jax.tree.leaves(results["none"][1])):
      assert jnp.array_equal(a, b)


def test_remat_recompute_accounting_matches_the_traced_step():
  """The FLOPs that remat adds to a step (the unoptimised program's count with remat, less the one
  without, traced with TPU kernels) against recompute_flops_per_token: the same matmuls, plus the
  element-wise work and block-causal attention's skipped-but-computed corners the accounting leaves
  out (0-20 %). Counting a whole forward pass for full, or nothing for dots, falls outside."""
  from parscale_jax.model import kernels
  from parscale_jax.model.accounting import recompute_flops_per_token

  seq, batch = 512, 1
  rows = jax.random.randint(jax.random.key(1), (batch, seq + 1), 0, 257)
  flops = {}
  for remat in ("none", "full", "dots"):
    config = ModelConfig(hidden_size=256, intermediate_size=512, num_layers=2, num_heads=4,
                         num_kv_heads=2, P=2, prefix_tokens=4, scan_layers=False, remat=remat)
    graphdef, params, frozen = split_model(ParScaleLM(config, nnx.Rngs(params=0)), False)
    with kernels.traced_for("tpu"):
      lowered = jax.jit(lambda p, f, r: jax.grad(loss_fn)(p, f, graphdef, r)).lower(params, frozen, rows)
    flops[remat] = lowered.cost_analysis()["flops"]
    if remat != "none":
      added = flops[remat] - flops["none"]
      assert 1.0 <= added / (recompute_flops_per_token(config, seq) * batch * seq) <= 1.2, remat
  assert recompute_flops_per_token(dataclasses.replace(config, remat="none"), seq) == 0


@pytest.mark.tpu
def test_compiles_for_a_tpu_topology_with_exact_parameter_bytes():
  """The real XLA:TPU compiler builds the training step for 4 v5e chips; the parameter bytes per
  chip are the parameter count x 4 (float32, replicated over a data-parallel mesh) exactly, and
  a quarter of it with parameters sharded over the 4 chips."""
  from parscale_jax.aot.check import check_training
  from parscale_jax.aot.topology import chip, topology_devices

  devices = topology_devices("v5e:2x2")
  assert len(devices) == 4 and devices[0].platform == "tpu"
  device = chip(devices)
  assert device.name == "TPU v5e" and device.memory == 16 * 2 ** 30
  replicated = config_from_dict({**SMALL, "mesh": {"data": 4, "fsdp": 1}})
  report = check_training(replicated, devices, device)
  total = param_counts(replicated.model).total
  assert report["param_bytes"] == 4 * total
  assert report["state_bytes"] > 3 * 4 * total  # Adam's two moments beside the parameters.
  assert report["fits"] and 0 < report["peak_bytes"] < 2 ** 30
  assert report["peak_bytes"] == (report["argument_bytes"] + report["output_bytes"]
                                  - report["alias_bytes"] + report["temp_bytes"])
  config = config_from_dict({**SMALL, "model": {**SMALL["model"], "hidden_size": 128,
                                                 "intermediate_size": 256},
                             "mesh": {"data": 1, "fsdp": 4}})
  sharded = check_training(config, devices, device)
  # A quarter of each weight; the few vectors that 4 does not divide (the aggregator's P-wide
  # bias) stay whole on every chip.
  quarter = param_counts(config.model).total
  assert quarter <= sharded["param_bytes"] <= quarter + 4 * 2 * config.model.P


@pytest.mark.tpu
def test_flop_counts_see_every_matmul_of_a_matmul_split_over_chips():
  """XLA:TPU splits a large sharded matmul and its reduce-scatter into a loop over shards, whose
  body its cost analysis counts once; the options step_cost counts with keep it whole, and the
  count is the matmul's 2·B·D·F over the 8 chips."""
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from parscale_jax.aot.programs import COUNTING_OPTIONS
  from parscale_jax.aot.topology import native_stderr_to_file, topology_devices

  mesh = Mesh(np.array(topology_devices("v5p:2x2x2")), ("fsdp",))
  rows = NamedSharding(mesh, PartitionSpec("fsdp", None))
  B, D, F = 8192, 4096, 4096
  weight_grad = jax.jit(lambda x_BxD, dy_BxF: x_BxD.T @ dy_BxF, out_shardings=rows)
  lowered = weight_grad.lower(jax.ShapeDtypeStruct((B, D), jnp.bfloat16, sharding=rows),
                              jax.ShapeDtypeStruct((B, F), jnp.bfloat16, sharding=rows))
  counted = {}
  for name, options in (("default", None), ("counting", COUNTING_OPTIONS["tpu"])):
    with native_stderr_to_file():
      compiled = lowered.compile(compiler_options=options)
    cost = compiled.cost_analysis()
    counted[name] = (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"] / (2 * B * D * F / 8)
  assert counted["default"] < 0.9  # The loop this test is about (if XLA stops splitting, revisit).
  assert counted["counting"] == pytest.approx(1.0, abs=0.005)


@pytest.mark.tpu
@pytest.mark.parametrize("P", [1, 4])
def test_tpu_decode_updates_its_cache_in_place(P):
  """A decode step writes one token into every layer's cache and holds no copy of the cache: its
  temporaries stay a small fraction of the (donated) cache, scanned layers and folded streams
  included; a prompt's attention scores are bounded by scoring it in chunks."""
  from parscale_jax.aot.programs import compile_decoding
  from parscale_jax.aot.topology import topology_devices

  config = config_from_dict({**SMALL, "model": {**SMALL["model"], "P": P, "num_layers": 12,
                                                 "scan_layers": True}, "mesh": {"data": 1, "fsdp": 1}})
  devices = topology_devices("v5e:2x2")[:1]
  batch, prompt, max_tokens = 8, 1024, 4096
  prefill, step = compile_decoding(config, devices, batch, prompt, max_tokens)
  m = config.model
  cache = 2 * m.num_layers * batch * P * max_tokens * m.num_kv_heads * m.head_dim * 2  # k, v; bf16
  assert step.alias_bytes >= cache and step.temp_bytes < 0.05 * cache
  scores_whole_prompt = batch * P * m.num_heads * prompt * max_tokens * 4  # float32
  assert prefill.temp_bytes < 0.5 * scores_whole_prompt


@pytest.mark.tpu
@pytest.mark.slow
def test_compile_cli_reports_memory_flops_and_verdict_without_libtpu_noise(tmp_path):
  (tmp_path / "small.yaml").write_text(json.dumps(SMALL))
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  out = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "compile", str(tmp_path / "small.yaml"),
                        "--topology", "v5e:2x2", "--decode-batch", "4", "--prompt-tokens", "16",
                        "--new-tokens", "8", "--json"], capture_output=True, text=True, cwd=REPO,
                       env=env)
  assert out.returncode == 0, out.stderr
  assert "TPU_" not in out.stderr and "libtpu" not in out.stderr, out.stderr
  report = json.loads(out.stdout)
  train = report["train"]
  assert report["fits"] and report["chips"] == 4 and report["mesh"] == {"data": 1, "fsdp": 4}
  # The whole step's FLOPs from the compiler, against the accounting (which leaves out the
  # element-wise work, the optimizer and the attention mask).
  assert 0.9 < train["flops_ratio"] < 1.6
  assert 0 < train["mfu_bound"] <= 1
  assert [d["name"] for d in report["decoding"]] == [
      "prefill (batch 1)", "decode step (batch 1)", "prefill (batch 4)", "decode step (batch 4)"]
  assert all(d["fits"] for d in report["decoding"])


def test_bad_topology_is_one_line(tmp_path):
  out = subprocess.run([sys.executable, "-m", "parscale_jax.cli", "compile", "--size", "l4-50k",
                        "--topology", "v5e:9x9x9x9x9", "--no-flops"], capture_output=True, text=True,
                       cwd=REPO)
  assert out.returncode == 2
  assert out.stderr.strip().count("\n") == 0 and "v5e:9x9x9x9x9" in out.stderr, out.stderr


def test_jax_starts_quietly_where_libtpu_has_no_tpu():
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  out = subprocess.run([sys.executable, "-c", "import parscale_jax, jax; print(jax.devices()[0].platform)"],
                       capture_output=True, text=True, env=env)
  assert out.returncode == 0 and out.stdout.strip() == "cpu"
  assert "TPU_" not in out.stderr, out.stderr


@pytest.mark.tpu
@pytest.mark.slow
def test_sweep_check_names_the_run_too_large_for_its_target_and_run_refuses(tmp_path):
  base = {**SMALL, "tensorboard": False, "mesh": {"data": 1, "fsdp": 4}, "tokens": 10 ** 8}
  (tmp_path / "base.yaml").write_text(json.dumps(base))
  sweep = {"name": "big", "base": "base.yaml", "target": {"topology": "v5e:2x2"},
           "grid": {"batch_size": [8, 262144], "seed": [0, 1]}, "analysis": {"fit": False}}
  (tmp_path / "big.yaml").write_text(json.dumps(sweep))
  env = {**os.environ, "HOME": str(tmp_path / "home")}  # Its own preflight cache.
  cli = lambda *a: subprocess.run([sys.executable, "-m", "parscale_jax.cli", "sweep", *a],
                                  capture_output=True, text=True, cwd=tmp_path, env=env)
  out = cli("check", "big.yaml")
  assert out.returncode == 2
  # Two programs compiled (seeds share one); the batch of 262144 rows is refused, by name.
  assert "[2/2]" in out.stderr and "DOES NOT FIT" in out.stderr, out.stderr
  assert "compiled before" not in out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert "2 of 4 runs do not fit v5e:2x2" in last and "batch_size=262144_seed=0" in last
  assert "batch_size=8_" not in last
  out = cli("run", "big.yaml", "--no-progress")
  assert out.returncode == 2 and "nothing was trained" in out.stderr
  # The run's preflight reads both reports the check compiled.
  assert out.stderr.count("(compiled before)") == 2, out.stderr
  assert not (tmp_path / "results" / "big" / "runs").exists()


@pytest.mark.skipif(subprocess.run("command -v nvidia-smi", shell=True).returncode == 0
                    or bool(__import__("glob").glob("/dev/accel*")), reason="this host has an accelerator")
def test_gpu_check_refuses_a_host_without_an_accelerator_in_one_line():
  out = subprocess.run(["bash", "scripts/gpu_check.sh"], capture_output=True, text=True, cwd=REPO,
                       timeout=30)
  assert out.returncode == 1 and out.stdout == ""
  assert out.stderr.count("\n") == 1 and "no GPU" in out.stderr


def test_compile_for_this_process_devices(capsys):
  """--topology local: the devices this process has (here the CPU; on a GPU host, its GPUs)."""
  from parscale_jax.cli import main
  assert main(["compile", "--size", "l4-50k", "--P", "2", "--batch", "8", "--seq", "64",
               "--topology", "local", "--no-flops", "--no-decode", "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["topology"] == "local" and report["chips"] == len(jax.devices())
  assert report["chip"]["name"] == "this CPU (measured)" and report["fits"]
  assert report["train"]["param_bytes"] == 4 * param_counts(
      config_from_dict({"model": {"size": "l4-50k", "P": 2}}).model).total


def test_search_takes_the_cheapest_setting_that_fits(monkeypatch):
  """Without remat nothing fits; with dots, 8 micro-batches or more: the search skips ahead by the
  measured memory and stops at (dots, 8), having compiled few settings."""
  from parscale_jax.aot import check as aot_check
  from parscale_jax.cost.devices import DEVICES
  device = DEVICES["tpu-v5e"]
  tried = []

  def fake(config, devices, device):
    remat, accum = config.model.remat, config.grad_accum
    tried.append((remat, accum))
    state = 2 ** 30
    activations = (40 if remat == "none" else 100) * 2 ** 30 / accum
    peak = state + (activations if remat != "none" else 10 * activations + 100 * 2 ** 30)
    return {"fits": peak <= device.memory, "peak_bytes": peak, "state_bytes": state}

  monkeypatch.setattr(aot_check, "check_training", fake)
  config = config_from_dict({**SMALL, "batch_size": 64})
  index, chosen, report = aot_check.fitting_setting(config, [None] * 4, device)
  assert (chosen.model.remat, chosen.grad_accum) == ("dots", 8) and report["fits"]
  assert aot_check.settings(64, 4)[index] == ("dots", 8)
  assert len(tried) < len(aot_check.settings(64, 4)) // 2


def test_out_of_memory_messages_give_the_bytes_needed():
  from parscale_jax.aot.programs import needed_bytes
  assert needed_bytes("RESOURCE_EXHAUSTED: Used 27.31G of 15.75G hbm. Exceeded by 11.56G") == int(27.31 * 2 ** 30)
  # Temporaries alone: the state (parameters and optimizer) comes on top.
  text = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
          "temporaries (18.66T) exceeds available HBM (95.74G).")
  assert needed_bytes(text, state_bytes=3 * 2 ** 30) == int(18.66 * 2 ** 40) + 3 * 2 ** 30
  assert needed_bytes("RESOURCE_EXHAUSTED: something else") is None


def test_compile_without_a_config_takes_the_paper_sweeps_setting():
  """No config: the paper's shape as sweeps/paper_*.yaml train it (remat full, 32 micro-batches);
  a --batch that 32 does not divide takes the largest accumulation that divides it."""
  import argparse
  from parscale_jax.aot.cli import compile_config
  args = lambda **kw: argparse.Namespace(config=None, set=[], size="paper-1.6b", P=8, batch=None, seq=None, **kw)
  paper = compile_config(args(), 8)
  assert (paper.model.remat, paper.grad_accum, paper.batch_size, paper.mesh.fsdp) == ("full", 32, 1024, 8)
  assert compile_config(argparse.Namespace(config=None, set=[], size=None, P=None, batch=24, seq=None), 4).grad_accum == 8
  assert compile_config(argparse.Namespace(config=None, set=["grad_accum=1"], size=None, P=None, batch=None,
                                           seq=None), 4).grad_accum == 1


def test_a_preflight_report_is_reused_only_for_the_same_program_and_topology(monkeypatch):
  from parscale_jax.aot.preflight import report_key
  monkeypatch.delenv("LIBTPU_INIT_ARGS", raising=False)
  plain = report_key("program a", "v5e:2x2")
  assert report_key("program a", "v5e:2x2") == report_key("program a", "v5e:2x2")
  assert len({report_key("program a", "v5e:2x2"), report_key("program b", "v5e:2x2"),
              report_key("program a", "v5p:2x2x1")}) == 3
  monkeypatch.setenv("LIBTPU_INIT_ARGS", "--xla_tpu_enable_windowed_einsum_for_all_gather=false")
  assert report_key("program a", "v5e:2x2") != plain
