"""`python -m engine capture`: footage in, capture result (.npz, DESIGN.md) out.

    frames (engine.video, streamed in batches)
      -> HandTracker.process_batch: per frame, per hand: 2D keypoints (u, v, d), confidences, side
      -> hand tracks: the tracker's track ids, given a side by majority vote, assigned to result tracks
         (one per side with --hands 2, the dominant side with --hands 1); frames where a hand is absent
         stay invalid (NaN), never filled with made-up poses
      -> per track: hand_module.fit_init (lifting + IKNet + shape) on its valid frames
      -> tailor.fit over chunks of consecutive frames (fixed chunk size: one JIT compile; gaps are
         marked invalid inside the chunk so the temporal term never bridges them)
      -> result file, written atomically; optional overlay video (the fitted mesh over the footage)

Memory stays flat in the clip length: frames are decoded, tracked and dropped batch by batch; only the
per-frame keypoints (a few hundred bytes a frame) are kept for the fit. The overlay decodes the footage a
second time.

`run_capture(options, progress=..., should_stop=...)` is what the engine server runs in a job process;
`main(argv, prog)` is the CLI with a progress bar (ETA) on stderr. Ctrl-C stops cleanly: nothing is
written (results are written atomically at the end; the overlay goes to a temp file first).

Intrinsics with distortion: the keypoints are undistorted before the fit and stored undistorted, so that
`K @ joints_3d` lands on the stored `keypoints_2d` in every mode.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable

import numpy as np

from engine.errors import Cancelled, InputError, NoHandError
from engine import results as results_io
from engine import video

log = logging.getLogger("engine.capture")

ProgressFn = Callable[[int, int, str], None]
StopFn = Callable[[], bool]

DEFAULT_ITERATIONS = 20
DEFAULT_SMOOTHING = 10.0  # tailor temporal_weight; with DEPTH_SIGMA it halves the jitter on the sample clip, same reprojection
DEFAULT_BATCH_SIZE = 32
# One torch thread: the networks run one crop at a time, and the second core decodes ahead (video.prefetch).
# Measured on the shared 2-core CPU (tracker alone, ms/frame): 1 thread 40, 2 threads 54 with
# OMP_WAIT_POLICY=PASSIVE (engine/__init__.py), 930 with OpenMP's default spin-waiting.
DEFAULT_TORCH_THREADS = 1
FIT_CHUNK = 64  # frames per tailor call (fixed: padded, so the JIT compiles once)
DEPTH_SIGMA = 2.0  # frames: Gaussian smoothing of the hand's depth when the temporal term is on
FIT_OVERLAP = 4  # frames shared between neighbouring chunks (the temporal term sees across the seam)
STAGES = ("decode", "detect", "keypoints", "lift_ik", "tailor", "write", "overlay")


@dataclasses.dataclass
class CaptureOptions:
    source: str
    output: str
    frame_start: int | None = None
    frame_end: int | None = None  # inclusive
    stride: int = 1
    hands: int = 1
    intrinsics: tuple[float, ...] | None = None  # fx, fy, cx, cy[, k1, k2, p1, p2, k3]
    hand_model: str | None = None
    iterations: int = DEFAULT_ITERATIONS
    smoothing: float = DEFAULT_SMOOTHING
    steady_shape: bool = False
    mirrored: bool = False
    overlay: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    threads: int | None = DEFAULT_TORCH_THREADS  # torch intra-op threads for the networks (None: torch's default)
    backbone: str = "mediapipe"  # keypoint network: "mediapipe" | "hourglass" (engine.hand_module.tracking)
    hourglass_weights: str | None = None  # hourglass.safetensors (needed by backbone "hourglass")
    runtime: str | None = None  # network runtime (engine.hand_module.runtimes; None: the fastest for the device)
    workers: int | None = None  # concurrent tracking segments (None: one per core, at most 2)

    def __post_init__(self):
        self.iterations = DEFAULT_ITERATIONS if self.iterations is None else int(self.iterations)
        self.smoothing = DEFAULT_SMOOTHING if self.smoothing is None else float(self.smoothing)
        self.batch_size = DEFAULT_BATCH_SIZE if self.batch_size is None else int(self.batch_size)
        self.stride = 1 if self.stride is None else int(self.stride)
        if self.hands not in (1, 2):
            raise InputError(f"--hands must be 1 or 2 (got {self.hands}).")
        if self.iterations < 0:
            raise InputError(f"iterations must be >= 0 (got {self.iterations}).")
        if not (math.isfinite(self.smoothing) and self.smoothing >= 0):
            raise InputError(f"smoothing must be a number >= 0 (got {self.smoothing}); 0 switches the temporal term off.")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1 (got {self.batch_size}).")
        if self.stride < 1:
            raise InputError(f"stride must be >= 1 (got {self.stride}).")
        if self.intrinsics is not None:
            k = tuple(float(v) for v in self.intrinsics)
            if len(k) not in (4, 9) or not all(math.isfinite(v) for v in k):
                raise InputError("intrinsics must be fx,fy,cx,cy or fx,fy,cx,cy,k1,k2,p1,p2,k3 (finite numbers).")
            if k[0] <= 0 or k[1] <= 0:
                raise InputError(f"intrinsics: focal lengths must be positive (got fx={k[0]}, fy={k[1]}).")
            self.intrinsics = k
        self.backbone = "mediapipe" if self.backbone is None else str(self.backbone)
        from engine.hand_module.tracking import check_backbone

        check_backbone(self.backbone, self.hourglass_weights)  # before any footage is read
        from engine.hand_module.runtimes import check_runtime

        self.runtime = check_runtime(self.runtime, self.device)
        self.workers = default_workers() if self.workers is None else int(self.workers)
        if self.workers < 1:
            raise InputError(f"workers must be >= 1 (got {self.workers}).")

    @classmethod
    def from_protocol(cls, args: dict) -> "CaptureOptions":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in args.items() if k in fields})

    @property
    def camera_model(self) -> str:
        return "weak_perspective" if self.intrinsics is None else "perspective"


# ---------------------------------------------------------------------------------------------- timing


class StageTimer:
    """Accumulates wall time per stage (seconds)."""

    def __init__(self):
        self.seconds = {s: 0.0 for s in STAGES}
        self.calls: dict[str, list[float]] = {}

    def add(self, stage: str, dt: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + dt

    def time(self, stage: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.add(stage, time.perf_counter() - self.t0)

        return _Ctx()


# ---------------------------------------------------------------------------------------- observations


@dataclasses.dataclass
class Observations:
    """What the tracker saw, per footage frame: frame_index (N,), decoded (N,), per track id the frames."""

    frame_index: np.ndarray
    decoded: np.ndarray
    errors: dict  # footage frame index -> reason
    tracks: dict  # tracker track id -> {"n": [positions], "obs": [HandObservation]}

    @property
    def n_frames(self) -> int:
        return int(self.frame_index.shape[0])


def collect_observations(info, options: CaptureOptions, tracker, progress: ProgressFn, should_stop: StopFn, timer: StageTimer, total: int) -> Observations:
    """Streams the footage through the tracker batch by batch; keeps only the observations."""
    frame_index: list[int] = []
    decoded: list[bool] = []
    errors: dict[int, str] = {}
    tracks: dict[int, dict] = {}
    expected = max(total, 1)
    batches = video.prefetch(video.iter_batches(info, options.batch_size, options.frame_start, options.frame_end, options.stride))
    try:
        _track_batches(batches, tracker, frame_index, decoded, errors, tracks, progress, should_stop, timer, expected)
    finally:
        batches.close()
    if not frame_index:
        raise InputError(f"the frame range selects no frames of {info.source!r} ({info.frame_count} frames).")
    if errors:
        shown = ", ".join(str(i) for i in sorted(errors)[:20]) + (" ..." if len(errors) > 20 else "")
        log.warning("%d frame(s) could not be decoded and are marked invalid: %s", len(errors), shown)
    return Observations(np.asarray(frame_index, np.int64), np.asarray(decoded, bool), errors, tracks)


def _track_batches(batches, tracker, frame_index, decoded, errors, tracks, progress, should_stop, timer, expected) -> None:
    """The tracking loop of collect_observations (fills the lists and dicts it is given)."""
    while True:
        if should_stop():
            raise Cancelled("capture cancelled")
        t0 = time.perf_counter()
        batch = next(batches, None)
        timer.add("decode", time.perf_counter() - t0)
        if batch is None:
            break
        good = [f for f in batch if f.ok]
        t0 = time.perf_counter()
        per_frame = tracker.process_batch([f.image for f in good]) if good else []
        dt = time.perf_counter() - t0
        split = _tracker_split(tracker, dt)
        timer.add("detect", split[0])
        timer.add("keypoints", split[1])
        it = iter(per_frame)
        for f in batch:
            n = len(frame_index)
            frame_index.append(f.index)
            decoded.append(f.ok)
            if not f.ok:
                errors[f.index] = f.error or "cannot be decoded"
                continue
            for obs in next(it):
                tr = tracks.setdefault(int(obs.track_id), {"n": [], "obs": []})
                tr["n"].append(n)
                tr["obs"].append(obs)
        del batch, good, per_frame
        done = len(frame_index)
        progress(done, max(expected, done), f"tracking hands: frame {done}/{max(expected, done)}")


def _tracker_split(tracker, dt: float) -> tuple[float, float]:
    """(detect, keypoints) seconds of the last process_batch call, from the tracker's own timings if any."""
    t = getattr(tracker, "last_timings", None)
    if isinstance(t, dict) and "detect" in t and "keypoints" in t:
        return float(t["detect"]), float(t["keypoints"])
    return 0.0, dt


