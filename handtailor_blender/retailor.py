"""Re-tailor as plain functions: the artist's edits -> EDITS.npz -> the engine's refit -> the take rewritten.

An edit is any sampled value of a take's curves that differs from what was written (the sidecar holds the
curves sampled right after writing, so a reduced curve compares exactly). Edited values go to the engine
locked; the engine refits near the edits (a falloff window, issue 15) and reproduces the rest. Only what the
engine changed is written again: per channel group, the span of frames whose values changed, reduced with
the take's tolerances; the group's keys outside that span, and groups the refit did not change, stay bit
for bit (a re-tailor with no new edit changes no key). Keys an artist placed on locked frames stay keys with
their exact values. The previous keys stay as the take's one backup (takes.py). Identity rigs keep their
shape (beta is always locked: it is their rest skeleton).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import bpy
import numpy as np

from . import keys, poses, rig, takes
from .io.results import MANO_JOINT_NAMES, ResultFileError, read_model, read_result, write_edits


def take_rigs(result_path: str) -> list:
    """Armatures whose active take comes from this result file."""
    want = str(pathlib.Path(result_path).absolute())
    out = []
    for obj in bpy.data.objects:
        ad = obj.animation_data
        if obj.type == "ARMATURE" and ad and ad.action and ad.action.get("ht_result"):
            if str(pathlib.Path(takes.resolve_path(ad.action["ht_result"])).absolute()) == want:
                out.append(obj)
    return out


@dataclasses.dataclass
class RetailorPlan:
    result_path: str
    edits_path: str
    output_path: str
    rigs: list  # [(arm, take dict, current table, locks dict)]
    args: dict
    n_edited: int


def _rig_model(arm):
    return read_model(arm["ht_model"], arm["ht_side"])


def _edits(arm, take: dict):
    """(current sampled table, locks) of one rig's take: previous locks plus the values changed since."""
    stored = take["table"]
    cur, present = keys.sample_table(arm, take["frames"], stored)
    edited = {k: present[k] & (cur[k] != stored[k]) for k in cur}
    if "bone_eul" in stored:  # Euler take: the edited rotations are the Euler ones
        rot_edit = edited["bone_eul"].any(-1)
        q = poses.rotmat_to_quat(poses.euler_to_rotmat(cur["bone_eul"].astype(np.float64), "XYZ"))
        cur["bone_rot"] = np.where(rot_edit[..., None], q, stored["bone_rot"]).astype(np.float32)
        edited["bone_rot"] = np.broadcast_to(rot_edit[..., None], stored["bone_rot"].shape)
    else:
        rot_edit = edited["bone_rot"].any(-1)
    # the object's location and the hand's size are one transform: editing either locks root and hand_scale
    obj_edit = edited["obj_loc"].any(-1) | edited["obj_scale"].any(-1)
    if "wrist_scale" in edited:
        obj_edit |= edited["wrist_scale"].any(-1)
    identity = rig.identity_beta(arm) is not None
    locks = dict(lock_theta=take["lock_theta"] | rot_edit,
                 lock_beta=take["lock_beta"] | edited["beta"].any(-1) | identity,
                 lock_root=take["lock_root"] | obj_edit,
                 lock_hand_scale=take["lock_hand_scale"] | obj_edit)
    n_edited = int(sum(v.sum() for k, v in edited.items() if k != "bone_rot" or "bone_eul" not in stored))
    return cur, locks, n_edited


