"""Keyframes in bulk (keyframe_points.add + foreach_set + update), takes, and the edited-key bookkeeping.

A take = two new actions per hand (the armature object's and its shape keys'), never written over an
earlier take. The values written are stored per take in a sidecar .npz (path on the action as
`ht_take_file`) so that re-tailor can tell which keys an artist changed. Actions are made and read through
actions.py (legacy 4.2 actions, 4.4+ slotted ones). Letters: M keyed frames, J=16.
"""

from __future__ import annotations

import os
import pathlib

import bpy
import numpy as np

from . import camera, poses, rig
from .actions import assign_action, fcurves_of, new_action, new_fcurve  # noqa: F401 (the add-on's API)
from .io.results import CaptureResult, RigModel, write_npz_atomic

INTERPOLATIONS = ("LINEAR", "BEZIER", "CONSTANT")

# ------------------------------------------------------------------------------------- action plumbing
# Blender's animation API differs across versions: actions.py is the one place that knows how.
_new_fcurve = new_fcurve


def _interp_value(name: str) -> int:
    return bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items[name].value


def set_keys(fc, frames: np.ndarray, values: np.ndarray, interpolation: str = "LINEAR", *, _co=None,
             _sorted=None) -> None:
    """Replaces fc's keys by (frames (M,), values (M,)) in bulk."""
    kp = fc.keyframe_points
    if len(kp):
        kp.clear()
    M = len(frames)
    kp.add(M)
    if _co is None:
        co = np.empty(2 * M, np.float32)
        co[0::2] = frames
    else:
        co = _co  # frames already in place
    co[1::2] = values
    is_sorted = _sorted if _sorted is not None else (M >= 2 and bool(np.all(np.diff(frames) > 0)))
    if interpolation == "BEZIER" or not is_sorted:
        kp.foreach_set("co", co)
        fc.update()  # sorts the keys and computes the auto handles
    else:
        # LINEAR / CONSTANT never read the handles, but a later switch to Bezier does (and Blender's
        # interpolation operators do not recompute them): put them on the keys. New keys sit at (0, 0) with
        # their handles, and `co_ui` moves the handles with the key, so one call sets all three, without
        # paying for fc.update() (the keys are already sorted).
        kp.foreach_set("co_ui", co)
    if interpolation != "BEZIER":
        kp.foreach_set("interpolation", np.full(M, _interp_value(interpolation), np.int32))


def read_keys(fc) -> tuple[np.ndarray, np.ndarray]:
    """(frames (M,), values (M,)) float32 of an fcurve's keys."""
    n = len(fc.keyframe_points)
    co = np.empty(2 * n, np.float32)
    fc.keyframe_points.foreach_get("co", co)
    return co[0::2].copy(), co[1::2].copy()


def values_at(fc, frames: np.ndarray):
    """Key values at exactly `frames` (M,): (values (M,) float32, present (M,) bool)."""
    kf, kv = read_keys(fc)
    frames = np.asarray(frames, np.float32)
    out = np.zeros(len(frames), np.float32)
    present = np.zeros(len(frames), bool)
    if len(kf):
        order = np.argsort(kf, kind="stable")
        kf, kv = kf[order], kv[order]
        pos = np.clip(np.searchsorted(kf, frames), 0, len(kf) - 1)
        present = kf[pos] == frames
        out[present] = kv[pos[present]]
    return out, present


def rewrite_values(fc, frames: np.ndarray, values: np.ndarray, mask: np.ndarray) -> None:
    """Sets the keys at frames[mask] to values[mask]; every other key keeps its value bit for bit.
    Missing keys at masked frames are added. Handles move with their key."""
    frames = np.asarray(frames, np.float32)
    values = np.asarray(values, np.float32)
    cur, present = values_at(fc, frames)
    kp = fc.keyframe_points
    n = len(kp)
    co = np.empty(2 * n, np.float32)
    hl = np.empty(2 * n, np.float32)
    hr = np.empty(2 * n, np.float32)
    kp.foreach_get("co", co)
    kp.foreach_get("handle_left", hl)
    kp.foreach_get("handle_right", hr)
    key_frames = co[0::2]
    index = {float(f): i for i, f in enumerate(key_frames)}
    change = mask & present
    for m in np.nonzero(change)[0]:
        i = index[float(frames[m])]
        d = values[m] - co[2 * i + 1]
        co[2 * i + 1] = values[m]
        hl[2 * i + 1] += d
        hr[2 * i + 1] += d
    kp.foreach_set("co", co)
    kp.foreach_set("handle_left", hl)
    kp.foreach_set("handle_right", hr)
    interp = kp[0].interpolation if n else "LINEAR"
    for m in np.nonzero(mask & ~present)[0]:
        k = kp.insert(float(frames[m]), float(values[m]), options={"FAST"})
        k.interpolation = interp
    fc.update()


