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
`engine.tracks`): one palm pass and one warm-up per segment and clip, and a worker that finishes first splits
off the second half of what another segment has left (`steal_point`). `track_segments` does it within one
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


@dataclasses.dataclass
class _Segment:
    """One segment of `track_clip`: positions first - warm .. end - 1 (the first `warm` only serve the join)."""

    first: int  # position of its first own frame
    end: int | None  # one past its last position (None: it reads on to the real end); a steal lowers it
    warm: int  # warm-up frames before `first`
    state: TrackState
    next_pos: int  # the next position it has not taken to track (what a steal may take from)
    records: list = dataclasses.field(default_factory=list)  # kept for the join (not the first segment's)
    busy: dict = dataclasses.field(default_factory=lambda: {"decode": 0.0, "track": 0.0})
    finished: threading.Event = dataclasses.field(default_factory=threading.Event)
    error: BaseException | None = None


def steal_point(taken: int, end: int, seek: Callable[[int], int] | None = None) -> int | None:
    """Where an idle worker splits a running segment's untaken positions taken..end-1: the position from which
    it tracks them itself, so that both finish together (the new segment pays a warm-up, a palm pass and the
    frames its reader decodes to reach its start, `seek` as in `split`), or None when either part would be
    shorter than MIN_SEGMENT."""
    extra = WARMUP + PALM_COST
    at = (taken + end + extra) / 2
    if seek is not None:
        at = (taken + end + extra + SEEK_COST * seek(max(0, int(round(at)) - WARMUP))) / 2
    at = int(round(at))
    return at if at - taken >= MIN_SEGMENT and end - at >= MIN_SEGMENT else None


