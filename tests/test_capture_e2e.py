"""The real capture pipeline (tracker, hand module, tailor) on the bundled sample clip: short ranges."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from engine import camera, capture, results

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"

pytestmark = pytest.mark.slow


def test_sample_clip_is_shipped_with_its_license():
    assert SAMPLE.is_file()
    assert "MIT" in (REPO / "samples" / "LICENSE-dex-retargeting.txt").read_text()
    assert "dex-retargeting" in (REPO / "samples" / "PROVENANCE.md").read_text()


def test_capture_sample_clip_fits_the_hand(tmp_path):
    out = tmp_path / "r.npz"
    overlay = tmp_path / "o.mp4"
    summary = capture.run_capture(capture.CaptureOptions(str(SAMPLE), str(out), frame_start=0, frame_end=9,
                                                         overlay=str(overlay), batch_size=5))
    r = results.read_result(out)
    assert summary["hand_side"] == ["right"] and r["hand_side"].tolist() == ["right"]
    assert r["valid"].all() and r["frame_index"].tolist() == list(range(10))
    # the fitted joints project onto the detected keypoints
    uv = camera.project_perspective(r["joints_3d"][0], r["K"])
    err = np.linalg.norm(uv - r["keypoints_2d"][0], axis=-1)
    assert np.median(err) < 12.0, np.median(err)
    # a hand: wrist to middle MCP 5-15 cm, in front of the camera
    bone = np.linalg.norm(r["joints_3d"][0, :, 9] - r["joints_3d"][0, :, 0], axis=-1)
    assert np.all((bone > 0.05) & (bone < 0.15)) and np.all(r["root"][0, :, 2] > 0)
    assert overlay.exists() and overlay.stat().st_size > 10_000


def test_the_cli_log_says_what_the_capture_did_and_nothing_alarming(tmp_path):
    """What a user reads on stderr: the engine's own lines, not JAX's backend probing ("Unable to initialize
    backend 'tpu': ... libtpu.so: cannot open shared object file", twice), which read as an error."""
    out = tmp_path / "r.npz"
    proc = subprocess.run([sys.executable, "-m", "engine", "capture", str(SAMPLE), "--frames", "0:4", "-o", str(out),
                           "--quiet"], cwd=REPO, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "JAX_LOGGING_LEVEL"})
    assert proc.returncode == 0, proc.stderr
    assert "INFO engine.capture: capturing" in proc.stderr and f"wrote {out}" in proc.stderr
    assert "backend" not in proc.stderr and "libtpu" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_a_capture_tracking_on_openvino_never_loads_torch(tmp_path):
    """Tracking on OpenVINO, the hand module (IKNet on numpy, the model posed by the tailor's JAX layer) and the
    tailor: no torch or smplx in the process (their import cost every capture ~1.4 s and ~200 MB)."""
    code = ("import sys\nfrom engine import capture\n"
            "capture.run_capture(capture.CaptureOptions(sys.argv[1], sys.argv[2], frame_start=0, frame_end=9,\n"
            "                                           runtime='openvino'))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'smplx')))")
    proc = subprocess.run([sys.executable, "-c", code, str(SAMPLE), str(tmp_path / "r.npz")], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
    assert results.read_result(tmp_path / "r.npz")["valid"].all()


def test_server_capture_then_cancel_mid_run(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve"], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)
    try:
        out = tmp_path / "take.npz"
        req = {"id": "cap", "cmd": "capture", "args": {"source": str(SAMPLE), "output": str(out), "frame_start": 0,
                                                       "frame_end": 300, "batch_size": 2}}
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        while True:  # wait until frames are being processed, then cancel
            msg = json.loads(proc.stdout.readline())
            if msg["type"] == "progress" and msg["done"] >= 2:
                break
            assert msg["type"] == "progress", msg
        proc.stdin.write(json.dumps({"id": "c", "cmd": "cancel", "args": {"target": "cap"}}) + "\n")
        proc.stdin.flush()
        got = {}
        while len(got) < 2:
            msg = json.loads(proc.stdout.readline())
            if msg["type"] != "progress":
                got[msg["id"]] = msg
        assert got["cap"]["code"] == "cancelled" and got["c"]["result"] == {"cancelled": True}
        assert list(tmp_path.iterdir()) == []
        # the job ended with its answer: the engine answers the next request, no late progress for "cap"
        proc.stdin.write(json.dumps({"id": "h", "cmd": "hello"}) + "\n")
        proc.stdin.flush()
        msg = json.loads(proc.stdout.readline())
        assert msg["id"] == "h" and msg["type"] == "result", msg
    finally:
        proc.kill()
        proc.wait(5)


def test_server_capture_result(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve"], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)
    try:
        out = tmp_path / "take ✋.npz"
        req = {"id": "cap", "cmd": "capture", "args": {"source": str(SAMPLE), "output": str(out), "frame_start": 100,
                                                       "frame_end": 104}}
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        progress = []
        while True:
            msg = json.loads(proc.stdout.readline())
            if msg["type"] != "progress":
                break
            progress.append(msg)
        assert msg["type"] == "result", msg
        assert msg["result"]["files"]["result"] == str(out) and msg["result"]["frames"] == 5
        assert msg["result"]["valid_frames"] == [5] and progress
        assert results.read_result(out)["frame_index"].tolist() == [100, 101, 102, 103, 104]
    finally:
        proc.kill()
        proc.wait(5)


def test_no_hand_with_the_real_tracker(tmp_path, capsys):
    import cv2

    from engine import cli

    src = tmp_path / "empty room.avi"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(4):
        w.write(np.full((240, 320, 3), 90 + 10 * i, np.uint8))
    w.release()
    assert cli.main(["capture", str(src), "-o", str(tmp_path / "r.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "[no_hand]" in err and "no hand found in 4 frames" in err
    assert not (tmp_path / "r.npz").exists()
