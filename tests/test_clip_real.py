"""Issue 15 on real captures: one steady hand per track, and a local, idempotent re-tailor.

The re-tailor checks run on a stretch of the bundled sample clip (samples/, MIT); the gesture and ASL clips of
../shared/data/videos (the issue's "Must show") are captured when they are there and skipped otherwise.
Weak perspective and the capture's defaults throughout, as a new user runs it."""

import pathlib

import numpy as np
import pytest

from engine import capture, metrics, results, retailor
from engine.capture_bench import RecordingTracker, ReplayTracker
from engine.hand_model import MANO_JOINT_NAMES
from engine.hand_model.rotations import quat_multiply
from engine.tailor.posing import model_keypoints

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"
VIDEOS = REPO.parent / "shared" / "data" / "videos"
INDEX1 = list(MANO_JOINT_NAMES).index("index1")


def _capture(tmp, source, frames=(None, None), raw=False) -> tuple[str, dict, dict | None]:
    """A capture (path, result) and, with raw, the same observations refit without the temporal terms."""
    out = str(tmp / (pathlib.Path(source).stem + ".npz"))
    opts = capture.CaptureOptions(source=str(source), output=out, frame_start=frames[0], frame_end=frames[1])
    rec = RecordingTracker(capture.make_tracker(opts))
    stats: dict = {}
    capture.run_capture(opts, tracker=rec, stats=stats)
    unsmoothed = None
    if raw:
        s2: dict = {}
        opts2 = capture.CaptureOptions(**{**opts.__dict__, "output": str(tmp / "raw.npz")})
        capture.run_capture(opts2, tracker=ReplayTracker(rec.outputs), stats=s2, temporal=False)
        unsmoothed = s2["result"]
    return out, results.read_result(out), unsmoothed


