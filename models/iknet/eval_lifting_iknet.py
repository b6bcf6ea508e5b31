"""Lifting + shape + IKNet on synthetic ground truth: MPJPE after lifting and after IKNet, both camera models.

    .venv/bin/python models/iknet/eval_lifting_iknet.py [--n 500] [--seed 0]     # prints JSON

Ground truth: random hands from the shipped right model (poses within its joint limits with a global rotation
uniform over SO(3), shapes beta ~ N(0, 1)), wrist 0.3-1.0 m in front of a 1280x720 camera with a 1280 px focal
length, anywhere in the image. Observations imitate the keypoint stage (MediaPipe):
  * u, v: the perspective projection plus Gaussian noise, sigma uniform in [1, 3] px per hand;
  * d: wrist-relative depth in pixels, d_j = c f (z_j - z_0) / z_9, plus Gaussian noise of 0.1 reference-bone
    units (scaled to pixels); c = 1 in condition "ideal_d", c uniform in [0.3, 0.6] per hand in
    "mediapipe_like_d" (real MediaPipe d is flatter than x, see models/iknet/PROVENANCE.md);
  * world landmarks: the metric joints about their centroid plus 0.01 m of Gaussian noise per coordinate
    (mean 3D error ~16 mm, in the range measured for MediaPipe's world landmarks on the gt-sample).
Both camera models see the same (perspective) images: "perspective" is given K, "weak_perspective" is not
(it uses the nominal camera, which here happens to equal K; `weak_perspective_focal_mismatch` repeats it
with true focals of 640 and 2560 px).

Metrics (mm, means over joints and hands): `rr` root-relative (keypoint 9 subtracted from both), `pa` after a
similarity Procrustes alignment, `abs` in the camera frame (perspective only; the metric size is the model's
for the fitted beta, so the true size's depth ambiguity is in it). "lifted" = joints_3d_lifted, "model" =
joints_3d_model (the hand model posed by IKNet's theta and the fitted beta).
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.camera import nominal_K, project_perspective  # noqa: E402
from engine.hand_model import load_hand_model  # noqa: E402
from engine.hand_module import hand_module  # noqa: E402

IMAGE_SIZE = (1280, 720)


def procrustes_aligned(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-aligns pred (B, K, 3) to gt (B, K, 3)."""
    mp, mg = pred.mean(1, keepdims=True), gt.mean(1, keepdims=True)
    p, g = pred - mp, gt - mg
    U, S, Vt = np.linalg.svd(np.einsum("bki,bkj->bij", g, p))
    D = np.ones_like(S)
    D[:, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ (D[:, :, None] * Vt)
    scale = (S * D).sum(-1) / np.maximum((p * p).sum((1, 2)), 1e-12)
    return scale[:, None, None] * np.einsum("bij,bkj->bki", R, p) + mg


def errors(pred: np.ndarray, gt: np.ndarray, absolute: bool) -> dict:
    rr = np.linalg.norm((pred - pred[:, 9:10]) - (gt - gt[:, 9:10]), axis=-1).mean() * 1000
    pa = np.linalg.norm(procrustes_aligned(pred, gt) - gt, axis=-1).mean() * 1000
    out = {"rr_mpjpe_mm": round(float(rr), 2), "pa_mpjpe_mm": round(float(pa), 2)}
    if absolute:
        out["abs_mpjpe_mm"] = round(float(np.linalg.norm(pred - gt, axis=-1).mean() * 1000), 1)
    return out


def synthetic_hands(model, n: int, seed: int):
    """Ground truth: theta (n,16,4), beta (n,10), keypoints (n,21,3) camera frame (m), K."""
    import torch

    from engine.hand_module.iknet import sample_poses

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    theta = sample_poses(model.joint_limits, n, gen, torch.float64).numpy()
    beta = rng.normal(size=(n, 10))
    kp = hand_module.pose_keypoints(model, theta, beta)  # wrist at the origin
    K = nominal_K(IMAGE_SIZE)
    z = rng.uniform(0.3, 1.0, n)
    u = rng.uniform(0.15, 0.85, n) * IMAGE_SIZE[0]
    v = rng.uniform(0.15, 0.85, n) * IMAGE_SIZE[1]
    wrist = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], -1)
    return theta, beta, kp + wrist[:, None], K


