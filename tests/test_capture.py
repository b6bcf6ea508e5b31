"""engine.capture: CLI, bad input, tracks and gaps, corrupt frames, cancel — with a scripted tracker and a
pass-through fit (no networks, no JAX), so these run in seconds. The real pipeline: test_capture_e2e.py."""


import cv2
import numpy as np
import pytest

from engine import capture, cli, cli_args, results, tracks
from engine.tailor.clip import clip_windows
from engine.errors import Cancelled, NoHandError
from capture_fixtures import (
    ScriptedTracker, corrupt_mjpeg_frames, fake_observation, pattern_frame, set_mp4_rotation, use_fake_fit,
    write_video,
)


def one_right_hand(n, img):
    return [fake_observation(7, "right")]


@pytest.fixture
def fake(monkeypatch):
    """Installs the fake fit; returns a function that installs a scripted tracker for the CLI."""
    use_fake_fit(monkeypatch)

    def install(script):
        tracker = ScriptedTracker(script)
        monkeypatch.setattr(capture, "make_tracker", lambda options: tracker)
        return tracker

    return install


def run_cli(*argv):
    return cli.main(["capture", *map(str, argv), "--quiet"])


def test_capture_writes_a_valid_result(fake, tmp_path, capsys):
    fake(one_right_hand)
    src = write_video(tmp_path / "clip.avi", 10)
    out = tmp_path / "r.npz"
    assert run_cli(src, "-o", out, "--frames", "2:8", "--stride", "2", "--batch-size", "3") == 0
    r = results.read_result(out)
    assert r["frame_index"].tolist() == [2, 4, 6, 8]
    assert r["hand_side"].tolist() == ["right"] and r["valid"].all()
    assert r["image_size"].tolist() == [64, 48] and float(r["fps"]) == pytest.approx(10.0)
    assert str(r["camera_model"]) == "weak_perspective"
    np.testing.assert_allclose(r["K"], [[64, 0, 32], [0, 64, 24], [0, 0, 1]])
    assert r["keypoints_2d"].shape == (1, 4, 21, 2) and np.isfinite(r["keypoints_2d"]).all()
    assert "wrote" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "r.npz"]


def test_perspective_intrinsics(fake, tmp_path):
    fake(one_right_hand)
    src = write_video(tmp_path / "clip.avi", 3)
    out = tmp_path / "r.npz"
    assert run_cli(src, "-o", out, "--intrinsics", "100,110,30,20") == 0
    r = results.read_result(out)
    assert str(r["camera_model"]) == "perspective"
    np.testing.assert_allclose(r["K"], [[100, 0, 30], [0, 110, 20], [0, 0, 1]])
    assert np.isnan(r["projection_scale"]).all()


def test_gaps_are_invalid_never_made_up(fake, tmp_path):
    fake(lambda n, img: [] if 3 <= n <= 5 else [fake_observation(1, "right")])
    src = write_video(tmp_path / "clip.avi", 9)
    capture.run_capture(capture.CaptureOptions(str(src), str(tmp_path / "r.npz")))
    r = results.read_result(tmp_path / "r.npz")
    assert r["valid"][0].tolist() == [True] * 3 + [False] * 3 + [True] * 3
    for k in ("theta", "beta", "root", "hand_scale", "joints_3d"):
        assert np.isnan(r[k][0, 3:6]).all()
    assert np.isnan(r["keypoints_2d"][0, 3:6]).all() and (r["confidence"][0, 3:6] == 0).all()