def _angle_deg(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(4 * np.arctan2(np.linalg.norm(a - b * np.sign(np.sum(a * b, -1, keepdims=True)), axis=-1),
                                     np.linalg.norm(a + b * np.sign(np.sum(a * b, -1, keepdims=True)), axis=-1)))


def _edit_index1(result, tmp, frames: tuple[int, int], degrees: float = 25.0, name="edits.npz"):
    """Edits with index1 turned `degrees` about its local z on footage frames [a, b] and locked."""
    e = results.empty_edits(result)
    fi = result["frame_index"]
    rows = np.flatnonzero((fi >= frames[0]) & (fi <= frames[1]) & result["valid"][0])
    half = np.radians(degrees) / 2
    for n in rows:
        e["theta"][0, n, INDEX1] = quat_multiply(result["theta"][0, n, INDEX1], np.array([np.cos(half), 0, 0, np.sin(half)]))
        e["lock_theta"][0, n, INDEX1] = True
    return results.write_edits(tmp / name, e, result), e, rows


def _retailor(result_path, edits_path, out, **kw) -> dict:
    retailor.run_retailor(retailor.RetailorOptions(str(result_path), str(edits_path), str(out), **kw))
    return results.read_result(out)


FITTED = ("theta", "beta", "root", "hand_scale", "projection_scale", "joints_3d")


def _same(a: dict, b: dict, rows) -> bool:
    return all(np.array_equal(a[k][0][rows], b[k][0][rows], equal_nan=True) for k in FITTED)


@pytest.fixture(scope="module")
def sample_take(tmp_path_factory):
    if not SAMPLE.is_file():
        pytest.skip(f"{SAMPLE} is missing")
    tmp = tmp_path_factory.mktemp("sample")
    path, result, _ = _capture(tmp, SAMPLE, (0, 99))
    assert result["valid"][0].sum() >= 90
    return tmp, path, result


@pytest.mark.slow
def test_an_edit_is_local_smooth_and_exact(sample_take):
    tmp, path, take = sample_take
    edits, e, rows = _edit_index1(take, tmp, (40, 50))
    new = _retailor(path, edits, tmp / "edited.npz", falloff=10)
    np.testing.assert_array_equal(new["theta"][0, rows, INDEX1], e["theta"][0, rows, INDEX1])  # bit-exact
    fi = take["frame_index"]
    far = (fi < 30) | (fi > 60)
    assert _same(new, take, far)  # beyond the falloff window: bit for bit
    assert not _same(new, take, (fi >= 30) & (fi <= 60))
    # the edit fades in and out: the change from the take moves by at most a few degrees a frame
    win = np.flatnonzero((fi >= 28) & (fi <= 62))
    change = _angle_deg(new["theta"][0, win, INDEX1], take["theta"][0, win, INDEX1])
    assert change.max() == pytest.approx(25.0, abs=0.01)
    assert np.abs(np.diff(change)).max() <= 4.0  # 25 deg over a raised cosine of 10 frames: 3.6 at most
    assert change[0] == change[-1] == 0.0
    # the file stays consistent: joints_3d is the model posed by the new values
    from engine.hand_model import load_hand_model

    moved = np.flatnonzero(~far)
    posed = model_keypoints(load_hand_model(None, "right"), new["theta"][0, moved], new["beta"][0, moved],
                            new["root"][0, moved], new["hand_scale"][0, moved])
    np.testing.assert_allclose(new["joints_3d"][0, moved], posed, atol=2e-4)
    # a re-tailor of the new take with the same edits (now the take's own values) changes nothing
    again = _retailor(tmp / "edited.npz", results.write_edits(tmp / "same.npz", {**e, "theta": new["theta"]}, new),
                      tmp / "again.npz")
    assert _same(again, new, np.ones(len(fi), bool))


@pytest.mark.slow
def test_no_edit_frames_and_joints_touch_nothing_else(sample_take):
    tmp, path, take = sample_take
    fi = take["frame_index"]
    everything = np.ones(len(fi), bool)
    none = results.write_edits(tmp / "none.npz", results.empty_edits(take), take)
    assert _same(_retailor(path, none, tmp / "noedit.npz"), take, everything)  # deterministic: the take
    assert _same(_retailor(path, none, tmp / "noedit_range.npz", frame_start=10, frame_end=20), take, everything)
    # --frames 10:20 with an edit at 15: nothing outside 10..20 changes (the known bug rewrote them all)
    edits, e, rows = _edit_index1(take, tmp, (15, 15), name="one.npz")
    new = _retailor(path, edits, tmp / "range.npz", frame_start=10, frame_end=20)
    assert _same(new, take, (fi < 10) | (fi > 20))
    np.testing.assert_array_equal(new["theta"][0, rows, INDEX1], e["theta"][0, rows, INDEX1])
    # --joints: only the named joints move
    new = _retailor(path, edits, tmp / "joints.npz", joints=["index1", "index2", "index3"])
    others = [j for j in range(16) if j not in (1, 2, 3)]
    np.testing.assert_array_equal(new["theta"][0][:, others], take["theta"][0][:, others])
    assert not np.array_equal(new["theta"][0][:, 2], take["theta"][0][:, 2])


# ------------------------------------------------------------------------ the clips (../shared)


def _shared_clip(name: str) -> pathlib.Path:
    path = VIDEOS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (research-only shared clips): the issue's figures need it")
    return path


@pytest.mark.slow
def test_gesture_clip_is_one_steady_hand(tmp_path):
    _, r, raw = _capture(tmp_path, _shared_clip("mediapipe-samples_gesture_recognizer_test_video.mp4"), raw=True)
    v = r["valid"][0]
    assert v.sum() > 150
    assert len(np.unique(r["beta"][0][v], axis=0)) == 1 and len(np.unique(r["hand_scale"][0][v])) == 1
    ch = metrics.rotation_chatter_deg(r["theta"][0], v)
    assert np.median(ch) <= 1.0 and np.percentile(ch, 95) <= 6.0  # before: 2.9 / 13.8
    assert abs(metrics.trajectory_lag(r["joints_3d"][0], raw["joints_3d"][0], v & raw["valid"][0])) <= 0.5
    px = np.nanmedian(metrics.reprojection_px(r["joints_3d"][0], r["K"], r["keypoints_2d"][0], r["confidence"][0], v))
    px_raw = np.nanmedian(metrics.reprojection_px(raw["joints_3d"][0], raw["K"], raw["keypoints_2d"][0],
                                                  raw["confidence"][0], raw["valid"][0]))
    assert px <= px_raw + 1.0, (px, px_raw)  # the smoothing costs little of the fit to the keypoints
    assert px <= 6.0, px  # one identity, the distance solved at the fitted pose (7.7 px at the initial pose's)


@pytest.mark.slow
def test_asl_clip_edit_is_local_and_a_no_edit_retailor_is_the_take(tmp_path):
    path, take, _ = _capture(tmp_path, _shared_clip("asl_hand.25fps.mp4"))
    fi = take["frame_index"]
    edits, e, rows = _edit_index1(take, tmp_path, (150, 160))
    new = _retailor(path, edits, tmp_path / "edited.npz")
    np.testing.assert_array_equal(new["theta"][0, rows, INDEX1], e["theta"][0, rows, INDEX1])
    assert _same(new, take, (fi < 120) | (fi > 190))
    win = np.flatnonzero((fi >= 140) & (fi <= 170))
    q_new, q_take = new["theta"][0, win, INDEX1], take["theta"][0, win, INDEX1]
    step = _angle_deg(q_new[1:], q_new[:-1])
    step_take = _angle_deg(q_take[1:], q_take[:-1])
    # index1's step stays within 8 deg wherever the finger itself is not moving faster (the take's own step
    # reaches ~14 deg around frame 168, a real fast flexion)
    assert np.all(step <= np.maximum(8.0, step_take + 1.0)), (step.round(1), step_take.round(1))
    change = _angle_deg(q_new, q_take)
    assert np.abs(np.diff(change)).max() <= 4.0  # the edit itself adds at most ~4 deg a frame
    none = results.write_edits(tmp_path / "none.npz", results.empty_edits(take), take)
    again = _retailor(path, none, tmp_path / "noedit.npz")
    v = take["valid"][0]
    assert _angle_deg(again["theta"][0][v], take["theta"][0][v]).max() <= 0.5
    assert _same(again, take, np.ones(len(fi), bool))
