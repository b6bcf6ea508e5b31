"""Hand tracks: what the tracker saw in the footage, and which result track each observation belongs to.

    frames (engine.video, streamed in batches)
      -> tracker.process_batch: per frame, per hand: 2D keypoints (u, v, d), confidences, side, track id
      -> `collect_observations`: per tracker track id, the frame positions and observations (nothing else
         of a frame is kept: memory stays flat in the clip length)
      -> `assign_tracks`: tracker tracks, given a side by majority vote, assigned to result tracks (one per
         side with hands=2, the dominant side with hands=1); frames where a hand is absent stay invalid
      -> `track_arrays`: one track's observations stacked (keypoints undistorted when the camera has
         distortion, so that `K @ joints_3d` lands on the stored keypoints in every mode)

The tracker reports its own stage timings (`tracker.last_timings = {"detect": s, "keypoints": s}` after each
`process_batch`); a tracker without them is timed as a whole, under "keypoints".
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import numpy as np

from engine import video
from engine.errors import Cancelled, InputError
from engine.prefetch import prefetch

log = logging.getLogger("engine.tracks")


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


def collect_observations(info, tracker, *, batch_size: int, frame_start=None, frame_end=None, stride: int = 1,
                         progress: Callable[[int, int, str], None], should_stop: Callable[[], bool], timer,
                         expected: int) -> Observations:
    """Streams the footage (`video.probe`'s info) through the tracker; keeps the observations. A tracker with
    concurrent segments decodes and tracks the whole range itself (`track_clip`: one palm pass and warm-up
    per segment and clip); otherwise batches go through `process_batch`, decoded one ahead in a thread.

    progress(done, total, message) after each batch; should_stop() between batches (True raises Cancelled);
    timer: an `engine.timing.StageTimer` (decode, detect, keypoints)."""
    obs = Observations(np.zeros(0, np.int64), np.zeros(0, bool), {}, {})
    frame_index: list[int] = []
    decoded: list[bool] = []
    if _tracks_whole_clip(tracker, expected):
        start, end, stride = video.resolve_range(info, frame_start, frame_end, stride)
        t0 = time.perf_counter()
        clip = tracker.track_clip(info, start, end, stride, expected, batch_size, should_stop=should_stop)
        try:
            for records, done in clip:
                for r in records:
                    _add_frame(r.index, r.ok, r.error, r.hands, frame_index, decoded, obs)
                progress(done, max(expected, done, 1), f"tracking hands: frame {done}/{max(expected, done, 1)}")
        finally:
            clip.close()  # a raising progress callback stops the segments too
            release_freed_memory()
        t = getattr(tracker, "last_timings", None) or {"keypoints": time.perf_counter() - t0}
        for stage, seconds in t.items():
            timer.add(stage, float(seconds))
    else:
        _collect_in_batches(info, tracker, batch_size, frame_start, frame_end, stride, progress, should_stop, timer,
                            expected, frame_index, decoded, obs)
    if not frame_index:
        raise InputError(f"the frame range selects no frames of {info.source!r} ({info.frame_count} frames).")
    if obs.errors:
        shown = ", ".join(str(i) for i in sorted(obs.errors)[:20]) + (" ..." if len(obs.errors) > 20 else "")
        log.warning("%d frame(s) could not be decoded and are marked invalid: %s", len(obs.errors), shown)
    obs.frame_index = np.asarray(frame_index, np.int64)
    obs.decoded = np.asarray(decoded, bool)
    return obs


def _tracks_whole_clip(tracker, expected: int) -> bool:
    """Whether the tracker decodes and tracks the clip itself in concurrent segments (`track_clip`): a
    video-mode tracker with segments, on a range of known length long enough to split."""
    from engine.hand_module import segments

    return (callable(getattr(tracker, "track_clip", None)) and not getattr(tracker, "static_images", True)
            and len(segments.split(expected, getattr(tracker, "workers", 1))) > 1)


def _collect_in_batches(info, tracker, batch_size, frame_start, frame_end, stride, progress, should_stop, timer,
                        expected, frame_index, decoded, obs) -> None:
    """Streams batches (decoded one ahead, in a thread) through tracker.process_batch."""
    planar = getattr(tracker, "planar_frames", False)  # a tracker that only crops frames takes them in YUV
    batches = prefetch(video.iter_batches(info, batch_size, frame_start, frame_end, stride, planar=planar))
    try:
        while True:
            if should_stop():
                raise Cancelled("capture cancelled")
            with timer.time("decode"):
                batch = next(batches, None)
            if batch is None:
                break
            _track_batch(batch, tracker, frame_index, decoded, obs, timer)
            done = len(frame_index)
            total = max(expected, done, 1)
            progress(done, total, f"tracking hands: frame {done}/{total}")
    finally:
        batches.close()
        release_freed_memory()


def release_freed_memory() -> None:
    """Hands the heap memory freed by the decoded frames back to the OS (glibc's malloc_trim; elsewhere a
    no-op). Frames freed by several threads stay in glibc's arenas otherwise, and the fit's JAX then adds
    on top: the capture's peak RSS varied 850-1110 MB on the sample clip, 845-850 with this."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        return
    if trim is not None:
        trim(0)


def _track_batch(batch, tracker, frame_index: list, decoded: list, obs: Observations, timer) -> None:
    """Runs the tracker on one batch's decoded frames; appends to the lists and `obs`."""
    good = [f for f in batch if f.ok]
    t0 = time.perf_counter()
    per_frame = tracker.process_batch([f.image for f in good]) if good else []
    dt = time.perf_counter() - t0
    t = getattr(tracker, "last_timings", None)
    if good and isinstance(t, dict) and "detect" in t and "keypoints" in t:
        timer.add("detect", float(t["detect"]))
        timer.add("keypoints", float(t["keypoints"]))
    else:
        timer.add("keypoints", dt)
    it = iter(per_frame)
    for f in batch:
        _add_frame(f.index, f.ok, f.error, next(it) if f.ok else [], frame_index, decoded, obs)


def _add_frame(index: int, ok: bool, error: str | None, hands: list, frame_index: list, decoded: list,
               obs: Observations) -> None:
    n = len(frame_index)
    frame_index.append(index)
    decoded.append(ok)
    if not ok:
        obs.errors[index] = error or "cannot be decoded"
        return
    for o in hands:
        tr = obs.tracks.setdefault(int(o.track_id), {"n": [], "obs": []})
        tr["n"].append(n)
        tr["obs"].append(o)


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
