"""Rotated square ROIs for the hand networks, as MediaPipe's legacy hand graph computes them.

All coordinates are full-frame pixels (origin top-left, y down); angles are radians, MediaPipe's sign
(a positive angle turns the crop clockwise on screen). A ROI is (cx, cy, size, angle).

- `roi_from_palm`: DetectionsToRectsCalculator (rotation from palm keypoint 0 = wrist to 2 = middle MCP,
  target 90 deg) + RectTransformationCalculator (shift -0.5 box height along the rotated y, square on the
  long side, scale 2.6).
- `roi_from_landmarks`: HandLandmarksToRectCalculator on landmarks 0,1,2,3,5,6,9,10,13,14,17,18 (rotation
  from the wrist to the mean of the index/ring MCP midpoint and the middle MCP; extent of the landmarks
  in the rotated frame) + RectTransformationCalculator (shift -0.1, square long, scale 2.0).
- `warp`: OpenCV boxPoints -> getPerspectiveTransform onto the crop corners (0,H),(0,0),(W,0),(W,H) ->
  warpPerspective (bilinear) on uint8, as ImageToTensorCalculator's OpenCV path (an algebraically equal
  warpAffine moved landmarks by up to 1.5 px); a video frame still in planar YUV is warped plane by plane
  and only the crop converted to RGB.
- `landmarks_to_image`: LandmarkProjectionCalculator; z (crop units) -> px: z / 224 / 0.4 * size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from engine.hand_module.palm_detections import normalize_radians
from engine.video_planar import YuvImage, yuv_to_rgb

PALM_SCALE, PALM_SHIFT_Y = 2.6, -0.5
LANDMARK_SCALE, LANDMARK_SHIFT_Y = 2.0, -0.1
LANDMARK_ROI_SUBSET = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
Z_NORMALIZE = 0.4
_FLOAT_MIN = float(np.finfo(np.float32).tiny)  # MediaPipe initialises its max with numeric_limits<float>::min()


class Roi(NamedTuple):
    cx: float
    cy: float
    size: float
    angle: float  # radians


def transform_rect(cx: float, cy: float, w: float, h: float, angle: float, scale: float, shift_y: float) -> Roi:
    """RectTransformationCalculator in pixels: shift along the rotated y by shift_y * h, square long, scale."""
    cx += -h * shift_y * math.sin(angle)
    cy += h * shift_y * math.cos(angle)
    return Roi(cx, cy, max(w, h) * scale, angle)


def roi_from_palm(box: np.ndarray, keypoints: np.ndarray) -> Roi:
    """box (4,) xmin, ymin, xmax, ymax px; keypoints (7, 2) px -> the landmark network's ROI."""
    (x0, y0), (x1, y1) = keypoints[0], keypoints[2]
    angle = normalize_radians(math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0))
    w, h = box[2] - box[0], box[3] - box[1]
    return transform_rect((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, w, h, angle, PALM_SCALE, PALM_SHIFT_Y)


def roi_from_landmarks(landmarks: np.ndarray) -> Roi:
    """landmarks (21, 2+) full-frame px -> the next frame's ROI (MediaPipe's tracking ROI)."""
    pts = np.asarray(landmarks, dtype=np.float64)[list(LANDMARK_ROI_SUBSET), :2]
    wrist = pts[0]
    mid = ((pts[4] + pts[8]) / 2 + pts[6]) / 2  # subset 4, 6, 8 = index, middle, ring MCP
    angle = normalize_radians(math.pi / 2 - math.atan2(-(mid[1] - wrist[1]), mid[0] - wrist[0]))
    centre = (pts.max(0) + pts.min(0)) / 2
    c, s = math.cos(-angle), math.sin(-angle)
    d = pts - centre
    proj = np.stack([d[:, 0] * c - d[:, 1] * s, d[:, 0] * s + d[:, 1] * c], axis=1)
    hi = np.maximum(proj.max(0), _FLOAT_MIN)
    lo = proj.min(0)
    pc = (hi + lo) / 2
    ca, sa = math.cos(angle), math.sin(angle)
    cx = pc[0] * ca - pc[1] * sa + centre[0]
    cy = pc[0] * sa + pc[1] * ca + centre[1]
    w, h = hi - lo
    return transform_rect(cx, cy, w, h, angle, LANDMARK_SCALE, LANDMARK_SHIFT_Y)


def crop_matrix(roi: Roi, out_size: int, flip: bool = False) -> np.ndarray:
    """(3, 3) perspective transform full-frame px -> crop px (boxPoints + getPerspectiveTransform, MediaPipe's
    float32 path), then mirrored left-right in the crop when `flip` (left hands, the hourglass's training)."""
    src = cv2.boxPoints(((roi.cx, roi.cy), (roi.size, roi.size), math.degrees(roi.angle))).astype(np.float32)
    dst = np.array([[0, out_size], [0, 0], [out_size, 0], [out_size, out_size]], dtype=np.float32)
    A = cv2.getPerspectiveTransform(src, dst)
    if flip:
        A = np.array([[-1.0, 0.0, out_size], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ A
    return A


def warp(image: np.ndarray | YuvImage, roi: Roi, out_size: int, border: str = "replicate") -> np.ndarray:
    """image (H, W, 3) uint8 RGB or an `engine.video_planar.YuvImage` -> (out_size, out_size, 3) uint8 RGB crop of
    the ROI (bilinear; border "replicate" or "constant" black)."""
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    M = crop_matrix(roi, out_size)
    size = (out_size, out_size)
    if not isinstance(image, YuvImage):
        return cv2.warpPerspective(image, M, size, flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=(0, 0, 0))
    # Each plane warped as the RGB frame would be, then the crop converted: bilinear sampling and the colour
    # matrix are both linear, so this is the RGB frame's crop up to rounding (measured: within ~1 level), without
    # converting the whole frame. Luma takes the RGB path's warpPerspective (the same sample positions). A warp
    # costs per output pixel (3 full-size warps: 2.3x the RGB warp), so chroma is warped (warpAffine: the ROI's
    # transform is affine) onto the crop's grid subsampled as the source's, then upsampled. Not where the crop
    # shrinks the frame more than 2x (the palm detector's whole-frame views): bilinear sampling aliases there,
    # and chroma sampled on a coarser grid aliased differently (measured: a first palm box moved, and that
    # frame's keypoints up to 18 px), so chroma is sampled at the crop's size. Black is black in YUV (Y at its
    # floor, U = V = 128).
    y = cv2.warpPerspective(image.y, M, size, flags=cv2.INTER_LINEAR, borderMode=mode,
                            borderValue=0 if image.full_range else 16)
    sx, sy = image.subsampling
    csize = size if roi.size > 2 * out_size else (out_size // sx, out_size // sy)
    kx, ky = out_size / csize[0], out_size / csize[1]  # crop px per chroma sample
    # crop px -> chroma grid px (cv2.resize's centre alignment: c = k g + (k - 1) / 2), written out: a general
    # 3x3 inverse here cost as much as a chroma warp (measured with py-spy on two tracking threads)
    grid_from_crop = np.array([[1 / kx, 0.0, (1 - kx) / (2 * kx)], [0.0, 1 / ky, (1 - ky) / (2 * ky)], [0.0, 0.0, 1.0]])
    mc = grid_from_crop @ M @ image.luma_from_chroma()
    u, v = (cv2.warpAffine(c, mc[:2] / mc[2, 2], csize, flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=128)
            for c in (image.u, image.v))
    if csize != size:
        u, v = (cv2.resize(c, size, interpolation=cv2.INTER_LINEAR) for c in (u, v))
    return cv2.transform(cv2.merge([y, u, v]), yuv_to_rgb(image.full_range))


def letterbox_roi(width: int, height: int) -> Roi:
    """The palm detector's input: the frame centred in a square of its long side (zero border)."""
    return Roi(width / 2.0, height / 2.0, float(max(width, height)), 0.0)


def landmarks_to_image(landmarks: np.ndarray, roi: Roi, crop_size: int = 224) -> np.ndarray:
    """landmarks (..., 21, 3) crop px (x, y) + raw z -> (..., 21, 3) full-frame px (u, v, d).

    d = z / crop_size / 0.4 * roi.size: MediaPipe's normalized z times the crop width in px."""
    lm = np.asarray(landmarks, dtype=np.float64)
    x, y = lm[..., 0] / crop_size - 0.5, lm[..., 1] / crop_size - 0.5
    c, s = math.cos(roi.angle), math.sin(roi.angle)
    u = (c * x - s * y) * roi.size + roi.cx
    v = (s * x + c * y) * roi.size + roi.cy
    d = lm[..., 2] / crop_size / Z_NORMALIZE * roi.size
    return np.stack([u, v, d], axis=-1)


def rotate_world(world: np.ndarray, angle: float) -> np.ndarray:
    """world (..., 21, 3) metres in crop axes -> frame axes (x, y turned by the ROI angle, z kept)."""
    w = np.asarray(world, dtype=np.float64)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([c * w[..., 0] - s * w[..., 1], s * w[..., 0] + c * w[..., 1], w[..., 2]], axis=-1)


def same_hand(a: Roi, b: Roi) -> bool:
    """Loose ROI match that keeps a track id across a re-detection: centres within half a ROI size."""
    return math.hypot(a.cx - b.cx, a.cy - b.cy) < 0.5 * max(a.size, b.size)


def roi_iou(a: Roi, b: Roi) -> float:
    """IoU of the axis-aligned squares of two ROIs (rotation ignored, as MediaPipe's association)."""
    ha, hb = a.size / 2, b.size / 2
    iw = max(0.0, min(a.cx + ha, b.cx + hb) - max(a.cx - ha, b.cx - hb))
    ih = max(0.0, min(a.cy + ha, b.cy + hb) - max(a.cy - ha, b.cy - hb))
    inter = iw * ih
    union = a.size ** 2 + b.size ** 2 - inter
    return inter / union if union > 0 else 0.0