def test_two_hands_crossing_keep_their_identity(fake, tmp_path):
    def script(n, img):
        # the hands swap places (cross) over the clip; the tracker keeps its ids; one frame's handedness flips
        x = 10 + 4 * n
        right = fake_observation(1, "left" if n == 4 else "right", center=(x, 24.0))
        left = fake_observation(2, "left", center=(54 - 4 * n, 24.0), presence=0.9)
        return [left, right] if n % 2 else [right, left]

    fake(script)
    src = write_video(tmp_path / "clip.avi", 10)
    out = capture.run_capture(capture.CaptureOptions(str(src), str(tmp_path / "r.npz"), hands=2))
    assert out["hand_side"] == ["right", "left"] and out["valid_frames"] == [10, 10]
    r = results.read_result(tmp_path / "r.npz")
    # the right hand moves right all along: its identity survived the crossing and the handedness flip
    assert np.all(np.diff(r["keypoints_2d"][0, :, 0, 0]) > 0)
    assert np.all(np.diff(r["keypoints_2d"][1, :, 0, 0]) < 0)
    # every track records the model it was fitted with (format 2)
    from engine.hand_model import load_hand_model

    models = [load_hand_model(None, side=s) for s in ("right", "left")]
    assert r["hand_model"].tolist() == [m.path for m in models]
    assert r["hand_model_sha256"].tolist() == [m.sha256 for m in models]


def test_one_hand_mode_keeps_the_dominant_side(fake, tmp_path):
    fake(lambda n, img: [fake_observation(1, "left")] + ([fake_observation(2, "right", center=(10, 10))] if n < 2 else []))
    src = write_video(tmp_path / "clip.avi", 6)
    out = capture.run_capture(capture.CaptureOptions(str(src), str(tmp_path / "r.npz"), hands=1))
    assert out["hand_side"] == ["left"] and out["valid_frames"] == [6]


def test_corrupt_frames_are_skipped_marked_and_reported(fake, tmp_path, capsys):
    fake(one_right_hand)
    src = write_video(tmp_path / "clip.avi", 10)
    corrupt_mjpeg_frames(src, [4, 5])
    out = tmp_path / "r.npz"
    assert run_cli(src, "-o", out) == 0
    r = results.read_result(out)
    assert r["frame_index"].tolist() == list(range(10))
    assert r["frame_decoded"].tolist() == [True] * 4 + [False] * 2 + [True] * 4
    assert r["valid"][0].tolist() == [True] * 4 + [False] * 2 + [True] * 4
    err = capsys.readouterr().err
    assert "could not be decoded" in err and "[4, 5]" in err


def test_no_hand_anywhere(fake, tmp_path, capsys):
    fake(lambda n, img: [])
    src = write_video(tmp_path / "clip.avi", 7)
    out = tmp_path / "r.npz"
    assert run_cli(src, "-o", out) == 2
    err = capsys.readouterr().err
    assert "no hand found in 7 frames" in err and "[no_hand]" in err
    assert not out.exists()
    with pytest.raises(NoHandError):
        capture.run_capture(capture.CaptureOptions(str(src), str(out)))


