"""`python -m engine keypoints PATH... [--json] [--overlay DIR] [--mirrored] [--backbone mediapipe|hourglass
[--hourglass-weights FILE]]`: hands in photos.

Each image is processed on its own (MediaPipe's static image mode: palm detection, landmarks; a zoomed-out
retry when no palm is found). With --json, stdout is exactly
`{"images": [{"image": PATH as given, "hands": [{"side", "score", "keypoints_2d_px" (21x2),
"confidence" (21), "world_landmarks_m" (21x3)}]}]}`; without it, one summary line per image.
--overlay DIR writes DIR/<name>_keypoints.png with the 21 points and the bones drawn.
--backbone picks the keypoint network (engine.hand_module.tracking: MediaPipe's, the default, or the paper's
hourglass on the same palm-detector ROIs, which needs --hourglass-weights: no trained weights ship). With the
hourglass, "world_landmarks_m" are its weak-perspective lift (Eq. 14-15) scaled by its bone length, and
"score" is its mean heatmap peak.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys

import numpy as np

from engine.cli_args import add_backbone_arguments
from engine.errors import InputError, OutputError

log = logging.getLogger(__name__)

BONES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
         (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20)]
PALM_BONES = {(0, 5), (5, 9), (9, 13), (13, 17), (0, 17)}
FINGER_COLORS_BGR = [(0, 0, 255), (0, 165, 255), (0, 220, 0), (255, 128, 0), (200, 0, 200)]  # thumb..pinky
CHUNK = 16


def read_image(path: str) -> np.ndarray:
    """path -> (H, W, 3) uint8 RGB; InputError naming the file when missing or unreadable."""
    import cv2

    p = pathlib.Path(path)
    if not p.is_file():
        raise InputError(f"image not found: {path}")
    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read image (not an image OpenCV can decode?): {path}")
    return bgr[:, :, ::-1].copy()


def draw_overlay(rgb: np.ndarray, hands: list) -> np.ndarray:
    """(H, W, 3) RGB + HandObservations -> (H, W, 3) BGR with bones, points and the side label."""
    import cv2

    img = np.ascontiguousarray(rgb[:, :, ::-1])
    scale = max(1, round(max(img.shape[:2]) / 500))
    for obs in hands:
        uv = obs.keypoints_uvd[:, :2]
        for a, b in BONES:
            palm = (a, b) in PALM_BONES
            color = (200, 200, 200) if palm else FINGER_COLORS_BGR[(b - 1) // 4]
            cv2.line(img, tuple(np.round(uv[a]).astype(int)), tuple(np.round(uv[b]).astype(int)), color, 2 * scale,
                     cv2.LINE_AA)
        for k, p in enumerate(uv):
            color = (255, 255, 255) if k == 0 else FINGER_COLORS_BGR[(k - 1) // 4]
            cv2.circle(img, tuple(np.round(p).astype(int)), 3 * scale, color, -1, cv2.LINE_AA)
            cv2.circle(img, tuple(np.round(p).astype(int)), 3 * scale, (0, 0, 0), 1, cv2.LINE_AA)
        label = f"{obs.side} {obs.presence:.2f}"
        org = tuple(np.round(uv[0] + [0, 12 * scale]).astype(int))
        cv2.putText(img, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3 * scale, cv2.LINE_AA)
        cv2.putText(img, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), scale, cv2.LINE_AA)
    return img


def main(argv: list[str], prog: str = "python -m engine keypoints") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files (jpg, png, ...)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument("--overlay", type=pathlib.Path, metavar="DIR", help="write keypoint overlays here")
    parser.add_argument("--mirrored", action="store_true", help="selfie (mirrored) images: swaps handedness")
    parser.add_argument("--max-hands", type=int, default=2, help="hands per image (default 2)")
    add_backbone_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from engine.hand_module.tracking import check_backbone

    check_backbone(args.backbone, args.hourglass_weights)  # fail before any work

    for path in args.paths:  # fail before any work on a bad path
        if not pathlib.Path(path).is_file():
            raise InputError(f"image not found: {path}")
    if args.overlay is not None:
        try:
            args.overlay.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the overlay folder {args.overlay}: {exc}") from exc

    import cv2
    import torch

    from engine.hand_module.tracking import HandTracker, observations_to_json

    grad = torch.is_grad_enabled()  # inference only; restored after (callers in the same process may train)
    torch.set_grad_enabled(False)
    try:
        tracker = HandTracker(max_hands=args.max_hands, mirrored=args.mirrored, static_images=True,
                              backbone=args.backbone, hourglass_weights=args.hourglass_weights)
        records, used_names = [], set()
        for start in range(0, len(args.paths), CHUNK):
            chunk = args.paths[start : start + CHUNK]
            images = [read_image(p) for p in chunk]
            for path, rgb, hands in zip(chunk, images, tracker.process_batch(images)):
                records.append({"image": path, "hands": [observations_to_json(o) for o in hands]})
                if args.overlay is not None:
                    name = pathlib.Path(path).stem
                    while name in used_names:
                        name += "_"
                    used_names.add(name)
                    out = args.overlay / f"{name}_keypoints.png"
                    if not cv2.imwrite(str(out), draw_overlay(rgb, hands)):
                        raise OutputError(f"cannot write {out}")
                if not args.json:
                    sides = ", ".join(f"{h['side']} ({h['score']:.2f})" for h in records[-1]["hands"]) or "no hand"
                    print(f"{path}: {sides}")
    finally:
        torch.set_grad_enabled(grad)
    if args.json:
        json.dump({"images": records}, sys.stdout)
        sys.stdout.write("\n")
    return 0
