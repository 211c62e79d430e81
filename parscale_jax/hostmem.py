"""Host memory for XLA:CPU's step buffers: glibc's `hugetlb` tunable, and reuse between steps.

XLA:CPU allocates each program execution's temporaries as one block (448 MB for the 4-layer,
batch 16 × 256 train step of `benchmarks/vs_reference.py`) and frees it when the execution ends.
glibc serves a block that size with a fresh `mmap` and unmaps it on free, so every step faulted the
whole block in again in 4 KiB pages: 115,000 page faults and about 0.4 s of system time per step
there. With `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks for transparent huge
pages on those blocks, and the same step takes about 500 faults. The memory still goes back to the
system on free.

glibc reads tunables only when a process starts, so the `parscale` command starts itself again with
the tunable set; processes it starts (sweep workers) inherit it.

The tunable makes each fault cheaper; `reuse_step_memory` removes the faults: the step runs on the
calling thread (XLA's worker threads get glibc thread arenas, which serve a block that size with a
fresh `mmap` whatever `mallopt` says), and the main arena neither maps large blocks separately nor
hands freed memory back, so the next step finds its block where the last one left it. Training
calls it; the process keeps its largest step's memory until it exits.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "PARSCALE_SYSTEM_MALLOC"  # Set to 1 to leave glibc's defaults alone.
# mallopt parameters (malloc.h): -1 as M_TRIM_THRESHOLD turns trimming off (man 3 mallopt).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def opted_out(environ: dict) -> bool:
  """PARSCALE_SYSTEM_MALLOC as a yes/no switch; another value is ignored with a warning."""
  value = environ.get(OPT_OUT, "").strip().lower()
  if value in ("1", "true", "yes", "on"):
    return True
  if value not in ("", "0", "false", "no", "off"):
    print(f"parscale: {OPT_OUT}={environ[OPT_OUT]!r} is neither 1 nor 0; its malloc settings "
          "stay on", file=sys.stderr)
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


_reusing = False


def reuse_step_memory() -> bool:
  """Keeps XLA:CPU's step temporaries in this process between steps (module docstring); returns
  whether that is in effect. Call it before JAX's first computation: the setting that runs steps on
  the calling thread is read when JAX starts its CPU client, and afterwards this does nothing. It
  does nothing either where JAX runs on an accelerator, the C library is not glibc, or
  PARSCALE_SYSTEM_MALLOC=1. It changes the whole process: JAX CPU computations run synchronously,
  and memory freed by malloc stays with the process (for reuse) until it exits."""
  global _reusing
  if _reusing:
    return True
  if opted_out(dict(os.environ)) or platform.libc_ver()[0] != "glibc":
    return False
  import jax
  from jax._src import xla_bridge  # No public way to ask whether the CPU client exists yet.
  started = getattr(xla_bridge, "backends_are_initialized", lambda: False)()
  try:
    if not started:
      jax.config.update("jax_cpu_enable_async_dispatch", False)
    elif jax.config.read("jax_cpu_enable_async_dispatch"):
      return False
  except (AttributeError, KeyError, ValueError):  # A JAX without the setting.
    return False
  if jax.default_backend() != "cpu":
    return False
  libc = ctypes.CDLL(None)
  if libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, -1) != 1:
    return False
  _reusing = True
  return True
