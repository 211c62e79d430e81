#!/usr/bin/env bash
# Creates .venv (if absent) and installs parscale-jax with the given extras, e.g. `setup.sh test,ray`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: Python 3.11+ is needed, found $(python3 --version)" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# constraints.txt: the exact versions the test suite passed with.
.venv/bin/python -m pip install -q -c constraints.txt -e ".${extras:+[$extras]}"
