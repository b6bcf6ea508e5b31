#!/usr/bin/env bash
# Creates (or reuses) a virtual environment. Idempotent: a stamp records what was installed; a second run
# with the same inputs installs nothing.
#
#   scripts/setup_env.sh [EXTRAS]   .venv/ with the project and its extras (default: blender)
#   scripts/setup_env.sh bpy42      .venv-bpy42/ from tests/blender/bpy/bpy42.txt: another Blender as a
#                                   Python module (bpy, numpy, pytest only), for the add-on tests
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
[ -n "$py" ] || { echo "setup: Python 3.11 is required (the bpy wheels exist only for 3.11); set PYTHON=/path/to/python3.11" >&2; exit 1; }

reqs="tests/blender/bpy/$extras.txt"
if [ -f "$reqs" ]; then
  venv=".venv-$extras"
  want="$(sha256sum "$reqs" | cut -c1-64) $extras"
else
  venv=".venv"
  want="$(sha256sum pyproject.toml | cut -c1-64) $extras"
fi
stamp="$venv/.handtailor-stamp"
if [ -f "$stamp" ] && grep -qxF "$want" "$stamp" && [ -x "$venv/bin/python" ]; then exit 0; fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
echo "setup: installing dependencies into $venv ($extras; the first run downloads a few hundred MB)" >&2
"${pip[@]}" --upgrade pip >/dev/null
if [ -f "$reqs" ]; then
  "${pip[@]}" -r "$reqs"
else
  "${pip[@]}" -e ".[$extras]"
fi
echo "$want" >"$stamp"
