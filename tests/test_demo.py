"""The README's main job, end to end on a few frames of the bundled clip: add-on headless capture through
the engine protocol, then the result, the overlay video, the .blend and the .fbx."""

import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_demo_writes_every_output(tmp_path, repo_dir):
    out = tmp_path / "démo out"  # spaces and non-ASCII on purpose
    proc = subprocess.run([sys.executable, "-m", "engine.demo", "--frames", "0:11", "--out", str(out)],
                          cwd=repo_dir, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("sample_result.npz", "sample_overlay.mp4", "sample.blend", "sample.fbx"):
        assert (out / name).stat().st_size > 0, name
    assert list(out.glob("overlay_frame_*.png"))
    with np.load(out / "sample_result.npz", allow_pickle=False) as r:
        assert r["valid"].shape[1] == 12
        assert r["valid"].any(axis=0).sum() >= 10, "the sample clip shows a hand in every frame"
        assert str(r["hand_side"][0]) == "right"