def prepare_retailor(scene, arm, *, frame_range: tuple[int, int] | None = None, joints: list[str] | None = None,
                     iterations: int = 30, hand_model: str | None = None, falloff: int | None = None) -> RetailorPlan:
    """Collects the edited values of the rig's take (and its sibling hands from the same capture) into an
    EDITS.npz and the engine's retailor args. Locks accumulate over re-tailors: once edited, a value stays
    locked. `hand_model` (the preferences' model) is where the engine looks for the capture's hand model
    when it is no longer at the path the result records (used only when its content matches). `falloff`:
    frames an edit reaches on each side (None: the engine's default)."""
    ad = arm.animation_data
    if not ad or not ad.action or not ad.action.get("ht_result"):
        raise ResultFileError(f"{arm.name} has no HandTailor take to re-tailor: capture first")
    result_path = takes.resolve_path(ad.action["ht_result"])
    result = read_result(result_path)
    to_world = keys.to_world_matrix(scene)
    theta, beta = result.theta.copy(), result.beta.copy()
    root, scale = result.root.copy(), result.hand_scale.copy()
    T, N = result.valid.shape
    lock_theta = np.zeros((T, N, 16), bool)
    lock_beta = np.zeros((T, N), bool)
    lock_root = np.zeros((T, N), bool)
    lock_scale = np.zeros((T, N), bool)
    covered = np.zeros(T, bool)  # tracks with no rig in the scene are kept as they are
    rigs = []
    n_edited = 0
    for other in take_rigs(result_path):
        take = takes.load_take_file(takes.take_file(other.animation_data.action))
        t = int(take["track"])
        covered[t] = True
        rows = take["rows"]
        cur, locks, n = _edits(other, take)
        n_edited += n
        model = _rig_model(other)
        B = rig.bone_rest_rotations(other)[:16]
        cur_theta = poses.model_quats(cur["bone_rot"].astype(np.float64), B)
        cur_beta = cur["beta"].astype(np.float64)
        cur_scale = keys.hand_size(other, cur)
        lb, ls, lr = locks["lock_beta"], locks["lock_hand_scale"], locks["lock_root"]
        # a locked shape the artist did not change since it was written (an identity rig's, always locked) goes
        # out at the result's full precision: the refit then returns it bit for bit (keys.py keeps float32)
        beta_changed = np.any(cur["beta"] != take["table"]["beta"], -1)
        beta_used = np.where((lb & beta_changed)[:, None], cur_beta, result.beta[t, rows])
        scale_used = np.where(ls, cur_scale, result.hand_scale[t, rows])
        identity = rig.identity_beta(other)
        obj_size = scale_used if identity is not None else np.ones(len(rows))  # see keys.channel_table
        cur_root = poses.root_from_object(cur["obj_loc"].astype(np.float64), obj_size, beta_used,
                                          rig.rest_joints(model, identity), model.Jdirs, to_world)
        lt = locks["lock_theta"]
        theta[t, rows] = np.where(lt[..., None], cur_theta, result.theta[t, rows])
        beta[t, rows] = beta_used
        scale[t, rows] = scale_used
        root[t, rows] = np.where(lr[:, None], cur_root, result.root[t, rows])
        lock_theta[t, rows], lock_beta[t, rows], lock_root[t, rows], lock_scale[t, rows] = lt, lb, lr, ls
        rigs.append((other, take, cur, locks))
    for t in np.nonzero(~covered)[0]:
        lock_theta[t], lock_beta[t], lock_root[t], lock_scale[t] = True, True, True, True
    src = pathlib.Path(result_path)
    stem = src.stem.split(".retailor")[0]  # no chained names over repeated re-tailors
    stamp = time.strftime("%Y%m%d_%H%M%S")
    edits_path = str(src.with_name(f"{stem}.edits_{stamp}.npz"))
    output_path = str(src.with_name(f"{stem}.retailor_{stamp}.npz"))
    write_edits(edits_path, np.nan_to_num(theta), np.nan_to_num(beta), np.nan_to_num(root), np.nan_to_num(scale),
                lock_theta, lock_beta, lock_root, lock_scale)
    fs, fe = frame_range if frame_range else (None, None)
    args = dict(result=result_path, edits=edits_path, output=output_path, frame_start=fs, frame_end=fe,
                joints=joints, iterations=iterations, hand_model=hand_model, falloff=falloff)
    return RetailorPlan(result_path, edits_path, output_path, rigs, args, n_edited)


