"""Make the MediaPipe pipeline goldens for the torch port's parity tests (run once, by a developer).

Runs mediapipe's own pipeline (the legacy `mp.solutions.hands` graph with model_complexity=1, i.e. the
hand_landmark_full / palm_detection_full models that `models/mediapipe/` ships) and stores its outputs as
small JSON files in tests/data/mediapipe_goldens/. mediapipe brings its own cv2 and pins numpy: run it in a
SEPARATE venv, never the project's .venv:

    python3.11 -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install mediapipe==0.10.21
    /tmp/mpvenv/bin/python scripts/make_mediapipe_goldens.py [--video PATH --frames 30]

Static-image mode on every photo in tests/data/images; video (tracking) mode on the first frames of a clip
(default: ../shared/data/videos/dex-retargeting_human_hand_video.mp4, MIT) when it exists.
Per hand: landmarks in image pixels (x, y) and z in pixels (MediaPipe's normalized z times the image
width), world landmarks (m), handedness label/score, and the ROI MediaPipe used (pixels, radians).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import cv2
import mediapipe as mp
from mediapipe.python.solution_base import SolutionBase
from mediapipe.python.solutions import hands as mp_hands

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "mediapipe_goldens"
IMAGES = REPO / "tests" / "data" / "images"
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "videos" / "dex-retargeting_human_hand_video.mp4"


class HandsWithRects(SolutionBase):
    """mp.solutions.hands.Hands that also returns the ROIs (`hand_rects`) the landmarks came from."""

    def __init__(self, static_image_mode: bool, max_num_hands: int = 2):
        super().__init__(
            binary_graph_path=mp_hands._BINARYPB_FILE_PATH,
            side_inputs={"model_complexity": 1, "num_hands": max_num_hands,
                         "use_prev_landmarks": not static_image_mode},
            calculator_params={
                "palmdetectioncpu__TensorsToDetectionsCalculator.min_score_thresh": 0.5,
                "handlandmarkcpu__ThresholdingCalculator.threshold": 0.5,
            },
            outputs=["multi_hand_landmarks", "multi_hand_world_landmarks", "multi_handedness", "hand_rects"],
        )


def hands_of(result, width: int, height: int) -> list[dict]:
    out = []
    if not result.multi_hand_landmarks:
        return out
    for i, lms in enumerate(result.multi_hand_landmarks):
        cls = result.multi_handedness[i].classification[0]
        world = result.multi_hand_world_landmarks[i].landmark
        hand = {
            "label": cls.label,
            "label_score": round(float(cls.score), 7),
            "landmarks_px": [[round(l.x * width, 5), round(l.y * height, 5), round(l.z * width, 5)] for l in lms.landmark],
            "world_landmarks_m": [[round(l.x, 7), round(l.y, 7), round(l.z, 7)] for l in world],
        }
        rects = getattr(result, "hand_rects", None)
        if rects is not None and i < len(rects):
            r = rects[i]
            hand["roi_px"] = [round(r.x_center * width, 4), round(r.y_center * height, 4),
                              round(r.width * width, 4), round(r.height * height, 4), round(r.rotation, 7)]
        out.append(hand)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=pathlib.Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=30)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"mediapipe": mp.__version__, "graph": "mp.solutions.hands, model_complexity=1, max_num_hands=2, "
            "min_detection_confidence=0.5, min_tracking_confidence=0.5"}

    images = []
    for path in sorted(p for p in IMAGES.rglob("*") if p.suffix.lower() in (".jpg", ".png")):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        with HandsWithRects(static_image_mode=True) as hands:
            res = hands.process(rgb)
        images.append({"image": path.relative_to(REPO).as_posix(), "size": [w, h], "hands": hands_of(res, w, h)})
        print(f"{path.name}: {len(images[-1]['hands'])} hands", file=sys.stderr)
    (OUT / "static_images.json").write_text(json.dumps({**meta, "mode": "static_image", "images": images}) + "\n")

    if args.video.is_file():
        cap = cv2.VideoCapture(str(args.video))
        frames = []
        with HandsWithRects(static_image_mode=False) as hands:
            for i in range(args.frames):
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                h, w = rgb.shape[:2]
                frames.append({"frame": i, "hands": hands_of(hands.process(rgb), w, h)})
        cap.release()
        (OUT / "video_dex_retargeting.json").write_text(json.dumps({
            **meta, "mode": "video", "video": args.video.name, "size": [w, h], "frames": frames}) + "\n")
        print(f"video: {len(frames)} frames", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
