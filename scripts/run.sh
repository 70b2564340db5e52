#!/usr/bin/env bash
# Sets up (idempotent) and runs the server on its defaults: http://127.0.0.1:8080
# Any argument is passed to server.py, e.g. scripts/run.sh --pipeline echo --port 9000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python server.py "$@"
