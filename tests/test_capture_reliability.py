"""Capture and re-tailor jobs that must not destroy anything (issue 17): outputs are never inputs (defect 2),
a job publishes its outputs only when it has finished (defects 3 and 8), damaged footage is captured to its
last frame (defect 4), image folders get a frame rate (defect 5), `--threads` is checked (defect 12), a
re-tailor refuses another hand model (defect 13).

The pipeline runs with a scripted tracker and a pass-through fit (no networks, no JAX): seconds per test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from capture_fixtures import ScriptedTracker, fake_observation, pattern_frame, use_fake_fit, write_video
from engine import capture, cli, results
from engine.errors import Cancelled

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_right_hand(n, img):
    return [fake_observation(7, "right")]


@pytest.fixture
def fake(monkeypatch):
    """The fake fit and a scripted tracker (one right hand on every frame) for the CLI and run_capture."""
    use_fake_fit(monkeypatch)
    tracker = ScriptedTracker(one_right_hand)
    monkeypatch.setattr(capture, "make_tracker", lambda options: tracker)
    return tracker


def run_cli(*argv):
    return cli.main([*map(str, argv), "--quiet"])


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------ defect 2: outputs vs inputs


def test_overlay_equal_to_the_footage_is_refused_and_the_footage_is_unchanged(fake, tmp_path, capsys):
    clip = write_video(tmp_path / "clip.mp4", 6, fourcc="mp4v")
    before = clip.read_bytes()
    assert run_cli("capture", clip, "-o", tmp_path / "r.npz", "--overlay", clip) == 2
    err = capsys.readouterr().err
    assert "[unwritable_output]" in err and "footage" in err
    assert clip.read_bytes() == before
    assert listing(tmp_path) == ["clip.mp4"]


def test_overlay_through_another_spelling_of_the_footage(fake, tmp_path, capsys):
    clip = write_video(tmp_path / "clip.mp4", 6, fourcc="mp4v")
    (tmp_path / "sub").mkdir()
    os.symlink(clip, tmp_path / "sub" / "link.mp4")
    before = clip.read_bytes()
    assert run_cli("capture", clip, "-o", tmp_path / "r.npz", "--overlay", tmp_path / "sub" / ".." / "sub" / "link.mp4") == 2
    assert clip.read_bytes() == before


@pytest.mark.parametrize("target", ["edits", "result"])
def test_retailor_output_equal_to_an_input_is_refused(fake, tmp_path, capsys, target):
    clip = write_video(tmp_path / "clip.avi", 6)
    assert run_cli("capture", clip, "-o", tmp_path / "r.npz") == 0
    r = results.read_result(tmp_path / "r.npz")
    results.write_edits(tmp_path / "e.npz", results.empty_edits(r), r)
    saved = {n: (tmp_path / n).read_bytes() for n in ("r.npz", "e.npz")}
    out = tmp_path / ("e.npz" if target == "edits" else "r.npz")
    assert run_cli("retailor", tmp_path / "r.npz", "--edits", tmp_path / "e.npz", "-o", out) == 2
    assert "[unwritable_output]" in capsys.readouterr().err
    assert {n: (tmp_path / n).read_bytes() for n in saved} == saved


def test_a_foreign_file_is_not_replaced_by_a_result(fake, tmp_path, capsys):
    clip = write_video(tmp_path / "clip.avi", 4)
    notes = tmp_path / "notes.npz"
    np.savez(notes, shopping=np.array(["milk", "eggs"]))
    before = notes.read_bytes()
    assert run_cli("capture", clip, "-o", notes) == 2
    assert "not a HandTailor capture result" in capsys.readouterr().err
    assert notes.read_bytes() == before


def test_a_rerun_replaces_its_own_outputs(fake, tmp_path):
    clip = write_video(tmp_path / "clip.avi", 4)
    for _ in range(2):  # the second run replaces the result and the overlay written by the first
        assert run_cli("capture", clip, "-o", tmp_path / "r.npz", "--overlay", tmp_path / "o.mp4") == 0
    assert listing(tmp_path) == ["clip.avi", "o.mp4", "r.npz"]
    other = tmp_path / "other.mp4"
    other.write_bytes((tmp_path / "o.mp4").read_bytes())  # a copy is not the overlay of a new result
    assert run_cli("capture", clip, "-o", tmp_path / "r2.npz", "--overlay", other) == 2


# ------------------------------------------------------------------------- defects 3 and 8: publish at the end


def _previous_result(tmp_path):
    clip = write_video(tmp_path / "clip.avi", 8)
    a = tmp_path / "a.npz"
    assert run_cli("capture", clip, "-o", a, "--frames", "0:3") == 0
    return clip, a, a.read_bytes()


def test_a_cancel_during_the_overlay_keeps_the_previous_result(fake, tmp_path):
    clip, a, before = _previous_result(tmp_path)
    seen = []

    def progress(done, total, message):
        seen.append(message)

    def stop():  # the user presses cancel once the overlay is being written
        return any("overlay" in m for m in seen)

    with pytest.raises(Cancelled):
        capture.run_capture(capture.CaptureOptions(str(clip), str(a), overlay=str(tmp_path / "a.mp4"), batch_size=2),
                            progress=progress, should_stop=stop)
    assert any("overlay" in m for m in seen)
    assert a.read_bytes() == before  # the previous result, untouched
    assert listing(tmp_path) == ["a.npz", "clip.avi"]  # no new overlay, no temp file


def test_ctrl_c_during_the_overlay_writes_nothing(fake, tmp_path):
    clip, a, before = _previous_result(tmp_path)

    def progress(done, total, message):
        if "overlay" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        capture.run_capture(capture.CaptureOptions(str(clip), str(a), overlay=str(tmp_path / "a.mp4"), batch_size=2),
                            progress=progress)
    assert a.read_bytes() == before
    assert listing(tmp_path) == ["a.npz", "clip.avi"]


_SIGTERM_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from capture_fixtures import ScriptedTracker, fake_observation, use_fake_fit
from engine import capture, cli

class _MP:
    def setattr(self, obj, name, value):
        setattr(obj, name, value)

use_fake_fit(_MP())
capture.make_tracker = lambda options: ScriptedTracker(lambda n, img: [fake_observation(7, "right")])
real = capture.run_capture

def run_capture(options, progress=None, **kw):
    def hook(done, total, message):
        if "overlay" in message:  # tell the test, then wait for its SIGTERM
            print("OVERLAY", flush=True)
            sys.stdin.read()
    return real(options, progress=hook, **kw)

capture.run_capture = run_capture
sys.exit(cli.main(sys.argv[2:]))
"""


