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

`track_clip` does this over a whole frame range, each segment decoding its own frames (the capture's path,
`engine.tracks`): one palm pass and one warm-up per segment and clip. `track_segments` does it within one
batch of frames already decoded (`HandTracker(workers=N).process_batch`): a palm pass and a warm-up per
segment and batch. Either way the first segment continues the tracker's state, and segment sizes balance
the later segments' extra palm pass and warm-up.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError, wait
from typing import Callable, Iterator

import numpy as np

WARMUP = 4  # frames a later segment tracks before its first frame (their output only serves the join)
JOIN_TOLERANCE_PX = 1.0  # the largest keypoint difference at which two segments count as the same hand
MIN_SEGMENT = 8  # a segment must be at least this long to be split off (its palm pass and warm-up must pay)
PALM_COST = 1.3  # a palm detection's cost in landmark passes (to balance segment sizes)
# a frame decoded only to reach a segment's start (`split`), in tracked frames: decoding a 720p H.264 frame
# ~1.2 ms of CPU against ~9.5 for a tracked one (decode included), measured on the sample clip (issue 18)
SEEK_COST = 0.13
# frames a segment decodes before it tracks them (`track_clip`): tracking goes frame by frame, so a larger
# batch only adds memory (two segments of 32 720p frames held 180 MB while the tailor warmed up beside them)
SEGMENT_BATCH = 8
_ID_BLOCK = 1 << 40  # a later segment's provisional track ids: k * _ID_BLOCK + n, renumbered by the join


@dataclasses.dataclass
class TrackState:
    """What video-mode tracking carries from frame to frame (one per segment)."""

    tracks: list  # tracking._Track, the hands to look for in the next frame
    frame_no: int = 0  # frames tracked since reset: the retry schedule's clock
    lost_at: float = -math.inf  # frame_no of the last frame that lost a track
    next_id: int = 0
    detect_s: float = 0.0  # seconds spent in palm detection


