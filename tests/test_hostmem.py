"""`parscale` restarts under glibc's huge-page tunable, and with it XLA:CPU's step buffers no longer
fault in 4 KiB at a time."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from parscale_jax.hostmem import OPT_OUT, TUNABLE, env_with_huge_pages

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
glibc = platform.libc_ver()
linux_glibc_235 = pytest.mark.skipif(
    not sys.platform.startswith("linux") or glibc[0] != "glibc" or
    tuple(int(v) for v in glibc[1].split(".")[:2]) < (2, 35) or
    not THP.exists() or "[never]" in THP.read_text(),
    reason="needs Linux, glibc >= 2.35 and transparent huge pages")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_tunable_is_added_once_and_a_users_own_setting_wins():
  assert env_with_huge_pages({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": TUNABLE}
  assert env_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"] == \
      f"glibc.malloc.arena_max=2:{TUNABLE}"
  assert env_with_huge_pages({"GLIBC_TUNABLES": TUNABLE}) is None
  assert env_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
  assert env_with_huge_pages({OPT_OUT: "1"}) is None
  assert env_with_huge_pages({OPT_OUT: "0"}) is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_restart_runs_the_same_command_again_under_the_tunable():
  code = ("import os, sys\nfrom parscale_jax.hostmem import restart_with_huge_pages\n"
          "print('start', sys.argv[1:], flush=True)\nrestart_with_huge_pages()\n"
          "print(os.environ['GLIBC_TUNABLES'])")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
  out = subprocess.run([sys.executable, "-c", code, "x"], env=env, capture_output=True, text=True,
                       check=True).stdout.splitlines()
  assert out == ["start ['x']", "start ['x']", TUNABLE]  # Twice started, then no further restart.


# A program with one 128 MB temporary (the transposed product), run five times.
PROGRAM = """
import resource
import jax, jax.numpy as jnp
x = jnp.ones((1 << 22, 8), jnp.float32)
w = jnp.eye(8, dtype=jnp.float32)
f = jax.jit(lambda x, w: jnp.sum((x @ w).T @ x))
assert f.lower(x, w).compile().memory_analysis().temp_size_in_bytes >= 128 << 20
faults = []
for _ in range(5):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x, w).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""
BLOCK_PAGES = (128 << 20) // 4096


def _faults(tunables: str | None) -> list[int]:
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  if tunables:
    env["GLIBC_TUNABLES"] = tunables
  out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True,
                       check=True).stdout
  return [int(n) for n in out.split()]


@linux_glibc_235
def test_step_buffers_fault_in_as_huge_pages():
  default, huge = _faults(None), _faults(TUNABLE)
  assert min(default[1:]) >= BLOCK_PAGES // 2, default  # Each execution faults the block in again.
  assert max(huge[1:]) < BLOCK_PAGES // 20, huge
