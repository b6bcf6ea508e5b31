"""Benchmark: keying a capture of N frames x 2 hands in bulk vs Blender's keyframe_insert loop (bpy).

    .venv/bin/python scripts/bench_keys.py [--frames 10000] [--insert-frames 20]

Builds two rigs from the shipped open hand model, writes one take per hand through the add-on's own
keys.key_take (every channel: bone quaternions + locations, shape keys, object transforms, confidence),
then times the per-key `keyframe_insert` way on --insert-frames frames and extrapolates it to N.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic_result(path, N: int, sides=("right", "left"), seed=0):
    from handtailor_blender import poses
    from handtailor_blender.io.results import write_npz_atomic

    rng = np.random.default_rng(seed)
    T = len(sides)
    aa = np.cumsum(rng.normal(scale=0.02, size=(T, N, 16, 3)), axis=1)
    ang = np.linalg.norm(aa, axis=-1, keepdims=True)
    theta = np.concatenate([np.cos(ang / 2), np.sin(ang / 2) * aa / np.maximum(ang, 1e-12)], -1)
    theta = poses.quat_normalize(theta)
    K = np.array([[1280.0, 0, 640], [0, 1280.0, 360], [0, 0, 1]])
    write_npz_atomic(path, dict(
        format_version=np.array(1), source=np.array("bench.mp4"), image_size=np.array([1280, 720]),
        fps=np.array(30.0), frame_index=np.arange(N), camera_model=np.array("perspective"), K=K,
        distortion=np.zeros(5), hand_model=np.array(""), hand_model_sha256=np.array(""),
        hand_side=np.array(list(sides)), valid=np.ones((T, N), bool), theta=theta,
        beta=rng.normal(size=(T, N, 10)), root=np.tile([0.0, 0.0, 0.5], (T, N, 1)),
        hand_scale=np.ones((T, N)), projection_scale=np.full((T, N), np.nan),
        keypoints_2d=np.zeros((T, N, 21, 2)), confidence=np.ones((T, N, 21)), joints_3d=np.zeros((T, N, 21, 3))))


def insert_loop(arm, mesh, frames: int) -> float:
    """Seconds for keying `frames` frames of one rig with keyframe_insert, channel by channel."""
    from handtailor_blender import rig

    names = rig.bone_names(arm["ht_side"])[:16]
    kbs = [mesh.data.shape_keys.key_blocks[f"beta{b}"] for b in range(10)]
    arm.animation_data_clear()
    mesh.data.shape_keys.animation_data_clear()
    t0 = time.perf_counter()
    for f in range(1, frames + 1):
        arm.keyframe_insert("location", frame=f)
        arm.keyframe_insert("rotation_quaternion", frame=f)
        arm.keyframe_insert("scale", frame=f)
        arm.keyframe_insert('["ht_confidence"]', frame=f)
        for n in names:
            pb = arm.pose.bones[n]
            pb.keyframe_insert("rotation_quaternion", frame=f)
            pb.keyframe_insert("location", frame=f)
        for kb in kbs:
            kb.keyframe_insert("value", frame=f)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--insert-frames", type=int, default=100)
    args = p.parse_args(argv)
    import bpy

    from handtailor_blender import camera, keys, rig
    from handtailor_blender.io.results import read_model, read_result

    bpy.ops.wm.read_factory_settings(use_empty=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ht_bench_"))
    synthetic_result(tmp / "bench.npz", args.frames)
    result = read_result(tmp / "bench.npz")
    scene = bpy.context.scene
    camera.ensure_camera(scene, result.K, result.image_size)
    to_world = keys.to_world_matrix(scene)
    rigs = []
    for t, side in enumerate(result.hand_side):
        model = read_model(ROOT / "models" / "open_hand" / f"open_hand_{side}.npz", side)
        rigs.append((model, *rig.build_rig(model, f"bench_{side}")))
    t0 = time.perf_counter()
    c0 = time.process_time()
    n_curves = 0
    n_keys = 0
    for t, (model, arm, mesh) in enumerate(rigs):
        keys.key_take(arm, mesh, model, result, t, to_world=to_world, take_dir=tmp)
        n_curves += len(keys.fcurves_of(arm.animation_data.action))
        n_curves += len(keys.fcurves_of(mesh.data.shape_keys.animation_data.action))
    bulk_total = time.perf_counter() - t0
    bulk_cpu = time.process_time() - c0
    n_keys = n_curves * args.frames
    # the bulk write alone (no channel math, no sidecar): fresh actions for the same tables
    t_write = 0.0
    c_write = 0.0
    for t, (model, arm, mesh) in enumerate(rigs):
        rows = np.arange(args.frames)
        table = keys.channel_table(arm, model, result.theta[t], result.beta[t], result.root[t],
                                   result.hand_scale[t], np.ones(args.frames), to_world)
        t1 = time.perf_counter()
        c1 = time.process_time()
        _, oc = keys.new_action(arm, f"w_{t}", "OBJECT")
        _, kc = keys.new_action(mesh.data.shape_keys, f"wk_{t}", "KEY")
        keys.write_table(oc, kc, arm, rows + 1.0, table, "LINEAR", model=model)
        t_write += time.perf_counter() - t1
        c_write += time.process_time() - c1
    c2 = time.process_time()
    insert = sum(insert_loop(arm, mesh, args.insert_frames) for _, arm, mesh in rigs)
    insert_cpu = time.process_time() - c2
    insert_extrapolated = insert / args.insert_frames * args.frames
    out = dict(
        blender=bpy.app.version_string, frames=args.frames, hands=len(rigs), fcurves=n_curves, keys=n_keys,
        bulk_seconds_total=round(bulk_total, 4), bulk_seconds_write_only=round(t_write, 4),
        bulk_cpu_seconds_total=round(bulk_cpu, 4), bulk_cpu_seconds_write_only=round(c_write, 4),
        insert_cpu_seconds_measured=round(insert_cpu, 4),
        load_average_1min=round(__import__("os").getloadavg()[0], 2),
        insert_frames_measured=args.insert_frames, insert_seconds_measured=round(insert, 4),
        insert_seconds_extrapolated=round(insert_extrapolated, 1),
        speedup_vs_insert=round(insert_extrapolated / bulk_total, 1), under_1s=bulk_total < 1.0)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
