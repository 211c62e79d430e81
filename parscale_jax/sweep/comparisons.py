"""A sweep's runs compared: loss tables per setting, size and P, and paired differences between
P values, stages and grid-axis values (seed by seed, so seed noise partly cancels)."""
from __future__ import annotations

import numpy as np

from parscale_jax.stats import mean_se, standard_error, t_interval


# Axes that place a run in the N x P grid, not in a setting: P, seed and whatever sets the size.
SHAPE_AXES = ("model.size", "model.hidden_size", "model.intermediate_size", "model.num_layers",
              "model.num_heads", "model.num_kv_heads")
_ROW_AXES = ("grid.model.P", "grid.seed", *(f"grid.{a}" for a in SHAPE_AXES))


def _setting_axes(row: dict, leave_out: tuple[str, ...]) -> list[tuple[str, object]]:
  return [(k[5:], row[k]) for k in sorted(row) if k.startswith("grid.") and k not in _ROW_AXES
          and k not in leave_out and row[k] not in (None, "")]


def setting_label(row: dict, leave_out: tuple[str, ...] = ()) -> str:
  """The stage and any grid axes besides size, P and seed (a pilot's learning rate, say), less
  the row keys in `leave_out`."""
  return ", ".join([row["stage"], *(f"{k}={v}" for k, v in _setting_axes(row, leave_out))])


def settings_and_sizes(rows: list[dict], leave_out: tuple[str, ...] = ()) -> list[tuple[str, str]]:
  """The (setting label, size) pairs of `rows`, by setting (numbers by value: 614400 before
  1228800) and then by N (not by size name)."""
  smallest: dict[tuple[str, str], float] = {}
  order: dict[str, tuple] = {}
  for r in rows:
    key = (setting_label(r, leave_out), r["size"])
    smallest[key] = min(smallest.get(key, r["N"]), r["N"])
    order[key[0]] = (r["stage"], setting_order(_setting_axes(r, leave_out)))
  return sorted(smallest, key=lambda key: (order[key[0]], smallest[key]))


