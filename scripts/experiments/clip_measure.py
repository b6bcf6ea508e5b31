"""Issue 15's figures on the shared clips: identity, chatter, fit residual, jitter, lag, and the ASL re-tailor.

    PYTHONPATH=$PWD .venv/bin/python scripts/experiments/clip_measure.py [--clips gesture,asl,dex] [--json OUT]
        [--set key=value ...] [--retailor]

The tracker's outputs are recorded once per clip (cached under $HT_MEASURE_CACHE, default /tmp/ht-measure) and
replayed, so that only the fit differs between runs. `--set` passes CaptureOptions fields (e.g. smoothing=30).
Figures (engine.metrics / engine.capture_bench): distinct beta rows and the hand_scale range over the track,
chatter (finger rotation against the slerp midpoint of its neighbours) median / p95 in degrees, fit residual
(fitted vs detected keypoints, px, median over keypoints), jitter with / without the temporal term
(mm/frame^2), lag (frames).
ASL curl (`curl`, the ASL clip only: ../shared holds MediaPipe's own world landmarks for it): on the CURL_FRAMES most
curled frames (by the detected 2D: fingertip-to-wrist over MCP-to-wrist distance, four fingers), each finger's
bend at its MCP, PIP and DIP (the angle between consecutive bones, degrees, mean over those frames) for the fit,
its start (the hand module: the same replay with 0 iterations) and MediaPipe's world landmarks (a network's
output, not ground truth, but the footage's own 3D reading), with the fitted fingertips' 2D distance to the
detected ones on those frames: "curled fingers are curled" (issue 14) in figures.
ASL re-tailor (`--retailor`): index1 rotated 25 deg on footage frames 150-160 and locked; index1's largest
frame-to-frame step in 140-170; how many frames < 120 or > 190 changed; a re-tailor with no edits: the largest
joint rotation change; and index1's rotation on frames 140-172 split into flexion, abduction and twist (deg,
the rotation vector's components on the joint's flexion axis, the axis across it and the bone) with each step,
for the take and the re-tailored take (`index1_components`): which part of a large step is the finger curling.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pickle
import sys
import tempfile
import time

import numpy as np

from engine import capture, metrics, results, retailor
from engine.capture_bench import RecordingTracker, ReplayTracker, joint_jitter, trajectory_lag

VIDEOS = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "videos"
CLIPS = {"gesture": "mediapipe-samples_gesture_recognizer_test_video.mp4", "asl": "asl_hand.25fps.mp4",
         "dex": "dex-retargeting_human_hand_video.mp4"}
CACHE = pathlib.Path(os.environ.get("HT_MEASURE_CACHE", "/tmp/ht-measure"))


def observations(name: str) -> list:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.obs.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    src = str(VIDEOS / CLIPS[name])
    opts = capture.CaptureOptions(source=src, output=str(CACHE / f"{name}.rec.npz"))
    rec = RecordingTracker(capture.make_tracker(opts))
    capture.run_capture(opts, tracker=rec)
    path.write_bytes(pickle.dumps(rec.outputs))
    return rec.outputs


def replay(name: str, out: str, temporal: bool = True, **overrides) -> dict:
    opts = capture.CaptureOptions(source=str(VIDEOS / CLIPS[name]), output=out, **overrides)
    stats: dict = {}
    t0 = time.perf_counter()
    capture.run_capture(opts, tracker=ReplayTracker(observations(name)), stats=stats, temporal=temporal)
    stats["fit_s"] = time.perf_counter() - t0
    return stats


def angle_deg(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(2 * np.arccos(np.clip(np.abs(np.sum(a * b, -1)), 0, 1)))


def figures(r: dict, r_raw: dict | None) -> dict:
    t = 0
    v = r["valid"][t]
    beta, hs = r["beta"][t][v], r["hand_scale"][t][v]
    ch = metrics.rotation_chatter_deg(r["theta"][t], v)
    res = metrics.reprojection_px(r["joints_3d"][t], r["K"], r["keypoints_2d"][t], r["confidence"][t], v)
    out = {"valid": int(v.sum()), "beta_distinct_rows": int(len(np.unique(beta, axis=0))),
           "hand_scale_min": float(hs.min()), "hand_scale_max": float(hs.max()),
           "chatter_deg_median": float(np.median(ch)), "chatter_deg_p95": float(np.percentile(ch, 95)),
           "fit_residual_px": float(np.nanmedian(res)),
           "jitter_with_temporal": joint_jitter(r["joints_3d"][t] * 1000, v)}
    if r_raw is not None:
        v2 = v & r_raw["valid"][t]
        out["jitter_without_temporal"] = joint_jitter(r_raw["joints_3d"][t] * 1000, v2)
        out["lag_frames"] = trajectory_lag(r["joints_3d"][t] * 1000, r_raw["joints_3d"][t] * 1000, v2)
        ch2 = metrics.rotation_chatter_deg(r_raw["theta"][t], v2)
        out["chatter_deg_median_without_temporal"] = float(np.median(ch2))
        out["fit_residual_px_without_temporal"] = float(np.nanmedian(metrics.reprojection_px(
            r_raw["joints_3d"][t], r_raw["K"], r_raw["keypoints_2d"][t], r_raw["confidence"][t], v2)))
    return out


CURL_FRAMES = 12
ASL_WORLD = VIDEOS / "asl_hand_3d.full.json"


def bend_deg(points: np.ndarray) -> np.ndarray:
    """(N, 21, 3) keypoints -> (N, 5, 3) each finger's bend at its base, middle and last joint (thumb: MCP, IP
    and the CMC's bend from the wrist), degrees: the angle between consecutive bones."""
    from engine.hand_model.constants import FINGER_KEYPOINTS

    out = []
    for chain in np.asarray(FINGER_KEYPOINTS)[:, ::-1]:  # base -> tip
        p = points[:, [0, *chain]]
        bones = np.diff(p, axis=1)
        bones = bones / np.linalg.norm(bones, axis=-1, keepdims=True)
        out.append(np.degrees(np.arccos(np.clip(np.sum(bones[:, :-1] * bones[:, 1:], -1), -1, 1))))
    return np.stack(out, 1)


