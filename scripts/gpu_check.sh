#!/usr/bin/env bash
# On a GPU or TPU machine: install with the accelerator's jax (cuda12 or tpu extra, as the README
# says), compile paper-0.5b's training at P = 8 for this machine's devices (`parscale compile
# --topology local`: does it fit, JSON in benchmarks/results/compile_local.json), then run the
# prepared check (benchmarks/gpu_check.py), about 8 minutes; JSON in
# benchmarks/results/gpu_check.json. `bash scripts/gpu_check.sh --dry-run` runs it on the CPU at
# tiny shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--dry-run" ]; then
  extra=test
elif command -v nvidia-smi >/dev/null 2>&1; then
  extra=cuda12
elif compgen -G "/dev/accel*" >/dev/null || compgen -G "/dev/vfio/[0-9]*" >/dev/null; then
  extra=tpu
else
  echo "gpu_check.sh: this host has no GPU (nvidia-smi) or TPU (/dev/accel*); run it on one, or" \
       "with --dry-run to try it here at tiny shapes" >&2
  exit 1
fi
bash scripts/setup.sh "$extra"
if [ "$extra" != test ]; then
  .venv/bin/parscale compile --size paper-0.5b --P 8 --topology local --set model.remat=full \
    --set grad_accum=16 --no-flops --json > benchmarks/results/compile_local.json
fi
exec .venv/bin/python benchmarks/gpu_check.py "$@"
