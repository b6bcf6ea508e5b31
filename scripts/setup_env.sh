#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment at .venv/ with the extras given as arguments.
# Idempotent: a stamp records what was installed; a second run with the same inputs installs nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${1:-blender}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then py="$c"; break; fi
  done
fi
[ -n "$py" ] || { echo "setup: Python 3.11 is required (bpy 5.0 wheels exist only for 3.11); set PYTHON=/path/to/python3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=".venv/.handtailor-stamp"
want="$(sha256sum pyproject.toml | cut -c1-64) $extras"
if [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then exit 0; fi
echo "setup: installing dependencies into .venv (extras: $extras; first run takes a few minutes)" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
echo "$want" >"$stamp"
