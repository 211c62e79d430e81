"""`parscale sweep run|status FILE [--results DIR]`."""
from __future__ import annotations

import json
import os
from pathlib import Path
import sys

from parscale_jax.analysis.results import paper_fit
from parscale_jax.errors import UserError
from parscale_jax.rundir import CONFIG, REPORT, ResultsDir, local_or_published
from parscale_jax.sweep.executors import EXECUTORS
from parscale_jax.sweep.spec import load_sweep
from parscale_jax.train.config import config_differences


def _results(args, spec) -> Path:
  from parscale_jax.sweep.runner import default_results_dir
  return Path(args.results) if args.results else default_results_dir(spec)


def _run(args) -> None:
  from parscale_jax.sweep.runner import run_sweep

  spec = load_sweep(args.file)
  results = _results(args, spec)
  rows = run_sweep(spec, results, executor=args.executor, address=args.address,
                   retry_failed=args.retry_failed, progress=not args.no_progress,
                   analyze=not args.no_analysis)
  done = sum(r["status"] == "done" for r in rows)
  print(f"{done}/{len(rows)} runs done")
  print(f"table:  {ResultsDir(results).table}")
  if (results / "fit" / "fit.json").exists() and not args.no_analysis:
    print(f"fit:    {results / 'fit' / 'fit.json'}")
    print(f"plots:  {results / 'fit'}/*.png")
  if not args.no_analysis:
    print(f"report: {results / REPORT}")
    for line in verdict_lines(results / "fit"):
      print(line)


def verdict_lines(fit_dir: Path) -> list[str]:
  """What the sweep's fit says, under each parameter count, beside the paper's law refitted by the
  same code: the lines a sweep ends on."""
  from parscale_jax.analysis.report import verdict

  lines = []
  for path in [fit_dir / "fit.json", *sorted(fit_dir.glob("fit_*.json"))]:
    if path.exists():
      doc = json.loads(path.read_text())
      lines += [f"verdict (N: {doc['N']}): " + verdict(name, g).replace("**", "")
                for name, g in doc["groups"].items()]
  if lines:
    paper = paper_fit().doc["groups"]["stack-v2-python"]
    lo, hi = paper["ci95"]["k"]
    lines.append(f"the paper's losses, refitted by the same code: k = {paper['k']:.3f} "
                 f"[{lo:.3f}, {hi:.3f}] (Stack-V2-Python, 0.5B-4.4B parameters, 42B tokens)")
  return lines


def _report(args) -> None:
  from parscale_jax.sweep.runner import report_sweep

  spec = load_sweep(args.file)
  results = _results(args, spec)
  rows = report_sweep(spec, results)
  done = sum(r["status"] == "done" for r in rows)
  print(f"{done}/{len(rows)} runs done")
  print(f"report: {results / REPORT}")
  if spec.publish_dir is not None:
    print(f"published: {spec.publish_dir}")


def _status(args) -> None:
  from parscale_jax.sweep.progress import SweepProgress
  from parscale_jax.sweep.runner import run_state
  from parscale_jax.sweep.table import run_result

  spec = load_sweep(args.file)
  results = _results(args, spec)
  published = spec.publish_dir
  counts: dict[str, int] = {}
  states: dict[str, str] = {}
  print(f"{'run':<48} {'status':<8} {'loss':>8}  detail")
  for run in spec.runs:
    state = run_state(results, run, published)
    result = run_result(results, run.run_id, published) or {}
    loss = result.get("eval_loss")
    detail = result.get("reason") or ""
    changed = _trained_otherwise(run, results, published)
    if changed:  # Its loss is not this file's result.
      state, detail = "stale", f"trained with other settings (differs in: {', '.join(changed)})"
    counts[state] = counts.get(state, 0) + 1
    states[run.run_id] = state
    resume = ResultsDir(results).run(run.run_id).latest_checkpoint()
    if state == "pending" and resume is not None:
      detail = f"resumes from step {resume}"
    loss_text = "-" if loss is None else format(loss, ".4f")
    print(f"{run.run_id:<48} {state:<8} {loss_text:>8}  {detail}")
  done, total = SweepProgress(spec.runs, results, run_state).work(states)
  print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        + f"; {100 * done / max(total, 1):.0f} % of the work (training FLOPs)  (results: {results})")
  if not results.exists() and (published is None or not published.exists()):
    print(f"note: neither {results} nor a published folder exists under {os.getcwd()}: results "
          f"folders, analysis.publish and data paths are relative to the directory `sweep run` ran "
          f"in (`base:` to the sweep file); run from there, or give --results", file=sys.stderr)


def _trained_otherwise(run, results: Path, published) -> list[str]:
  """The settings in which the run's saved config (here, else published) differs from the file's."""
  found = local_or_published(results, published, run.run_id, needs=CONFIG)
  if found is None:
    return []
  return config_differences(found.saved_config(), run.train_config(results), ignore=("wandb", "init_from"))


def _check(args) -> None:
  from parscale_jax.aot.preflight import preflight

  spec = load_sweep(args.file)
  topology = args.topology or spec.target
  if topology is None:
    raise UserError(f"{args.file} names no target: give --topology NAME (or target: {{topology: "
                    f"NAME}} in the file)")
  refused = preflight(spec, topology, _results(args, spec), log=lambda s: print(s, file=sys.stderr))
  if refused:
    raise UserError(f"{len(refused)} of {len(spec.runs)} runs do not fit {topology}: "
                    + ", ".join(rid for rid, _ in refused))
  print(f"all {len(spec.runs)} runs fit {topology}")


def register(sub) -> None:
  sweep = sub.add_parser("sweep", help="run a grid of trainings over N x P, and fit the law")
  verbs = sweep.add_subparsers(dest="verb", required=True)
  run = verbs.add_parser("run", help="run (or resume) every run of a sweep file")
  run.add_argument("file", help="sweep YAML, e.g. sweeps/quick.yaml")
  run.add_argument("--results", help="results directory (default: results/<sweep name>)")
  run.add_argument("--executor", choices=list(EXECUTORS), default="local",
                   help="where runs execute: local worker processes, or a Ray cluster")
  run.add_argument("--address", help="Ray cluster address HOST:PORT (with --executor ray)")
  run.add_argument("--retry-failed", action="store_true", help="run failed runs again")
  run.add_argument("--no-progress", action="store_true")
  run.add_argument("--no-analysis", action="store_true", help="skip the fit, plots and report")
  run.set_defaults(func=_run)
  report = verbs.add_parser("report", help="table, report and publication of the runs finished "
                                           "so far, without training (a running sweep goes on)")
  report.add_argument("file")
  report.add_argument("--results", help="results directory (default: results/<sweep name>)")
  report.set_defaults(func=_report)
  check = verbs.add_parser("check", help="compile each distinct program of a sweep for its target "
                                         "slice and name the runs that will not fit")
  check.add_argument("file")
  check.add_argument("--topology", help="a TPU topology (v5p:2x2x2, ...) or local; default: the "
                                        "sweep's target")
  check.add_argument("--results", help="results directory (default: results/<sweep name>)")
  check.set_defaults(func=_check)
  status = verbs.add_parser("status", help="done / running / failed / pending per run")
  status.add_argument("file")
  status.add_argument("--results")
  status.set_defaults(func=_status)
