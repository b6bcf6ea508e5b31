"""`python -m engine bench WHAT`: benchmarks that print figures measured side by side in one run."""

from __future__ import annotations

import sys

from engine.cli import run_command

BENCHES = {
    "tailor": "engine.tailor.bench",
    "capture": "engine.capture_bench",
}


def main(argv: list[str], prog: str) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: {prog} {{{','.join(BENCHES)}}} [--json] ...", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return run_command(BENCHES[argv[0]], argv[1:], prog=f"{prog} {argv[0]}")
