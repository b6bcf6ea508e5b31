"""Keyframes: the channels a take keys, written in bulk and reduced to a tolerance, and read back.

A take = two new actions per hand (the armature object's and its shape keys'), never written over an
earlier take (naming, sidecars and backups: takes.py). Channels come in groups (a bone's rotation, its
location, the object's location ...) reduced together to `tolerance_deg` / `tolerance_mm` (curves.py);
tolerance 0 keeps a key on every tracked frame. A rig whose identity is constant over the take (rig.py
"identity rig") has no bone location or shape curves: the shape is in its rest skeleton and mesh.
Untracked frames hide the hand: `["ht_visible"]` is keyed (constant interpolation) and drives the mesh's
visibility, and each gap gets a timeline marker. Actions are made and read through actions.py (legacy 4.2
actions, 4.4+ slotted ones). Letters: M keyed frames, J=16.
"""

from __future__ import annotations

import dataclasses
import pathlib

import bpy
import numpy as np

from . import camera, curves, poses, rig, takes
from .actions import (all_fcurves, assign_action, fcurves_of, new_action,  # noqa: F401 (the add-on's API)
                      new_fcurve, own_fcurves)
from .io.results import CaptureResult, RigModel
from .reduce import Reduced

INTERPOLATIONS = ("BEZIER", "LINEAR", "CONSTANT")
ROTATION_MODES = ("QUATERNION", "XYZ")
CONFIDENCE_TOLERANCE = 0.01  # confidence values kept within this when reducing
REACH_M = 0.2  # hand reach used to express a scale error in mm

# ------------------------------------------------------------------------------------- action plumbing
# Blender's animation API differs across versions: actions.py is the one place that knows how.


def read_keys(fc) -> tuple[np.ndarray, np.ndarray]:
    """(frames (M,), values (M,)) float32 of an fcurve's keys."""
    n = len(fc.keyframe_points)
    co = np.empty(2 * n, np.float32)
    fc.keyframe_points.foreach_get("co", co)
    return co[0::2].copy(), co[1::2].copy()


def key_frames(fc) -> np.ndarray:
    return read_keys(fc)[0]


# ---------------------------------------------------------------------------------------- channels


@dataclasses.dataclass(frozen=True)
class Group:
    """One keyed property: `size` curves of `data_path` holding table[key][:, *col] (M, size)."""

    target: str  # 'OBJECT' (armature object action) or 'KEY' (shape key action)
    data_path: str
    size: int
    group: str  # fcurve group shown in the editors
    key: str
    col: tuple
    kind: str  # reduce.py error kind
    unit: str  # 'deg', 'mm' or 'value': which tolerance applies
    scale: float = 1.0  # value units -> the unit (m -> mm)

    def values(self, table: dict) -> np.ndarray:
        v = np.asarray(table[self.key][(slice(None),) + self.col], np.float64)
        return v[:, None] if v.ndim == 1 else v

    def put(self, table: dict, values: np.ndarray) -> None:
        sel = (slice(None),) + self.col
        table[self.key][sel] = np.asarray(values).reshape(table[self.key][sel].shape)


def _bone_path(name: str, prop: str) -> str:
    return f'pose.bones["{name}"].{prop}'