def observations(joints, K, seed, px_noise=(1.0, 3.0), depth_noise=0.1, world_noise=0.01, depth_scale=(1.0, 1.0)):
    """MediaPipe-like uvd (n,21,3) and world landmarks (n,21,3) from camera-frame joints.

    d = c f (z - z_0) / z_9 + noise with c uniform in `depth_scale` per hand (MediaPipe's d is flatter than x:
    c = 0.04-0.54 measured on ../shared/data/gt-sample, see PROVENANCE.md)."""
    rng = np.random.default_rng(seed + 1)
    n = len(joints)
    c = rng.uniform(*depth_scale, size=(n, 1))
    uv = project_perspective(joints, K)
    uv = uv + rng.normal(size=uv.shape) * rng.uniform(*px_noise, size=(n, 1, 1))
    f = K[0, 0]
    z = joints[..., 2]
    d = c * f * (z - z[:, :1]) / z[:, 9:10]
    bone_px = f * np.linalg.norm(joints[:, 9] - joints[:, 0], axis=-1) / z[:, 9]
    d = d + rng.normal(size=d.shape) * depth_noise * bone_px[:, None]
    world = joints - joints.mean(1, keepdims=True) + rng.normal(size=joints.shape) * world_noise
    return np.concatenate([uv, d[..., None]], -1), world


CONDITIONS = {
    # d with the x scale (what MediaPipe's documentation suggests) and 0.1 bone units of noise.
    "ideal_d": dict(depth_scale=(1.0, 1.0), depth_noise=0.1, world_noise=0.01),
    # d flattened by a per-hand factor as measured on real MediaPipe output (0.3-0.6 typical).
    "mediapipe_like_d": dict(depth_scale=(0.3, 0.6), depth_noise=0.1, world_noise=0.01),
}


def run_eval(n=500, seed=0, px_noise=(1.0, 3.0), conditions=tuple(CONDITIONS), depth_sources=("uvd", "hybrid", "world"),
             cameras=("perspective", "weak_perspective"), steady_shape=False) -> dict:
    model = load_hand_model(side="right")
    _, beta_true, gt, K = synthetic_hands(model, n, seed)
    results: dict = {
        "n_hands": n,
        "seed": seed,
        "px_noise_sigma_range": list(px_noise),
        "hand_model": model.name,
        "image_size": list(IMAGE_SIZE),
        "focal_px": float(K[0, 0]),
    }
    for cond in conditions:
        cfg = CONDITIONS[cond]
        uvd, world = observations(gt, K, seed, px_noise, **cfg)
        block: dict = {"noise": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}}
        for camera in cameras:
            for src in depth_sources:
                t0 = time.perf_counter()
                init = hand_module.fit_init(uvd, None, world, camera, K if camera == "perspective" else None,
                                            model, depth_source=src, image_size=IMAGE_SIZE, steady_shape=steady_shape)
                ms = (time.perf_counter() - t0) * 1000 / n
                absolute = camera == "perspective"
                block[f"{camera}/{src}"] = {
                    "lifted": errors(init["joints_3d_lifted"], gt, absolute),
                    "model": errors(init["joints_3d_model"], gt, absolute),
                    "beta_rmse_vs_true": round(float(np.sqrt(np.mean((init["beta"] - beta_true) ** 2))), 3),
                    "all_finite": bool(np.all(np.isfinite(init["joints_3d_model"]))),
                    "ms_per_frame": round(ms, 2),
                }
        results[cond] = block
    # Exact observations: the floor of the lifting's own approximations and of IKNet.
    uvd0, world0 = observations(gt, K, seed, (0.0, 0.0), 0.0, 0.0)
    block = {}
    for camera in cameras:
        init = hand_module.fit_init(uvd0, None, world0, camera, K if camera == "perspective" else None, model,
                                    image_size=IMAGE_SIZE, depth_source="uvd")
        block[f"{camera}/uvd"] = {
            "lifted": errors(init["joints_3d_lifted"], gt, camera == "perspective"),
            "model": errors(init["joints_3d_model"], gt, camera == "perspective"),
        }
    results["noise_free"] = block
    return results


