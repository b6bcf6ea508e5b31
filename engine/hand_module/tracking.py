"""Keypoint stage: palm detection, hand landmarks and tracking over frames (MediaPipe's legacy hand graph,
on MediaPipe's networks run by one of `runtimes.RUNTIMES`: OpenVINO by default on CPU, the torch port as
the reference implementation and on other devices).

Per frame (video mode, `HandTracker`):
1. ROIs of the tracked hands come from the previous frame's landmarks (`crops.roi_from_landmarks`).
2. While fewer than `max_hands` hands are tracked (first frame, a lost track, a second hand to find), the
   palm detector runs on the letterboxed frame; weighted NMS; the best `max_hands` palms become ROIs.
   When it finds nothing, it retries once, in one batch, on second-chance views (`retry_views`: the
   frame zoomed out 2x with an edge-replicated and with a black border, and for non-square frames squares
   of the short side at both ends): tight crops (datasets ship 224-256 px images that a hand fills) are
   where the letterboxed pass misses palms. Photos (static mode) always get the retry; in video mode only
   every RETRY_INTERVAL-th frame and the RETRY_AFTER_LOSS frames after a track was lost do (a hand that
   fills the frame is found within RETRY_INTERVAL frames), so a stretch without a hand costs 1 palm
   forward a frame plus 2..4 every RETRY_INTERVAL frames, not 3..5 on every frame.
3. Palm ROIs that overlap a tracked ROI (IoU > 0.5, axis-aligned, as MediaPipe's association) are
   dropped; tracked hands keep their `track_id`, new palms start new tracks (or continue a track whose
   landmark pass failed in this same frame, when their ROI centres are within half a ROI size).
4. The landmark network runs on all ROIs of the frame as one batch; a hand whose presence is below
   `min_presence` is dropped (its track is lost); two tracks on one hand collapse into the older one
   (`dedupe_tracks`: next ROIs overlapping, or nested keypoint boxes of the same side).

Backbones (`backbone=`): "mediapipe" (default) is MediaPipe's landmark network as above. "hourglass" swaps the
keypoint network for the paper's (`engine.hand_module.hourglass.HourglassBackbone`, weights from
`python -m engine train run ...`): the same palm detection and tracking ROIs feed `HourglassBackbone.predict`
(ROI_ZOOM matches its training crops). The hourglass has no hand presence and no handedness output, so the
MediaPipe landmark network still runs on every ROI for those two (the `min_presence` gate and the side vote)
and for the next frame's tracking ROI: both backbones see exactly the same ROIs, only the keypoints differ.
The hourglass observation: keypoints_uvd and confidence (heatmap peaks) from predict, presence = mean
confidence, world_landmarks = joints_3d * (1 with K, Eq. 5 metres in the camera frame; bone_length without K,
Eq. 14-15 bone units -> metres, root-relative), so that `hand_module.fit_init`'s "hybrid" depth reproduces the
network's d'. K: `HandTracker(K=...)` or per call `process_batch(frames, K=...)`.

Outputs follow the team contract (`HandObservation`). MediaPipe has no per-joint confidence: `confidence`
is the hand's presence for every joint, halved for joints that fall outside the frame. Handedness: the
network gives P("Left") under MediaPipe's mirrored (selfie) convention, so on unmirrored footage "Left" is
the person's right hand; `mirrored=True` is for selfie footage. A track's side is decided by the mean of
its per-frame P("Left") (a track cannot flip sides), `side_score` is that mean's probability of the side.

Batching and cores: the tracking dependency is sequential (frame t's ROIs need frame t-1's landmarks), so
landmark crops are batched per frame (all hands at once). With `workers` > 1 a frame range (`track_clip`,
what a capture uses) or a batch of frames (`process_batch`) is tracked as that many concurrent segments
(`engine.hand_module.segments`: each later segment starts with a palm detection and is joined to the one
before; workers=1 is one sequential pass, MediaPipe's exact behaviour).
With the torch runtime, palm detection, when a frame needs it, is computed ahead for up to `detect_chunk`
frames of the batch in one forward (speculatively: frames that end up not needing it discard theirs; the
other runtimes run one image at a time, where that gains nothing). `static_images=True` treats frames as
unrelated photos (MediaPipe's static image mode): palm passes over all frames, then landmark passes over
all crops. Torch forwards run in chunks of at most `batch_size` (8: the fastest per crop on a 2-core CPU).
`process_batch` leaves `last_timings` = {"detect": s, "keypoints": s} for the batch it just processed.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from engine.errors import InputError
from engine.hand_module import BACKBONES, crops, palm_detections, runtimes, segments
from engine.hand_module.palm_detections import PalmDetection
from engine.hand_module.crops import Roi
from engine.hand_module.runtimes import HandNetworks
from engine.hand_module.segments import TrackState

log = logging.getLogger(__name__)

PALM_SIZE = palm_detections.INPUT_SIZE
CROP_SIZE = 224
ASSOCIATION_IOU = 0.5
RETRY_ZOOM = 2.0
RETRY_INTERVAL = 10  # video mode: every 10th frame may retry on widened views when no palm is found...
RETRY_AFTER_LOSS = 5  # ...and every frame within 5 frames after a track was lost
DUPLICATE_BOX_OVERLAP = 0.65


@dataclasses.dataclass(frozen=True)
class HandObservation:
    """One hand in one frame (team contract)."""

    track_id: int
    side: str  # "left" | "right" (the person's hand)
    side_score: float
    presence: float
    keypoints_uvd: np.ndarray  # (K, 3) float32: u, v full-frame px, d relative depth in px
    confidence: np.ndarray  # (K,) float32 in [0, 1]
    world_landmarks: np.ndarray  # (K, 3) float32 metres, hand-centred, frame axes
    roi: tuple[float, float, float, float]  # (cx, cy, size, angle_rad)
    handedness_left: float = float("nan")  # this frame's raw P("Left"), MediaPipe's convention


@dataclasses.dataclass
class _Track:
    track_id: int
    roi: Roi  # ROI for the next frame
    left_sum: float = 0.0
    frames: int = 0


def check_backbone(backbone: str, hourglass_weights=None) -> None:
    """Fails early (before any footage is read) on a backbone choice that cannot run.

    Raises InputError for an unknown backbone, ModelFileError when "hourglass" has no weights file.
    """
    import pathlib

    from engine.errors import ModelFileError

    if backbone not in BACKBONES:
        raise InputError(f"unknown keypoint backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    if backbone != "hourglass":
        return
    how = ("no trained hourglass weights ship with the engine; `python -m engine train run DATA -o RUN_DIR` "
           "writes RUN_DIR/hourglass.safetensors (a GPU is advised), or use --backbone mediapipe (the default)")
    if hourglass_weights is None or str(hourglass_weights) == "":
        raise ModelFileError(f"--backbone hourglass needs --hourglass-weights PATH (protocol: \"hourglass_weights\"), "
                             f"the hourglass.safetensors file of a training run: {how}")
    if not pathlib.Path(hourglass_weights).is_file():
        raise ModelFileError(f"hourglass weights not found at {hourglass_weights}: pass --hourglass-weights PATH "
                             f"to an existing hourglass.safetensors; {how}")


class PalmDetector:
    """The palm detector on whole frames: letterbox, forward, decode, weighted NMS, back to pixels."""

    def __init__(self, nets: HandNetworks, min_score: float = palm_detections.MIN_SCORE, retry_zoomed_out: bool = True):
        self.nets, self.min_score, self.retry_zoomed_out = nets, min_score, retry_zoomed_out
        self.passes = 0  # images through the palm network so far (the benchmark's no-hand cost)

    def _run(self, frames: list[np.ndarray], views: list[tuple[int, Roi, str]]) -> list[list[PalmDetection]]:
        """views: (frame index, square ROI, border) -> per frame, the palms of all its views (NMS'd, px)."""
        per_frame: list[list[PalmDetection]] = [[] for _ in frames]
        if not views:
            return per_frame
        out = self.nets.palm(np.stack([crops.warp(frames[i], r, PALM_SIZE, border=b) for i, r, b in views]))
        self.passes += len(views)
        for k, (i, roi, _) in enumerate(views):
            c = np.array([roi.cx, roi.cy])
            per_frame[i] += [
                PalmDetection(d.score, (d.box.reshape(2, 2) - 0.5).reshape(4) * roi.size + np.tile(c, 2),
                              (d.keypoints - 0.5) * roi.size + c)
                for d in palm_detections.weighted_nms(
                    palm_detections.decode(out.regressors[k], out.logits[k], self.min_score))
            ]
        return [palm_detections.weighted_nms(d) if len(d) > 1 else d for d in per_frame]

    def detect(self, frames: list[np.ndarray], retry: list[bool] | None = None) -> list[list[PalmDetection]]:
        """frames: list of (H, W, 3) uint8 RGB -> per frame, palms (score-sorted; box, keypoints in px).

        retry: per frame, whether it gets the widened-view retry when the letterboxed pass finds nothing
        (default: every frame, as for photos; `retry_zoomed_out=False` switches it off)."""
        views = [(i, crops.letterbox_roi(f.shape[1], f.shape[0]), "constant") for i, f in enumerate(frames)]
        result = self._run(frames, views)
        missed = [i for i, dets in enumerate(result) if not dets and (retry is None or retry[i])]
        if self.retry_zoomed_out and missed:
            retried = self._run(frames, [v for i in missed for v in retry_views(frames[i].shape, i)])
            for i in missed:
                result[i] = retried[i]
            log.debug("palm retry on %d frames found hands in %d", len(missed), sum(bool(retried[i]) for i in missed))
        return result


def retry_views(shape: tuple[int, ...], index: int) -> list[tuple[int, Roi, str]]:
    """Second-chance views of a frame where the letterboxed pass found no palm: the frame zoomed out 2x
    (edge-replicated and black border: a hand that fills a tight crop becomes palm-sized) and, for
    non-square frames, squares of the short side at both ends of the long side (no letterbox shrink)."""
    h, w = shape[:2]
    s = max(h, w)
    views = [(index, Roi(w / 2, h / 2, RETRY_ZOOM * s, 0.0), "replicate"),
             (index, Roi(w / 2, h / 2, RETRY_ZOOM * s, 0.0), "constant")]
    m = min(h, w)
    if s > 1.1 * m:
        views += [(index, Roi(m / 2, m / 2, m, 0.0), "constant"),
                  (index, Roi(w - m / 2, h - m / 2, m, 0.0), "constant")]
    return views


class HandTracker:
    """Up to `max_hands` hands per frame with stable track ids (see the module docstring)."""

    def __init__(self, max_hands: int = 2, mirrored: bool = False, device: str = "cpu", *, static_images: bool = False,
                 min_detection: float = palm_detections.MIN_SCORE, min_presence: float = 0.5,
                 retry_zoomed_out: bool = True,
                 detect_chunk: int | None = None, batch_size: int = 8, backbone: str = "mediapipe",
                 hourglass_weights=None, K: np.ndarray | None = None, runtime: str | None = None, threads: int = 1,
                 workers: int = 1):
        check_backbone(backbone, hourglass_weights)
        self.runtime = runtimes.check_runtime(runtime, device)
        self.backbone = backbone
        self.hourglass = None
        if backbone == "hourglass":
            from engine.hand_module.hourglass import HourglassBackbone

            self.hourglass = HourglassBackbone(hourglass_weights, device)
        self.K = None if K is None else np.asarray(K, np.float64).reshape(3, 3)
        self._K_call = self.K
        self.max_hands, self.mirrored, self.device = max_hands, mirrored, device
        self.static_images, self.min_presence = static_images, min_presence
        self.workers = max(1, int(workers))
        # frames may stay planar YUV where only crops are taken (`engine.video_planar.YuvImage`): not for the hourglass
        self.planar_frames = self.hourglass is None
        # speculative palm passes pay off only where a batch is cheaper per image (torch)
        self.detect_chunk = detect_chunk or (8 if self.runtime == "torch" else 1)
        self.nets = runtimes.load_networks(self.runtime, device, threads=threads, streams=self.workers,
                                           batch_size=batch_size)
        self.palm = PalmDetector(self.nets, min_score=min_detection, retry_zoomed_out=retry_zoomed_out)
        self.last_timings: dict[str, float] | None = None
        self._segment_pool = None
        self.reset()

    def reset(self) -> None:
        """Forgets every track (the next frame runs palm detection)."""
        self.state = TrackState([])

    def landmarks(self, frames: list[np.ndarray], rois: list[Roi]) -> list[dict]:
        """Crops of rois[i] in frames[i] -> per crop, full-frame outputs."""
        if not rois:
            return []
        out = self.nets.landmarks(np.stack([crops.warp(f, r, CROP_SIZE) for f, r in zip(frames, rois)]))
        return [
            dict(uvd=crops.landmarks_to_image(out.landmarks[i], r, CROP_SIZE),
                 world=crops.rotate_world(out.world_landmarks[i], r.angle), presence=float(out.presence[i]),
                 left=float(out.handedness[i]), roi=r)
            for i, r in enumerate(rois)
        ]

    def side_of(self, p_left: float) -> tuple[str, float]:
        """Mean P("Left") of a track -> (the person's side, its probability)."""
        label_left = p_left >= 0.5
        side = ("left" if label_left else "right") if self.mirrored else ("right" if label_left else "left")
        return side, float(max(p_left, 1 - p_left))

    def _observation(self, track: _Track, res: dict, frame: np.ndarray) -> HandObservation:
        track.left_sum += res["left"]
        track.frames += 1
        side, side_score = self.side_of(track.left_sum / track.frames)
        r = res["roi"]
        roi = (float(r.cx), float(r.cy), float(r.size), float(r.angle))
        if self.hourglass is not None:
            return self._hourglass_observation(track, side, side_score, res, roi, frame)
        uvd = res["uvd"].astype(np.float32)
        # MediaPipe's pixels are x_norm * W (pixel centres at +0.5); the engine's are OpenCV's (centres at
        # integers, DESIGN.md): u = x_norm * W - 0.5. Measured: a mirrored image's keypoints came back 1.0 px
        # off before (scripts/experiments/measure_flip_bias.py). The ROIs stay in MediaPipe's convention.
        uvd[:, :2] -= 0.5
        h, w = frame.shape[:2]
        inside = (uvd[:, 0] >= -0.5) & (uvd[:, 0] < w - 0.5) & (uvd[:, 1] >= -0.5) & (uvd[:, 1] < h - 0.5)
        conf = (res["presence"] * np.where(inside, 1.0, 0.5)).astype(np.float32)
        return HandObservation(track.track_id, side, side_score, res["presence"], uvd, conf,
                               res["world"].astype(np.float32), roi, res["left"])

    def _hourglass_observation(self, track: _Track, side: str, side_score: float, res: dict,
                               roi: tuple[float, float, float, float], frame: np.ndarray) -> HandObservation:
        """The hourglass keypoint stage on the MediaPipe ROI `roi` (see the module docstring)."""
        K = self._K_call
        out = self.hourglass.predict(frame, side=side, K=K, roi=roi)
        world = np.asarray(out["joints_3d"], np.float64) * (1.0 if K is not None else float(out["bone_length"]))
        conf = np.asarray(out["confidence"], np.float32)
        return HandObservation(track.track_id, side, side_score, float(np.mean(conf)),
                               np.asarray(out["keypoints_uvd"], np.float32), conf, world.astype(np.float32), roi,
                               res["left"])

    def _palm_rois(self, palms: list[PalmDetection]) -> list[Roi]:
        return [crops.roi_from_palm(d.box, d.keypoints) for d in palms[: self.max_hands]]

    def process_batch(self, frames: list[np.ndarray], K: np.ndarray | None = None) -> list[list[HandObservation]]:
        """frames: list of (H, W, 3) uint8 RGB (or `engine.video_planar.YuvImage`s where `planar_frames`) -> per frame,
        the hands found (tracks carry across calls).

        K (3, 3): these frames' intrinsics for the hourglass backbone's Eq. 5 lifting (default: the tracker's K;
        None there too: weak perspective, Eq. 14-15). The MediaPipe backbone ignores it.
        Sets `last_timings` = {"detect": s, "keypoints": s}: this call's wall time split between palm
        detection and the rest (with concurrent segments, in proportion to the segments' busy time).
        """
        self._K_call = self.K if K is None else np.asarray(K, np.float64).reshape(3, 3)
        for f in frames:
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise InputError(f"frames must be HxWx3 uint8 RGB images, got an array {f.shape} {f.dtype}")
        t0 = time.perf_counter()
        if self.static_images:
            out, busy, detect = self._process_static(frames)
        else:
            out, busy, detect = segments.track_segments(self, frames)
        wall = time.perf_counter() - t0
        share = detect / busy if busy > 0 else 0.0
        self.last_timings = {"detect": wall * share, "keypoints": wall * (1.0 - share)}
        return out

    def track_clip(self, info, start: int, end: int | None, stride: int, n: int, batch_size: int, *,
                   should_stop=lambda: False):
        """Video mode over a whole frame range, decoded here in concurrent segments (`segments.track_clip`):
        yields (per-frame records in order, frames done); `engine.tracks` uses it when there are segments."""
        return segments.track_clip(self, info, start, end, stride, n, batch_size, should_stop=should_stop)

    def _retry_due(self, st: TrackState, ahead: int = 0) -> bool:
        """Video mode: does frame st.frame_no + ahead get the widened-view retry if its palm pass finds
        nothing? Only on a schedule and shortly after a track was lost (not 3-5 palm passes on every
        frame without a hand)."""
        n = st.frame_no + ahead
        return n % RETRY_INTERVAL == 0 or n - st.lost_at <= RETRY_AFTER_LOSS

    def track_frames(self, frames: list[np.ndarray], st: TrackState) -> list[list[HandObservation]]:
        """Video-mode tracking of consecutive frames from state `st` (updated in place; see the module docstring)."""
        palm_cache: dict[int, list] = {}
        results = []
        for t, frame in enumerate(frames):
            candidates: list[tuple[Roi, _Track | None]] = []
            if len(st.tracks) < self.max_hands:
                if t not in palm_cache:
                    chunk = list(range(t, min(t + self.detect_chunk, len(frames))))
                    t0 = time.perf_counter()
                    found = self.palm.detect([frames[i] for i in chunk], [self._retry_due(st, i - t) for i in chunk])
                    st.detect_s += time.perf_counter() - t0
                    palm_cache.update(zip(chunk, found))
                for roi in self._palm_rois(palm_cache.pop(t)):
                    candidates = associate(candidates, roi, None)
            for track in st.tracks:
                candidates = associate(candidates, track.roi, track)
            res = self.landmarks([frame] * len(candidates), [c[0] for c in candidates])
            tracks, obs = [], []
            lost = [tr for (_, tr), r in zip(candidates, res) if tr is not None and r["presence"] < self.min_presence]
            for (roi, track), r in zip(candidates, res):
                if r["presence"] < self.min_presence:
                    continue
                if track is None:  # a new palm; it continues a track lost in this very frame when they overlap
                    near = [tr for tr in lost if crops.same_hand(tr.roi, roi)]
                    if near:
                        track = near[0]
                        lost.remove(track)
                    else:
                        track = _Track(st.next_id, roi)
                        st.next_id += 1
                obs.append(self._observation(track, r, frame))
                track.roi = crops.roi_from_landmarks(r["uvd"])  # MediaPipe's landmarks, for either backbone
                tracks.append(track)
            if lost:  # not continued by a palm in this frame
                st.lost_at = st.frame_no
            st.tracks = dedupe_tracks(tracks, obs)
            keep = {tr.track_id for tr in st.tracks}
            results.append([o for o in obs if o.track_id in keep])
            st.frame_no += 1
        return results

    def _process_static(self, frames: list[np.ndarray]) -> tuple[list[list[HandObservation]], float, float]:
        """Static-image mode -> (per frame hands, busy seconds, palm detection seconds)."""
        t0 = time.perf_counter()
        palms = self.palm.detect(frames)
        detect = time.perf_counter() - t0
        owners, rois = [], []
        for i, dets in enumerate(palms):
            for roi in self._palm_rois(dets):
                owners.append(i)
                rois.append(roi)
        res = self.landmarks([frames[i] for i in owners], rois)
        per_frame: list[list[tuple[_Track, HandObservation]]] = [[] for _ in frames]
        for i, r in zip(owners, res):
            if r["presence"] >= self.min_presence:
                track = _Track(len(per_frame[i]), crops.roi_from_landmarks(r["uvd"]))
                per_frame[i].append((track, self._observation(track, r, frames[i])))
        results = []
        for pairs in per_frame:
            keep = {t.track_id for t in dedupe_tracks([t for t, _ in pairs], [o for _, o in pairs])}
            results.append([o for t, o in pairs if t.track_id in keep])
        return results, time.perf_counter() - t0, detect

def associate(current: list[tuple[Roi, _Track | None]], roi: Roi, track: _Track | None) -> list:
    """MediaPipe's AssociationNormRectCalculator step: `roi` replaces every element it overlaps (IoU > 0.5)."""
    kept = [c for c in current if crops.roi_iou(c[0], roi) <= ASSOCIATION_IOU]
    return kept + [(roi, track)]


def keypoint_box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of the 2D boxes of two (K, 2+) keypoint sets over the smaller box's area."""
    lo, hi = np.maximum(a[:, :2].min(0), b[:, :2].min(0)), np.minimum(a[:, :2].max(0), b[:, :2].max(0))
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    areas = [float(np.prod(k[:, :2].max(0) - k[:, :2].min(0))) for k in (a, b)]
    return inter / min(areas) if min(areas) > 0 else 0.0


def dedupe_tracks(tracks: list[_Track], obs: list[HandObservation]) -> list[_Track]:
    """One hand, two tracks: the older track (lower id) survives when their next ROIs overlap (IoU > 0.5)
    or, for two hands of the same side, when their keypoint boxes nest (intersection > 0.65 of the smaller:
    a second, often upside-down, fit of one hand; clasped left + right hands are kept apart by the side)."""
    by_id = {o.track_id: o for o in obs}
    out: list[_Track] = []
    for tr in sorted(tracks, key=lambda t: t.track_id):
        o = by_id[tr.track_id]
        if all(crops.roi_iou(tr.roi, k.roi) <= ASSOCIATION_IOU and not (
                by_id[k.track_id].side == o.side
                and keypoint_box_overlap(by_id[k.track_id].keypoints_uvd, o.keypoints_uvd) > DUPLICATE_BOX_OVERLAP)
               for k in out):
            out.append(tr)
    return sorted(out, key=lambda t: tracks.index(t))


def observations_to_json(obs: HandObservation) -> dict:
    """The `keypoints` CLI's per-hand record."""
    return {
        "side": obs.side,
        "score": round(obs.presence, 6),
        "keypoints_2d_px": np.round(obs.keypoints_uvd[:, :2].astype(np.float64), 3).tolist(),
        "confidence": np.round(obs.confidence.astype(np.float64), 6).tolist(),
        "world_landmarks_m": np.round(obs.world_landmarks.astype(np.float64), 6).tolist(),
    }


__all__ = ["BACKBONES", "HandObservation", "HandTracker", "PalmDetector", "check_backbone", "observations_to_json"]