# ----------------------------------------------------------------------------------------------- tracks


@dataclasses.dataclass
class HandTrack:
    side: str
    positions: np.ndarray  # (M,) frame positions (0..N-1) with an observation, increasing
    obs: list  # M HandObservation


def assign_tracks(observations: Observations, hands: int) -> list[HandTrack]:
    """Turns tracker tracks into result tracks with a stable side (see the module docstring).

    A tracker track's side is the presence- and score-weighted majority of its per-frame handedness, so
    a hand keeps its identity through crossings and brief handedness flips. Result tracks: one per side
    (right first) with hands=2; the side seen most with hands=1. Within a side, when two tracker tracks
    claim the same frame, the more present one wins (with hands=2 the other goes to the free side).
    """
    stats = []
    for tid, tr in observations.tracks.items():
        vote = 0.0
        weight = 0.0
        for o in tr["obs"]:
            w = float(getattr(o, "presence", 1.0) or 0.0)
            s = float(getattr(o, "side_score", 1.0) or 0.5)
            vote += w * s * (1.0 if o.side == "right" else -1.0)
            weight += w
        stats.append((tid, "right" if vote >= 0 else "left", weight, tr))
    if not stats:
        return []
    stats.sort(key=lambda t: -t[2])
    slots: dict[str, dict[int, Any]] = {"right": {}, "left": {}}
    for tid, side, _, tr in stats:
        other = "left" if side == "right" else "right"
        clash = sum(1 for n in tr["n"] if n in slots[side])
        if hands == 2 and clash > len(tr["n"]) // 2 and not any(n in slots[other] for n in tr["n"]):
            side = other
        for n, o in zip(tr["n"], tr["obs"]):
            cur = slots[side].get(n)
            if cur is None or float(o.presence) > float(cur.presence):
                slots[side][n] = o
    weight = {s: sum(float(o.presence) for o in slots[s].values()) for s in slots}
    if hands == 1:
        sides = [max(("right", "left"), key=lambda s: (weight[s], s == "right"))]
    else:
        sides = [s for s in ("right", "left") if slots[s]]
    out = []
    for s in sides:
        if not slots[s]:
            continue
        pos = np.array(sorted(slots[s]), np.int64)
        out.append(HandTrack(s, pos, [slots[s][int(n)] for n in pos]))
    return out


