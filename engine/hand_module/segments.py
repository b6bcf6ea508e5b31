"""Concurrent tracking segments: consecutive frames tracked as independent segments on several cores, then
joined into the tracks one sequential pass would have given.

Tracking is sequential (frame t's crop comes from frame t-1's landmarks), so one sequence keeps one core
busy. A later segment starts afresh WARMUP frames before its first frame: a palm detection (as MediaPipe
does whenever it has no hand) and then tracking, in another thread at the same time (the runtimes release
the GIL while a network runs). A crop from a palm detection differs from a tracked one (keypoints 2-11 px
apart on the sample clip's first frame, under 1.6 px after 3 frames, about the tracking noise after 5),
so the warm-up frames' observations only serve the join and are then dropped.

The join (`join`), in order, of each segment to the state the previous one ended in: on the last warm-up
frame (the previous segment's last frame) both saw the same hands when their counts agree and a one-to-one
matching (nearest mean keypoint distance) keeps every keypoint within JOIN_TOLERANCE_PX: then the
segment's tracks take the matched track ids (the side vote goes on from the previous track's, side and
side_score recomputed as one sequence would have) and hands that match none get fresh ids. Otherwise the
segment's first frames are tracked again in sequence from the previous state, one at a time, until they
agree with the segment's own result (usually after 1-2 frames, at worst the whole segment: then the output
is exactly one sequential pass). What remains different from one pass: sub-pixel differences where the
segments meet (within JOIN_TOLERANCE_PX), and a segment knows of no track lost before it (the widened-view
retry right after a loss).

`track_segments` does this within one batch (`HandTracker(workers=N)`): the first segment continues the
tracker's state; segment sizes balance the later segments' extra palm pass and warm-up.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

WARMUP = 4  # frames a later segment tracks before its first frame (their output only serves the join)
JOIN_TOLERANCE_PX = 1.0  # the largest keypoint difference at which two segments count as the same hand
MIN_SEGMENT = 8  # a segment must be at least this long to be split off (its palm pass and warm-up must pay)
PALM_COST = 1.3  # a palm detection's cost in landmark passes (to balance segment sizes)
_ID_BLOCK = 1 << 40  # a later segment's provisional track ids: k * _ID_BLOCK + n, renumbered by the join


@dataclasses.dataclass
class TrackState:
    """What video-mode tracking carries from frame to frame (one per segment)."""

    tracks: list  # tracking._Track, the hands to look for in the next frame
    frame_no: int = 0  # frames tracked since reset: the retry schedule's clock
    lost_at: float = -math.inf  # frame_no of the last frame that lost a track
    next_id: int = 0
    detect_s: float = 0.0  # seconds spent in palm detection


def split(n: int, workers: int) -> list[int]:
    """Start frames of up to `workers` segments of n frames (a single [0] when n is too small): later
    segments are shorter by their warm-up and palm pass, so that all take about as long."""
    k = max(1, min(int(workers), n // (MIN_SEGMENT + WARMUP)))
    if k == 1:
        return [0]
    extra = WARMUP + PALM_COST
    length = (n + (k - 1) * extra) / k  # the first segment's length; later ones: length - extra
    return [0] + [int(round(length + i * (length - extra))) for i in range(k - 1)]


def track_segments(tracker, frames: list) -> tuple[list, float, float]:
    """Tracks `frames` from tracker.state in up to tracker.workers concurrent segments (module docstring)
    -> (per frame observations, busy seconds summed over the segments, palm detection seconds)."""
    st = tracker.state
    st.detect_s = 0.0
    starts = split(len(frames), tracker.workers)
    stops = starts[1:] + [len(frames)]
    if len(starts) == 1:
        out, busy = _timed(tracker.track_frames, frames, st)
        return out, busy, st.detect_s
    if getattr(tracker, "_segment_pool", None) is None:
        tracker._segment_pool = ThreadPoolExecutor(tracker.workers - 1, thread_name_prefix="hand-segment")
    fresh = [TrackState([], frame_no=st.frame_no + a - WARMUP, next_id=k * _ID_BLOCK)
             for k, a in enumerate(starts) if k]
    futures = [tracker._segment_pool.submit(_timed, tracker.track_frames, frames[a - WARMUP : b], s)
               for a, b, s in zip(starts[1:], stops[1:], fresh)]
    results, busy = _timed(tracker.track_frames, frames[: stops[0]], st)
    detect = st.detect_s
    for a, b, seg, future in zip(starts[1:], stops[1:], fresh, futures):
        out, seconds = future.result()
        st.detect_s = 0.0
        t0 = time.perf_counter()
        joined, st = join(tracker, st, results[-1], frames[a:b], out, seg)
        busy += seconds + time.perf_counter() - t0
        detect += seg.detect_s + st.detect_s
        results += joined
    tracker.state = st
    return results, busy, detect


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def match(a: list, b: list) -> dict[int, int] | None:
    """Two observation lists of one frame -> {b track id: a track id} when they saw the same hands (same
    count, one-to-one nearest by mean keypoint distance, every keypoint within JOIN_TOLERANCE_PX), else None."""
    if len(a) != len(b):
        return None
    pairs = sorted((float(np.linalg.norm(oa.keypoints_uvd[:, :2] - ob.keypoints_uvd[:, :2], axis=-1).mean()), i, j)
                   for i, oa in enumerate(a) for j, ob in enumerate(b))
    used_a, used_b, out = set(), set(), {}
    for _, i, j in pairs:
        if i in used_a or j in used_b:
            continue
        diff = np.abs(a[i].keypoints_uvd[:, :2] - b[j].keypoints_uvd[:, :2]).max()
        if not diff <= JOIN_TOLERANCE_PX:
            return None
        used_a.add(i)
        used_b.add(j)
        out[b[j].track_id] = a[i].track_id
    return out


def join(tracker, prev: TrackState, prev_last: list, frames: list, out: list, seg: TrackState):
    """Joins a segment to the state `prev` the previous segment ended in (module docstring).

    prev_last: the previous segment's observations on its last frame; frames: the segment's frames (after
    its warm-up); out: the segment's observations, warm-up frames first; seg: the segment's end state.
    -> (observations of `frames`, the state after them)."""
    warm, out = out[:WARMUP], out[WARMUP:]
    mapping = match(prev_last, warm[-1]) if warm else None
    redone: list = []
    while mapping is None and len(redone) < len(frames):  # track again in sequence until the two agree
        redone += tracker.track_frames(frames[len(redone) : len(redone) + 1], prev)
        mapping = match(redone[-1], out[len(redone) - 1])
    if mapping is None:
        return redone, prev
    by_id = {tr.track_id: tr for tr in prev.tracks}
    votes = {b: [by_id[a].left_sum, by_id[a].frames] if a in by_id else [0.0, 0] for b, a in mapping.items()}
    new_ids: dict[int, int] = {}
    relabelled = []
    for frame_obs in out[len(redone) :]:
        row = []
        for o in frame_obs:
            if o.track_id not in mapping and o.track_id not in new_ids:
                new_ids[o.track_id] = prev.next_id
                prev.next_id += 1
            v = votes.setdefault(o.track_id, [0.0, 0])
            v[0] += o.handedness_left
            v[1] += 1
            side, score = tracker.side_of(v[0] / v[1])
            tid = mapping.get(o.track_id, new_ids.get(o.track_id))
            row.append(dataclasses.replace(o, track_id=tid, side=side, side_score=score))
        relabelled.append(row)
    for tr in seg.tracks:  # every one was seen after the agreed frame
        tr.left_sum, tr.frames = votes[tr.track_id]
        tr.track_id = mapping.get(tr.track_id, new_ids.get(tr.track_id))
    seg.next_id, seg.lost_at = prev.next_id, max(seg.lost_at, prev.lost_at)
    return redone + relabelled, seg
