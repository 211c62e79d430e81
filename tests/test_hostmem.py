"""`parscale` restarts under glibc's huge-page tunable, and with it XLA:CPU's step buffers no longer
fault in 4 KiB at a time; training keeps them between steps (`reuse_step_memory`), and then they do
not fault at all."""
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


# A program with a temporary block of at least 128 MB (the reversed running sum), run eight times.
PROGRAM = """
import resource, sys
import jax, jax.numpy as jnp
if sys.argv[1:] == ["reuse"]:
  from parscale_jax.hostmem import reuse_step_memory
  assert reuse_step_memory()
x = jnp.ones((1 << 21, 16), jnp.float32)
f = jax.jit(lambda x: jnp.sum(jnp.cumsum(x * 2, axis=0)[::-1] * x))
assert f.lower(x).compile().memory_analysis().temp_size_in_bytes >= 128 << 20
faults = []
for _ in range(8):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
rss = int(open("/proc/self/statm").read().split()[1]) * 4096
print(*faults, rss)
"""
BLOCK_PAGES = (128 << 20) // 4096


def _faults(tunables: str | None, *args: str) -> list[int]:
  """Page faults of each execution."""
  return _run(tunables, *args)[:-1]


def _run(tunables: str | None, *args: str) -> list[int]:
  # Without the suite's XLA_FLAGS: unoptimised, the running sum takes a minute.
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT, "XLA_FLAGS")}
  if tunables:
    env["GLIBC_TUNABLES"] = tunables
  out = subprocess.run([sys.executable, "-c", PROGRAM, *args], env=env, capture_output=True,
                       text=True, check=True).stdout
  return [int(n) for n in out.split()]


@linux_glibc_235
def test_step_buffers_fault_in_as_huge_pages():
  default, huge = _faults(None), _faults(TUNABLE)
  assert min(default[1:]) >= BLOCK_PAGES // 2, default  # Each execution faults the block in again.
  assert max(huge[1:]) < BLOCK_PAGES // 20, huge


linux_glibc = pytest.mark.skipif(glibc[0] != "glibc" or not sys.platform.startswith("linux"),
                                 reason="needs Linux and glibc")


@linux_glibc
def test_reused_step_memory_does_not_fault_again_nor_grow():
  default, reused = _run(None), _run(None, "reuse")
  assert min(default[1:-1]) >= BLOCK_PAGES // 2, default  # Each execution faults the block in.
  # Kept between executions: now and then (about one execution in 30 here) glibc hands out a fresh
  # block, small allocations having been carved from the freed one; the process does not keep growing.
  assert sum(reused[1:-1]) < 3 * BLOCK_PAGES, reused
  assert reused[-1] < default[-1] + 3 * (BLOCK_PAGES << 12), (default[-1], reused[-1])


@linux_glibc
def test_reuse_needs_to_come_before_jax_starts_and_can_be_refused():
  late = ("import jax, jax.numpy as jnp\njnp.ones(2).block_until_ready()\n"
          "from parscale_jax.hostmem import reuse_step_memory\nprint(reuse_step_memory())")
  env = {k: v for k, v in os.environ.items() if k != OPT_OUT}
  run = lambda code, env: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                         text=True, check=True).stdout.split()
  assert run(late, env) == ["False"]  # The CPU client already dispatches asynchronously.
  early = "from parscale_jax.hostmem import reuse_step_memory\nprint(reuse_step_memory())"
  assert run(early, env) == ["True"]
  assert run(early, {**env, OPT_OUT: "1"}) == ["False"]
