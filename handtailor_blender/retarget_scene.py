"""Retarget in the scene (bpy side of retarget.py): read a take rig, find the character's hand bones, key them.

The character's keys go on its own action (the one it already plays, or a new one when it has none), only on
the mapped finger bones (and the hand bone with `with_wrist`), only inside the take's frame range: its other
keys, bones and data are left as they are. Keys are reduced to `tolerance_deg` like a capture's.
"""

from __future__ import annotations

import dataclasses

import bpy
import numpy as np

from . import anatomy, bone_maps, curves, keys, poses, retarget, rig


@dataclasses.dataclass
class Report:
    """What a retarget did; `as_dict` is the headless `--json` output."""

    preset: str = ""
    mapped: dict = dataclasses.field(default_factory=dict)  # take bone -> character bone
    unmapped: list = dataclasses.field(default_factory=list)  # take bones asked for, with no character bone
    frames: int = 0
    keys_before: int = 0
    keys_after: int = 0
    max_error_deg: float = 0.0

    def as_dict(self) -> dict:
        return dict(preset=self.preset, mapped=self.mapped, unmapped=self.unmapped, frames=self.frames,
                    keys_before=self.keys_before, keys_after=self.keys_after,
                    max_error_deg=round(self.max_error_deg, 6))


def is_hand_rig(obj) -> bool:
    return obj is not None and obj.type == "ARMATURE" and "ht_side" in obj


def characters(scene) -> list:
    """Armatures in the scene that are not HandTailor rigs."""
    return [o for o in scene.objects if o.type == "ARMATURE" and not is_hand_rig(o)]


# ------------------------------------------------------------------------------------------ the take


def _tracked_frames(action, fcs) -> np.ndarray:
    """Scene frames where the take shows a hand (`ht_visible` keyed 1), else every keyed frame."""
    vis = fcs.find('["ht_visible"]')
    key_sets = [keys.key_frames(fc) for fc in fcs if fc.data_path != '["ht_visible"]']
    if not key_sets:
        raise ValueError(f"the take {action.name} has no keys")
    lo = min(float(k.min()) for k in key_sets if len(k))
    hi = max(float(k.max()) for k in key_sets if len(k))
    if vis is None:
        return np.unique(np.concatenate(key_sets)).astype(np.float64)
    frames = np.arange(np.floor(lo), np.ceil(hi) + 1.0)
    shown = np.array([vis.evaluate(f) for f in frames]) >= 0.5
    return frames[shown]


def _sample_rotation(fcs, bone: str, frames) -> np.ndarray:
    """(N, 3, 3) pose basis rotations of a bone from its quaternion or Euler curves (identity if unkeyed)."""
    q = [fcs.find(f'pose.bones["{bone}"].rotation_quaternion', index=i) for i in range(4)]
    if all(fc is not None for fc in q):
        return poses.quat_to_rotmat(curves.sample(q, frames))
    e = [fcs.find(f'pose.bones["{bone}"].rotation_euler', index=i) for i in range(3)]
    if all(fc is not None for fc in e):
        return poses.euler_to_rotmat(curves.sample(e, frames), "XYZ")
    return np.broadcast_to(np.eye(3), (len(frames), 3, 3)).copy()


def read_take(arm) -> retarget.TakeMotion:
    """The active take of a HandTailor rig, sampled on its tracked frames."""
    ad = arm.animation_data
    if not is_hand_rig(arm) or ad is None or ad.action is None:
        raise ValueError(f"{arm.name} is not a HandTailor hand rig with a take: capture first")
    fcs = keys.fcurves_of(ad.action)
    frames = _tracked_frames(ad.action, fcs)
    side = arm["ht_side"]
    names = rig.bone_names(side)
    rest = rig.bone_rest_rotations(arm)
    basis = np.stack([_sample_rotation(fcs, n, frames) for n in names[:16]], axis=1)
    theta = retarget.local_rotations(basis, rest[:16])
    heads = np.array([arm.data.bones[n].head_local for n in names])
    ends = anatomy.skeleton_ends(heads[:16], heads[16:])  # tip bones: thumb, index, middle, ring, pinky
    C = anatomy.bone_frames(heads[:16], ends, side)
    obj_q = [fcs.find("rotation_quaternion", index=i) for i in range(4)]
    if all(fc is not None for fc in obj_q):
        obj_rot = poses.quat_to_rotmat(curves.sample(obj_q, frames))
    else:
        M = np.array(arm.matrix_world)[:3, :3]
        obj_rot = np.broadcast_to(M / np.linalg.norm(M, axis=0), (len(frames), 3, 3))
    hand_world = np.einsum("nab,nbc,cd->nad", obj_rot, theta[:, 0], C[0])
    return retarget.TakeMotion(arm.name, side, frames, theta, C, hand_world)


# ------------------------------------------------------------------------------------- the character


def character_rest(char, mapping: dict[int, str], side: str):
    """(frames (J,3,3), rests (J,3,3)) of the character's mapped bones (NaN where unmapped)."""
    heads = np.full((16, 3), np.nan)
    ends = np.full((16, 3), np.nan)
    R = np.full((16, 3, 3), np.nan)
    bones = char.data.bones
    for j, name in mapping.items():
        b = bones[name]
        heads[j] = b.head_local
        R[j] = np.array(b.matrix_local.to_3x3())
        ends[j] = b.tail_local
        if j not in anatomy.NEXT:  # the last bone of a finger: a child (a tip/leaf bone) shows where it points
            kids = [c for c in b.children if (c.head_local - b.head_local).length > 1e-6]
            if kids:
                ends[j] = kids[0].head_local
    for j, nxt in anatomy.NEXT.items():
        if j in mapping and nxt in mapping:
            ends[j] = heads[nxt]
    return anatomy.bone_frames(heads, ends, side), R