def asl_curl(r: dict, r_start: dict) -> dict:
    t = 0
    v = r["valid"][t]
    kp = r["keypoints_2d"][t]
    tips, mcps = [8, 12, 16, 20], [5, 9, 13, 17]
    reach = np.mean([np.linalg.norm(kp[:, a] - kp[:, 0], axis=-1) / np.linalg.norm(kp[:, b] - kp[:, 0], axis=-1)
                     for a, b in zip(tips, mcps)], axis=0)
    frames = np.flatnonzero(v)[np.argsort(reach[v])[:CURL_FRAMES]]
    world = np.asarray(json.loads(ASL_WORLD.read_text()), dtype=np.float64)
    idx = r["frame_index"][frames]
    from engine.camera import project_perspective

    uv = project_perspective(r["joints_3d"][t][frames], r["K"])
    names = ("thumb", "index", "middle", "ring", "little")

    def table(points):
        b = bend_deg(points).mean(0)
        return {n: [round(float(x), 1) for x in row] for n, row in zip(names, b)}

    return {"frames": [int(i) for i in idx],
            "bend_deg_fit": table(r["joints_3d"][t][frames]),
            "bend_deg_hand_module": table(r_start["joints_3d"][t][frames]),
            "bend_deg_mediapipe_world": table(world[idx]),
            "fingertip_px_fit": {n: round(float(x), 2) for n, x in
                                 zip(names, np.linalg.norm(uv - kp[frames], axis=-1)[:, [4, 8, 12, 16, 20]].mean(0))}}


def joint_components(theta: np.ndarray, joint: int) -> np.ndarray:
    """(N, 16, 4) local rotations -> (N, 3) joint's rotation vector (deg) on its flexion axis, the axis across
    it (abduction) and its bone (twist), rest-pose axes of the shipped right model."""
    from engine.hand_model import MANO_PARENTS, load_hand_model
    from engine.hand_model.cli import flexion_axes
    from engine.hand_model.rotations import quat_log

    model = load_hand_model()
    joints = model.rest_joints()
    child = int(np.flatnonzero(np.asarray(MANO_PARENTS) == joint)[0])
    bone = joints[child] - joints[joint]
    bone = bone / np.linalg.norm(bone)
    flex = flexion_axes(model)[joint]
    axes = np.stack([flex, np.cross(bone, flex), bone])
    q = theta[:, joint] / np.linalg.norm(theta[:, joint], axis=-1, keepdims=True)
    return np.degrees(quat_log(q) @ axes.T)