def channel_groups(arm, model: RigModel | None = None) -> list[Group]:
    """The groups a take of this rig keys (rotation mode and identity from the rig)."""
    names = rig.bone_names(arm["ht_side"])[:16]
    euler = arm.get("ht_rotation_mode", "QUATERNION") != "QUATERNION"
    identity = rig.identity_beta(arm) is not None
    groups = [Group("OBJECT", "location", 3, "Object Transforms", "obj_loc", (), "vector", "mm", 1000.0),
              Group("OBJECT", "rotation_quaternion", 4, "Object Transforms", "obj_rot", (), "quaternion", "deg"),
              Group("OBJECT", "scale", 3, "Object Transforms", "obj_scale", (), "vector", "mm", 1000.0 * REACH_M),
              Group("OBJECT", '["ht_confidence"]', 1, "HandTailor", "confidence", (), "vector", "value")]
    for j, n in enumerate(names):
        if euler:
            groups.append(Group("OBJECT", _bone_path(n, "rotation_euler"), 3, n, "bone_eul", (j,), "euler_XYZ",
                                "deg"))
        else:
            groups.append(Group("OBJECT", _bone_path(n, "rotation_quaternion"), 4, n, "bone_rot", (j,),
                                "quaternion", "deg"))
        if not identity:
            groups.append(Group("OBJECT", _bone_path(n, "location"), 3, n, "bone_loc", (j,), "vector", "mm",
                                1000.0))
    if not identity:
        groups.append(Group("OBJECT", _bone_path(names[0], "scale"), 3, names[0], "wrist_scale", (), "vector", "mm",
                            1000.0 * REACH_M))
        # a shape value's worst vertex displacement, times 10 values that may err together
        disp = np.ones(10) if model is None else np.abs(model.shapedirs).max(axis=(0, 1))
        for b in range(10):
            groups.append(Group("KEY", f'key_blocks["beta{b}"].value', 1, "Shape", "beta", (b,), "vector", "mm",
                                1000.0 * 10.0 * float(max(disp[b], 1e-6))))
    return groups


def tolerance_of(group: Group, tolerance_deg: float, tolerance_mm: float) -> float:
    if group.unit == "deg":
        return tolerance_deg
    if group.unit == "mm":
        return tolerance_mm
    return CONFIDENCE_TOLERANCE if (tolerance_deg > 0 or tolerance_mm > 0) else 0.0


def hand_size(arm, table: dict) -> np.ndarray:
    """(M,) the hand's scale in a table: the object's (identity rig) or the wrist bone's (per-frame rig)."""
    return np.asarray(table["wrist_scale" if "wrist_scale" in table else "obj_scale"][:, 0], np.float64)


def channel_table(arm, model: RigModel, theta, beta, root, hand_scale, confidence, to_world,
                  prev_quat=None) -> dict:
    """Values for every channel (float32) from engine quantities over M frames:
    theta (M,16,4), beta (M,10), root (M,3), hand_scale (M,), confidence (M,)."""
    B = rig.bone_rest_rotations(arm)[:16]
    qb = poses.bone_quats(theta, B)
    if prev_quat is not None and len(qb):
        flip = np.sum(qb[0] * prev_quat, -1) < 0
        qb[:, flip] *= -1
    identity = rig.identity_beta(arm)
    J_rest = rig.rest_joints(model, identity)
    M = len(theta)
    hand_scale = np.asarray(hand_scale, np.float64)
    # an identity rig's size is its object scale (constant over a take); a per-frame shape rig's size is its
    # wrist bone's scale, so that its object scale stays constant too (no animated top node in an FBX)
    obj_size = hand_scale if identity is not None else np.ones(M)
    oloc, orot, oscale = poses.object_transforms(root, obj_size, beta, J_rest, model.Jdirs, to_world)
    table = dict(
        obj_loc=oloc.astype(np.float32),
        obj_rot=np.tile(orot, (M, 1)).astype(np.float32),
        obj_scale=np.repeat(oscale[:, None], 3, 1).astype(np.float32),
        confidence=np.asarray(confidence, np.float32),
        bone_rot=qb.astype(np.float32),
        beta=np.asarray(beta, np.float32),
    )
    if identity is None:
        loc = poses.bone_locations(theta, beta, B, model.Jdirs)
        loc[:, 0] *= hand_scale[:, None]  # the wrist's own offset is not scaled by its own scale
        table["bone_loc"] = loc.astype(np.float32)
        table["wrist_scale"] = np.repeat(hand_scale[:, None], 3, 1).astype(np.float32)
    if arm.get("ht_rotation_mode", "QUATERNION") != "QUATERNION":
        eul = poses.rotmat_to_euler(poses.quat_to_rotmat(qb), "XYZ")
        table["bone_eul"] = poses.continuous_eulers(eul, "XYZ").astype(np.float32)
    return table


