"""A synthetic clip of one person's hand that does NOT come from the fitting model, with ground truth (issue 15).

    PYTHONPATH=$PWD .venv/bin/python scripts/make_synthetic_clip.py [--frames 200] [--seed 0] [--camera weak|perspective]
        [--set capture_option=value ...] [--json]

One hand from `make_mismatch_set.py`'s anthropometry (hand length ~ N(0.186, 0.010) m, Buchholz segment
fractions), animated: poses from its pose classes held still for 15-40 frames, then changed in 3-10 frames
(fast motion), the view turning slowly and the hand coming towards the camera and back (0.6 -> 0.35 -> 0.55 m:
its pixel size nearly doubles; a fixed size must put that into the distance). The keypoint stage is imitated
per frame as in the mismatch set: a "perceived" hand (every angle off by a temporally correlated error, sd 3
deg, AR(1) 0.7 per frame, and a global orientation error, sd 2 deg) whose projection plus per-keypoint pixel
noise (sd 1.2 % of the hand's pixel size, white per frame) and a slowly drifting per-finger offset (sd 1 %)
gives the 2D; d is its flattened relative depth; the world landmarks are that hand, hand-centred, with one
clip-wide scale in [0.7, 1.05], depth flattening in [0.6, 1] and tilt (sd 10 deg), plus per-frame noise (3 mm).

`evaluate(clip, options)` runs the capture's fit (hand module + tailor over the track: `capture.fit_track`)
on it and returns the figures: the fitted hand's size against the truth (hand length = wrist -> middle tip in
the rest pose, metric: model size at beta times hand_scale), whether beta / hand_scale are constant, MPJPE
and PA-MPJPE (mm), 2D fit residual (px), chatter (deg), jitter (mm/frame^2) against the truth's, and the lag
(frames) of the fitted trajectories behind the true ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def _mismatch():
    spec = importlib.util.spec_from_file_location("make_mismatch_set", REPO / "scripts" / "make_mismatch_set.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lerp_pose(a: dict, b: dict, t: float) -> dict:
    return {f: {k: (1 - t) * a[f][k] + t * b[f][k] for k in a[f]} for f in a}


def _noisy_pose(pose: dict, noise: dict) -> dict:
    return {f: {k: v + noise[f][k] for k, v in pose[f].items()} for f in pose}


def make_clip(frames: int = 200, seed: int = 0, side: str = "right", fps: float = 25.0) -> dict:
    """The clip: K (3,3), image_size, fps, length (m), side, joints (N,21,3) ground truth (camera frame, m),
    uv (N,21,2) its projection, keypoints_uvd (N,21,3), confidence (N,21), world_landmarks (N,21,3)."""
    m = _mismatch()
    rng = np.random.default_rng(seed)
    prop = m.sample_proportions(rng)
    # pose keyframes: hold, then a fast change
    poses, t = [], 0
    while t < frames:
        _, p = m.sample_pose(rng)
        hold, move = int(rng.integers(15, 41)), int(rng.integers(3, 11))
        poses.append((t, t + hold, p))
        t += hold + move
    W, H = 1280, 720
    f = 1100.0
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
    base = np.stack([[0, -1, 0], [1, 0, 0], [0, 0, 1]], axis=1).astype(float)  # hand frame -> camera
    views = [m._rot(rng.normal(size=3), np.radians(rng.uniform(0, 35))) for _ in range(frames // 60 + 2)]
    n = np.arange(frames)
    depth = 0.6 - 0.25 * np.exp(-0.5 * ((n - 0.45 * frames) / (0.12 * frames)) ** 2) - 0.05 * (n / frames)
    angle_keys = {fi: list(pose_keys) for fi, pose_keys in poses[0][2].items()}
    noise = {fi: {k: 0.0 for k in angle_keys[fi]} for fi in angle_keys}
    finger_off = np.zeros((5, 2))
    global_err = np.zeros(3)
    wl_scale, wl_flat = rng.uniform(0.7, 1.05), rng.uniform(0.6, 1.0)
    wl_tilt = m._rot(np.array([*rng.normal(size=2), 0.0]), np.radians(rng.normal(0, 10)))
    out = {k: [] for k in ("joints", "uv", "keypoints_uvd", "world_landmarks")}
    for i in range(frames):
        k = max(j for j, (start, _, _) in enumerate(poses) if start <= i)
        s, e, p = poses[k]
        if i >= e and k + 1 < len(poses):  # moving to the next pose (smoothstep)
            u = (i - e) / max(poses[k + 1][0] - e, 1)
            pose = _lerp_pose(p, poses[k + 1][2], u * u * (3 - 2 * u))
        else:
            pose = p
        for fi in noise:
            for a in noise[fi]:
                noise[fi][a] = 0.7 * noise[fi][a] + np.sqrt(1 - 0.49) * rng.normal(0, 3.0)
        seen = _noisy_pose(pose, noise)
        kp, _ = m.skeleton(prop, pose)
        kp_seen, _ = m.skeleton(prop, seen)
        if side == "left":
            kp, kp_seen = kp * [1, -1, 1], kp_seen * [1, -1, 1]
        v = (i / 60.0) % 1.0
        j0 = int(i // 60)
        # the view turns slowly from one keyframe to the next (every 60 frames), eased
        Rd = views[j0 + 1] @ views[j0].T
        ang = np.arccos(np.clip((np.trace(Rd) - 1) / 2, -1, 1))
        axis = np.array([Rd[2, 1] - Rd[1, 2], Rd[0, 2] - Rd[2, 0], Rd[1, 0] - Rd[0, 1]])
        Rv = m._rot(axis, ang * (3 * v * v - 2 * v**3)) @ views[j0] if ang > 1e-6 else views[j0]
        R = Rv @ base
        centre_uv = np.array([W * (0.5 + 0.15 * np.sin(2 * np.pi * i / (4 * fps))), H * 0.55])
        z = depth[i]
        rel = kp @ R.T
        root = np.array([(centre_uv[0] - K[0, 2]) / f * z, (centre_uv[1] - K[1, 2]) / f * z, z]) - rel[9]
        joints = rel + root
        global_err = 0.8 * global_err + 0.6 * rng.normal(0, np.radians(2.0), 3)
        Rg = m._rot(global_err, np.linalg.norm(global_err)) if np.linalg.norm(global_err) > 0 else np.eye(3)
        seen_cam = (kp_seen - kp_seen[0]) @ (Rg @ R).T + joints[0]
        uv = joints @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        uv_seen = seen_cam @ K.T
        uv_seen = uv_seen[:, :2] / uv_seen[:, 2:]
        size = float(np.ptp(uv, axis=0).max())
        finger_off = 0.95 * finger_off + np.sqrt(1 - 0.95**2) * rng.normal(0, 0.01 * size, (5, 2))
        off = np.zeros((21, 2))
        off[1:] = np.repeat(finger_off, 4, axis=0)
        uv_det = uv_seen + off + rng.normal(0, 0.012 * size, (21, 2))
        c = 0.3
        d = c * f * (seen_cam[:, 2] - seen_cam[0, 2]) / seen_cam[9, 2] + rng.normal(0, 0.02 * size, 21)
        rel_w = seen_cam - seen_cam.mean(0)
        world = (rel_w * [1, 1, wl_flat]) @ wl_tilt.T * wl_scale + rng.normal(0, 0.003, (21, 3))
        out["joints"].append(joints)
        out["uv"].append(uv)
        out["keypoints_uvd"].append(np.concatenate([uv_det, d[:, None]], 1))
        out["world_landmarks"].append(world)
    clip = {k: np.asarray(v) for k, v in out.items()}
    clip.update(K=K, image_size=(W, H), fps=fps, length=float(prop["length"]), side=side,
                confidence=np.full((frames, 21), 0.95))
    return clip


def hand_length(model, beta: np.ndarray, hand_scale) -> np.ndarray:
    """Metric hand length (wrist -> middle fingertip, rest pose) of the model at beta (..., 10) x hand_scale."""
    from engine.hand_module import shape as shape_mod

    k = shape_mod.keypoints_at(shape_mod.rest_keypoints(model), np.asarray(beta, np.float64))
    return np.linalg.norm(k[..., 12, :] - k[..., 0, :], axis=-1) * np.asarray(hand_scale)


def evaluate(clip: dict, camera: str = "weak_perspective", **options) -> dict:
    """Runs the capture's fit on the clip (`capture.fit_track`); returns the figures of the module docstring."""
    from engine import capture, metrics
    from engine.capture_bench import joint_jitter, trajectory_lag
    from engine.hand_model import load_hand_model
    from engine.hand_module.tracking import HandObservation
    from engine.timing import StageTimer
    from engine.tracks import HandTrack

    N = clip["joints"].shape[0]
    K = clip["K"]
    intr = None if camera == "weak_perspective" else (K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    opts = capture.CaptureOptions(source="synthetic", output="unused.npz", intrinsics=intr, **options)
    obs = [HandObservation(0, clip["side"], 1.0, 1.0, clip["keypoints_uvd"][i].astype(np.float32),
                           clip["confidence"][i].astype(np.float32), clip["world_landmarks"][i].astype(np.float32),
                           (0.0, 0.0, 1.0, 0.0)) for i in range(N)]
    track = HandTrack(clip["side"], np.arange(N), obs)
    model = load_hand_model(None, side=clip["side"])
    Kc = K if camera == "perspective" else capture.camera_from_options(opts, clip["image_size"])[1]
    fit = capture.fit_track(track, N, model, opts, Kc, np.zeros(5), StageTimer(), lambda *a: None, lambda: False)
    v = fit["valid"]
    gt = clip["joints"]
    pred = fit["joints_3d"]
    length = hand_length(model, fit["beta"][v], fit["hand_scale"][v])
    res = metrics.reprojection_px(pred, Kc, clip["keypoints_uvd"][..., :2], clip["confidence"], v)
    ch = metrics.rotation_chatter_deg(fit["theta"], v)
    # under weak perspective the nominal camera differs from the true one: compare hand-centred (wrist) shapes
    mpjpe = 1000 * metrics.mpjpe(pred[v], gt[v]).mean()
    pa = 1000 * metrics.pa_mpjpe(pred[v], gt[v]).mean()
    rel_pred = (pred - pred[:, :1]) * 1000
    rel_gt = (gt - gt[:, :1]) * 1000
    return {
        "frames": int(N), "valid": int(v.sum()),
        "size_ratio": float(np.median(length) / clip["length"]),
        "size_constant": bool(np.ptp(length) < 1e-9 * clip["length"]),
        "beta_distinct_rows": int(len(np.unique(fit["beta"][v], axis=0))),
        "hand_scale_range": [float(np.min(fit["hand_scale"][v])), float(np.max(fit["hand_scale"][v]))],
        "mpjpe_mm": float(mpjpe), "pa_mpjpe_mm": float(pa),
        "fit_residual_px": float(np.nanmedian(res)),
        "chatter_deg_median": float(np.median(ch)), "chatter_deg_p95": float(np.percentile(ch, 95)),
        "jitter_wrist_relative": joint_jitter(rel_pred, v), "jitter_wrist_relative_truth": joint_jitter(rel_gt, v),
        "lag_frames_vs_truth": trajectory_lag(rel_pred, rel_gt, v),
    }


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--camera", choices=("weak", "perspective"), default="weak")
    ap.add_argument("--set", action="append", default=[], help="CaptureOptions field=value (JSON value)")
    args = ap.parse_args(argv)
    options = {kv.split("=", 1)[0]: json.loads(kv.split("=", 1)[1]) for kv in args.set}
    clip = make_clip(args.frames, args.seed)
    cam = "weak_perspective" if args.camera == "weak" else "perspective"
    print(json.dumps(evaluate(clip, cam, **options)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
