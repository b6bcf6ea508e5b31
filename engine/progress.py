"""The command line's progress bar: a `progress(done, total, message)` callable drawn by tqdm on stderr
(ETA and rate; on a non-terminal stream tqdm prints a line every few seconds instead of redrawing)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBar:
    """progress(done, total, message) -> a tqdm bar; `close()` ends the line. `enabled=False`: draws nothing."""

    def __init__(self, enabled: bool = True, stream=None, unit: str = "step"):
        stream = stream or sys.stderr
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=0, file=stream, unit=unit, disable=not enabled, dynamic_ncols=tty, delay=0.5,
                        mininterval=0.1 if tty else 5.0, leave=True, bar_format=None if tty else
                        "{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {desc}")

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if total != self.bar.total:
            self.bar.total = total
        self.bar.set_description_str(message, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()
