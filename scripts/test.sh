#!/usr/bin/env bash
# Sets up and runs the whole test suite inside a network namespace with only
# loopback up, so no test can send anything off this machine.
#   scripts/test.sh [pytest args]          everything (CI)
#   scripts/test.sh --fast [pytest args]   the lint checks and only the `fast` tier (pyproject.toml's markers), under a minute
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fast" ]; then
  shift
  set -- -m fast "$@"
fi
scripts/setup.sh --test  # a few checks once everything is installed
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet .
.venv/bin/lint-imports
.venv/bin/mypy  # which files, how strictly: pyproject.toml
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up && exec .venv/bin/python -m pytest "$@"' bash "$@"
fi
echo "test: cannot make a network namespace (needs root); running on the host network" >&2
exec .venv/bin/python -m pytest "$@"
