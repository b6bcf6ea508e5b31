"""`train run --resume` (issue 17, risk): a checkpoint is loaded as weights only, so a crafted checkpoint
cannot run code; an ordinary checkpoint still resumes (test_hourglass.py's smoke run resumes one)."""

from __future__ import annotations

import os

import pytest
import torch

from engine.errors import InputError
from engine.hand_module import hourglass as hg
from engine.hand_module.datasets import generate_synthetic_set


class _RunsCode:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_crafted_checkpoint_runs_nothing(tmp_path):
    from engine.hand_module.training import train

    data = tmp_path / "set"
    generate_synthetic_set(data, 8, size=64, seed=1)
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "MARKER"
    torch.save({"config": hg.SMOKE_CONFIG._asdict(), "state": {"stage": 0, "step": 0, "global_step": 0},
                "net": _RunsCode(f"touch {marker}")}, run / "checkpoint.pt")
    with pytest.raises(InputError, match="refusing to load .*checkpoint.pt.*posix.system") as info:
        train([data], run, smoke=True, max_steps=1, batch_size=4, workers=0, resume=True)
    assert "nothing from it was run" in str(info.value)
    assert not marker.exists()