def resolve_mapping(char, side: str, preset: str = "auto", mapping_file: str | None = None,
                    templates: dict | None = None):
    """(preset name, {MANO joint index: character bone}) for one side: from name templates (a mapping), a
    mapping file, a preset, or detected ('auto')."""
    names = [b.name for b in char.data.bones]
    if templates is not None:
        return "mapping", bone_maps.resolve(templates, names, side)
    if mapping_file:
        label, templates = bone_maps.load_mapping(mapping_file)
        return label, bone_maps.resolve(templates, names, side)
    if preset == "auto":
        return bone_maps.detect(names, side)
    return preset, bone_maps.preset_mapping(preset, names, side)


def _parent_world(char, bone: str, frames, scene) -> tuple[np.ndarray, np.ndarray]:
    """(parent world rotations (N, 3, 3), parent rest (3, 3)) of a bone, evaluated frame by frame."""
    pb = char.pose.bones[bone]
    parent = pb.parent
    rest = np.eye(3) if parent is None else np.array(parent.bone.matrix_local.to_3x3())
    out = np.empty((len(frames), 3, 3))
    current = scene.frame_current
    try:
        for n, f in enumerate(frames):
            scene.frame_set(int(f))
            M = np.array(char.matrix_world)[:3, :3]
            M = M / np.linalg.norm(M, axis=0)
            out[n] = M if parent is None else M @ np.array(parent.matrix.to_3x3())
    finally:
        scene.frame_set(current)
    return out, rest


def apply_motion(motion: retarget.TakeMotion, char, mapping: dict[int, str], *, with_wrist: bool = False,
                 tolerance_deg: float = 0.5, interpolation: str = "BEZIER", scene=None) -> Report:
    """Keys the character's mapped bones from one take; returns the report (for this side)."""
    scene = scene or bpy.context.scene
    want = ([0] if with_wrist else []) + list(bone_maps.FINGER_JOINTS)
    C_char, R_char = character_rest(char, mapping, motion.side)
    rep = Report(frames=len(motion.frames))
    todo = []
    for j in want:
        anchor = max(anatomy.PARENT[j], 0)
        ok = j in mapping and np.isfinite(C_char[j]).all() and (j == 0 or np.isfinite(C_char[anchor]).all())
        (todo.append(j) if ok else rep.unmapped.append(motion.bone_names[j]))
    G = retarget.relative_frames(motion.theta, motion.frames_rest)
    fingers = [j for j in todo if j != 0]
    bases = dict(zip(fingers, np.moveaxis(retarget.finger_bases(G, C_char, R_char, fingers), 1, 0)))
    if 0 in todo:
        pw, prest = _parent_world(char, mapping[0], motion.frames, scene)
        bases[0] = retarget.wrist_basis(motion.hand_world, pw, prest, R_char[0], C_char[0])
    _, fcs = keys.own_fcurves(char, f"{char.name}_HandTailor")
    stats = curves.WriteStats()
    for j in todo:
        bone = mapping[j]
        mode = char.pose.bones[bone].rotation_mode
        if mode == "AXIS_ANGLE":
            raise ValueError(f"{char.name}: bone {bone} uses axis-angle rotation; switch it to quaternion or an "
                             "Euler order")
        prop, kind = (("rotation_quaternion", "quaternion") if mode == "QUATERNION"
                      else ("rotation_euler", f"euler_{mode}"))
        values = retarget.to_channels(bases[j], mode)
        stats.add(curves.write_group(fcs, f'pose.bones["{bone}"].{prop}', bone, motion.frames, values, kind=kind,
                                     tolerance=tolerance_deg, interpolation=interpolation, unit="deg",
                                     keep_outside=True))
        rep.mapped[motion.bone_names[j]] = bone
    rep.keys_before, rep.keys_after = stats.keys_before, stats.keys_after
    rep.max_error_deg = stats.max_error.get("deg", 0.0)
    return rep


def retarget_takes(motions: list, char, *, preset: str = "auto", mapping_file: str | None = None,
                   templates: dict | None = None, with_wrist: bool = False, tolerance_deg: float = 0.5,
                   interpolation: str = "BEZIER", scene=None) -> Report:
    """Every take (one per hand) onto the character's bones of its side; one combined report."""
    if char is None or char.type != "ARMATURE":
        raise ValueError("choose the character's armature")
    if is_hand_rig(char):
        raise ValueError(f"{char.name} is a HandTailor rig; choose the character's armature")
    plans = []
    for m in motions:  # every mapping is checked before any key is written
        label, mapping = resolve_mapping(char, m.side, preset, mapping_file, templates)
        if 0 not in mapping:
            raise ValueError(f"{char.name}: no {m.side} hand bone found for preset {label}")
        plans.append((m, label, mapping))
    total = Report()
    for m, label, mapping in plans:
        rep = apply_motion(m, char, mapping, with_wrist=with_wrist, tolerance_deg=tolerance_deg,
                           interpolation=interpolation, scene=scene)
        total.preset = label if not total.preset or total.preset == label else total.preset + "+" + label
        total.mapped.update(rep.mapped)
        total.unmapped += rep.unmapped
        total.frames = max(total.frames, rep.frames)
        total.keys_before += rep.keys_before
        total.keys_after += rep.keys_after
        total.max_error_deg = max(total.max_error_deg, rep.max_error_deg)
    return total

