#!/usr/bin/env bash
# Sets up .venv and runs the main job: the quick N x P sweep on the built-in offline corpus
# (Python's standard library), then the scaling-law fit, plots and a report (results/quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh notebook  # The notebook extra: `parscale notebook results/quick` afterwards.
exec .venv/bin/parscale sweep run sweeps/quick.yaml "$@"
