"""Devices to compile for: a named TPU topology (abstract devices, no TPU needed) or this process's.

`get_topology_desc` loads libtpu (the `tpu` extra) and describes a real slice's chips; programs
lowered over a mesh of them are compiled by the real XLA:TPU compiler on any host. libtpu prints
warnings about the host it is not on while it loads: they go to a file, and only reach the user
when loading fails.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile

import jax
from jax.experimental import topologies

from parscale_jax.cost.devices import Device, device_for_kind
from parscale_jax.errors import UserError


LOCAL = "local"
_NAME = re.compile(r"^v\d+[a-z]*:\d+(x\d+)+$")


@contextlib.contextmanager
def native_stderr_to_file():
  """Sends file descriptor 2 (what C++ libraries print) to a temporary file for the duration;
  yields a function that returns what was printed."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as sink:
    os.dup2(sink.fileno(), 2)
    try:
      yield lambda: (sink.seek(0), sink.read().decode(errors="replace"))[1]
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)


def topology_devices(name: str) -> list:
  """The devices of topology `name` ("v5e:4x4", "v5p:2x2x2", ...), or of this process ("local")."""
  if name == LOCAL:
    return list(jax.devices())
  if not _NAME.match(name):
    raise UserError(f"--topology {name!r}: expected local or a TPU topology such as v5e:2x2, "
                    f"v5e:4x4, v5p:2x2x2, v6e:2x2")
  if importlib.util.find_spec("libtpu") is None:
    raise UserError(f"--topology {name}: compiling for TPUs needs libtpu: "
                    f"pip install 'parscale-jax[tpu]' (or bash scripts/setup.sh tpu)")

  # libtpu takes a host-wide lock file when it loads, as if it owned the host's chips; compiling
  # needs no chip, so several processes (two checks, parallel tests) may load it at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  with native_stderr_to_file():
    try:
      return list(topologies.get_topology_desc(platform="tpu", topology_name=name).devices)
    except Exception as e:  # libtpu's errors for unknown names are long C++ status strings.
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise UserError(f"--topology {name}: libtpu does not know this topology ({first[:160]})") from None


def chip(devices) -> Device:
  """The chip table's entry for these devices; measured on the spot for a CPU."""
  kind = devices[0].device_kind
  device = device_for_kind(kind)
  if device is not None:
    return device
  if devices[0].platform == "cpu":
    from parscale_jax.cost.devices import measure_cpu
    return measure_cpu()
  raise UserError(f"no HBM / peak FLOP/s entry for device kind {kind!r} in "
                  f"parscale_jax/cost/devices.py")
