"""`python -m engine COMMAND ...`: one entry point, each command's code in its own module.

Only the module of the command given is imported, so `model info` does not pay for JAX and
`serve` starts without loading torch until a job needs it. Each module exposes
`main(argv: list[str], prog: str) -> int`.
"""

from __future__ import annotations

import importlib
import sys

from engine.errors import EngineError, Terminated

COMMANDS = {
    "model": ("engine.hand_model.cli", "inspect and render hand model files"),
    "keypoints": ("engine.hand_module.cli", "2D keypoints + world landmarks for images"),
    "capture": ("engine.capture", "footage -> capture result (.npz)"),
    "batch": ("engine.batch", "many clips -> results + manifest, on local workers or a Ray cluster"),
    "retailor": ("engine.retailor", "refit a capture result with artist edits locked"),
    "serve": ("engine.server", "JSON-lines engine protocol on stdin/stdout (for the Blender add-on)"),
    "bench": ("engine.bench", "benchmarks: tailor, capture"),
    "eval": ("engine.evaluation", "metrics on a ground-truth set"),
    "train": ("engine.hand_module.training", "train the hourglass hand module"),
}


def usage() -> str:
    lines = ["usage: python -m engine COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("\n`python -m engine COMMAND --help` for a command's options.")
    return "\n".join(lines)


def _on_sigterm(signum, frame):
    raise Terminated


def run_command(module_name: str, argv: list[str], prog: str) -> int:
    """Runs one command module's `main`, turning `EngineError`s into a message and exit code 2; Ctrl-C
    exits 130 and SIGTERM 143 (128 + the signal), both after the same cleanup."""
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        module = importlib.import_module(module_name)
        return int(module.main(argv, prog=prog) or 0)
    except EngineError as exc:
        print(f"{prog}: error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"{prog}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:
        # `python -m engine model info --json | head`: the reader left; not an error worth a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from engine import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"python -m engine: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_command(COMMANDS[name][0], argv[1:], prog=f"python -m engine {name}")
