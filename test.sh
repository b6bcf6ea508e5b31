#!/usr/bin/env bash
# Quick start, command 2: set up the virtual environments and run the whole test suite:
#   1. everything under .venv (the engine, and the add-on under bpy 5.0);
#   2. the add-on tests (tests/blender) under each older Blender CI covers, every one in its own cached venv
#      (.venv-bpy42, .venv-bpy45: bpy, numpy and pytest only; the engine they drive runs in .venv).
# Every section runs; the exit status is non-zero when any failed.
#   ./test.sh ARGS...                       pytest ARGS under .venv only (a targeted run)
#   HANDTAILOR_TEST_BLENDERS="bpy45" ./test.sh ARGS...   ... and under those Blenders too
set -uo pipefail
cd "$(dirname "$0")"

if [ -n "${HANDTAILOR_TEST_BLENDERS+set}" ]; then
  blenders="$HANDTAILOR_TEST_BLENDERS"
elif [ $# -eq 0 ]; then
  blenders="bpy42 bpy45"  # tests/blender/bpy/<name>.txt pins each
else
  blenders=""
  echo "test.sh: arguments given: running .venv only (HANDTAILOR_TEST_BLENDERS=\"bpy42 bpy45\" adds the older Blenders)"
fi

summary=()
failed=0
section() {  # section NAME VENV_SETUP_ARG PYTHON PYTEST_ARGS...
  local name="$1" setup="$2" py="$3" start rc
  shift 3
  start=$(date +%s)
  echo
  echo "================================ test.sh: $name ================================"
  if bash scripts/setup_env.sh "$setup"; then
    "$py" -c 'import sys, bpy; print(f"test.sh: bpy {bpy.app.version_string}, Python {sys.version.split()[0]}, {sys.prefix}")' \
      2>&1 | tail -1
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$py" -m pytest "$@"
    rc=$?
  else
    echo "test.sh: setting up the environment for $name failed" >&2
    rc=1
  fi
  local status=passed
  [ $rc -eq 0 ] || { status="FAILED (exit $rc)"; failed=1; }
  summary+=("$(printf '%-40s %s in %d s' "$name" "$status" $(($(date +%s) - start)))")
}

section "main suite (.venv)" test .venv/bin/python "$@"
for b in $blenders; do
  if [ ! -f "tests/blender/bpy/$b.txt" ]; then
    summary+=("$(printf '%-40s %s' "$b" "FAILED: no tests/blender/bpy/$b.txt pins it")")
    failed=1
    continue
  fi
  if [ $# -eq 0 ]; then
    section "add-on tests under $b (.venv-$b)" "$b" ".venv-$b/bin/python" tests/blender
  else
    section "add-on tests under $b (.venv-$b)" "$b" ".venv-$b/bin/python" "$@"
  fi
done

echo
echo "================================ test.sh: summary ================================"
printf '%s\n' "${summary[@]}"
exit $failed