def track_clip(tracker, info, start: int, end: int | None, stride: int, n: int, batch_size: int, *,
               should_stop: Callable[[], bool] = lambda: False) -> Iterator[tuple[list[FrameHands], int]]:
    """Tracks the footage frames start, start + stride, ... <= end (None: to the end; `engine.video` info),
    n of them announced (the last segment reads on to the real end: an announced count can be wrong), as
    concurrent segments of the whole range on tracker.workers threads, each segment decoding its own frames
    (its own reader: a later segment seeks to its warm-up): one palm pass and one warm-up per segment, instead
    of per batch as `track_segments` has it.

    The range starts as `split` gives it, one segment a worker. A worker whose segment is done takes the
    second part of the segment with the most frames left (`steal_point`), as long as both parts stay at
    least MIN_SEGMENT long: a fixed split left one core idle for up to a sixth of the tracking whenever one
    thread ran slower (another process, the tailor loading, a slower core), and the capture waited for it.
    Where a segment starts then depends on timing, so two runs can differ where segments meet (within
    JOIN_TOLERANCE_PX, fading over a few frames); `--segments 1` is one sequential pass, always the same.

    Yields (records in footage order, frames tracked so far over all segments): the first segment's as they
    come, the later ones once joined (`join`, in order; tracking again in sequence decodes their frames
    anew, only as far as needed); while waiting, ([], frames so far) about every 0.2 s. should_stop() is
    polled between batches (True raises Cancelled: every segment stops). Sets tracker.last_timings (the
    clip's wall time split between decode, detect and keypoints in proportion to the segments' busy time),
    tracker.last_segments (how many segments tracked the range) and tracker.state (the state after the last
    frame).
    """
    from engine import video, video_planar
    from engine.errors import Cancelled

    at = lambda p: start + p * stride  # noqa: E731  (sequence position -> footage index)
    seek = lambda p: at(p) - video_planar.decode_from(info, at(p))  # noqa: E731  (frames decoded to reach p)
    starts = split(n, tracker.workers, seek)
    batch_size = max(1, min(int(batch_size), SEGMENT_BATCH))
    base = tracker.state.frame_no
    lock = threading.Lock()
    stop_event = threading.Event()

    def segment(first: int, seg_end: int | None, k: int) -> _Segment:
        warm = WARMUP if k else 0
        state = tracker.state if not k else TrackState([], frame_no=base + first - warm, next_id=k * _ID_BLOCK)
        state.detect_s = 0.0
        return _Segment(first, seg_end, warm, state, first - warm)

    segs = [segment(a, b, k) for k, (a, b) in enumerate(zip(starts, starts[1:] + [None]))]

    def batches(a: int, b: int | None) -> Iterator[list]:
        """The frames at positions a..b-1 (None: on to the real end), batch by batch."""
        return video.iter_batches(info, batch_size, at(a), at(b - 1) if b is not None else end, stride,
                                  planar=getattr(tracker, "planar_frames", False))

    def run(seg: _Segment) -> Iterator[list[FrameHands]]:
        """Tracks the segment batch by batch, up to its end as it stands after each batch is decoded."""
        reader = batches(seg.first - seg.warm, seg.end)
        while not stop_event.is_set():
            t0 = time.perf_counter()
            with lock:
                over = seg.end is not None and seg.next_pos >= seg.end
            batch = None if over else next(reader, None)
            t1 = time.perf_counter()
            seg.busy["decode"] += t1 - t0
            if batch is None or stop_event.is_set():
                return
            with lock:  # a steal moved the end into this batch: the rest is the new segment's
                if seg.end is not None:
                    batch = [f for f in batch if (f.index - start) // stride < seg.end]
                if batch:
                    seg.next_pos = (batch[-1].index - start) // stride + 1
            good = [f for f in batch if f.ok]
            hands = iter(tracker.track_frames([f.image for f in good], seg.state) if good else [])
            seg.busy["track"] += time.perf_counter() - t1
            yield [FrameHands(f.index, f.ok, f.error, next(hands) if f.ok else []) for f in batch]

    def steal() -> _Segment | None:
        """A new segment made of the second part of the running segment with the most frames left, or None."""
        for _ in range(3):  # the split point is found outside the lock (a seek estimate opens the file)
            with lock:
                if stop_event.is_set():
                    return None
                left = [(min(s.end if s.end is not None else n, n) - max(s.next_pos, s.first), i)
                        for i, s in enumerate(segs) if not s.finished.is_set()]
                if not left:
                    return None
                _, i = max(left)
                victim = segs[i]
                taken, seg_end = max(victim.next_pos, victim.first), victim.end
            point = steal_point(taken, min(seg_end if seg_end is not None else n, n), seek)
            if point is None:
                return None
            with lock:
                if victim.finished.is_set() or victim.end != seg_end or max(victim.next_pos, victim.first) >= point:
                    continue  # it finished or got that far meanwhile: look again
                new = segment(point, seg_end, len(segs))
                victim.end = point
                segs.insert(segs.index(victim) + 1, new)
                return new
        return None

    def collect(seg: _Segment) -> None:
        try:
            for part in run(seg):
                seg.records += part
        except BaseException as exc:  # noqa: BLE001 - raised where the join reaches this segment
            seg.error = exc
        finally:
            seg.finished.set()

    def work(seg: _Segment | None) -> None:
        while seg is not None:
            collect(seg)
            seg = None if seg.error is not None else steal()

    def frames_done() -> int:
        with lock:
            return min(sum(max(0, min(s.next_pos, s.end if s.end is not None else s.next_pos) - s.first)
                           for s in segs), n)

    t_start = time.perf_counter()
    if getattr(tracker, "_segment_pool", None) is None and tracker.workers > 1:
        tracker._segment_pool = ThreadPoolExecutor(tracker.workers - 1, thread_name_prefix="hand-segment")
    futures = [tracker._segment_pool.submit(work, seg) for seg in segs[1:]]
    try:
        last: list = []
        for part in run(segs[0]):
            last = part[-1].hands if part[-1].ok else last
            yield part, frames_done()
            if should_stop():
                raise Cancelled("capture cancelled")
        segs[0].finished.set()
        while (mine := steal()) is not None:  # this thread's segment is done: it helps with the others
            try:
                for part in run(mine):
                    mine.records += part
                    yield [], frames_done()
                    if should_stop():
                        raise Cancelled("capture cancelled")
            finally:
                mine.finished.set()
        st, k = segs[0].state, 1
        while k < len(segs):
            seg = segs[k]
            while not seg.finished.wait(timeout=0.2):
                yield [], frames_done()
                if should_stop():
                    raise Cancelled("capture cancelled")
            if seg.error is not None:
                raise seg.error
            warm = [r for r in seg.records[: seg.warm] if r.ok]
            main = seg.records[seg.warm :]
            good = [r for r in main if r.ok]
            # decoded again only as far as the join tracks in sequence (usually not at all)
            frames = (f.image for part in batches(seg.first, seg.end) for f in part if f.ok)
            t0 = time.perf_counter()
            joined, st = join(tracker, st, last, frames, warm[-1].hands if warm else None, [r.hands for r in good],
                              seg.state)
            seg.busy["track"] += time.perf_counter() - t0
            for r, hands in zip(good, joined):
                r.hands = hands
            last = good[-1].hands if good else last
            yield main, frames_done()
            k += 1
        tracker.state = st
        tracker.last_segments = len(segs)
    finally:
        stop_event.set()
        for future in futures:
            future.cancel()
        wait(futures)
    wall = time.perf_counter() - t_start
    decode = sum(s.busy["decode"] for s in segs)
    detect = sum(s.state.detect_s for s in segs)
    total = decode + sum(s.busy["track"] for s in segs)
    if total > 0:
        tracker.last_timings = {"decode": wall * decode / total, "detect": wall * detect / total,
                                "keypoints": wall * (total - decode - detect) / total}
