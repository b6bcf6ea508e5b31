#!/usr/bin/env bash
# Quick start, command 1: set up .venv and capture the bundled sample clip end to end.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh blender
exec .venv/bin/python -m engine.demo "$@"
