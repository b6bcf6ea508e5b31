"""Horizontal-flip bias of the keypoint stage's pixel convention (issue 14).

    PYTHONPATH=$PWD .venv/bin/python scripts/experiments/measure_flip_bias.py [--frames 40]

Runs the keypoint stage (static images, fresh detection) on each image and on its mirror image, maps the
mirror's keypoints back with DESIGN.md's u -> W-1-u and prints the mean signed difference u_back - u over all
matched hands and keypoints. With keypoints in the OpenCV convention (pixel centres at integers) the network's
own left-right asymmetry averages out and the mean is ~0; keypoints in MediaPipe's u = x*W convention (pixel
centres at +0.5) come back 1 px to the left (u_back = u - 1). Also prints the same for v (no flip: ~0 by
construction) as a control, and the count. Images: tests/data/images, ../shared/data/images and frames of the
sample clips when present.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def frames(n_video: int):
    import cv2

    for p in sorted((REPO / "tests" / "data" / "images").rglob("*")):
        if p.suffix.lower() in (".jpg", ".png"):
            yield p.name, cv2.imread(str(p))[:, :, ::-1]
    vids = REPO.parent / "shared" / "data" / "videos"
    for name in ("asl_hand.25fps.mp4", "dex-retargeting_human_hand_video.mp4"):
        cap = cv2.VideoCapture(str(vids / name))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        for i in np.linspace(0, max(total - 1, 0), n_video).astype(int) if total else []:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
            ok, bgr = cap.read()
            if ok:
                yield f"{name}#{i}", bgr[:, :, ::-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20, help="frames per sample clip")
    args = ap.parse_args()
    from engine.hand_module.tracking import HandTracker

    tracker = HandTracker(max_hands=2, static_images=True)
    du, dv, hands = [], [], 0
    for name, rgb in frames(args.frames):
        rgb = np.ascontiguousarray(rgb)
        w = rgb.shape[1]
        tracker.reset()
        a = tracker.process_batch([rgb])[0]
        tracker.reset()
        b = tracker.process_batch([np.ascontiguousarray(rgb[:, ::-1])])[0]
        for oa in a:
            if not b:
                break
            back = [np.stack([w - 1 - ob.keypoints_uvd[:, 0], ob.keypoints_uvd[:, 1]], 1) for ob in b]
            d = [np.abs(x - oa.keypoints_uvd[:, :2]).mean() for x in back]
            k = int(np.argmin(d))
            size = np.ptp(oa.keypoints_uvd[:, :2], axis=0).max()
            if d[k] > 0.1 * size:  # not the same hand, or the network disagrees with itself
                continue
            du.append(back[k][:, 0] - oa.keypoints_uvd[:, 0])
            dv.append(back[k][:, 1] - oa.keypoints_uvd[:, 1])
            hands += 1
    du, dv = np.concatenate(du), np.concatenate(dv)
    se = du.reshape(hands, 21).mean(1).std() / np.sqrt(hands)
    print(json.dumps(dict(hands=hands, mean_du_px=round(float(du.mean()), 3), se_du_px=round(float(se), 3),
                          median_du_px=round(float(np.median(du)), 3), mean_dv_px=round(float(dv.mean()), 3))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
