"""Calibration figures of the mismatch set's simulated keypoint stage against MediaPipe on real hands (issue 14).

    PYTHONPATH=$PWD .venv/bin/python scripts/experiments/mismatch_calibration.py \
        [--real SET_DIR DETECTIONS.json ...] [--n 120] [--seed 0]

For each real set (a ground-truth folder and its stored MediaPipe detections, `eval --save-detections`) and
for `--n` hands of `scripts/make_mismatch_set.py`, per hand, then mean / median:
* kp2d: the keypoints' mean 2D error as a fraction of the hand's pixel size;
* world_rigid / world_pa: the world landmarks' error after a rigid / similarity alignment, mm;
* agreement: cosine between the 2D error and the projected, similarity-aligned world-landmark error (do the
  two outputs err together?);
* hm2d: the hand module's (fit_init, perspective) 2D error as a fraction of the hand's size, and hm_ratio =
  hm2d / kp2d; hm_pa / hm_mpjpe: its PA-MPJPE and wrist-aligned MPJPE, mm.
For the synthetic set also the hand module with perfect 2D, perfect world landmarks or both ("_true2d",
"_trueworld", "_perfect"): what the hand module and the hand model lose by themselves.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine import metrics  # noqa: E402
from engine.camera import project_perspective  # noqa: E402


def _mismatch_module():
    spec = importlib.util.spec_from_file_location("make_mismatch_set", REPO / "scripts" / "make_mismatch_set.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def hand_figures(uvd, world, joints, uv, K, model, variants=("",)) -> dict:
    """Figures of one hand: uvd (21, 3) detected, world (21, 3) landmarks, joints (21, 3) truth (camera frame),
    uv (21, 2) true 2D, K (3, 3), the hand model of its side."""
    from engine.hand_module.hand_module import fit_init

    size = float(np.ptp(uv, axis=0).max())
    aligned = metrics.procrustes_align(world[None], joints[None], scale=True)[0]
    e2 = uvd[:, :2] - uv
    ew = np.asarray(project_perspective(aligned, K)) - uv
    out = dict(kp2d=np.linalg.norm(e2, axis=1).mean() / size,
               world_rigid=1000 * metrics.joint_errors_3d(world[None], joints[None], "rigid").mean(),
               world_pa=1000 * metrics.pa_mpjpe(world[None], joints[None])[0],
               agreement=float(np.sum(e2 * ew) / np.sqrt(np.sum(e2**2) * np.sum(ew**2))))
    inputs = {"": (uvd[:, :2], world), "_true2d": (uv, world), "_trueworld": (uvd[:, :2], joints - joints.mean(0)),
              "_perfect": (uv, joints - joints.mean(0))}
    for tag in variants:
        x = uvd.copy()
        x[:, :2], w = inputs[tag]
        init = fit_init(x[None], np.ones((1, 21)), w[None], "perspective", K, model)
        P = init["joints_3d_model"][0]
        out["hm2d" + tag] = np.linalg.norm(np.asarray(project_perspective(P, K)) - uv, axis=1).mean() / size
        out["hm_pa" + tag] = 1000 * metrics.pa_mpjpe(P[None], joints[None])[0]
        out["hm_mpjpe" + tag] = 1000 * metrics.mpjpe(P[None], joints[None])[0]
    out["hm_ratio"] = out["hm2d"] / out["kp2d"]
    return out


def _summary(rows: list[dict]) -> dict:
    return {k: dict(mean=round(float(np.mean([r[k] for r in rows])), 4),
                    median=round(float(np.median([r[k] for r in rows])), 4)) for k in rows[0]} | {"hands": len(rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", nargs=2, action="append", metavar=("SET_DIR", "DETECTIONS"), default=[])
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from engine.evaluation import match_detection
    from engine.groundtruth import load_annotations
    from engine.hand_model import load_hand_model
    from engine.stored_detections import load_detections

    models = {s: load_hand_model(None, side=s) for s in ("right", "left")}
    report = {}
    for folder, det in args.real:
        stored, rows = load_detections(pathlib.Path(det)), []
        for rec in load_annotations(pathlib.Path(folder)):
            e = stored[rec.image.name]
            obs, _, _ = match_detection(e["hands"], rec, e["size"][0], False)
            if obs is None or rec.K is None or rec.joints_3d is None:
                continue
            rows.append(hand_figures(np.asarray(obs.keypoints_uvd, float), np.asarray(obs.world_landmarks, float),
                                     rec.joints_3d, rec.joints_2d, rec.K, models[rec.hand]))
        report[folder] = _summary(rows) if rows else {"hands": 0}
    mm = _mismatch_module()
    rng = np.random.default_rng(args.seed)
    rows = []
    for _ in range(args.n):
        side = "right" if rng.uniform() < 0.6 else "left"
        h = mm.make_hand(rng, side)
        rows.append(hand_figures(np.asarray(h["hand"]["keypoints_uvd"]), np.asarray(h["hand"]["world_landmarks"]),
                                 h["joints"], h["uv"], h["K"], models[side], ("", "_true2d", "_trueworld", "_perfect")))
    report["mismatch_set"] = _summary(rows)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
