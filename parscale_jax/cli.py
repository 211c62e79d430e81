"""The `parscale` command line: info, train, sweep, fit, plot, cost."""
from __future__ import annotations

if __name__ == "__main__":  # `python -m parscale_jax.cli`: restart before JAX is imported.
  from parscale_jax.hostmem import restart_with_huge_pages
  restart_with_huge_pages()

import argparse
import errno
from importlib.metadata import PackageNotFoundError, version
import json
import os
import sys

import jax

from parscale_jax.analysis import cli as analysis_cli
from parscale_jax.aot import cli as aot_cli
from parscale_jax.configlib import positive_int
from parscale_jax.cost import cli as cost_cli
from parscale_jax.data import cli as data_cli
from parscale_jax.errors import UserError
from parscale_jax.model.config import PRESETS, preset
from parscale_jax.sweep import cli as sweep_cli
from parscale_jax.train import cli as train_cli


def _info(args) -> None:
  from parscale_jax.model.accounting import describe

  info = describe(preset(args.size, P=args.P, prefix_tokens=args.prefix_tokens), args.seq_len)
  info = {"size": args.size, **info}
  if args.json:
    print(json.dumps(info, indent=2))
    return
  s = info["shape"]
  print(f"{args.size}  P={s['P']}  layers={s['layers']} hidden={s['hidden']} ffn={s['ffn']} "
        f"heads={s['heads']}/{s['kv_heads']} head_dim={s['head_dim']} vocab={s['vocab']} "
        f"prefix={s['prefix_tokens']}")
  print(f"non-embedding params  {info['non_embedding_params']:>16,d}  "
        f"(ParScale's own: {info['parscale_params']:,d})")
  print(f"embedding params      {info['embedding_params']:>16,d}")
  print(f"train FLOPs / token   {info['train_flops_per_token']:>16.4e}  (seq_len {args.seq_len})")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="parscale", description=__doc__)
  parser.add_argument("--version", action="version", version=f"parscale-jax {_version()}")
  sub = parser.add_subparsers(dest="command", required=True)

  info = sub.add_parser("info", help="shape, parameter counts and FLOPs of a size preset",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  info.add_argument("--size", required=True, choices=list(PRESETS), metavar="SIZE",
                    help=f"size preset, one of: {', '.join(PRESETS)}")
  info.add_argument("--P", type=positive_int, default=1, help="parallel streams")
  info.add_argument("--prefix-tokens", type=positive_int, default=48, help="prefix length per stream")
  info.add_argument("--seq-len", type=positive_int, default=2048, help="sequence length for attention FLOPs")
  info.add_argument("--json", action="store_true", help="print JSON")
  info.set_defaults(func=_info)

  for register in _registrars():
    register(sub)
  _show_defaults(parser)
  return parser


def _version() -> str:
  try:
    return version("parscale-jax")
  except PackageNotFoundError:  # Run from a checkout that was never installed.
    return "unknown (not installed)"


def _show_defaults(parser: argparse.ArgumentParser) -> None:
  """Every command's --help shows its defaults."""
  for action in parser._actions:
    if isinstance(action, argparse._SubParsersAction):
      for child in action.choices.values():
        child.formatter_class = argparse.ArgumentDefaultsHelpFormatter
        _show_defaults(child)


def _registrars():
  """Subcommands that live beside the code they run."""
  return [train_cli.register, sweep_cli.register, analysis_cli.register, cost_cli.register,
          cost_cli.register_plan, data_cli.register, aot_cli.register]


def _enable_compilation_cache() -> None:
  """Runs of a sweep, resumed runs and seeds repeat the same programs: cache compilations on disk.
  The environment variable reaches sweep workers, which start jax afresh."""
  path = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                               os.path.join(os.path.expanduser("~"), ".cache", "parscale_jax", "xla"))
  jax.config.update("jax_compilation_cache_dir", path)


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  _enable_compilation_cache()
  try:
    args.func(args)
  except UserError as e:
    print(f"parscale {args.command}: error: {e}", file=sys.stderr)
    return 2
  except BrokenPipeError:  # Output piped into `head` and cut: nothing went wrong.
    sys.stdout = open(os.devnull, "w")
    return 0
  except OSError as e:  # An unwritable or missing path: the user's to fix, not a bug.
    where = f"{e.filename}: " if e.filename else ""
    full = "disk full: " if e.errno == errno.ENOSPC else ""
    print(f"parscale {args.command}: error: {full}{where}{e.strerror or e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt as e:  # Its text, where given, says how to resume.
    print(f"parscale {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
