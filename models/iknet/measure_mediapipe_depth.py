"""How good are MediaPipe's relative depth d and world landmarks? Measured on ../shared/data/gt-sample.

Two steps, because mediapipe itself is never installed in the project venv:

    # 1. in a separate venv with mediapipe==0.10.21 (e.g. the one the golden-file script uses):
    python models/iknet/measure_mediapipe_depth.py dump --out /tmp/mp_gt_sample.json
    # 2. in the project venv:
    .venv/bin/python models/iknet/measure_mediapipe_depth.py evaluate /tmp/mp_gt_sample.json

`dump` runs MediaPipe Hands (static images, full model) on the gt-sample images and stores, per annotated
hand that a detection matches (mean 2D distance to the projected ground truth < 20 px): uvd (u, v full-frame
pixels, d = MediaPipe's normalized z times the image width: pixels "at the scale of x"), world landmarks,
the ground-truth 3D joints and K. `evaluate` prints JSON: per hand, the slope of d against the true
f (z_j - z_0) / z_9 (1 = d has the scale of x), the rigid-aligned error of the world landmarks, and the
PA / root-relative error of each lifting variant with the true reference bone length, and of the whole
hand module (`fit_init`: shape + IKNet, the model's own size) per camera model and depth source. The figures are
quoted in PROVENANCE.md. The gt-sample is research-only data: nothing of it is copied into the repo.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
GT = REPO.parent / "shared" / "data" / "gt-sample"


def dump(out: pathlib.Path) -> None:
    import cv2
    import mediapipe as mp

    records = []
    for ds in ("interhand2.6m", "rhd"):
        for r in json.loads((GT / ds / "annotations_normalized.json").read_text()):
            r["path"] = str(GT / ds / r["image"])
            records.append(r)
    saved, cache = [], {}
    with mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                                  min_detection_confidence=0.3) as hands:
        for r in records:
            if r["path"] not in cache:
                img = np.ascontiguousarray(cv2.imread(r["path"])[:, :, ::-1])
                h, w = img.shape[:2]
                res = hands.process(img)
                dets = []
                for lm, wl in zip(res.multi_hand_landmarks or [], res.multi_hand_world_landmarks or []):
                    dets.append((np.array([[p.x * w, p.y * h, p.z * w] for p in lm.landmark]),
                                 np.array([[p.x, p.y, p.z] for p in wl.landmark])))
                cache[r["path"]] = (dets, (w, h))
            G, K = np.array(r["joints_3d_m"]), np.array(r["K"])
            uv = G @ K.T
            uv = uv[:, :2] / uv[:, 2:]
            dets, size = cache[r["path"]]
            best = min(((np.linalg.norm(a[:, :2] - uv, axis=1).mean(), a, b) for a, b in dets),
                       key=lambda t: t[0], default=None)
            if best is None or best[0] > 20:
                continue
            saved.append(dict(image=r["image"], hand=r["hand"], uv_err_px=float(best[0]), uvd=best[1].tolist(),
                              world=best[2].tolist(), gt=G.tolist(), K=K.tolist(), image_size=list(size)))
    out.write_text(json.dumps(saved))


def evaluate(path: pathlib.Path) -> dict:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "models" / "iknet"))
    from eval_lifting_iknet import procrustes_aligned

    from engine.camera import nominal_K
    from engine.hand_model import load_hand_model
    from engine.hand_module import lifting as L
    from engine.hand_module.hand_module import fit_init

    hands = []
    for r in json.loads(path.read_text()):
        uvd, W, G, K = (np.array(r[k]) for k in ("uvd", "world", "gt", "K"))
        f, z = K[0, 0], G[:, 2]
        d_true = f * (z - z[0]) / z[9]
        d = uvd[:, 2] - uvd[0, 2]
        slope = float((d * d_true).sum() / (d_true * d_true).sum())
        P, Q = W - W.mean(0), G - G.mean(0)
        U, _, Vt = np.linalg.svd(Q.T @ P)
        R = U @ np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))]) @ Vt
        B = np.linalg.norm(G[9] - G[0])
        lifts = {
            "uvd_normalized_quadratic": L.perspective_lift(uvd[:, :2], L.normalized_depth(uvd), K, B)[0],
            "uvd_pixel_depth": L.perspective_lift_pixel_depth(uvd, K, B)[0],
            "hybrid_world_z": L.perspective_lift(uvd[:, :2], L.hybrid_normalized_depth(W), K, B)[0],
            "world": L.world_landmarks_normalized(W) * B,
        }
        errs = {}
        for k, v in lifts.items():
            pa = np.linalg.norm(procrustes_aligned(v[None], G[None])[0] - G, axis=1).mean() * 1000
            rr = np.linalg.norm((v - v[9]) - (G - G[9]), axis=1).mean() * 1000
            errs[k] = {"pa_mm": round(float(pa), 1), "rr_mm": round(float(rr), 1)}
        model = load_hand_model(side=r["hand"])
        for camera in ("perspective", "weak_perspective"):
            for src in ("uvd", "hybrid"):
                # Weak perspective gets the nominal camera of the image size, not the true K.
                K_used = K if camera == "perspective" else nominal_K(r["image_size"])
                init = fit_init(uvd[None], None, W[None], camera, K_used, model, depth_source=src)
                v = init["joints_3d_model"][0]
                pa = np.linalg.norm(procrustes_aligned(v[None], G[None])[0] - G, axis=1).mean() * 1000
                rr = np.linalg.norm((v - v[9]) - (G - G[9]), axis=1).mean() * 1000
                errs[f"iknet_model/{camera}/{src}"] = {"pa_mm": round(float(pa), 1), "rr_mm": round(float(rr), 1)}
        hands.append(dict(image=r["image"], hand=r["hand"], uv_err_px=round(r["uv_err_px"], 1),
                          d_slope=round(slope, 3),
                          world_rigid_err_mm=round(float(np.linalg.norm(P @ R.T - Q, axis=1).mean() * 1000), 1),
                          world_bone_m=round(float(np.linalg.norm(W[9] - W[0])), 4), gt_bone_m=round(float(B), 4),
                          lifting=errs))
    mean = {k: {m: round(float(np.mean([h["lifting"][k][m] for h in hands])), 1) for m in ("pa_mm", "rr_mm")}
            for k in hands[0]["lifting"]} if hands else {}
    return {"hands": hands, "mean_lifting": mean}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--out", type=pathlib.Path, required=True)
    e = sub.add_parser("evaluate")
    e.add_argument("path", type=pathlib.Path)
    args = p.parse_args(argv)
    if args.cmd == "dump":
        dump(args.out)
    else:
        print(json.dumps(evaluate(args.path), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