def run_focal_eval(n=500, seed=0, focals=(640.0, 2560.0), condition="mediapipe_like_d") -> dict:
    """Weak perspective when the true focal differs from the nominal one (1280 px): the same hands moved along
    their rays so that their pixel size is unchanged, imaged with focal f."""
    model = load_hand_model(side="right")
    _, _, gt, K = synthetic_hands(model, n, seed)
    out = {"nominal_focal_px": float(K[0, 0]), "condition": condition}
    for f in focals:
        Kf = K.copy()
        Kf[0, 0] = Kf[1, 1] = f
        gt_f = gt + gt[:, :1] * (f / K[0, 0] - 1.0)
        uvd, world = observations(gt_f, Kf, seed, **CONDITIONS[condition])
        for src in ("uvd", "hybrid"):
            init = hand_module.fit_init(uvd, None, world, "weak_perspective", None, model, depth_source=src,
                                        image_size=IMAGE_SIZE)
            out[f"focal_{int(f)}/weak_perspective/{src}"] = {
                "lifted": errors(init["joints_3d_lifted"], gt_f, False),
                "model": errors(init["joints_3d_model"], gt_f, False),
            }
    return out


def run_track_eval(n_tracks=10, frames=50, seed=0, condition="mediapipe_like_d") -> dict:
    """Per-frame vs steady shape: tracks of one hand (one beta) in `frames` random poses each."""
    import torch

    from engine.hand_module.iknet import sample_poses

    model = load_hand_model(side="right")
    rng = np.random.default_rng(seed + 7)
    gen = torch.Generator().manual_seed(seed + 7)
    K = nominal_K(IMAGE_SIZE)
    out = {"n_tracks": n_tracks, "frames": frames, "condition": condition}
    acc: dict = {"per_frame": [], "steady": []}
    for t in range(n_tracks):
        beta = np.repeat(rng.normal(size=(1, 10)), frames, 0)
        theta = sample_poses(model.joint_limits, frames, gen, torch.float64).numpy()
        z = rng.uniform(0.3, 1.0, frames)
        wrist = np.stack([rng.uniform(-0.1, 0.1, frames) * z, rng.uniform(-0.1, 0.1, frames) * z, z], -1)
        gt = hand_module.pose_keypoints(model, theta, beta) + wrist[:, None]
        uvd, world = observations(gt, K, seed + t, **CONDITIONS[condition])
        for steady in (False, True):
            init = hand_module.fit_init(uvd, None, world, "perspective", K, model, steady_shape=steady)
            acc["steady" if steady else "per_frame"].append(
                (np.sqrt(np.mean((init["beta"] - beta) ** 2)), errors(init["joints_3d_model"], gt, True)))
    for key, rows in acc.items():
        out[key] = {
            "beta_rmse_vs_true": round(float(np.mean([r[0] for r in rows])), 3),
            **{m: round(float(np.mean([r[1][m] for r in rows])), 2) for m in rows[0][1]},
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steady-shape", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import torch

    torch.set_num_threads(args.threads)
    res = run_eval(args.n, args.seed, steady_shape=args.steady_shape)
    res["weak_perspective_focal_mismatch"] = run_focal_eval(args.n, args.seed)
    res["tracks_perspective_hybrid"] = run_track_eval(seed=args.seed)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
