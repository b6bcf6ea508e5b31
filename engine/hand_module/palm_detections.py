"""What the MediaPipe palm detector's outputs mean, without torch: its SSD anchors, box decoding and weighted
non-maximum suppression, for every runtime that runs the network (`runtimes`; the torch port of the network
itself is `blazepalm.BlazePalm`). Apart from the torch module so that tracking on OpenVINO or LiteRT, and
evaluation, never import torch.

The detector takes (192, 192) RGB, the frame letterboxed to a square, and gives 2016 anchors x 18 regressors
(box centre x, y, width, height, then 7 palm keypoints x, y; 192-px units, relative to the anchor centre) and
2016 score logits. Keypoint 0 is the wrist centre, 2 the middle-finger MCP (their direction gives the hand's
rotation).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

INPUT_SIZE = 192
NUM_KEYPOINTS = 7
SCORE_CLIP = 100.0
MIN_SCORE = 0.5
NMS_IOU = 0.3


def ssd_anchors() -> np.ndarray:
    """MediaPipe's SSD anchors for palm_detection_full -> (2016, 2) centres (x, y) in [0, 1].

    4 layers, strides 8, 16, 16, 16, one aspect ratio + the interpolated scale, fixed anchor size (w = h = 1),
    offset 0.5: layers of equal stride share a grid, so 24x24 x 2 anchors then 12x12 x 6 anchors.
    """
    centres = []
    for grid, per_cell in ((24, 2), (12, 6)):
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        c = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(c, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


ANCHORS = ssd_anchors()


class PalmDetection(NamedTuple):
    """One palm in the detector input's normalized coordinates (or pixels, once mapped back)."""

    score: float
    box: np.ndarray  # (4,) xmin, ymin, xmax, ymax in [0, 1]
    keypoints: np.ndarray  # (7, 2) x, y in [0, 1]


def decode(regressors: np.ndarray, logits: np.ndarray, min_score: float = MIN_SCORE) -> list[PalmDetection]:
    """Raw outputs of one image (2016, 18), (2016,) -> detections above min_score (before NMS)."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float32), -SCORE_CLIP, SCORE_CLIP)))
    keep = np.nonzero(scores >= min_score)[0]
    out = []
    for i in keep:
        r = regressors[i].astype(np.float32) / INPUT_SIZE
        ax, ay = ANCHORS[i]
        cx, cy, w, h = r[0] + ax, r[1] + ay, r[2], r[3]
        kps = r[4:].reshape(NUM_KEYPOINTS, 2) + ANCHORS[i]
        out.append(PalmDetection(float(scores[i]), np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), kps))
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (xmin, ymin, xmax, ymax) boxes (4,); 0 when either is empty."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def weighted_nms(dets: list[PalmDetection], iou_threshold: float = NMS_IOU) -> list[PalmDetection]:
    """MediaPipe's WEIGHTED non-max suppression: each cluster (IoU > threshold with its best member)
    becomes one detection with the best score and the score-weighted mean box and keypoints."""
    remaining = sorted(dets, key=lambda d: -d.score)
    out = []
    while remaining:
        best = remaining[0]
        cluster = [d for d in remaining if box_iou(d.box, best.box) > iou_threshold]
        rest = [d for d in remaining if box_iou(d.box, best.box) <= iou_threshold]
        w = np.array([d.score for d in cluster], dtype=np.float32)
        box = (np.stack([d.box for d in cluster]) * w[:, None]).sum(0) / w.sum()
        kps = (np.stack([d.keypoints for d in cluster]) * w[:, None, None]).sum(0) / w.sum()
        out.append(PalmDetection(best.score, box, kps))
        if len(rest) == len(remaining):
            break
        remaining = rest
    return out


def normalize_radians(angle: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
