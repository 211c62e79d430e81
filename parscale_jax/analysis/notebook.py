"""Run the scaling-law notebook (analysis/scaling_laws.ipynb) headless on a sweep's results folder, or
on the committed results, and keep it executed: .ipynb, or .html with its plots embedded."""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from parscale_jax.atomic import write_text_atomic
from parscale_jax.errors import UserError
from parscale_jax.rundir import TABLE

NOTEBOOK = Path("analysis") / "scaling_laws.ipynb"  # In the repository, where the commands run.
EXTRA = 'pip install -e ".[notebook]"'


def run_notebook(results: Path | None, out: Path, notebook: Path = NOTEBOOK, timeout: int = 600) -> Path:
  """Executes `notebook` with PARSCALE_RESULTS = `results` (absolute; None: the committed results)
  in the notebook's own folder, and writes it to `out` (.ipynb or .html)."""
  if out.suffix not in (".ipynb", ".html"):
    raise UserError(f"--out {out}: give a .html or .ipynb file")
  if results is not None and not (results / TABLE).is_file():
    raise UserError(f"{results}: no {TABLE} (not a sweep's results folder)")
  if not notebook.is_file():
    raise UserError(f"{notebook}: not found (run from the repository's root, or give --notebook PATH)")
  try:
    import nbclient
    import nbformat
  except ImportError as e:
    raise UserError(f"running the notebook needs {e.name}: {EXTRA}") from None
  nb = nbformat.read(notebook, as_version=4)
  env = {"PARSCALE_RESULTS": "" if results is None else str(results.resolve())}
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)  # The kernel inherits the environment.
  try:
    # The kernel process's own stderr is its start-up chatter (a warning that its local TCP is
    # unencrypted); what the cells print and raise comes back through the client.
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}}
                            ).execute(stderr=subprocess.DEVNULL)
  except nbclient.exceptions.CellExecutionError as e:
    raise UserError(f"{notebook.name}: a cell failed: {e.ename}: {e.evalue}") from None
  finally:
    for k, v in old.items():
      os.environ.pop(k) if v is None else os.environ.update({k: v})
  if out.suffix == ".html":
    try:
      from nbconvert import HTMLExporter
    except ImportError:
      raise UserError(f"writing HTML needs nbconvert: {EXTRA} (or --out FILE.ipynb)") from None
    exporter = HTMLExporter()
    exporter.log.setLevel(logging.ERROR)  # It warns of every plot without alternative text.
    text = exporter.from_notebook_node(nb)[0]
  else:
    text = nbformat.writes(nb)
  out.parent.mkdir(parents=True, exist_ok=True)
  write_text_atomic(out, text)
  return out