def test_sigterm_during_the_overlay_writes_nothing(tmp_path):
    clip = write_video(tmp_path / "clip.avi", 8)
    proc = subprocess.Popen([sys.executable, "-c", _SIGTERM_CHILD, os.path.join(REPO, "tests"), "capture", str(clip),
                             "-o", str(tmp_path / "r.npz"), "--overlay", str(tmp_path / "r.mp4"), "--batch-size", "2"],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "OVERLAY"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert listing(tmp_path) == ["clip.avi"], err[-2000:]
    assert proc.returncode == 143 and "Traceback" not in err


# ------------------------------------------------------------------------------ defect 4: damaged footage


def test_a_clip_with_a_damaged_middle_is_captured_to_its_last_frame(fake, tmp_path, capsys):
    from test_video_gaps import corrupt_middle

    clip = write_video(tmp_path / "clip.mp4", 500, fourcc="mp4v")
    corrupt_middle(clip)
    out = tmp_path / "r.npz"
    assert run_cli("capture", clip, "-o", out, "--frames", "200:420", "--stride", "2") == 0
    r = results.read_result(out)
    assert r["frame_index"].tolist() == list(range(200, 421, 2))  # 111 frames, to the last
    assert r["frame_decoded"][-1] and not r["frame_decoded"].all()
    assert "could not be decoded" in capsys.readouterr().err


# ------------------------------------------------------------------------------ defect 5: image folders' fps


def _folder(tmp_path, n=4):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(n):
        cv2.imwrite(str(d / f"{i:04d}.png"), pattern_frame(i))
    return d


def test_image_folder_captures_have_a_frame_rate_the_addon_reads(fake, tmp_path):
    from handtailor_blender.io.results import read_result as addon_read_result

    d = _folder(tmp_path)
    assert run_cli("capture", d, "-o", tmp_path / "r.npz") == 0
    assert float(results.read_result(tmp_path / "r.npz")["fps"]) == 24.0
    assert addon_read_result(tmp_path / "r.npz").fps == 24.0  # the add-on used to refuse fps 0
    assert run_cli("capture", d, "-o", tmp_path / "r30.npz", "--fps", "30") == 0
    assert addon_read_result(tmp_path / "r30.npz").fps == 30.0


def test_the_protocol_passes_the_scenes_fps(fake, tmp_path):
    from engine import protocol

    d = _folder(tmp_path)
    args = protocol.validate_args("capture", {"source": str(d), "output": str(tmp_path / "r.npz"), "fps": 25})
    capture.run_capture(capture.CaptureOptions.from_protocol(args))
    assert float(results.read_result(tmp_path / "r.npz")["fps"]) == 25.0


# ------------------------------------------------------------------------------ defect 12: --threads


@pytest.mark.parametrize("value", ["-3", "-1"])
def test_negative_threads_is_a_named_error(fake, tmp_path, capsys, value):
    clip = write_video(tmp_path / "clip.avi", 3)
    assert run_cli("capture", clip, "-o", tmp_path / "r.npz", "--threads", value) == 2
    err = capsys.readouterr().err
    assert "[bad_input]" in err and "--threads" in err and "Traceback" not in err
    assert listing(tmp_path) == ["clip.avi"]


# ------------------------------------------------------------------------------ defect 13: another model


def test_retailor_refuses_a_result_of_another_hand_model(fake, tmp_path, capsys):
    import shutil

    from engine.hand_model import default_model_path

    models = tmp_path / "models"
    models.mkdir()
    fitted = models / "open_hand_right.npz"
    with np.load(default_model_path("right")) as z:
        shipped = {k: z[k] for k in z.files}

    def save_scaled(path, factor):  # the same mesh, another model (another sha256)
        np.savez(path, **dict(shipped, v_template=shipped["v_template"] * factor))

    save_scaled(fitted, 1.02)
    clip = write_video(tmp_path / "clip.avi", 6)
    assert run_cli("capture", clip, "-o", tmp_path / "r.npz", "--hand-model", fitted) == 0
    r = results.read_result(tmp_path / "r.npz")
    results.write_edits(tmp_path / "e.npz", results.empty_edits(r), r)
    keep = tmp_path / "kept_copy.npz"
    shutil.copy(fitted, keep)
    save_scaled(fitted, 1.05)  # the file at the path the result records is now another model
    base = ["retailor", tmp_path / "r.npz", "--edits", tmp_path / "e.npz", "-o", tmp_path / "new.npz"]
    for extra in ([], ["--hand-model", fitted]):
        assert run_cli(*base, *extra) == 2
        assert "hand_model_mismatch" in capsys.readouterr().err
        assert not (tmp_path / "new.npz").exists()
    assert run_cli(*base, "--hand-model", keep) == 0  # the very model it was fitted with, found elsewhere


# ------------------------------------------------------------------------------ risk: overlay memory

_OVERLAY_CHILD = r"""
import sys
import numpy as np
from engine import overlay, video
from engine.hand_model import load_hand_model

clip, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
info = video.probe(clip)
w, h = info.width, info.height
theta = np.zeros((1, n, 16, 4))
theta[..., 0] = 1.0
result = {"source": np.asarray(clip), "image_size": np.asarray([w, h]), "fps": np.asarray(25.0),
          "frame_index": np.arange(n), "K": np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1.0]]),
          "hand_side": np.asarray(["right"]), "valid": np.ones((1, n), bool), "theta": theta,
          "beta": np.zeros((1, n, 10)), "root": np.tile([0.0, 0.0, 0.6], (1, n, 1)), "hand_scale": np.ones((1, n)),
          "keypoints_2d": np.full((1, n, 21, 2), w / 2.0), "confidence": np.ones((1, n, 21))}
overlay.write_overlay(out, result, {"right": load_hand_model()}, info=info, batch_size=16)
"""


def test_overlay_memory_does_not_grow_with_the_clip(tmp_path):
    """The overlay streams the footage: 10x the frames must not cost a frame's worth of memory per frame
    (a 320x240 frame is 230 KB: 540 frames kept would be 124 MB)."""
    from reliability_helpers import run_measured

    clip = write_video(tmp_path / "clip.avi", 600, w=320, h=240)
    peaks = {}
    for n in (60, 600):
        child = run_measured([sys.executable, "-c", _OVERLAY_CHILD, str(clip), str(n), str(tmp_path / f"o{n}.mp4")])
        assert child.returncode == 0, child.stderr[-2000:]
        peaks[n] = child.peak_mb
    assert peaks[600] - peaks[60] < 40, peaks
