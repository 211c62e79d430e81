"""Loss tables: the paper's published grid (package data) and user/sweep tables."""
from __future__ import annotations

import csv
from importlib import resources


def paper_table() -> list[dict[str, str]]:
  """The paper's 48 published (dataset, P, N, loss) rows, as read from the CSV."""
  text = resources.files("parscale_jax.analysis").joinpath("paper_parscale_losses.csv").read_text()
  return [dict(row) for row in csv.DictReader(text.splitlines())]