# -------------------------------------------------------------------------------------------------- fit


def camera_from_options(options: CaptureOptions, image_size: tuple[int, int]):
    """(camera_model, K (3,3), distortion (5,)) for the options and the upright image size."""
    from engine import camera

    if options.intrinsics is None:
        return "weak_perspective", camera.nominal_K(image_size), np.zeros(5)
    k = options.intrinsics
    K = np.array([[k[0], 0.0, k[2]], [0.0, k[1], k[3]], [0.0, 0.0, 1.0]])
    dist = np.asarray(k[4:9], np.float64) if len(k) == 9 else np.zeros(5)
    return "perspective", K, dist


def track_arrays(track: HandTrack, K: np.ndarray, dist: np.ndarray) -> dict[str, np.ndarray]:
    """Stacks a track's observations: keypoints_uvd (M,21,3), confidence (M,21), world_landmarks (M,21,3)."""
    uvd = np.stack([np.asarray(o.keypoints_uvd, np.float64) for o in track.obs])
    conf = np.stack([np.asarray(o.confidence, np.float64) for o in track.obs])
    world = np.stack([np.asarray(o.world_landmarks, np.float64) for o in track.obs])
    if np.any(dist != 0):
        from engine import camera

        uvd = uvd.copy()
        uvd[..., :2] = camera.undistort_points(uvd[..., :2], K, dist)
    return {"keypoints_uvd": uvd, "confidence": conf, "world_landmarks": world}


