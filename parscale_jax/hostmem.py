"""Transparent huge pages for XLA:CPU's step buffers, via glibc's `hugetlb` tunable.

XLA:CPU allocates each program execution's temporaries as one block (448 MB for the 4-layer,
batch 16 × 256 train step of `benchmarks/vs_reference.py`) and frees it when the execution ends.
glibc serves a block that size with a fresh `mmap` and unmaps it on free, so every step faulted the
whole block in again in 4 KiB pages: 115,000 page faults and about 0.4 s of system time per step
there. With `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks for transparent huge
pages on those blocks, and the same step takes about 500 faults. The memory still goes back to the
system on free. Keeping freed blocks in the heap instead (`mallopt`) fragmented it: at P = 8 the
process grew by 3.8 GB a step.

glibc reads tunables only when a process starts, so the `parscale` command starts itself again with
the tunable set; processes it starts (sweep workers) inherit it.
"""
from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "PARSCALE_SYSTEM_MALLOC"  # Set to 1 to leave glibc's defaults alone.


def opted_out(environ: dict) -> bool:
  """PARSCALE_SYSTEM_MALLOC as a yes/no switch; another value is ignored with a warning."""
  value = environ.get(OPT_OUT, "").strip().lower()
  if value in ("1", "true", "yes", "on"):
    return True
  if value not in ("", "0", "false", "no", "off"):
    print(f"parscale: {OPT_OUT}={environ[OPT_OUT]!r} is neither 1 nor 0; huge pages stay on",
          file=sys.stderr)
  return False


def env_with_huge_pages(environ: dict) -> dict | None:
  """`environ` with the tunable added to GLIBC_TUNABLES, or None where nothing is to change: not
  Linux, opted out, or already set (a user's own hugetlb setting wins)."""
  if not sys.platform.startswith("linux") or opted_out(environ):
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb=" in tunables:
    return None
  return {**environ, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def restart_with_huge_pages() -> None:
  """Replaces this process with the same command line under the tunable (no return), unless
  `env_with_huge_pages` says nothing is to change. Call it first thing, before any work: what the
  process did before is lost. Older glibc ignores the unknown tunable; the restart happens once."""
  env = env_with_huge_pages(dict(os.environ))
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