@pytest.mark.parametrize(
    "make, argv_extra, code, words",
    [
        (lambda d: d / "missing.mp4", [], "bad_input", "does not exist"),
        (lambda d: (d / "notes.mp4").write_text("hello") and d / "notes.mp4", [], "bad_input", "not a video"),
        (lambda d: write_video(d / "zero.avi", 0), [], "bad_input", "no video frames"),
        (lambda d: write_video(d / "ok.avi", 3), ["--frames", "x"], "bad_input", "A:B"),
        (lambda d: write_video(d / "ok.avi", 3), ["--frames", "9:"], "bad_input", "footage has 3 frames"),
        (lambda d: write_video(d / "ok.avi", 3), ["--intrinsics", "1,2"], "bad_input", "4 or 9 numbers"),
        (lambda d: write_video(d / "ok.avi", 3), ["--intrinsics", "0,1,2,3"], "bad_input", "positive"),
        (lambda d: write_video(d / "ok.avi", 3), ["--smoothing", "-1"], "bad_input", "smoothing"),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(fake, tmp_path, capsys, make, argv_extra, code, words):
    fake(one_right_hand)
    src = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_cli(src, "-o", tmp_path / "r.npz", *argv_extra) == 2
    err = capsys.readouterr().err
    assert f"[{code}]" in err and words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unwritable_output(fake, tmp_path, capsys):
    fake(one_right_hand)
    src = write_video(tmp_path / "clip.avi", 3)
    assert run_cli(src, "-o", tmp_path / "missing dir" / "r.npz") == 2
    assert "[unwritable_output]" in capsys.readouterr().err
    assert run_cli(src, "-o", tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err
    assert run_cli(src, "-o", tmp_path / "r.npz", "--overlay", tmp_path / "nodir" / "o.mp4") == 2
    assert "[unwritable_output]" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_paths_with_spaces_and_non_ascii(fake, tmp_path):
    fake(one_right_hand)
    d = tmp_path / "mes vidéos ✋ 手"
    d.mkdir()
    src = write_video(d / "prise 1 é.avi", 4)
    out = d / "résultat 1.npz"
    assert run_cli(src, "-o", out) == 0
    r = results.read_result(out)
    assert str(r["source"]).endswith("prise 1 é.avi")


def test_image_folder_source(fake, tmp_path):
    fake(one_right_hand)
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(4):
        cv2.imwrite(str(d / f"{i:04d}.png"), pattern_frame(i))
    out = capture.run_capture(capture.CaptureOptions(str(d), str(tmp_path / "r.npz")))
    assert out["frames"] == 4


def test_portrait_phone_video_is_upright(fake, tmp_path):
    tracker = fake(one_right_hand)
    src = write_video(tmp_path / "phone.mp4", 3, w=64, h=48, fourcc="mp4v")
    set_mp4_rotation(src, 90)
    capture.run_capture(capture.CaptureOptions(str(src), str(tmp_path / "r.npz")))
    assert set(tracker.frame_shapes) == {(64, 48, 3)}  # the tracker sees upright frames
    r = results.read_result(tmp_path / "r.npz")
    assert r["image_size"].tolist() == [48, 64]


def test_8k_frames(fake, tmp_path):
    tracker = fake(one_right_hand)
    frames = [np.zeros((4320, 7680, 3), np.uint8) for _ in range(2)]
    for i, f in enumerate(frames):
        f[2156:2164, 3836:3844] = i * 16
    src = write_video(tmp_path / "8k.avi", 2, w=7680, h=4320, frames=frames)
    out = capture.run_capture(capture.CaptureOptions(str(src), str(tmp_path / "r.npz"), batch_size=64))
    assert out["frames"] == 2 and tracker.frame_shapes[0] == (4320, 7680, 3)
    assert results.read_result(tmp_path / "r.npz")["image_size"].tolist() == [7680, 4320]


def test_should_stop_cancels_cleanly(fake, tmp_path):
    fake(one_right_hand)
    src = write_video(tmp_path / "clip.avi", 12)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        capture.run_capture(capture.CaptureOptions(str(src), str(tmp_path / "r.npz"), batch_size=2), should_stop=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_ctrl_c_leaves_nothing(fake, tmp_path, capsys):
    def script(n, img):
        if n == 3:
            raise KeyboardInterrupt
        return [fake_observation(1, "right")]

    fake(script)
    src = write_video(tmp_path / "clip.avi", 8)
    assert run_cli(src, "-o", tmp_path / "r.npz", "--batch-size", "2") == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_progress_reaches_the_total(fake, tmp_path):
    fake(one_right_hand)
    src = write_video(tmp_path / "clip.avi", 6)
    seen = []
    capture.run_capture(capture.CaptureOptions(str(src), str(tmp_path / "r.npz"), batch_size=2),
                        progress=lambda d, t, m: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] > 0
    assert all(0 <= d <= t for d, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_chunk_windows_cover_every_frame_once():
    for n in (1, 5, 64, 65, 130, 301):
        wins = clip_windows(n, 64, 4)
        kept = [i for _, _, a, b in wins for i in range(a, b)]
        assert kept == list(range(n))
        assert all(stop - start <= 64 and start <= a < b <= stop for start, stop, a, b in wins)
        # beyond one window, all are full length (one batch size: one executable), overlapping by >= 4
        assert all(stop - start == min(n, 64) for start, stop, _, _ in wins)
        assert all(s1 <= b0 - 4 for (_, b0, _, _), (s1, _, _, _) in zip(wins, wins[1:]))


def test_track_assignment_prefers_the_more_present_hand():
    obs = tracks.Observations(np.arange(3), np.ones(3, bool), {}, {
        1: {"n": [0, 1, 2], "obs": [fake_observation(1, "right", presence=0.9)] * 3},
        2: {"n": [1], "obs": [fake_observation(2, "right", presence=0.5)]},
    })
    found = tracks.assign_tracks(obs, 1)
    assert len(found) == 1 and found[0].positions.tolist() == [0, 1, 2]
    assert all(o.track_id == 1 for o in found[0].obs)


def test_overlay_video(fake, tmp_path):
    fake(lambda n, img: [] if n == 2 else [fake_observation(1, "right")])
    src = write_video(tmp_path / "clip.avi", 5, w=96, h=64)
    res = capture.run_capture(capture.CaptureOptions(str(src), str(tmp_path / "r.npz"), overlay=str(tmp_path / "o v.mp4")))
    assert res["files"]["overlay"] == str(tmp_path / "o v.mp4")
    cap = cv2.VideoCapture(str(tmp_path / "o v.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 5 and frames[0].shape == (64, 96, 3)
    plain = pattern_frame(0, 96, 64)
    # the mesh (rest pose 0.5 m in front of the camera, over the image centre) changes the frame
    assert np.abs(frames[0].astype(int) - plain).mean() > 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "o v.mp4", "r.npz"]


def test_bad_hand_model_fails_before_any_frame_is_tracked(fake, tmp_path, capsys):
    tracker = fake(one_right_hand)
    src = write_video(tmp_path / "clip.avi", 3)
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a model")
    assert run_cli(src, "-o", tmp_path / "r.npz", "--hand-model", bad) == 2
    assert "[bad_model_file]" in capsys.readouterr().err
    assert tracker.frame_shapes == [] and not (tmp_path / "r.npz").exists()


# --------------------------------------------------------------------------------- --backbone option
def test_backbone_option_parses_and_reaches_the_tracker(tmp_path, monkeypatch):
    from engine.hand_module import tracking

    weights = tmp_path / "hourglass.safetensors"
    weights.write_bytes(b"x")  # existence is checked up front; the content when the tracker loads it
    args = cli_args.capture_parser("capture").parse_args(
        ["clip.mp4", "-o", "r.npz", "--backbone", "hourglass", "--hourglass-weights", str(weights),
         "--intrinsics", "500,510,32,24"])
    opts = cli_args.capture_options(args)
    assert opts.backbone == "hourglass" and opts.hourglass_weights == str(weights)
    default = cli_args.capture_options(cli_args.capture_parser("capture").parse_args(["clip.mp4", "-o", "r.npz"]))
    assert default.backbone == "mediapipe" and default.hourglass_weights is None
    seen = {}
    monkeypatch.setattr(tracking, "HandTracker", lambda **kw: seen.update(kw) or object())
    capture.make_tracker(opts)
    assert seen["backbone"] == "hourglass" and seen["hourglass_weights"] == str(weights)
    np.testing.assert_allclose(seen["K"], [[500, 0, 32], [0, 510, 24], [0, 0, 1]])
    proto = capture.CaptureOptions.from_protocol({"source": "a", "output": "b.npz", "backbone": "hourglass",
                                                  "hourglass_weights": str(weights)})
    assert proto.backbone == "hourglass" and proto.hourglass_weights == str(weights)


def test_hourglass_without_weights_fails_before_reading_the_footage(fake, tmp_path, capsys):
    from engine.errors import ModelFileError

    fake(one_right_hand)
    src = write_video(tmp_path / "clip.avi", 3)
    assert run_cli(src, "-o", tmp_path / "r.npz", "--backbone", "hourglass") == 2
    err = capsys.readouterr().err
    assert "bad_model_file" in err and "--hourglass-weights" in err and "python -m engine train run" in err
    assert not (tmp_path / "r.npz").exists()
    with pytest.raises(ModelFileError, match="not found"):
        capture.CaptureOptions(source=str(src), output=str(tmp_path / "r.npz"), backbone="hourglass",
                               hourglass_weights=str(tmp_path / "none.safetensors"))
