"""Wall time per pipeline stage (seconds): what `bench capture` reports and the logs summarize."""

from __future__ import annotations

import contextlib
import time

STAGES = ("decode", "detect", "keypoints", "lift_ik", "tailor", "write", "overlay")


class StageTimer:
    """Accumulates wall time per stage; `calls[stage]` lists single calls where they are recorded apart."""

    def __init__(self):
        self.seconds = {s: 0.0 for s in STAGES}
        self.calls: dict[str, list[float]] = {}

    def add(self, stage: str, dt: float, *, call: bool = False) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + dt
        if call:
            self.record_call(stage, dt)

    def record_call(self, stage: str, dt: float) -> None:
        """One call's duration, apart from the stage's wall time (calls that ran concurrently)."""
        self.calls.setdefault(stage, []).append(float(dt))

    @contextlib.contextmanager
    def time(self, stage: str, *, call: bool = False):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0, call=call)