def frame_offset_for(clip, start_frame: int = 1) -> int:
    """Scene frame of footage frame 0: the clip's start frame, or `start_frame` without a clip."""
    if clip is None:
        return int(start_frame)
    return int(clip.frame_start) - int(clip.frame_offset)


def to_world_matrix(scene) -> np.ndarray:
    cam = scene.camera if scene.camera is not None else bpy.data.objects.get(camera.CAMERA_NAME)
    M = np.array(cam.matrix_world) if cam is not None else camera.default_camera_matrix()
    return camera.opencv_to_world_matrix(M)


def write_table(obj_curves, key_curves, arm, frames, table: dict, interpolation: str, *, model=None,
                tolerance_deg: float = 0.0, tolerance_mm: float = 0.0, required: dict | None = None,
                spans: dict | None = None):
    """Writes every channel group of `table` at frames (M,); returns curves.WriteStats. `spans` (a local
    re-tailor): {(key, col): (a, b) rows written, the curves' keys outside frames[a]..frames[b] kept as they
    are, or None: the group is left alone}; groups not in it are written whole."""
    stats = curves.WriteStats()
    frames = np.asarray(frames, np.float64)
    for g in channel_groups(arm, model):
        target = obj_curves if g.target == "OBJECT" else key_curves
        req = None if required is None else required.get((g.key, g.col))
        whole = (0, len(frames) - 1)
        span = whole if spans is None else spans.get((g.key, g.col), whole)
        if span != whole:  # a part, or None: the counts are the curves' after writing
            rows = slice(0, 0) if span is None else slice(span[0], span[1] + 1)
            err = {}
            if span is not None:
                err = curves.write_group(target, g.data_path, g.group, frames[rows], g.values(table)[rows],
                                         kind=g.kind, tolerance=tolerance_of(g, tolerance_deg, tolerance_mm),
                                         scale=g.scale, interpolation=interpolation, unit=g.unit,
                                         required=None if req is None else req[rows], keep_outside=True).max_error
            fcs = [target.find(g.data_path, index=i) for i in range(g.size)]
            stats.add(curves.WriteStats(len(frames) * g.size, sum(len(fc.keyframe_points) for fc in fcs if fc), err))
            continue
        stats.add(curves.write_group(target, g.data_path, g.group, frames, g.values(table), kind=g.kind,
                                     tolerance=tolerance_of(g, tolerance_deg, tolerance_mm), scale=g.scale,
                                     interpolation=interpolation, unit=g.unit, required=req))
    return stats


def sample_table(arm, frames, like: dict):
    """The rig's active take sampled at frames (M,): (table shaped like `like`, present {key: bool (M, ...)})."""
    obj_action = arm.animation_data.action
    key_action = bpy.data.actions.get(obj_action.get("ht_shape_action", ""))
    obj_curves = fcurves_of(obj_action)
    key_curves = fcurves_of(key_action) if key_action is not None else None
    cur = {k: np.array(v, np.float32, copy=True) for k, v in like.items()}
    present = {k: np.zeros(np.shape(v), bool) for k, v in like.items()}
    for g in channel_groups(arm):
        if g.key not in cur:
            continue
        target = obj_curves if g.target == "OBJECT" else key_curves
        fcs = [target.find(g.data_path, index=i) if target is not None else None for i in range(g.size)]
        if any(fc is None for fc in fcs):
            continue
        g.put(cur, curves.sample(fcs, frames).astype(np.float32))
        present[g.key][(slice(None),) + g.col] = True
    return cur, present


