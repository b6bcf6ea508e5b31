"""The network runtimes (OpenVINO, LiteRT, torch) against the torch port, the palm retry policy, the
tracker's own stage timings and concurrent tracking segments."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import pathlib
import threading

import cv2
import numpy as np
import pytest

from engine import caches, video, video_planar
from engine.errors import InputError
from engine.hand_module import crops, runtimes, segments
from engine.hand_module.tracking import RETRY_AFTER_LOSS, RETRY_INTERVAL, HandTracker, retry_views

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDENS = REPO / "tests" / "data" / "mediapipe_goldens" / "static_images.json"
THUMB_UP = REPO / "tests" / "data" / "images" / "mediapipe-samples" / "gesture_recognizer_hand_thumb_up.jpg"
TWO_HANDS = REPO / "tests" / "data" / "images" / "hamer" / "test1.jpg"
SAMPLE = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"
RUNTIMES = ["openvino", "torch"] + (["litert"] if importlib.util.find_spec("ai_edge_litert") else [])


def read_rgb(path: pathlib.Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def photos():
    golden = json.loads(GOLDENS.read_text())
    return [(read_rgb(REPO / im["image"]), im["hands"]) for im in golden["images"]]


@pytest.fixture(scope="module")
def torch_nets():
    return runtimes.load_networks("torch")


def test_openvino_keeps_its_compiled_networks_and_they_compute_the_same(photos, tmp_path, monkeypatch):
    """OpenVINO's model cache under the user's cache folder: the first tracker's networks (two copies, one per
    tracking thread, compiled side by side) are written there once, the next ones read back, and every output
    of every copy is bit for bit that of networks compiled without a cache."""
    x = np.stack([crops.warp(rgb, crops.Roi(h["roi_px"][0], h["roi_px"][1], h["roi_px"][2], h["roi_px"][4]), 224)
                  for rgb, hands in photos for h in hands])
    p = np.stack([crops.warp(rgb, crops.letterbox_roi(rgb.shape[1], rgb.shape[0]), 192, border="constant")
                  for rgb, _ in photos])
    monkeypatch.setattr(runtimes, "cache_folder", lambda kind: None)
    plain = runtimes.OpenVinoNetworks()
    monkeypatch.setattr(runtimes, "cache_folder", caches.cache_folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = runtimes.OpenVinoNetworks(streams=2)
    # one copy is the constructing thread's (it ran each network once), the other waits for a second thread
    assert len(first._spare) == 1 and first._spare[0]["landmarks"][0] is not first._local.requests["landmarks"][0]
    folder = tmp_path / "handtailor" / "openvino"
    blobs = sorted(folder.glob("*.blob"))
    assert len(blobs) == 2 and sorted(p.name for p in folder.iterdir()) == [b.name for b in blobs]  # one per network
    stamps = [b.stat().st_mtime_ns for b in blobs]
    again = runtimes.OpenVinoNetworks()
    assert [b.stat().st_mtime_ns for b in blobs] == stamps  # read, not written again
    expected = plain.landmarks(x) + plain.palm(p)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        other = pool.submit(lambda: first.landmarks(x) + first.palm(p)).result()
    assert not first._spare  # the second copy served the other thread
    for out in (first.landmarks(x) + first.palm(p), other, again.landmarks(x) + again.palm(p)):
        for a, b in zip(out, expected):
            np.testing.assert_array_equal(a, b)


CACHE_SCRIPT = r"""
import hashlib
import numpy as np
from engine.hand_module import runtimes
nets = runtimes.OpenVinoNetworks(streams=2)
rng = np.random.default_rng(0)
out = nets.landmarks(rng.integers(0, 255, (2, 224, 224, 3), np.uint8)) + nets.palm(rng.integers(0, 255, (1, 192, 192, 3), np.uint8))
print(hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in out)).hexdigest())
"""


def test_processes_sharing_the_network_cache_all_work(tmp_path, repo_dir):
    """Three processes making their networks at once on an empty cache folder (as `engine batch` workers
    do): each writes or reads whole files, none fails (OpenVINO's own CACHE_DIR failed here, or died of
    SIGBUS), all compute the same; a fourth then reads what they left."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", CACHE_SCRIPT], cwd=repo_dir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    digests = {o.split()[-1] for o, _ in outs}
    assert len(digests) == 1
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "handtailor" / "openvino").iterdir()) == [
        "hand_landmark_full", "palm_detection_full"]  # and no temporary file left
    again = subprocess.run([sys.executable, "-c", CACHE_SCRIPT], cwd=repo_dir, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and again.stdout.split()[-1] in digests


@pytest.mark.parametrize("runtime", [r for r in RUNTIMES if r != "torch"])
def test_networks_match_the_torch_port(runtime, photos, torch_nets):
    """Network to network on MediaPipe's own crops and letterboxed photos."""
    nets = runtimes.load_networks(runtime)
    x = np.stack([crops.warp(rgb, crops.Roi(h["roi_px"][0], h["roi_px"][1], h["roi_px"][2], h["roi_px"][4]), 224)
                  for rgb, hands in photos for h in hands])
    a, b = nets.landmarks(x), torch_nets.landmarks(x)
    assert a.landmarks.shape == (len(x), 21, 3) and a.world_landmarks.shape == (len(x), 21, 3)
    assert np.abs(a.landmarks - b.landmarks).max() < 1e-2  # px at 224 (measured 1e-4)
    assert np.abs(a.world_landmarks - b.world_landmarks).max() < 1e-5  # metres
    assert np.abs(a.presence - b.presence).max() < 1e-4 and np.abs(a.handedness - b.handedness).max() < 1e-4
    assert (b.presence > 0.8).all()
    p = np.stack([crops.warp(rgb, crops.letterbox_roi(rgb.shape[1], rgb.shape[0]), 192, border="constant")
                  for rgb, _ in photos])
    pa, pb = nets.palm(p), torch_nets.palm(p)
    assert pa.regressors.shape == (len(p), 2016, 18) and pa.logits.shape == (len(p), 2016)
    assert np.abs(pa.regressors - pb.regressors).max() < 1e-2  # 192-px units
    sig = lambda z: 1 / (1 + np.exp(-np.clip(z, -100, 100)))  # noqa: E731
    assert np.abs(sig(pa.logits) - sig(pb.logits)).max() < 1e-4


@pytest.mark.parametrize("runtime", [r for r in RUNTIMES if r != "torch"])
def test_keypoints_within_a_tenth_of_a_pixel_of_the_torch_port(runtime, photos):
    """The whole static-image pipeline on the parity photos: the issue's bound, 0.1 image px."""
    ours = HandTracker(static_images=True, retry_zoomed_out=False, runtime=runtime)
    ref = HandTracker(static_images=True, retry_zoomed_out=False, runtime="torch")
    n = 0
    for rgb, _ in photos:
        a, b = ours.process_batch([rgb])[0], ref.process_batch([rgb])[0]
        assert len(a) == len(b)
        for oa, ob in zip(a, b):
            assert np.abs(oa.keypoints_uvd - ob.keypoints_uvd).max() < 0.1
            n += 1
    assert n >= 10


def test_bad_runtime_choices_fail_clearly():
    with pytest.raises(InputError, match="unknown network runtime 'onnx'.*openvino, litert, torch"):
        runtimes.check_runtime("onnx")
    with pytest.raises(InputError, match="CPU only.*--runtime torch"):
        runtimes.check_runtime("openvino", "cuda")
    assert runtimes.check_runtime(None, "cuda") == "torch" and runtimes.check_runtime(None) == "openvino"


def test_tracker_reports_its_own_stage_timings():
    rgb = read_rgb(THUMB_UP)
    tracker = HandTracker(max_hands=1)
    assert tracker.last_timings is None
    tracker.process_batch([rgb, rgb, rgb])
    first = dict(tracker.last_timings)
    assert set(first) == {"detect", "keypoints"} and first["detect"] > 0 and first["keypoints"] > 0
    tracker.process_batch([rgb])  # tracked: no palm detection in this batch
    assert tracker.last_timings["detect"] == 0 and tracker.last_timings["keypoints"] > 0


def test_no_hand_frames_retry_only_on_a_schedule():
    """A stretch without a hand: one palm pass a frame, plus the widened views every RETRY_INTERVAL
    frames (not on every frame)."""
    blank = np.full((360, 640, 3), 128, np.uint8)
    tracker = HandTracker(max_hands=1)
    n = 3 * RETRY_INTERVAL
    assert all(o == [] for o in tracker.process_batch([blank] * n))
    views = len(retry_views(blank.shape, 0))
    assert views == 4
    assert tracker.palm.passes == n + 3 * views
    static = HandTracker(max_hands=1, static_images=True)
    static.process_batch([blank] * 3)
    assert static.palm.passes == 3 * (1 + views)  # photos always get the retry


def test_retry_right_after_a_lost_track():
    rgb = read_rgb(THUMB_UP)
    blank = np.full_like(rgb, 128)
    tracker = HandTracker(max_hands=1)
    out = tracker.process_batch([rgb] + [blank] * 8)
    assert [len(o) for o in out] == [1] + [0] * 8
    # frame 0: one pass (found); frame 1: tracked, lost; frames 2..8 run the palm detector, and those
    # within RETRY_AFTER_LOSS frames of the loss also get the widened views
    retried = sum(1 for f in range(2, 9) if f - 1 <= RETRY_AFTER_LOSS)
    assert tracker.palm.passes == 1 + 7 + retried * len(retry_views(rgb.shape, 0))


@pytest.fixture(scope="module")
def sample_frames():
    return [f.image for f in video.iter_frames(SAMPLE, 0, 95)]


def test_concurrent_segments_follow_one_sequential_pass(sample_frames):
    seq = HandTracker(max_hands=1, workers=1)
    par = HandTracker(max_hands=1, workers=2)
    a, b = [], []
    for i in range(0, len(sample_frames), 32):
        a += seq.process_batch(sample_frames[i : i + 32])
        b += par.process_batch(sample_frames[i : i + 32])
    assert segments.split(32, 2)[1] > 16  # later segments are shorter: they pay a palm pass and a warm-up
    # and the frames their reader decodes to reach them: 40 frames at SEEK_COST each, shared by the two
    shift = segments.split(96, 2, seek=lambda p: 40 if p else 0)[1] - segments.split(96, 2)[1]
    assert abs(shift - 40 * segments.SEEK_COST / 2) <= 1
    assert [len(o) for o in a] == [len(o) for o in b] == [1] * len(sample_frames)
    assert {o[0].track_id for o in b} == {0} and {o[0].side for o in b} == {o[0].side for o in a}
    d = np.array([np.abs(x[0].keypoints_uvd[:, :2] - y[0].keypoints_uvd[:, :2]).max() for x, y in zip(a, b)])
    # tracking amplifies sub-pixel differences; where segments meet they agree within JOIN_TOLERANCE_PX
    assert np.median(d) < 0.5 and d.max() < 4.0, d
    np.testing.assert_allclose([o[0].side_score for o in b], [o[0].side_score for o in a], atol=1e-3)


def _track_clip(tracker, end, n, batch_size=32, **kw):
    records, progress = [], []
    for part, done in tracker.track_clip(video.probe(SAMPLE), 0, end, 1, n, batch_size, **kw):
        records += part
        progress.append(done)
    return records, progress


def test_whole_clip_segments_follow_one_sequential_pass(sample_frames):
    """`track_clip`: the range split once into concurrent segments, each decoding its own frames (planar:
    `engine.video_planar.YuvImage`, as the sequential pass here)."""
    planar = [f.image for f in video.iter_frames(SAMPLE, 0, 95, planar=True)]
    assert all(isinstance(f, video_planar.YuvImage) for f in planar)
    seq = HandTracker(max_hands=1, workers=1).process_batch(planar)
    par = HandTracker(max_hands=1, workers=2)
    records, progress = _track_clip(par, 95, 96)
    assert [r.index for r in records] == list(range(96)) and all(r.ok and len(r.hands) == 1 for r in records)
    assert progress == sorted(progress) and progress[-1] == 96
    # the first segment is the sequential pass itself, up to where the second starts (`split`, the later one
    # shorter by the frames it decodes to reach its start) or, where the first thread lagged, where the
    # other took over the rest of it
    second = segments.split(96, 2, lambda p: p - video_planar.decode_from(video.probe(SAMPLE), p))[1]
    same = next((i for i, (x, r) in enumerate(zip(seq, records))
                 if not np.array_equal(x[0].keypoints_uvd, r.hands[0].keypoints_uvd)), len(seq))
    assert same >= (second if par.last_segments == 2 else segments.MIN_SEGMENT), (same, par.last_segments)
    d = np.array([np.abs(x[0].keypoints_uvd[:, :2] - r.hands[0].keypoints_uvd[:, :2]).max()
                  for x, r in zip(seq, records)])
    assert np.median(d) < 0.5 and d.max() < 4.0, d
    rgb = HandTracker(max_hands=1, workers=1).process_batch(sample_frames)  # OpenCV's RGB frames: crops alike
    d = np.array([np.abs(x[0].keypoints_uvd[:, :2] - y[0].keypoints_uvd[:, :2]).max() for x, y in zip(rgb, seq)])
    assert np.median(d) < 0.5 and d.max() < 4.0, d
    assert {r.hands[0].track_id for r in records} == {0}
    # one palm pass per segment and clip (per batch: 2 for each of 3 batches)
    assert par.palm.passes == par.last_segments >= 2
    assert set(par.last_timings) == {"decode", "detect", "keypoints"}


def test_a_worker_done_first_takes_over_part_of_a_lagging_segment():
    """`track_clip`: the later segment is held at its first batch until the first thread, done with its own
    segment, has started on the lagging one's second part (`steal_point`); the three segments still join into
    what one sequential pass gives."""
    info = video.probe(SAMPLE)
    second = segments.split(96, 2, lambda p: p - video_planar.decode_from(info, p))[1]
    tracker = HandTracker(max_hands=1, workers=2)
    track_frames, taken_over, calls = tracker.track_frames, threading.Event(), []

    def tracking(frames, st):
        if threading.current_thread() is threading.main_thread():
            if st.frame_no >= second:  # the main thread tracks frames of the later segment's range
                taken_over.set()
        else:
            calls.append(st.frame_no)
            if len(calls) == 1:  # its warm-up batch: the first thread steals from what remains after it
                assert taken_over.wait(timeout=120), "no worker took over part of the lagging segment"
        return track_frames(frames, st)

    tracker.track_frames = tracking
    records, progress = _track_clip(tracker, 95, 96, batch_size=8)
    assert [r.index for r in records] == list(range(96)) and all(r.ok and len(r.hands) == 1 for r in records)
    assert progress == sorted(progress) and progress[-1] == 96
    assert tracker.last_segments >= 3 and tracker.palm.passes == tracker.last_segments
    assert {r.hands[0].track_id for r in records} == {0}
    planar = [f.image for f in video.iter_frames(SAMPLE, 0, 95, planar=True)]
    seq = HandTracker(max_hands=1, workers=1).process_batch(planar)
    d = np.array([np.abs(x[0].keypoints_uvd[:, :2] - r.hands[0].keypoints_uvd[:, :2]).max()
                  for x, r in zip(seq, records)])
    assert np.median(d) < 0.5 and d.max() < 4.0, d
    # nothing is left to split: each part got at least MIN_SEGMENT frames of its own
    assert segments.steal_point(90, 96) is None and segments.steal_point(0, 96) == round((96 + segments.WARMUP + segments.PALM_COST) / 2)


def test_whole_clip_segments_read_to_the_real_end_and_stop_together():
    """An announced length shorter than the range (a wrong frame count): the last segment reads on to the
    end. should_stop: Cancelled, and no segment tracks a frame afterwards."""
    from engine.errors import Cancelled

    records, _ = _track_clip(HandTracker(max_hands=1, workers=2), 71, 48, batch_size=16)
    assert [r.index for r in records] == list(range(72))
    tracker = HandTracker(max_hands=1, workers=2)
    later, started, asked = [], threading.Event(), threading.Event()
    track_frames = tracker.track_frames

    def tracking(frames, st):
        if threading.current_thread() is not threading.main_thread():
            later.append(len(frames))
            started.set()
            asked.wait()  # the later segment's first batch ends only once the capture was asked to stop
        return track_frames(frames, st)

    def should_stop():  # asked once the later segment tracks its first batch (it seeks first: it may lag)
        assert started.wait(timeout=300), "the later segment never started tracking"
        asked.set()
        return True

    tracker.track_frames = tracking
    with pytest.raises(Cancelled):
        _track_clip(tracker, 95, 96, batch_size=8, should_stop=should_stop)
    stopped = list(later)
    tracker._segment_pool.submit(lambda: None).result()  # runs once the later segment's thread is free
    assert later == stopped == [8]  # it stopped at its next batch and tracked nothing afterwards


def test_a_segment_that_found_another_hand_is_tracked_again_in_sequence():
    """max_hands=1 and two hands: the first frames show only one, which the first segment tracks; a later
    segment's palm detection picks the other (the better palm), so the join must fall back to tracking in
    sequence: the result is then exactly one sequential pass."""
    rgb = read_rgb(TWO_HANDS)
    probe = HandTracker(static_images=True, max_hands=2).process_batch([rgb])[0]
    assert len(probe) == 2
    best = HandTracker(static_images=True, max_hands=1).process_batch([rgb])[0][0]
    masked = rgb.copy()
    kp = best.keypoints_uvd[:, :2]
    lo, hi = np.floor(kp.min(0) - 40).astype(int).clip(0), np.ceil(kp.max(0) + 40).astype(int)
    masked[lo[1] : hi[1], lo[0] : hi[0]] = 128
    frames = [masked] * 6 + [rgb] * 26
    seq = HandTracker(max_hands=1, workers=1).process_batch(frames)
    par = HandTracker(max_hands=1, workers=2).process_batch(frames)
    assert [len(o) for o in par] == [len(o) for o in seq] == [1] * len(frames)
    for x, y in zip(seq, par):
        np.testing.assert_array_equal(x[0].keypoints_uvd, y[0].keypoints_uvd)
        assert x[0].track_id == y[0].track_id
    assert np.abs(par[-1][0].keypoints_uvd[:, :2] - kp).max() > 50  # it is the other hand throughout


@pytest.mark.slow
def test_asl_clip_matches_mediapipes_published_output(shared_dir):
    """MediaPipe's published per-frame output for the ASL clip (tfjs-models' test data): the default
    runtime and the capture's concurrent segments keep the median keypoint error far inside 3 px."""
    path = shared_dir / "data" / "videos" / "asl_hand.25fps.mp4"
    ref_path = shared_dir / "data" / "videos" / "asl_hand.full.json"
    if not path.is_file() or not ref_path.is_file():
        pytest.skip(f"{path} or {ref_path.name} is absent")
    ref = np.array(json.loads(ref_path.read_text()))[..., :2]  # (325, 21, 2) px
    tracker = HandTracker(max_hands=1, workers=2)
    info = video.probe(path)
    # the capture's path: the clip split into segments, each decoding its own frames
    out = [r.hands for part, _ in tracker.track_clip(info, 0, None, 1, info.frame_count, 32) for r in part]
    assert len(out) == len(ref)
    found = [i for i, o in enumerate(out) if o]
    assert len(found) >= 0.98 * len(ref)
    # MediaPipe's pixel convention is the engine's + 0.5 (pixel centres; see tracking._observation)
    err = np.array([np.linalg.norm(out[i][0].keypoints_uvd[:, :2] + 0.5 - ref[i], axis=-1) for i in found])
    assert np.median(err) <= 3.0, np.median(err)
    assert np.median(err) < 1.0  # measured 0.1-0.3 px: MediaPipe's own networks, run by OpenVINO


def test_openvino_sends_no_telemetry():
    """openvino's import would send a usage event (from a forked process) unless the user opted out: the
    engine loads it with its telemetry stub instead. A fresh process, so that openvino is imported here."""
    import subprocess
    import sys

    code = ("import multiprocessing.popen_fork as pf, sys\n"
            "forks = []\n"
            "pf.Popen._launch = lambda self, p: forks.append(p)\n"
            "import numpy as np\n"
            "from engine.hand_module import runtimes\n"
            "runtimes.load_networks('openvino').palm(np.zeros((1, 192, 192, 3), np.uint8))\n"
            "import openvino.tools.ovc.telemetry_utils as tu\n"
            "print(len(forks), tu.tm.__name__, sys.modules.get('openvino_telemetry'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "openvino.tools.ovc.telemetry_stub", "None"]
