#!/usr/bin/env bash
# On a GPU or TPU machine: install with the accelerator's jax (cuda12 or tpu extra, as the README
# says) and run the prepared check (benchmarks/gpu_check.py), about 8 minutes; JSON in
# benchmarks/results/gpu_check.json. `bash scripts/gpu_check.sh --dry-run` runs it at tiny shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=cuda12
command -v nvidia-smi >/dev/null 2>&1 || extra=tpu
[ "${1:-}" = "--dry-run" ] && extra=test
bash scripts/setup.sh "$extra"
exec .venv/bin/python benchmarks/gpu_check.py "$@"