def _gaps(valid: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) row of each run of False in valid (N,)."""
    out, start = [], None
    for i, v in enumerate(valid):
        if not v and start is None:
            start = i
        elif v and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(valid) - 1))
    return out


def write_visibility(obj_curves, scene, take: str, frame_index: np.ndarray, valid: np.ndarray,
                     frame_offset: int) -> None:
    """Keys `["ht_visible"]` (1 tracked, 0 not; constant interpolation) over the result's frames and marks
    the first frame of every gap on the timeline."""
    frames = (frame_offset + np.asarray(frame_index)).astype(np.float64)
    v = np.asarray(valid, bool)
    change = np.concatenate([[True], v[1:] != v[:-1]])
    fc = curves.ensure_fcurve(obj_curves, '["ht_visible"]', 0, "HandTailor")
    idx = np.nonzero(change)[0]
    vals = v[idx].astype(np.float64)[:, None]
    curves.write_reduced(fc, Reduced(idx, frames[idx], vals, np.zeros_like(vals), "CONSTANT"), 0)
    for m in [m for m in scene.timeline_markers if m.name.startswith(take + ":")]:
        scene.timeline_markers.remove(m)
    for a, b in _gaps(v):
        scene.timeline_markers.new(f"{take}: no hand ({b - a + 1} fr)", frame=int(frames[a]))


def key_take(arm, mesh_obj, model: RigModel, result: CaptureResult, track: int, *, frame_offset: int = 1,
             interpolation: str = "LINEAR", to_world=None, take_dir=None, tolerance_deg: float = 0.0,
             tolerance_mm: float = 0.0) -> tuple:
    """Writes one take for `track` of `result` onto the rig; returns (object action, shape action).

    Keys only on tracked frames, reduced to the tolerances (0: every frame). The sidecar with the values
    the curves show goes to `take_dir` (default: beside the result file). Key counts before/after reduction
    are stored on the object action (`ht_keys_before`, `ht_keys_after`)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not one of {INTERPOLATIONS}")
    rows = np.nonzero(result.valid[track])[0]
    if not len(rows):
        raise ValueError(f"track {track} has no valid frame: nothing to key")
    scene = bpy.context.scene
    to_world = to_world_matrix(scene) if to_world is None else to_world
    table = channel_table(arm, model, result.theta[track, rows], result.beta[track, rows],
                          result.root[track, rows], result.hand_scale[track, rows],
                          result.confidence[track, rows].mean(-1), to_world)
    frames = (frame_offset + result.frame_index[rows]).astype(np.float64)
    base = takes.next_take_name(arm)
    take_dir = pathlib.Path(take_dir) if take_dir else pathlib.Path(result.path).parent
    take_file = takes.sidecar_path(take_dir, pathlib.Path(result.path).stem, base)

    obj_action, obj_curves = new_action(arm, base, "OBJECT")
    key_action, key_curves = new_action(mesh_obj.data.shape_keys, base + "_shape", "KEY")
    for action in (obj_action, key_action):
        action["ht_rig"] = arm.name
        action["ht_take_file"] = takes.stored_path(take_file)
        action["ht_result"] = takes.stored_path(result.path)
        action["ht_track"] = int(track)
    obj_action["ht_shape_action"] = key_action.name
    obj_action["ht_interpolation"] = interpolation
    obj_action["ht_tolerance_deg"] = float(tolerance_deg)
    obj_action["ht_tolerance_mm"] = float(tolerance_mm)
    obj_action["ht_rotation_mode"] = arm.get("ht_rotation_mode", "QUATERNION")
    stats = write_table(obj_curves, key_curves, arm, frames, table, interpolation, model=model,
                        tolerance_deg=tolerance_deg, tolerance_mm=tolerance_mm)
    write_visibility(obj_curves, scene, base, result.frame_index, result.valid[track], frame_offset)
    obj_action["ht_keys_before"] = stats.keys_before
    obj_action["ht_keys_after"] = stats.keys_after
    obj_action["ht_max_error_deg"] = stats.max_error.get("deg", 0.0)
    obj_action["ht_max_error_mm"] = stats.max_error.get("mm", 0.0)
    reduced = tolerance_deg > 0 or tolerance_mm > 0
    written = sample_table(arm, frames, table)[0] if reduced else {k: np.asarray(v, np.float32) for k, v in
                                                                   table.items()}
    M = len(rows)
    locks = dict(lock_theta=np.zeros((M, 16), bool), lock_beta=np.zeros(M, bool),
                 lock_root=np.zeros(M, bool), lock_hand_scale=np.zeros(M, bool))
    takes.save_take_file(take_file, frames, rows, written, locks, result.path, track)
    return obj_action, key_action