def chunk_windows(n: int, chunk: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Windows over n frames: (start, stop, keep_from, keep_to) with stop - start <= chunk.

    Neighbouring windows share `overlap` frames; each frame is kept from exactly one window.
    """
    if n <= chunk:
        return [(0, n, 0, n)]
    out = []
    keep_from = 0
    while keep_from < n:
        start = max(0, keep_from - overlap)
        stop = min(n, start + chunk)
        keep_to = n if stop == n else stop - overlap
        out.append((start, stop, keep_from, keep_to))
        keep_from = keep_to
    return out


def enable_compilation_cache() -> None:
    """Keeps the tailor's XLA executables on disk between runs (the first capture of a session otherwise
    spends tens of seconds compiling on a small CPU). $JAX_COMPILATION_CACHE_DIR wins; else
    $XDG_CACHE_HOME/handtailor/jax (~/.cache/handtailor/jax). Silently skipped where not possible."""
    try:
        import jax

        if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
            return
        base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
        path = base / "handtailor" / "jax"
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
    except Exception as exc:  # noqa: BLE001 - a cache is an optimization only
        log.debug("no JAX compilation cache: %s", exc)


def _tailor():
    """(TailorConfig, fit) of engine.tailor."""
    enable_compilation_cache()
    try:
        from engine.tailor import TailorConfig, fit
    except ImportError:
        from engine.tailor.optimize import TailorConfig, fit
    return TailorConfig, fit


def fit_init(arrays: dict, model, camera_model: str, K: np.ndarray, steady_shape: bool) -> dict:
    """The hand module's initialization for one track's observed frames (lifting + IKNet + shape)."""
    from engine.hand_module import hand_module

    return hand_module.fit_init(
        arrays["keypoints_uvd"], arrays["confidence"], arrays["world_landmarks"],
        camera=camera_model, K=K, model=model, steady_shape=steady_shape,
    )


def fit_track(track: HandTrack, n_frames: int, model, options: CaptureOptions, K: np.ndarray, dist: np.ndarray,
              timer: StageTimer, progress: ProgressFn, should_stop: StopFn, temporal: bool = True) -> dict[str, np.ndarray]:
    """Fits one track over the clip's timeline of n_frames; returns per-frame arrays (NaN where invalid).

    The tailor runs on fixed-size windows of consecutive frames (FIT_CHUNK, padded: one JIT compile),
    overlapping by FIT_OVERLAP so the temporal term sees across seams; frames without an observation are
    invalid rows inside a window (the temporal term only couples triples of valid frames).
    """
    TailorConfig, _ = _tailor()
    arrays = track_arrays(track, K, dist)
    camera_model = options.camera_model
    with timer.time("lift_ik"):
        init = fit_init(arrays, model, camera_model, K, options.steady_shape)
    pos = track.positions
    first, last = int(pos[0]), int(pos[-1])
    L = last - first + 1
    rel = pos - first
    valid_line = np.zeros(L, bool)
    valid_line[rel] = True

    def line(a, fill=np.nan):
        a = np.asarray(a, np.float64)
        out = np.full((L,) + a.shape[1:], fill, np.float64)
        out[rel] = a
        return out

    theta0 = line(init["theta"])
    beta0 = line(init["beta"])
    root0 = line(init["root"])
    hs0 = line(init.get("hand_scale", np.ones(len(pos))))
    ps0 = line(init.get("projection_scale", np.full(len(pos), np.nan)))
    if temporal and options.smoothing > 0 and DEPTH_SIGMA > 0:
        # The tailor keeps the depth it is given (weak perspective: f / projection_scale; perspective: the
        # lifted root's z): smooth it over time (zero phase, no lag), the per-frame size goes to hand_scale.
        if camera_model == "weak_perspective":
            ps0 = np.exp(smooth_series(np.log(ps0), valid_line, DEPTH_SIGMA))
        else:
            root0[:, 2] = np.exp(smooth_series(np.log(root0[:, 2]), valid_line, DEPTH_SIGMA))
    kp2d = line(arrays["keypoints_uvd"][..., :2])
    conf = line(arrays["confidence"], 0.0)
    weight = float(options.smoothing) if temporal else 0.0
    config = TailorConfig(iterations=options.iterations, camera_model=camera_model, temporal_weight=weight)
    fit = fit_windows(model, dict(theta=theta0, beta=beta0, root=root0, hand_scale=hs0, projection_scale=ps0,
                                  keypoints_2d=kp2d, confidence=conf, valid=valid_line), K, config, None,
                      timer, should_stop, lambda d, t: progress(d, t, f"fitting the {track.side} hand: frame {d}/{t}"))
    out = {
        "theta": np.full((n_frames, 16, 4), np.nan),
        "beta": np.full((n_frames, 10), np.nan),
        "root": np.full((n_frames, 3), np.nan),
        "hand_scale": np.full((n_frames,), np.nan),
        "projection_scale": np.full((n_frames,), np.nan),
        "joints_3d": np.full((n_frames, 21, 3), np.nan),
        "keypoints_2d": np.full((n_frames, 21, 2), np.nan),
        "confidence": np.zeros((n_frames, 21)),
        "valid": np.zeros(n_frames, bool),
    }
    fitted = fit["fitted"] & valid_line
    tl = np.flatnonzero(fitted) + first  # positions on the clip's timeline
    for key in ("theta", "beta", "root", "hand_scale", "joints_3d"):
        out[key][tl] = fit[key][fitted]
    if camera_model == "weak_perspective":
        out["projection_scale"][tl] = fit["projection_scale"][fitted]
    out["valid"][tl] = True
    out["keypoints_2d"][pos] = arrays["keypoints_uvd"][..., :2]
    out["confidence"][pos] = arrays["confidence"]
    bad = out["valid"] & ~(np.isfinite(out["theta"]).all(axis=(1, 2)) & np.isfinite(out["joints_3d"]).all(axis=(1, 2)))
    if bad.any():
        log.warning("%d frame(s) of the %s hand have no finite fit: marked invalid", int(bad.sum()), track.side)
    lost = valid_line.sum() - out["valid"].sum()
    if lost > 0:
        log.warning("%d observed frame(s) of the %s hand could not be fitted: marked invalid", int(lost), track.side)
    out["valid"] &= ~bad
    for key in ("theta", "beta", "root", "hand_scale", "projection_scale", "joints_3d"):
        out[key][~out["valid"]] = np.nan
    return out


def smooth_series(x: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing of x (L,) over runs of consecutive valid, finite frames (no lag; never
    across a gap). Invalid entries come back unchanged."""
    x = np.asarray(x, np.float64)
    out = x.copy()
    ok = np.asarray(valid, bool) & np.isfinite(x)
    if sigma <= 0 or not ok.any():
        return out
    r = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):
        seg = x[a:b]
        num = np.convolve(seg, kernel, mode="full")[r : r + len(seg)]
        den = np.convolve(np.ones_like(seg), kernel, mode="full")[r : r + len(seg)]
        out[a:b] = num / den
    return out


