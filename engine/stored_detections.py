"""Keypoint-stage outputs stored in a file: `python -m engine eval --detections FILE` / `--save-detections FILE`.

The file lets `eval` run the hand module and the tailor on keypoints without the image network: a real set's
MediaPipe outputs saved once, or a synthetic set's simulated ones (`scripts/make_mismatch_set.py`). Format
(JSON): {"format": "handtailor-detections-1", "images": {image name: {"size": [W, H], "hands": [hand, ...],
"hands_flipped": [...] (optional: the outputs on the mirrored image)}}} with each hand {"side": "left" |
"right" | null, "presence", "keypoints_uvd" (21x3: u, v px with pixel centres at integers, d relative depth px),
"confidence" (21), "world_landmarks" (21x3 m, hand-centred, camera axes)}: the HandObservation fields that the
hand module reads.
"""

from __future__ import annotations

import json
import pathlib
from typing import NamedTuple

import numpy as np

from engine.errors import InputError, OutputError

DETECTIONS = "detections.json"  # a set folder's own detections file, used by `eval` when present


class Detection(NamedTuple):
    """A keypoint-stage output read from a detections file (the fields the evaluation uses of HandObservation)."""

    side: str | None
    presence: float
    keypoints_uvd: np.ndarray  # (21, 3) px
    confidence: np.ndarray  # (21,)
    world_landmarks: np.ndarray  # (21, 3) m


def mirror_detection(det, width: int) -> Detection:
    """A keypoint-stage output as seen in the horizontally mirrored image (u -> W-1-u, world x -> -x, side swapped)."""
    uvd = np.array(det.keypoints_uvd, np.float64)
    uvd[:, 0] = width - 1 - uvd[:, 0]
    world = np.array(det.world_landmarks, np.float64) * np.array([-1.0, 1.0, 1.0])
    side = {"left": "right", "right": "left"}.get(det.side, det.side)
    return Detection(side, det.presence, uvd, np.asarray(det.confidence), world)


def detection_json(d) -> dict:
    """A keypoint-stage output (HandObservation or Detection) as the file's JSON hand object."""
    return dict(side=getattr(d, "side", None), presence=float(getattr(d, "presence", 1.0)),
                keypoints_uvd=np.asarray(d.keypoints_uvd, np.float64).round(4).tolist(),
                confidence=np.asarray(d.confidence, np.float64).round(5).tolist(),
                world_landmarks=np.asarray(d.world_landmarks, np.float64).round(6).tolist())


def save_detections(path: pathlib.Path, images: dict) -> None:
    """Writes keypoint-stage outputs: {image name: {"size": [W, H], "hands": [...], "hands_flipped": [...]?}}
    with each hand {side, presence, keypoints_uvd (21x3 px), confidence (21), world_landmarks (21x3 m)}."""
    try:
        pathlib.Path(path).write_text(json.dumps({"format": "handtailor-detections-1", "images": images}))
    except OSError as exc:
        raise OutputError(f"cannot write the detections to {path}: {exc}") from exc


def load_detections(path: pathlib.Path) -> dict:
    """Reads `save_detections`'s file: image name -> {"size": (W, H), "hands": [Detection], ...}."""
    try:
        raw = json.loads(pathlib.Path(path).read_text())
        out = {}
        for name, e in raw["images"].items():
            entry = {"size": (int(e["size"][0]), int(e["size"][1]))}
            for key in ("hands", "hands_flipped"):
                if key in e:
                    entry[key] = [Detection(h.get("side"), float(h.get("presence", 1.0)),
                                            np.asarray(h["keypoints_uvd"], np.float64).reshape(21, 3),
                                            np.asarray(h["confidence"], np.float64).reshape(21),
                                            np.asarray(h["world_landmarks"], np.float64).reshape(21, 3))
                                  for h in e[key]]
            out[name] = entry
        return out
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is not a readable detections file ({exc}); write one with "
                         "`python -m engine eval DIR --save-detections FILE`") from exc