def _kept(new, old, t: int, rows, locks: dict) -> dict:
    """{table key: (M,) or (M, 16) bool}: True where the current value stays, locked or its engine values
    the same in the refit result as in the take's result (a local re-tailor leaves most frames alone)."""
    same_theta = np.all(new.theta[t, rows] == old.theta[t, rows], -1)  # (M, 16)
    same_beta = np.all(new.beta[t, rows] == old.beta[t, rows], -1)
    same_root = np.all(new.root[t, rows] == old.root[t, rows], -1)
    same_scale = new.hand_scale[t, rows] == old.hand_scale[t, rows]
    same_conf = np.all(new.confidence[t, rows] == old.confidence[t, rows], -1)
    rot = locks["lock_theta"] | same_theta
    return {"bone_rot": rot, "bone_eul": rot, "beta": locks["lock_beta"] | same_beta,
            "obj_loc": locks["lock_root"] | (same_root & same_beta & same_scale),
            "obj_scale": locks["lock_hand_scale"] | same_scale, "wrist_scale": locks["lock_hand_scale"] | same_scale,
            "obj_rot": np.ones_like(same_scale), "confidence": same_conf,  # (the object's rotation: the camera's)
            "bone_loc": rot & same_beta[:, None]}


def _refit_table(arm, take, cur, locks, new, old, to_world) -> tuple[dict, dict]:
    """The take's table from the refit result, locked values and the values the refit did not change kept
    exactly (quaternion signs too: a changed key takes its neighbour's sign); and the kept masks (`_kept`)."""
    t = int(take["track"])
    rows = take["rows"]
    if not new.valid[t, rows].all():
        raise ResultFileError(f"{new.path}: track {t} lost frames the take has keys on")
    table = keys.channel_table(arm, _rig_model(arm), new.theta[t, rows], new.beta[t, rows], new.root[t, rows],
                               new.hand_scale[t, rows], new.confidence[t, rows].mean(-1), to_world)
    kept = {k: v for k, v in _kept(new, old, t, rows, locks).items() if k in table}
    for key, mask in kept.items():
        if key != "bone_eul":
            table[key][mask] = cur[key][mask]
    kq = kept["bone_rot"]
    q = table["bone_rot"]
    for n in range(1, len(q)):  # continuity for the changed keys only
        flip = (np.sum(q[n].astype(np.float64) * q[n - 1], -1) < 0) & ~kq[n]
        q[n][flip] *= -1
    if "bone_eul" in table:
        eul = poses.continuous_eulers(poses.rotmat_to_euler(poses.quat_to_rotmat(q), "XYZ"), "XYZ")
        table["bone_eul"] = np.where(kq[..., None], cur["bone_eul"], eul).astype(np.float32)
    return table, kept


def _spans(arm, kept: dict) -> dict:
    """{(key, col): (a, b) or None}: per channel group, the rows from one before its first changed value to
    one after its last (None: nothing changed)."""
    out = {}
    for g in keys.channel_groups(arm):
        if g.key not in kept:
            continue
        k = kept[g.key]  # (M,) or (M, 16): a per-frame mask serves every column (beta's)
        changed = np.flatnonzero(~k[(slice(None),) + g.col[: k.ndim - 1]])
        n = len(k)
        out[(g.key, g.col)] = None if not len(changed) else (max(changed[0] - 1, 0), min(changed[-1] + 1, n - 1))
    return out


def _required_keys(arm, frames, locks) -> dict:
    """{(table key, col): (M,) bool}: locked frames on which the current curves have a key (kept exact)."""
    obj_action = arm.animation_data.action
    key_action = bpy.data.actions.get(obj_action.get("ht_shape_action", ""))
    lock_of = {"bone_rot": lambda c: locks["lock_theta"][:, c[0]], "bone_eul": lambda c: locks["lock_theta"][:, c[0]],
               "beta": lambda c: locks["lock_beta"], "obj_loc": lambda c: locks["lock_root"],
               "obj_scale": lambda c: locks["lock_hand_scale"], "wrist_scale": lambda c: locks["lock_hand_scale"]}
    out = {}
    for g in keys.channel_groups(arm):
        if g.key not in lock_of:
            continue
        fcs = keys.fcurves_of(obj_action if g.target == "OBJECT" else key_action)
        on_key = np.zeros(len(frames), bool)
        for i in range(g.size):
            fc = fcs.find(g.data_path, index=i) if fcs is not None else None
            if fc is not None:
                on_key |= np.isin(np.asarray(frames, np.float32), keys.key_frames(fc))
        out[(g.key, g.col)] = on_key & lock_of[g.key](g.col)
    return out


