"""`parscale train CONFIG --workdir DIR [--set key=value ...]`."""
from __future__ import annotations

import json


def _train(args) -> None:
  from parscale_jax.errors import UserError
  from parscale_jax.train.config import load_config
  from parscale_jax.train.trainer import train

  config = load_config(args.config, args.set)
  result = train(config, args.workdir, progress=not args.no_progress)
  summary = {k: result.get(k) for k in ("run_id", "status", "reason", "N", "P", "tokens",
                                        "train_loss", "eval_loss", "eval_loss_sem",
                                        "eval_bits_per_byte", "wall_seconds")}
  print(json.dumps(summary))
  if result["status"] != "done":
    raise UserError(f"run failed: {result['reason']} (last good checkpoint: step "
                    f"{result.get('last_good_step')})")


def register(sub) -> None:
  p = sub.add_parser("train", help="train one model from an experiment config")
  p.add_argument("config", help="experiment YAML, e.g. experiments/tiny.yaml")
  p.add_argument("--workdir", required=True, help="run directory (resumes if it has a checkpoint)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config key, e.g. --set model.P=4 --set optim.lr=1e-3")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=_train)