def split(n: int, workers: int, seek: Callable[[int], int] | None = None) -> list[int]:
    """Start frames of up to `workers` segments of n frames (a single [0] when n is too small): later
    segments are shorter by their warm-up and palm pass, and by the frames their reader decodes to reach
    them (seek(p): frames decoded before position p, weighed SEEK_COST each; None: none), so that all take
    about as long."""
    k = max(1, min(int(workers), n // (MIN_SEGMENT + WARMUP)))
    if k == 1:
        return [0]
    extra = [0.0] + [WARMUP + PALM_COST] * (k - 1)
    starts = _balanced(n, extra)
    if seek is not None:  # where a seek lands depends on the start: estimated at the starts without it
        extra = [e + SEEK_COST * seek(max(0, a - (WARMUP if i else 0))) for i, (e, a) in enumerate(zip(extra, starts))]
        starts = _balanced(n, extra)
    return starts


def _balanced(n: int, extra: list[float]) -> list[int]:
    """Starts of len(extra) segments of n frames such that each one's length + extra[i] is the same."""
    total = (n + sum(extra)) / len(extra)
    lengths = [max(1.0, total - e) for e in extra]
    scale = n / sum(lengths)  # only where an extra exceeded the share (max above)
    starts, at = [], 0.0
    for length in lengths:
        starts.append(int(round(at)))
        at += length * scale
    return starts


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
        warm, out = out[:WARMUP], out[WARMUP:]
        joined, st = join(tracker, st, results[-1], frames[a:b], warm[-1] if warm else None, out, seg)
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


def join(tracker, prev: TrackState, prev_last: list, frames, warm_last: list | None, out: list, seg: TrackState):
    """Joins a segment to the state `prev` the previous segment ended in (module docstring).

    prev_last: the previous segment's observations on its last frame; frames: the segment's frames after its
    warm-up (an iterable, read only as far as tracking again in sequence needs); warm_last: the segment's
    observations on its last warm-up frame (the previous segment's last; None: no warm-up); out: the
    segment's observations after its warm-up, one list per frame. seg: the segment's end state.
    -> (observations of the segment's frames, the state after them)."""
    mapping = match(prev_last, warm_last) if warm_last is not None else None
    frames = iter(frames)
    redone: list = []
    while mapping is None and len(redone) < len(out):  # track again in sequence until the two agree
        redone += tracker.track_frames([next(frames)], prev)
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


@dataclasses.dataclass
class FrameHands:
    """One footage frame's outcome: its index, whether it decoded (else `error`), the hands tracked in it."""

    index: int
    ok: bool
    error: str | None
    hands: list


def track_clip(tracker, info, start: int, end: int | None, stride: int, n: int, batch_size: int, *,
               should_stop: Callable[[], bool] = lambda: False) -> Iterator[tuple[list[FrameHands], int]]:
    """Tracks the footage frames start, start + stride, ... <= end (None: to the end; `engine.video` info),
    n of them announced (the last segment reads on to the real end: an announced count can be wrong), as up to
    tracker.workers concurrent segments of the whole range, each decoding its own frames (its own reader:
    a later segment seeks to its warm-up): one palm pass and one warm-up per segment and clip, instead of
    per batch as `track_segments` has it.

    Yields (records in footage order, frames tracked so far over all segments): the first segment's as they
    come, the later ones once joined (`join`, in order; tracking again in sequence decodes their frames
    anew, only as far as needed); while waiting, ([], frames so far) about every 0.2 s. should_stop() is
    polled between batches (True raises Cancelled: every segment stops). Sets tracker.last_timings (the
    clip's wall time split between decode, detect and keypoints in proportion to the segments' busy time)
    and tracker.state (the state after the last frame).
    """
    from engine import video, video_planar
    from engine.errors import Cancelled

    at = lambda p: start + p * stride  # noqa: E731  (sequence position -> footage index)
    starts = split(n, tracker.workers, lambda p: at(p) - video_planar.decode_from(info, at(p)))
    batch_size = max(1, min(int(batch_size), SEGMENT_BATCH))
    bounds = [(a - (WARMUP if k else 0), b) for k, (a, b) in enumerate(zip(starts, starts[1:] + [n]))]
    stop_event = threading.Event()
    done = [0] * len(bounds)
    busy = [{"decode": 0.0, "track": 0.0} for _ in bounds]
    states = [tracker.state] + [TrackState([], frame_no=tracker.state.frame_no + a, next_id=k * _ID_BLOCK)
                                for k, (a, _) in enumerate(bounds) if k]
    for st in states:
        st.detect_s = 0.0

    def batches(a: int, b: int) -> Iterator[list]:
        """The frames at positions a..b-1 (the last segment's: on to the real end), batch by batch."""
        return video.iter_batches(info, batch_size, at(a), at(b - 1) if b < n else end, stride,
                                  planar=getattr(tracker, "planar_frames", False))

    def run(k: int) -> Iterator[list[FrameHands]]:
        segment = batches(*bounds[k])
        while True:
            t0 = time.perf_counter()
            batch = next(segment, None)
            t1 = time.perf_counter()
            busy[k]["decode"] += t1 - t0
            if batch is None or stop_event.is_set():
                return
            good = [f for f in batch if f.ok]
            hands = iter(tracker.track_frames([f.image for f in good], states[k]) if good else [])
            busy[k]["track"] += time.perf_counter() - t1
            done[k] += len(batch)
            yield [FrameHands(f.index, f.ok, f.error, next(hands) if f.ok else []) for f in batch]

    t_start = time.perf_counter()
    if getattr(tracker, "_segment_pool", None) is None and len(bounds) > 1:
        tracker._segment_pool = ThreadPoolExecutor(tracker.workers - 1, thread_name_prefix="hand-segment")
    futures = [tracker._segment_pool.submit(lambda k=k: [r for part in run(k) for r in part])
               for k in range(1, len(bounds))]
    try:
        last: list = []
        for part in run(0):
            last = part[-1].hands if part[-1].ok else last
            yield part, min(sum(done), n)
            if should_stop():
                raise Cancelled("capture cancelled")
        st = states[0]
        for k, future in enumerate(futures, start=1):
            while True:
                try:
                    records = future.result(timeout=0.2)
                    break
                except TimeoutError:
                    yield [], min(sum(done), n)
                    if should_stop():
                        raise Cancelled("capture cancelled")
            warm = [r for r in records[:WARMUP] if r.ok]
            main = records[WARMUP:]
            good = [r for r in main if r.ok]
            # decoded again only as far as the join tracks in sequence (usually not at all)
            frames = (f.image for part in batches(bounds[k][0] + WARMUP, bounds[k][1]) for f in part if f.ok)
            t0 = time.perf_counter()
            joined, st = join(tracker, st, last, frames, warm[-1].hands if warm else None, [r.hands for r in good],
                              states[k])
            busy[k]["track"] += time.perf_counter() - t0
            for r, hands in zip(good, joined):
                r.hands = hands
            last = good[-1].hands if good else last
            yield main, min(sum(done), n)
        tracker.state = st
    finally:
        stop_event.set()
        for future in futures:
            future.cancel()
        wait(futures)
    wall = time.perf_counter() - t_start
    decode = sum(x["decode"] for x in busy)
    detect = sum(s.detect_s for s in states)
    total = decode + sum(x["track"] for x in busy)
    if total > 0:
        tracker.last_timings = {"decode": wall * decode / total, "detect": wall * detect / total,
                                "keypoints": wall * (total - decode - detect) / total}
