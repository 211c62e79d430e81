"""Progress for long work: a tqdm bar on a terminal; in a log file (stderr not a terminal), a plain
line at most once a minute and at the end, instead of hundreds of carriage-return redraws."""
from __future__ import annotations

import contextlib
import sys
import time

from tqdm import tqdm


LOG_INTERVAL_S = 60.0
_quiet = False


@contextlib.contextmanager
def quiet(on: bool = True):
  """No bar is shown inside the block (a `--no-progress` run: its corpus build too)."""
  global _quiet
  outer, _quiet = _quiet, on or _quiet
  try:
    yield
  finally:
    _quiet = outer


def progress_bar(total: int, initial: int, desc: str, unit: str, *, eta: bool = True, stream=None):
  """A bar with tqdm's update/set_postfix/set_postfix_str/close and a settable `n`. eta=False
  leaves out tqdm's own rate and time left (for callers that estimate them better)."""
  stream = sys.stderr if stream is None else stream
  if _quiet:
    return LineProgress(total, initial, desc, unit, None)
  if getattr(stream, "isatty", lambda: False)():
    fmt = None if eta else "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}s [{elapsed}{postfix}]"
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                bar_format=fmt, file=stream)
  return LineProgress(total, initial, desc, unit, stream)


class LineProgress:
  """tqdm's interface, written as whole lines: `desc: n/total unit [elapsed] postfix`."""

  def __init__(self, total: int, initial: int, desc: str, unit: str, stream):
    self.total, self.n, self.desc, self.unit, self.stream = total, initial, desc, unit, stream
    self.postfix, self.started, self.written, self.last_line = "", time.time(), None, None

  def update(self, k: int = 1) -> None:
    self.n += k
    self._maybe_write()

  def set_postfix(self, **values) -> None:
    self.set_postfix_str(", ".join(f"{k}={v}" for k, v in values.items()))

  def set_postfix_str(self, text: str) -> None:
    self.postfix = text
    self._maybe_write()

  def close(self) -> None:
    if self._line() != self.last_line:
      self._write()

  def _maybe_write(self) -> None:
    if self.written is None or time.time() - self.written >= LOG_INTERVAL_S:
      self._write()

  def _line(self) -> str:
    elapsed = int(time.time() - self.started)
    clock = f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
    tail = f" {self.postfix}" if self.postfix else ""
    return f"{self.desc}: {self.n}/{self.total} {self.unit}s [{clock}]{tail}"

  def _write(self) -> None:
    self.last_line = self._line()
    if self.stream is not None:  # None: counts, shows nothing.
      print(self.last_line, file=self.stream, flush=True)
    self.written = time.time()