def fit_windows(model, arrays: dict, K: np.ndarray, config, locks: dict | None, timer: StageTimer,
                should_stop: StopFn, progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """tailor.fit over a timeline of L consecutive frames, in fixed-size overlapping windows.

    arrays: theta (L,16,4), beta (L,10), root (L,3), hand_scale (L,), projection_scale (L,),
    keypoints_2d (L,21,2), confidence (L,21), valid (L,) (invalid rows may hold NaN); locks: None or
    lock_theta (L,16), lock_beta/lock_root/lock_hand_scale (L,). Returns float64 theta, beta, root,
    hand_scale, projection_scale, joints_3d (L, ...) and fitted (L,) bool; rows not fitted hold the inputs.
    """
    _, tailor_fit = _tailor()
    L = int(np.asarray(arrays["valid"]).shape[0])
    temporal = float(getattr(config, "temporal_weight", 0.0)) > 0
    chunk_len = FIT_CHUNK if L > FIT_CHUNK or temporal else _bucket(L)
    out = {k: np.array(arrays[k], np.float64) for k in ("theta", "beta", "root", "hand_scale", "projection_scale")}
    out["joints_3d"] = np.full((L, 21, 3), np.nan)
    out["fitted"] = np.zeros(L, bool)
    valid = np.asarray(arrays["valid"], bool)
    for start, stop, keep_from, keep_to in chunk_windows(L, chunk_len, FIT_OVERLAP):
        if should_stop():
            raise Cancelled("cancelled")
        if not valid[start:stop].any():
            continue
        pad = chunk_len - (stop - start)
        c = {k: _pad(np.asarray(v)[start:stop], pad) for k, v in arrays.items()}
        lk = None if locks is None else {k: _pad(np.asarray(v)[start:stop], pad) for k, v in locks.items()}
        t0 = time.perf_counter()
        fit = tailor_fit(model, c["theta"], c["beta"], c["root"], c["keypoints_2d"], c["confidence"], c["valid"],
                         K, lk, config, hand_scale0=c["hand_scale"], projection_scale0=c["projection_scale"])
        dt = time.perf_counter() - t0
        timer.add("tailor", dt)
        timer.calls.setdefault("tailor", []).append(dt)
        a, b = keep_from - start, keep_to - start
        fitted = np.asarray(fit["fitted"], bool)[a:b] & valid[keep_from:keep_to]
        rows = np.arange(keep_from, keep_to)[fitted]
        for key in ("theta", "beta", "root", "hand_scale", "joints_3d"):
            out[key][rows] = np.asarray(fit[key])[a:b][fitted]
        if fit.get("projection_scale") is not None:
            out["projection_scale"][rows] = np.asarray(fit["projection_scale"], np.float64)[a:b][fitted]
        out["fitted"][rows] = True
        if progress is not None:
            progress(keep_to, L)
    return out


def _bucket(n: int) -> int:
    """Pads short tracks to a few fixed sizes so the JIT compiles a handful of shapes at most."""
    for b in (8, 16, 32):
        if n <= b:
            return b
    return FIT_CHUNK


def _pad(a: np.ndarray, pad: int) -> np.ndarray:
    if pad <= 0:
        return a
    return np.concatenate([a, np.repeat(a[-1:], pad, axis=0) if a.dtype != bool else np.zeros((pad,) + a.shape[1:], bool)])


# ---------------------------------------------------------------------------------------------- capture


def _noop_progress(done: int, total: int, message: str = "") -> None:
    pass


def _never() -> bool:
    return False


def load_models(options: CaptureOptions, sides) -> dict:
    from engine.hand_model import load_hand_model

    return {s: load_hand_model(options.hand_model, side=s) for s in sides}


def check_hand_model(options: CaptureOptions):
    """Loads a hand model before any footage is processed, so a bad --hand-model fails fast.

    Either side will do (a MANO folder may hold only one); returns the model, raises the right side's
    ModelFileError when neither loads."""
    from engine.errors import ModelFileError
    from engine.hand_model import load_hand_model

    try:
        return load_hand_model(options.hand_model, side="right")
    except ModelFileError as first:
        try:
            return load_hand_model(options.hand_model, side="left")
        except ModelFileError:
            raise first from None


class TimedTracker:
    """Wraps a HandTracker: times its palm detector apart from the rest (`last_timings` after each batch)."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.last_timings: dict | None = None
        self._detect_s = 0.0
        palm = getattr(tracker, "palm", None)
        if palm is not None and callable(getattr(palm, "detect", None)):
            inner = palm.detect

            def timed_detect(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return inner(*args, **kwargs)
                finally:
                    self._detect_s += time.perf_counter() - t0

            palm.detect = timed_detect

    def process_batch(self, frames):
        self._detect_s = 0.0
        t0 = time.perf_counter()
        out = self.tracker.process_batch(frames)
        dt = time.perf_counter() - t0
        self.last_timings = {"detect": self._detect_s, "keypoints": max(0.0, dt - self._detect_s)}
        return out

    def reset(self) -> None:
        self.tracker.reset()


def default_workers() -> int:
    """Concurrent tracking segments: one per core, at most 2 (measured on 2 cores; see engine.hand_module.segments)."""
    return max(1, min(2, os.cpu_count() or 1))


def make_tracker(options: CaptureOptions):
    import torch

    from engine.hand_module.tracking import HandTracker

    if options.threads:
        torch.set_num_threads(int(options.threads))

    K = None
    if options.intrinsics is not None:  # the hourglass lifts with K (Eq. 5); MediaPipe ignores it
        fx, fy, cx, cy = options.intrinsics[:4]
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return TimedTracker(HandTracker(max_hands=options.hands, mirrored=options.mirrored, device=options.device,
                                    backbone=options.backbone, hourglass_weights=options.hourglass_weights, K=K,
                                    runtime=options.runtime, workers=options.workers))


def run_capture(options: CaptureOptions, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                tracker=None, stats: dict | None = None, temporal: bool = True) -> dict:
    """Captures `options.source` into `options.output`; returns the protocol's capture result dict.

    progress(done, total, message) is called as work proceeds; should_stop() is polled between batches
    (True raises Cancelled). `tracker` overrides the HandTracker (tests); `stats` receives stage timings
    and counts (benchmark). Raises EngineError subclasses for everything a user can fix.
    """
    progress = progress or _noop_progress
    should_stop = should_stop or _never
    timer = StageTimer()
    t_start = time.perf_counter()
    out_path = results_io.check_output_path(options.output)
    overlay_path = None
    if options.overlay:
        overlay_path = results_io.check_output_path(options.overlay, suffix=pathlib.Path(options.overlay).suffix.lower() or ".mp4")
        if pathlib.Path(overlay_path).suffix.lower() not in (".mp4", ".mov", ".avi", ".mkv"):
            raise results_io.OutputError(f"overlay {str(overlay_path)!r} must be a video file name (.mp4).")
        if overlay_path == out_path:
            raise results_io.OutputError("the overlay and the result must be different files.")
    with timer.time("decode"):
        info = video.probe(options.source)
    camera_model, K, dist = camera_from_options(options, (info.width, info.height))
    expected = video.expected_frames(info, options.frame_start, options.frame_end, options.stride)
    log.info("capturing %s: %dx%d, %.3g fps, %d frames selected, camera %s", info.source, info.width, info.height,
             info.fps, expected, camera_model)
    check_hand_model(options)
    if tracker is None:
        tracker = make_tracker(options)
    n_phases = 2 + (1 if overlay_path else 0)
    total = max(expected, 1) * n_phases
    obs = collect_observations(info, options, tracker, lambda d, t, m: progress(d, total, m), should_stop, timer, expected)
    N = obs.n_frames
    total = N * n_phases
    tracks = assign_tracks(obs, options.hands)
    if not tracks:
        if not obs.decoded.any():
            raise InputError(f"none of the {N} frames of {info.source!r} could be decoded; the footage is damaged. Re-export it.")
        raise NoHandError(
            f"no hand found in {N} frames of {info.source!r}. Check that a hand is clearly visible "
            "(not tiny, not cut off, lit), or choose another frame range."
        )
    models = load_models(options, sorted({t.side for t in tracks}))
    fits = []
    for i, track in enumerate(tracks):
        base = N + (N * i) // len(tracks)
        fits.append(fit_track(track, N, models[track.side], options, K, dist, timer,
                              lambda d, t, m, base=base: progress(base + (N * d) // max(t * len(tracks), 1), total, m),
                              should_stop, temporal=temporal))
    K_used = K
    from engine import __version__

    model0 = models[tracks[0].side]
    result = {
        "format_version": np.asarray(results_io.FORMAT_VERSION),
        "engine_version": np.asarray(__version__),
        "source": np.asarray(str(pathlib.Path(info.source).absolute())),
        "image_size": np.asarray([info.width, info.height]),
        "fps": np.asarray(info.fps),
        "frame_index": obs.frame_index,
        "frame_decoded": obs.decoded,
        "camera_model": np.asarray(camera_model),
        "K": np.asarray(K_used, np.float64),
        "distortion": np.asarray(dist, np.float64),
        "hand_model": np.asarray(str(getattr(model0, "path", "") or getattr(model0, "name", ""))),
        "hand_model_sha256": np.asarray(str(getattr(model0, "sha256", ""))),
        "hand_side": np.asarray([t.side for t in tracks]),
        "tailor_iterations": np.asarray(options.iterations),
        "tailor_smoothing": np.asarray(options.smoothing if temporal else 0.0),
        "steady_shape": np.asarray(bool(options.steady_shape)),
    }
    for key in ("valid", "theta", "beta", "root", "hand_scale", "projection_scale", "keypoints_2d", "confidence", "joints_3d"):
        result[key] = np.stack([f[key] for f in fits])
    if should_stop():
        raise Cancelled("capture cancelled")
    with timer.time("write"):
        written = results_io.write_result(out_path, result)
    overlay_written = None
    if overlay_path:
        from engine import overlay

        t0 = time.perf_counter()
        overlay_written = overlay.write_overlay(
            overlay_path, result, models, info=info, batch_size=options.batch_size, should_stop=should_stop,
            progress=lambda d, t, m: progress(2 * N + d, total, m))
        timer.add("overlay", time.perf_counter() - t0)
    progress(total, total, "done")
    valid_frames = [int(v.sum()) for v in result["valid"]]
    if stats is not None:
        stats.update(
            frames=N,
            valid_frames=valid_frames,
            seconds_total=time.perf_counter() - t_start,
            stages_s=dict(timer.seconds),
            calls_s={k: list(v) for k, v in timer.calls.items()},
            result=result,
            image_size=(info.width, info.height),
        )
    log.info("wrote %s (%d frames, valid per track: %s)", written, N, valid_frames)
    return {
        "files": {"result": str(written), "overlay": str(overlay_written) if overlay_written else None},
        "frames": N,
        "valid_frames": valid_frames,
        "hand_side": [t.side for t in tracks],
        "corrupt_frames": sorted(int(i) for i in obs.errors),
    }


# ------------------------------------------------------------------------------------------------- CLI


class ProgressBar:
    """A one-line progress bar with ETA on stderr (plain log lines every few seconds when not a tty)."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width
        self.t0 = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if now - self.last < (0.1 if self.tty else 5.0) and done < total:
            return
        self.last = now
        frac = min(1.0, done / total) if total > 0 else 0.0
        elapsed = now - self.t0
        eta = (elapsed / frac - elapsed) if frac > 0.01 else float("nan")
        eta_s = "--:--" if not math.isfinite(eta) else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
        bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
        line = f"[{bar}] {frac * 100:5.1f}% ETA {eta_s}  {message}"
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120))
            self.shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def parse_frames(text: str | None) -> tuple[int | None, int | None]:
    """'A:B' (inclusive, either side may be empty) -> (A, B)."""
    if not text:
        return None, None
    if ":" not in text:
        raise InputError(f"--frames must look like A:B (inclusive), e.g. 0:99 or 50: (got {text!r}).")
    a, b = text.split(":", 1)
    try:
        return (int(a) if a.strip() else None), (int(b) if b.strip() else None)
    except ValueError:
        raise InputError(f"--frames must look like A:B with whole numbers (got {text!r}).") from None