# ---------------------------------------------------------------------------------------- channels


def _bone_path(name: str, prop: str) -> str:
    return f'pose.bones["{name}"].{prop}'


def channel_specs(side: str):
    """[(target 'OBJECT'|'KEY', data_path, index, group, table key, column tuple)] for one rig."""
    names = rig.bone_names(side)[:16]
    specs = []
    for i in range(3):
        specs.append(("OBJECT", "location", i, "Object Transforms", "obj_loc", (i,)))
    for i in range(4):
        specs.append(("OBJECT", "rotation_quaternion", i, "Object Transforms", "obj_rot", (i,)))
    for i in range(3):
        specs.append(("OBJECT", "scale", i, "Object Transforms", "obj_scale", (i,)))
    specs.append(("OBJECT", '["ht_confidence"]', 0, "HandTailor", "confidence", ()))
    for j, n in enumerate(names):
        for i in range(4):
            specs.append(("OBJECT", _bone_path(n, "rotation_quaternion"), i, n, "bone_rot", (j, i)))
        for i in range(3):
            specs.append(("OBJECT", _bone_path(n, "location"), i, n, "bone_loc", (j, i)))
    for b in range(10):
        specs.append(("KEY", f'key_blocks["beta{b}"].value', 0, "Shape", "beta", (b,)))
    return specs


def channel_table(arm, model: RigModel, theta, beta, root, hand_scale, confidence, to_world,
                  prev_quat=None) -> dict:
    """Values for every keyed channel (float32) from engine quantities over M frames:
    theta (M,16,4), beta (M,10), root (M,3), hand_scale (M,), confidence (M,)."""
    B = rig.bone_rest_rotations(arm)[:16]
    qb = poses.bone_quats(theta, B)
    if prev_quat is not None and len(qb):
        flip = np.sum(qb[0] * prev_quat, -1) < 0
        qb[:, flip] *= -1
    loc = poses.bone_locations(theta, beta, B, model.Jdirs)
    oloc, orot, oscale = poses.object_transforms(root, hand_scale, beta, model.J0, model.Jdirs, to_world)
    M = len(theta)
    return dict(
        obj_loc=oloc.astype(np.float32),
        obj_rot=np.tile(orot, (M, 1)).astype(np.float32),
        obj_scale=np.repeat(oscale[:, None], 3, 1).astype(np.float32),
        confidence=np.asarray(confidence, np.float32),
        bone_rot=qb.astype(np.float32),
        bone_loc=loc.astype(np.float32),
        beta=np.asarray(beta, np.float32),
    )


def frame_offset_for(clip) -> int:
    """Scene frame of footage frame 0."""
    if clip is None:
        return 1
    return int(clip.frame_start) - int(clip.frame_offset)


def to_world_matrix(scene) -> np.ndarray:
    cam = scene.camera if scene.camera is not None else bpy.data.objects.get(camera.CAMERA_NAME)
    M = np.array(cam.matrix_world) if cam is not None else camera.default_camera_matrix()
    return camera.opencv_to_world_matrix(M)


def take_count(arm) -> int:
    return sum(1 for a in bpy.data.actions if a.get("ht_rig") == arm.name and not a.get("ht_backup"))