def loss_table(rows: list[dict]) -> str:
  """Mean validation loss per setting, size and P (or named variant: a column each); ± the
  standard error over seeds."""
  done = [r for r in rows if r["status"] == "done"]
  column = lambda r: r.get("grid.variant") or f"P={r['P']}"
  groups: dict[tuple[str, str], dict[str, list[float]]] = {}
  for r in done:
    key = (setting_label(r, ("grid.variant",)), r["size"])
    groups.setdefault(key, {}).setdefault(column(r), []).append(r["loss"])
  fewest_streams: dict[str, int] = {}
  for r in done:
    fewest_streams[column(r)] = min(fewest_streams.get(column(r), r["P"]), r["P"])
  columns = sorted(fewest_streams, key=lambda c: (fewest_streams[c], c))
  lines = ["| setting | size | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
  for key in settings_and_sizes(done, ("grid.variant",)):
    cells = []
    for name in columns:
      losses = np.array(groups[key].get(name, []))
      cell = f"{losses.mean():.4f}" if len(losses) else ""
      if len(losses) > 1:
        cell += f" ± {standard_error(losses):.4f} (n={len(losses)})"
      cells.append(cell)
    lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _p1_losses(done: list[dict], stage: str) -> dict | None:
  """The stage's P = 1 loss by (size, seed); None where other grid axes (a pilot's learning rate)
  give several runs per pair, so that a pairing would be ambiguous."""
  pairs = [((r["size"], r["seed"]), r["loss"]) for r in done if r["stage"] == stage and r["P"] == 1]
  base = dict(pairs)
  return base if len(base) == len(pairs) else None


def _minus_p1(done: list[dict], base: dict, stage: str, p: int, size: str | None = None) -> np.ndarray:
  """Losses of `stage` at `p` (and `size`, if given) minus the P = 1 loss of the same size and seed."""
  return np.array([r["loss"] - base[(r["size"], r["seed"])] for r in done
                   if r["stage"] == stage and r["P"] == p and (size is None or r["size"] == size)
                   and (r["size"], r["seed"]) in base])


def stage_comparison(rows: list[dict], reference: str) -> str:
  """Where other stages share a size with `reference`: each stage's loss at each P minus the
  reference stage's P = 1 loss of the same size and seed (paired, so seed noise partly cancels)."""
  done = [r for r in rows if r["status"] == "done"]
  base = _p1_losses(done, reference)
  if base is None:
    return ""
  stages = sorted({r["stage"] for r in done if r["stage"] != reference})
  sizes = sorted({r["size"] for r in done if r["stage"] in stages and (r["size"], r["seed"]) in base})
  if not sizes:
    return ""
  columns = [reference] + stages
  lines = [f"Loss minus `{reference}` P = 1 at the same size and seed (mean ± SEM over seeds; "
           "negative: better than one stream).", ""]
  for size in sizes:
    ps = sorted({r["P"] for r in done if r["size"] == size})
    lines += [f"| {size}: P | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for p in ps:
      cells = []
      for stage in columns:
        diffs = _minus_p1(done, base, stage, p, size)
        cells.append(mean_se(diffs) if len(diffs) else "")
      lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def _t_interval(diffs: np.ndarray) -> str:
  """Mean ± SEM and the 95 % t interval of paired differences, as three table cells."""
  lo, hi = t_interval(diffs)
  return (f"{diffs.mean():+.4f} ± {standard_error(diffs):.4f} | [{lo:+.4f}, {hi:+.4f}] | "
          f"{len(diffs)}")


def pooled_p_gain(rows: list[dict], stage: str) -> str:
  """Loss at each P minus P = 1 at the same size and seed, pooled over sizes: a model-free test of
  whether streams help, for when the law itself cannot be fitted."""
  done = [r for r in rows if r["status"] == "done"]
  base = _p1_losses(done, stage)
  if base is None:
    return ""
  lines = ["| P | loss minus P = 1 (mean ± SEM) | 95 % interval | pairs (size × seed) |",
           "|---|---|---|---|"]
  for p in sorted({r["P"] for r in done if r["stage"] == stage} - {1}):
    diffs = _minus_p1(done, base, stage, p)
    if len(diffs) >= 2:
      lines.append(f"| {p} | {_t_interval(diffs)} |")
  return "\n".join(lines) if len(lines) > 2 else ""


def value_order(value) -> tuple:
  """Grid values in grid order: numbers, numeric text included, by value (614400 before 1228800);
  everything else, booleans included, as text after them."""
  if not isinstance(value, bool):
    try:
      return (0, float(value), "")
    except (TypeError, ValueError):
      pass
  return (1, 0.0, str(value))


def setting_order(setting: tuple) -> tuple:
  """Sort key of a setting, sorted (axis, value) pairs, with each value in grid order."""
  return tuple((k, value_order(v)) for k, v in setting)


def axis_comparison(rows: list[dict]) -> str:
  """For each stage with one grid axis besides size, P and seed (a pilot's learning rate or prefix
  length): each pair of its values compared, paired by size, P and seed, with a 95 % t interval."""
  done = [r for r in rows if r["status"] == "done"]
  lines = []
  for stage in sorted({r["stage"] for r in done}):
    runs = [r for r in done if r["stage"] == stage]
    axes = [k for k in sorted(runs[0]) if k.startswith("grid.") and k not in _ROW_AXES
            and len({str(r.get(k)) for r in runs}) > 1]
    if len(axes) != 1:
      continue
    axis = axes[0]
    by_value: dict[str, dict[tuple, float]] = {}
    for r in runs:
      by_value.setdefault(str(r[axis]), {})[(r["size"], r["P"], r["seed"])] = r["loss"]
    values = sorted(by_value, key=value_order)
    table = []
    for i, low in enumerate(values):
      for high in values[i + 1:]:
        pairs = sorted(set(by_value[low]) & set(by_value[high]))
        diffs = np.array([by_value[high][key] - by_value[low][key] for key in pairs])
        if len(diffs) >= 2:
          table.append(f"| {high} minus {low} | {_t_interval(diffs)} |")
    if table:
      lines += [f"`{stage}`, by `{axis[5:]}`:", "",
                "| loss difference | mean ± SEM | 95 % interval | pairs (size × P × seed) |",
                "|---|---|---|---|", *table, ""]
  return "\n".join(lines)