def asl_retailor(result_path: str, tmp: str, falloff: int | None = None) -> dict:
    from engine.hand_model import MANO_JOINT_NAMES

    r = results.read_result(result_path)
    fi = r["frame_index"]
    j = list(MANO_JOINT_NAMES).index("index1")
    e = results.empty_edits(r)
    rows = np.flatnonzero((fi >= 150) & (fi <= 160))
    half = np.radians(25) / 2
    qz = np.array([np.cos(half), 0, 0, np.sin(half)])
    from engine.hand_model.rotations import quat_multiply  # (w, x, y, z)

    for n in rows:
        e["theta"][0, n, j] = quat_multiply(r["theta"][0, n, j], qz)
        e["lock_theta"][0, n, j] = True
    ep = results.write_edits(os.path.join(tmp, "edits.npz"), e, r)
    out = os.path.join(tmp, "edited.npz")
    extra = {} if falloff is None else {"falloff": falloff}
    retailor.run_retailor(retailor.RetailorOptions(result_path, str(ep), out, **extra))
    new = results.read_result(out)
    th_new, th_old = new["theta"][0], r["theta"][0]
    edited_exact = bool(np.array_equal(th_new[rows, j], e["theta"][0, rows, j]))
    win = np.flatnonzero((fi >= 140) & (fi <= 170))
    steps = angle_deg(th_new[win[:-1], j], th_new[win[1:], j])
    steps_take = angle_deg(th_old[win[:-1], j], th_old[win[1:], j])
    far = (fi < 120) | (fi > 190)
    same = {k: bool(np.array_equal(new[k][0][far], r[k][0][far], equal_nan=True))
            for k in ("theta", "beta", "root", "hand_scale", "joints_3d")}
    # no edits
    ep0 = results.write_edits(os.path.join(tmp, "none.npz"), results.empty_edits(r), r)
    out0 = os.path.join(tmp, "noedit.npz")
    retailor.run_retailor(retailor.RetailorOptions(result_path, str(ep0), out0))
    n0 = results.read_result(out0)
    v = r["valid"][0]
    moved = angle_deg(n0["theta"][0][v], th_old[v])
    rows = np.flatnonzero((fi >= 140) & (fi <= 172))
    parts = {}
    for name, th in (("take", th_old), ("retailored", th_new)):
        c = joint_components(th[rows], j)
        step = np.concatenate([[0.0], angle_deg(th[rows[:-1], j], th[rows[1:], j])])
        parts[name] = [{"frame": int(fi[r]), "flexion": round(float(a), 2), "abduction": round(float(b), 2),
                        "twist": round(float(t), 2), "step": round(float(s), 2)} for r, (a, b, t), s in zip(rows, c, step)]
    return {"index1_components": parts, "edit_bit_exact": edited_exact, "index1_max_step_140_170": float(steps.max()),
            "index1_max_step_140_170_take": float(steps_take.max()),
            "far_frames_bit_identical": same, "far_frames_changed_theta": int((~np.all(th_new[far] == th_old[far], axis=(1, 2)) & v[far]).sum()),
            "noedit_max_deg": float(moved.max()), "noedit_median_deg": float(np.median(moved))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--clips", default="gesture,asl,dex")
    p.add_argument("--set", action="append", default=[], help="CaptureOptions field=value")
    p.add_argument("--retailor", action="store_true")
    p.add_argument("--falloff", type=int)
    p.add_argument("--json")
    a = p.parse_args(argv)
    over = {}
    for kv in a.set:
        k, v = kv.split("=", 1)
        over[k] = json.loads(v) if v[:1] in "0123456789-[{tf" and v not in ("-",) else v
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.clips.split(","):
            s = replay(name, os.path.join(tmp, f"{name}.npz"), **over)
            s0 = replay(name, os.path.join(tmp, f"{name}_raw.npz"), temporal=False, **over)
            f = figures(s["result"], s0["result"])
            f["fit_s"] = s["fit_s"]
            if name == "asl" and ASL_WORLD.is_file():
                s_start = replay(name, os.path.join(tmp, f"{name}_start.npz"), **{**over, "iterations": 0})
                f["curl"] = asl_curl(s["result"], s_start["result"])
            if a.retailor and name == "asl":
                f["retailor"] = asl_retailor(os.path.join(tmp, f"{name}.npz"), tmp, a.falloff)
            report[name] = f
            print(name, json.dumps(f), file=sys.stderr, flush=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
