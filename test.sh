#!/usr/bin/env bash
# Quick start, command 2: set up .venv with the test extras and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh test
exec .venv/bin/python -m pytest "$@"
