"""Shared fixtures: paths to the golden checkpoints, tiny model configs."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


def fixture_dir(name: str) -> Path:
  path = FIXTURES / name
  if not path.exists():
    pytest.skip(f"golden fixture {path} not present")
  return path
