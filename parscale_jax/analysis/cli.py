"""`parscale fit`, `parscale plot`, `parscale notebook` and `parscale diversity`."""
from __future__ import annotations

import json
from pathlib import Path
import sys

from parscale_jax.analysis.results import FitResult, load_fit, paper_law
from parscale_jax.configlib import nonnegative_int, positive_float, positive_int
from parscale_jax.data.config import DataConfig
from parscale_jax.errors import UserError
from parscale_jax.rundir import REPORT, ResultsDir


def _fit(args) -> None:
  from parscale_jax.analysis.fit_table import fit_table
  from parscale_jax.analysis.plots import plot_all
  from parscale_jax.analysis.report import write_report

  if (args.input is None) == (args.reference is None):
    raise UserError("give an INPUT table or --reference paper (one of them)")
  source = "paper" if args.reference else args.input
  if args.out:
    out = Path(args.out)
  elif args.reference:
    out = Path("results") / "paper"
  elif ResultsDir(Path(args.input).parent).mark.exists():
    # A sweep's folder: its own fit (with the sweep's settings) is the one its report shows.
    out = Path(args.input).parent / "refit"
    print(f"{Path(args.input).parent} holds a sweep: its fit stays as the sweep wrote it; this fit "
          f"goes to {out} (--out to choose)", file=sys.stderr)
  else:
    out = Path(args.input).parent / "fit"
  doc = fit_table(source, out, args.group_by, args.bootstrap, args.weights, args.seed,
                  n_column=args.n_column, log=lambda s: print(s, file=sys.stderr))
  if not args.no_plots:
    plot_all(FitResult(doc), out)
    write_report(doc, out, "Parallel scaling law fit")
  print(f"wrote {out / 'fit.json'}")
  if not args.no_plots:
    for path in sorted(out.glob("*.png")) + [out / REPORT]:
      print(f"wrote {path}")


def _plot(args) -> None:
  from parscale_jax.analysis.plots import plot_all

  fit = load_fit(args.fit)
  for path in plot_all(fit, args.out or Path(args.fit).parent):
    print(path)


def _notebook(args) -> None:
  from parscale_jax.analysis.notebook import run_notebook

  results = Path(args.results) if args.results else None
  out = Path(args.out) if args.out else (results or Path(".")) / "scaling_laws.html"
  print(f"running {args.notebook} on {results or 'the committed results'} ...", file=sys.stderr)
  print(f"wrote {run_notebook(results, out, Path(args.notebook))}")


MIN_DIVERSITY_TOKENS = 1024


def _diversity(args) -> None:
  from parscale_jax.train.evaluate import diversity_checkpoint

  if args.tokens < MIN_DIVERSITY_TOKENS:
    raise UserError(f"--tokens {args.tokens}: rho and the stream losses need at least "
                    f"{MIN_DIVERSITY_TOKENS} validation tokens")
  data = DataConfig(source=args.data, text_key=args.text_key, tokenizer=args.tokenizer,
                    seq_len=args.seq_len, val_tokens=args.tokens, data_dir=args.data_dir)
  alpha = args.alpha if args.alpha is not None else paper_law(args.paper_group).alpha
  doc = diversity_checkpoint(args.checkpoint, data, alpha, args.batch_size)
  if args.json:
    print(json.dumps(doc))
    return
  losses = "  ".join(f"{x:.4f}" for x in doc["stream_losses"])
  print(f"{doc['checkpoint']}: P={doc['P']} over {doc['tokens']} tokens of {doc['source']}")
  print(f"stream losses     {losses}")
  print(f"aggregate loss    {doc['aggregate_loss']:.4f}")
  print(f"rho               {doc['rho']:.4f}  (mean over stream pairs)")
  print(f"predicted N mult. {doc['predicted_multiplier']:.3f}  (alpha {alpha:.3f})")


def register(sub) -> None:
  d = sub.add_parser("diversity", help="each stream's loss and the correlation of the streams' "
                                       "residuals (rho) of a P > 1 run or folder")
  d.add_argument("--checkpoint", required=True, help="a finished run directory or a Hugging Face folder")
  d.add_argument("--data", default="stdlib", help="data source (as data.source in a config)")
  d.add_argument("--text-key", default="text", help="text field of records or TFDS features")
  d.add_argument("--tokenizer", default="byte",
                 help="byte, or hf:PATH/tokenizer.json (a folder's own tokenizer.json is used if present)")
  d.add_argument("--data-dir", default="~/.cache/parscale_jax/tfds",
                 help="where data sources are built (as data.data_dir)")
  d.add_argument("--tokens", type=positive_int, default=65536, help="validation tokens to measure")
  d.add_argument("--seq-len", type=positive_int, default=128, help="tokens per row")
  d.add_argument("--batch-size", type=positive_int, default=8, help="rows per forward pass")
  d.add_argument("--alpha", type=positive_float,
                 help="the law's alpha for the predicted multiplier (default: the paper's fit)")
  d.add_argument("--paper-group", default="stack-v2-python", choices=["stack-v2-python", "pile"],
                 help="the paper's dataset whose fitted alpha is the default")
  d.add_argument("--json", action="store_true", help="print JSON")
  d.set_defaults(func=_diversity)

  p = sub.add_parser("fit", help="fit the parallel scaling law to a loss table")
  p.add_argument("input", nargs="?", help="CSV or JSON lines with columns N, P, loss (a sweep's table)")
  p.add_argument("--reference", choices=["paper"], help="fit the paper's published table instead")
  p.add_argument("--group-by", help="fit one law per value of this column (paper: dataset)")
  p.add_argument("--bootstrap", type=nonnegative_int, default=1000,
                 help="bootstrap resamples (0: none; at least 100 for intervals)")
  p.add_argument("--weights", choices=["none", "sem"], default="none",
                 help="weight points by 1/var(log loss) from their standard errors (over seeds; a one-run "
                      "point's val_sem)")
  p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
  p.add_argument("--n-column", default="N",
                 help="the parameter count to fit against: N (non-embedding, ParScale's prefix and "
                      "aggregator included, as the paper counts) or N_backbone (without them)")
  p.add_argument("--no-plots", action="store_true", help="write fit.json only")
  p.add_argument("--out", help="output directory (default: fit/ beside INPUT, refit/ when INPUT is "
                              "a sweep's table; results/paper for --reference paper)")
  p.set_defaults(func=_fit)

  q = sub.add_parser("plot", help="plot a fit.json (PNG and PDF)")
  q.add_argument("fit", help="fit.json")
  q.add_argument("--out", help="directory (default: beside fit.json)")
  q.set_defaults(func=_plot)

  n = sub.add_parser("notebook", help="run analysis/scaling_laws.ipynb on a sweep's results (tables, "
                                      "fits, verdicts, plots) and write it as HTML")
  n.add_argument("results", nargs="?", help="a sweep's results folder (default: the committed results)")
  n.add_argument("--out", help="a .html or .ipynb file (default: RESULTS/scaling_laws.html, or "
                               "./scaling_laws.html)")
  n.add_argument("--notebook", default="analysis/scaling_laws.ipynb", help="the notebook to run")
  n.set_defaults(func=_notebook)