def apply_retailor(scene, plan: RetailorPlan, new_result_path: str) -> list:
    """Rewrites what the refit changed on every rig in the plan (`_spans`); locked values and the values the
    refit did not change keep their current curve values (and keys). The previous keys become the take's
    backup (`takes.restore_backup` brings them back)."""
    new = read_result(new_result_path)
    old = read_result(plan.result_path)
    to_world = keys.to_world_matrix(scene)
    prepared = [(arm, take, *_refit_table(arm, take, cur, locks, new, old, to_world), locks)
                for arm, take, cur, locks in plan.rigs]  # everything computed before the scene changes
    out = []
    for arm, take, table, kept, locks in prepared:
        frames = take["frames"]
        required = _required_keys(arm, frames, locks)
        takes.backup_take(arm)
        obj_action = arm.animation_data.action
        key_action = bpy.data.actions[obj_action["ht_shape_action"]]
        stats = keys.write_table(keys.fcurves_of(obj_action), keys.fcurves_of(key_action), arm, frames, table,
                                 obj_action.get("ht_interpolation", "LINEAR"), model=_rig_model(arm),
                                 tolerance_deg=obj_action.get("ht_tolerance_deg", 0.0),
                                 tolerance_mm=obj_action.get("ht_tolerance_mm", 0.0), required=required,
                                 spans=_spans(arm, kept))
        obj_action["ht_keys_before"], obj_action["ht_keys_after"] = stats.keys_before, stats.keys_after
        obj_action["ht_max_error_deg"] = stats.max_error.get("deg", 0.0)
        obj_action["ht_max_error_mm"] = stats.max_error.get("mm", 0.0)
        reduced = obj_action.get("ht_tolerance_deg", 0.0) > 0 or obj_action.get("ht_tolerance_mm", 0.0) > 0
        written = (keys.sample_table(arm, frames, table)[0] if reduced
                   else {k: np.asarray(v, np.float32) for k, v in table.items()})
        new_take = takes.other_sidecar(takes.take_file(obj_action))
        takes.save_take_file(new_take, frames, take["rows"], written, locks, new_result_path, int(take["track"]))
        for action in (obj_action, key_action):
            action["ht_take_file"] = takes.stored_path(new_take)
            action["ht_result"] = takes.stored_path(new_result_path)
        out.append(arm)
    scene.frame_set(scene.frame_current)
    return out


def retailor(scene, arm, config, *, frame_range=None, joints=None, iterations=30, on_progress=None,
             timeout=None, hand_model: str | None = None, falloff: int | None = None) -> list:
    """Synchronous re-tailor (headless path)."""
    from . import capture

    plan = prepare_retailor(scene, arm, frame_range=frame_range, joints=joints, iterations=iterations,
                            hand_model=hand_model, falloff=falloff)
    client = capture.start_engine(config)
    try:
        res = capture.run_job(client, "retailor", plan.args, config, on_progress=on_progress, timeout=timeout)
    finally:
        client.close()
    return apply_retailor(scene, plan, (res.get("files") or {}).get("result") or plan.output_path)


def selected_joint_names(arm) -> list[str] | None:
    """MANO joint names of the selected pose bones (None when none is selected)."""
    names = []
    for j, bname in enumerate(rig.bone_names(arm["ht_side"])[:16]):
        pbone = arm.pose.bones[bname]
        # Blender 5.0 keeps the selection on the pose bone, 4.x on the bone
        sel = pbone.select if hasattr(pbone, "select") else arm.data.bones[bname].select
        if sel:
            names.append(MANO_JOINT_NAMES[j])
    return names or None
