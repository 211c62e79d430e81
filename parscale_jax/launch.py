"""The `parscale` command's entry point: restarts under glibc's huge-page tunable
(parscale_jax/hostmem.py) before JAX is imported, then runs the command line."""
import sys

from parscale_jax.hostmem import restart_with_huge_pages


def main() -> int:
  restart_with_huge_pages()
  from parscale_jax.cli import main as cli_main
  return cli_main(sys.argv[1:])
