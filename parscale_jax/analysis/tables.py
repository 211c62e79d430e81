"""Loss tables for fitting: CSV or JSON lines with N, P, loss (a sweep's results table as it is).

Rows of a sweep table that are not `done` are skipped. Several seeds of one (group, N, P) point
are averaged: their standard error is the point's `seed_sem`; a point of one run keeps that run's
validation standard error (the table's `val_sem`) as its `val_sem`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from parscale_jax.analysis.data import paper_table
from parscale_jax.stats import standard_error
from parscale_jax.errors import UserError
from parscale_jax.tablefile import read_rows

@dataclasses.dataclass
class Points:
  """The points of one group."""

  N: np.ndarray
  P: np.ndarray
  loss: np.ndarray
  seed_sem: np.ndarray | None = None  # SE over the seeds averaged into a point (NaN: one seed).
  val_sem: np.ndarray | None = None  # A one-run point's validation SE (NaN: several seeds).
  seeds: np.ndarray | None = None  # Runs averaged into each point.
  D: np.ndarray | None = None  # Training tokens, where the table has several budgets.

  def __len__(self):
    return len(self.N)

  @property
  def sem(self) -> np.ndarray | None:
    """Each point's standard error: over seeds, or its one run's validation SE (None: unknown)."""
    if self.seed_sem is None and self.val_sem is None:
      return None
    nan = np.full(len(self), np.nan)
    seed = nan if self.seed_sem is None else self.seed_sem
    return np.where(np.isfinite(seed), seed, nan if self.val_sem is None else self.val_sem)

  @property
  def X(self) -> tuple[np.ndarray, ...]:
    """The covariates a law takes: (N, P), or (N, P, D) with several budgets."""
    return (self.N, self.P) if self.D is None else (self.N, self.P, self.D)

  def select(self, mask) -> Points:
    """The points where mask holds."""
    pick = lambda a: None if a is None else a[mask]
    return Points(self.N[mask], self.P[mask], self.loss[mask], pick(self.seed_sem),
                  pick(self.val_sem), pick(self.seeds), pick(self.D))

  def size_index(self) -> np.ndarray:
    """Which model size each point is: the rank of N among the distinct N with the same P (N
    grows a little with P through ParScale's own parameters)."""
    out = np.empty(len(self.N), int)
    for p in np.unique(self.P):
      idx = np.flatnonzero(self.P == p)
      out[idx] = np.unique(self.N[idx], return_inverse=True)[1]
    return out


def _number(value, column: str, where: str) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise UserError(f"{where}: column {column!r} has a non-number {value!r}") from None
  if not math.isfinite(x):
    raise UserError(f"{where}: column {column!r} is {value!r}")
  return x


def load_points(source: str | Path | list[dict], group_by: str | None = None,
                n_column: str = "N", tokens_column: str = "tokens") -> dict[str, Points]:
  """Groups of points from a table path, from rows (dicts) already in memory, or from the paper's
  table for source == 'paper'. n_column names the parameter count to fit against; where the
  finished rows hold several values of tokens_column (a budget ladder), each point also has its D."""
  if isinstance(source, list):
    rows, name = source, "table"
  elif str(source) == "paper":
    rows, name, group_by = paper_table(), "paper table", group_by or "dataset"
  else:
    rows, name = read_rows(Path(source)), str(source)
  if not rows:
    raise UserError(f"{name}: no rows")
  required = (n_column, "P", "loss")
  missing = [c for c in required + ((group_by,) if group_by else ()) if c not in rows[0]]
  if missing:
    raise UserError(f"{name}: missing column {missing[0]!r} (needs {', '.join(required)})")
  done = [(i, row) for i, row in enumerate(rows, 1) if row.get("status", "done") in ("done", None, "")]
  budgets = {row.get(tokens_column) for _, row in done} - {None, ""}
  with_D = len(budgets) > 1
  grouped: dict[str, dict[tuple[float, ...], list]] = {}
  seen: dict[tuple, int] = {}
  for i, row in done:
    where = f"{name} row {i}"
    n, p, loss = (_number(row[c], c, where) for c in required)
    d = ()
    if with_D:
      d = (_number(row.get(tokens_column), tokens_column, where),)
      if d[0] <= 0:
        raise UserError(f"{where}: {tokens_column} must be positive ({d[0]:g})")
    if n <= 0 or loss <= 0 or p < 1:
      raise UserError(f"{where}: N and loss must be positive and P >= 1 (N={n}, P={p}, loss={loss})")
    if p != int(p):
      raise UserError(f"{where}: P={p} is not a whole number of streams")
    # Rows of one (N, P) are seeds; the same row twice (same seed or run, or with neither the same
    # loss) would count as a seed with no scatter.
    named = [row.get(c) for c in ("seed", "run_id", "stage") if row.get(c) not in (None, "")]
    identity = (row.get(group_by) if group_by else None, n, p, *d, *(named or [loss]))
    if identity in seen:
      raise UserError(f"{where} repeats row {seen[identity]} (the same N, P{', ' + tokens_column if d else ''} and seed); remove "
                      f"the duplicate, or give each seed its own `seed` value")
    seen[identity] = i
    column = "val_sem" if "val_sem" in row else "loss_sem"  # Tables written before the rename.
    sem = row.get(column)
    sem = _number(sem, column, where) if sem not in (None, "") else None
    group = str(row[group_by]) if group_by else "all"
    grouped.setdefault(group, {}).setdefault((n, p, *d), []).append((loss, sem))
  if not grouped:
    raise UserError(f"{name}: no finished runs to fit")
  out = {}
  for group, points in grouped.items():
    keys = sorted(points)
    losses = [np.array([x[0] for x in points[k]]) for k in keys]
    given = [points[k][0][1] for k in keys]
    seed_sem = np.array([standard_error(l) if len(l) > 1 else np.nan for l in losses])
    val_sem = np.array([g if len(l) == 1 and g is not None else np.nan for l, g in zip(losses, given)])
    out[group] = Points(N=np.array([k[0] for k in keys]), P=np.array([k[1] for k in keys]),
                        loss=np.array([l.mean() for l in losses]),
                        seed_sem=None if np.all(np.isnan(seed_sem)) else seed_sem,
                        val_sem=None if np.all(np.isnan(val_sem)) else val_sem,
                        seeds=np.array([len(l) for l in losses]),
                        D=np.array([k[2] for k in keys]) if with_D else None)
  return out


def check_fittable(group: str, points: Points, n_params: int) -> None:
  if len(points) <= n_params:
    raise UserError(f"group {group!r}: {len(points)} points for {n_params} parameters; "
                    f"a fit needs more points than parameters")
  if len(np.unique(points.P)) < 2:
    raise UserError(f"group {group!r}: one P only ({points.P[0]:g}); k needs at least two values of P")
  if len(np.unique(points.size_index())) < 2:
    raise UserError(f"group {group!r}: one model size only; alpha needs at least two sizes")