def parse_intrinsics(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--intrinsics must be comma-separated numbers fx,fy,cx,cy[,k1,k2,p1,p2,k3] (got {text!r}).") from None
    if len(vals) not in (4, 9):
        raise InputError(f"--intrinsics needs 4 or 9 numbers (got {len(vals)}).")
    return vals


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Capture hand motion from footage into a result file (.npz).")
    p.add_argument("source", help="video file (any codec OpenCV reads) or a folder of images (sorted by name)")
    p.add_argument("-o", "--output", required=True, help="result file to write (.npz)")
    p.add_argument("--frames", help="frame range A:B, 0-based, inclusive (default: all)")
    p.add_argument("--stride", type=int, default=1, help="use every Nth frame (default 1)")
    p.add_argument("--hands", type=int, choices=(1, 2), default=1, help="hands to capture (default 1)")
    p.add_argument("--intrinsics", help="fx,fy,cx,cy[,k1,k2,p1,p2,k3] in pixels: perspective camera (default: weak perspective)")
    p.add_argument("--hand-model", help="hand model file or MANO folder (default: the shipped open hand model)")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help=f"tailor iterations (default {DEFAULT_ITERATIONS})")
    p.add_argument("--smoothing", type=float, default=DEFAULT_SMOOTHING, help=f"temporal smoothing weight, 0 = off (default {DEFAULT_SMOOTHING})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"frames decoded and tracked per batch (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--steady-shape", action="store_true", help="one hand shape for the whole clip")
    p.add_argument("--mirrored", action="store_true", help="the footage is mirrored (selfie camera)")
    p.add_argument("--overlay", help="also write a video of the fitted mesh over the footage (.mp4)")
    p.add_argument("--threads", type=int, default=DEFAULT_TORCH_THREADS,
                   help=f"torch threads for the networks (default {DEFAULT_TORCH_THREADS}; 0 = torch's default)")
    p.add_argument("--backbone", choices=["mediapipe", "hourglass"], default="mediapipe",
                   help="keypoint network (default mediapipe; hourglass needs --hourglass-weights)")
    p.add_argument("--hourglass-weights", metavar="FILE", default=None,
                   help="hourglass.safetensors written by `python -m engine train run` (for --backbone hourglass)")
    p.add_argument("--runtime", choices=["openvino", "litert", "torch"], default=None,
                   help="network runtime (default: openvino on CPU, torch on other devices)")
    p.add_argument("--workers", type=int, default=None,
                   help="frames tracked as this many concurrent segments (default: one per core, at most 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def options_from_args(args: argparse.Namespace) -> CaptureOptions:
    start, end = parse_frames(args.frames)
    return CaptureOptions(
        source=args.source, output=args.output, frame_start=start, frame_end=end, stride=args.stride,
        hands=args.hands, intrinsics=parse_intrinsics(args.intrinsics), hand_model=args.hand_model,
        iterations=args.iterations, smoothing=args.smoothing, steady_shape=args.steady_shape,
        mirrored=args.mirrored, overlay=args.overlay, batch_size=args.batch_size, threads=args.threads or None,
        backbone=args.backbone, hourglass_weights=args.hourglass_weights, runtime=args.runtime, workers=args.workers,
    )


def main(argv: list[str], prog: str = "python -m engine capture") -> int:
    args = build_parser(prog).parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    options = options_from_args(args)
    bar = ProgressBar()
    try:
        out = run_capture(options, progress=None if args.quiet else bar)
    finally:
        bar.close()
    print(f"{prog}: wrote {out['files']['result']} ({out['frames']} frames; valid per track: {out['valid_frames']})", file=sys.stderr)
    if out["files"]["overlay"]:
        print(f"{prog}: overlay video {out['files']['overlay']}", file=sys.stderr)
    if out["corrupt_frames"]:
        print(f"{prog}: {len(out['corrupt_frames'])} frame(s) could not be decoded and are marked invalid: "
              f"{out['corrupt_frames'][:20]}", file=sys.stderr)
    return 0