def key_take(arm, mesh_obj, model: RigModel, result: CaptureResult, track: int, *, frame_offset: int = 1,
             interpolation: str = "LINEAR", to_world=None, take_dir=None) -> tuple:
    """Writes one take for `track` of `result` onto the rig; returns (object action, shape action).

    Keys only on valid frames; every channel in one bulk write. The sidecar with the written values goes to
    `take_dir` (default: beside the result file)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not one of {INTERPOLATIONS}")
    rows = np.nonzero(result.valid[track])[0]
    if not len(rows):
        raise ValueError(f"track {track} has no valid frame: nothing to key")
    to_world = to_world_matrix(bpy.context.scene) if to_world is None else to_world
    table = channel_table(arm, model, result.theta[track, rows], result.beta[track, rows],
                          result.root[track, rows], result.hand_scale[track, rows],
                          result.confidence[track, rows].mean(-1), to_world)
    frames = (frame_offset + result.frame_index[rows]).astype(np.float64)
    k = take_count(arm) + 1
    base = f"{arm.name}_take{k:02d}"
    take_dir = pathlib.Path(take_dir) if take_dir else pathlib.Path(result.path).parent
    take_file = take_dir / f"{pathlib.Path(result.path).stem}.{base}.keys.npz"
    M = len(rows)
    locks = dict(lock_theta=np.zeros((M, 16), bool), lock_beta=np.zeros(M, bool),
                 lock_root=np.zeros(M, bool), lock_hand_scale=np.zeros(M, bool))
    save_take_file(take_file, frames, rows, table, locks, result.path, track)

    obj_action, obj_curves = new_action(arm, base, "OBJECT")
    key_action, key_curves = new_action(mesh_obj.data.shape_keys, base + "_shape", "KEY")
    for action in (obj_action, key_action):
        action["ht_rig"] = arm.name
        action["ht_take_file"] = str(take_file)
        action["ht_result"] = result.path
        action["ht_track"] = int(track)
    obj_action["ht_shape_action"] = key_action.name
    obj_action["ht_interpolation"] = interpolation
    write_table(obj_curves, key_curves, arm["ht_side"], frames, table, interpolation)
    return obj_action, key_action


def write_table(obj_curves, key_curves, side: str, frames, table: dict, interpolation: str) -> None:
    frames = np.asarray(frames)
    co = np.empty(2 * len(frames), np.float32)  # one buffer for every channel, frames written once
    co[0::2] = frames
    is_sorted = len(frames) >= 2 and bool(np.all(np.diff(frames) > 0))
    for target, path, index, group, key, col in channel_specs(side):
        curves = obj_curves if target == "OBJECT" else key_curves
        values = table[key][(slice(None),) + col]
        set_keys(_new_fcurve(curves, path, index, group), frames, values, interpolation, _co=co,
                 _sorted=is_sorted)


def save_take_file(path, frames, rows, table: dict, locks: dict, result_path: str, track: int) -> None:
    write_npz_atomic(path, dict(frames=np.asarray(frames, np.float64), rows=np.asarray(rows, np.int64),
                                result=np.array(str(result_path)), track=np.array(int(track)),
                                **{f"v_{k}": v for k, v in table.items()}, **locks))


def load_take_file(path) -> dict:
    with np.load(os.fspath(path), allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    out["table"] = {k[2:]: out.pop(k) for k in list(out) if k.startswith("v_")}
    return out


def current_table(arm, frames: np.ndarray, stored: dict):
    """Reads the rig's current keys at `frames`: (table like channel_table, present table of bools)."""
    obj_action = arm.animation_data.action
    key_action = bpy.data.actions[obj_action["ht_shape_action"]]
    obj_curves, key_curves = fcurves_of(obj_action), fcurves_of(key_action)
    cur = {k: np.array(v, copy=True) for k, v in stored.items()}
    present = {k: np.ones(v.shape, bool) for k, v in stored.items()}
    for target, path, index, group, key, col in channel_specs(arm["ht_side"]):
        curves = obj_curves if target == "OBJECT" else key_curves
        fc = curves.find(path, index=index) if curves is not None else None
        sel = (slice(None),) + col
        if fc is None:
            present[key][sel] = False
            continue
        cur[key][sel], present[key][sel] = values_at(fc, frames)
    return cur, present
