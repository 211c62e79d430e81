#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the test suite (about 12 minutes on 2 cores, set-up included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,ray,tpu  # tpu: libtpu, so that the tests compile for TPU topologies
exec .venv/bin/python -m pytest -n 2 --dist worksteal "$@"
