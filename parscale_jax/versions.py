"""The jax and flax pairs that work together, checked before either is imported.

pyproject.toml admits jax 0.10-0.11 and flax 0.12.8-0.12.x (pip cannot bound one by the other):
flax before 0.12.10 does not import under jax 0.11, with an error that names neither version.
"""
from __future__ import annotations

import re
from importlib import metadata

# (first jax release, the flax release it needs at least)
FLAX_FOR_JAX = (((0, 11), (0, 12, 10)),)


def release(version: str) -> tuple[int, ...]:
  """The leading numbers of a version string: "0.12.8" -> (0, 12, 8), "0.11.0rc1" -> (0, 11, 0)."""
  return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0].split("rc")[0])[:3])


def check_jax_flax(version=metadata.version) -> None:
  """Raises ImportError in one line when the installed flax is too old for the installed jax."""
  try:
    jax_version, flax_version = version("jax"), version("flax")
  except metadata.PackageNotFoundError:
    return  # Not installed: their own import says so.
  for first_jax, least_flax in FLAX_FOR_JAX:
    if release(jax_version) >= first_jax and release(flax_version) < least_flax:
      need = ".".join(map(str, least_flax))
      raise ImportError(f"parscale_jax: flax {flax_version} does not work with jax {jax_version}; "
                        f"pip install 'flax>={need}' (or jax<{'.'.join(map(str, first_jax))})")
