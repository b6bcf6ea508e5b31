"""Takes: naming, the sidecar files that remember what was keyed, paths relative to the .blend, and the one
backup a re-tailor keeps.

A take is two actions per hand (the armature object's and its shape keys'), named `<rig>_takeNN`
(`_shape`). Its sidecar (`<capture>.<take>.keys.npz`, path on both actions as `ht_take_file`) holds the
values the curves had when written, so re-tailor can tell which values an artist changed. A re-tailor keeps
exactly one backup per take (`<take>_backup`, sidecar `<capture>.<take>.prev.keys.npz`); restoring swaps the
two. Paths inside the .blend's folder are stored relative (`//...`) so a moved project can re-tailor.
"""

from __future__ import annotations

import os
import pathlib

import bpy
import numpy as np

from . import actions, rig
from .io.results import write_npz_atomic

PATH_PROPS = ("ht_take_file", "ht_result")


# --------------------------------------------------------------------------------------------- paths


def stored_path(path, blend_path: str | None = None) -> str:
    """`path` as stored in the .blend: relative (`//...`) when it lies in the .blend's folder tree."""
    blend_path = bpy.data.filepath if blend_path is None else blend_path
    path = os.path.abspath(os.fspath(path))
    if not blend_path:
        return path
    base = os.path.dirname(os.path.abspath(blend_path))
    try:
        if os.path.commonpath([base, path]) != base:
            return path
    except ValueError:  # another drive
        return path
    return "//" + os.path.relpath(path, base).replace(os.sep, "/")


def resolve_path(stored: str, blend_path: str | None = None) -> str:
    """Absolute path of a stored path (`//` = the .blend's folder)."""
    blend_path = bpy.data.filepath if blend_path is None else blend_path
    if stored.startswith("//"):
        if not blend_path:
            raise ValueError(f"{stored} is relative to a .blend that was never saved")
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(blend_path)), stored[2:]))
    return stored


def rebase_paths(new_blend_path: str) -> None:
    """Rewrites every stored HandTailor path for a .blend about to be saved at `new_blend_path`."""
    old = bpy.data.filepath
    for action in bpy.data.actions:
        for prop in PATH_PROPS:
            value = action.get(prop)
            if isinstance(value, str) and value:
                try:
                    action[prop] = stored_path(resolve_path(value, old), new_blend_path)
                except ValueError:
                    pass


@bpy.app.handlers.persistent
def _on_save_pre(filepath, *_):
    if isinstance(filepath, str) and filepath:
        rebase_paths(filepath)


def register_handlers() -> None:
    if _on_save_pre not in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.append(_on_save_pre)


def unregister_handlers() -> None:
    if _on_save_pre in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.remove(_on_save_pre)


# --------------------------------------------------------------------------------------------- takes


def take_actions(arm) -> list:
    """The rig's take object actions (not backups, not shape actions), oldest first."""
    return [a for a in bpy.data.actions
            if a.get("ht_rig") == arm.name and "ht_shape_action" in a and not a.get("ht_backup")]


def next_take_name(arm) -> str:
    names = {a.name for a in bpy.data.actions}
    k = len(take_actions(arm)) + 1
    while f"{arm.name}_take{k:02d}" in names:
        k += 1
    return f"{arm.name}_take{k:02d}"


def sidecar_path(take_dir, capture_stem: str, take: str, previous: bool = False) -> pathlib.Path:
    return pathlib.Path(take_dir) / f"{capture_stem}.{take}.{'prev.' if previous else ''}keys.npz"


def take_file(action) -> str:
    return resolve_path(action["ht_take_file"])


def save_take_file(path, frames, rows, table: dict, locks: dict, result_path: str, track: int) -> None:
    write_npz_atomic(path, dict(frames=np.asarray(frames, np.float64), rows=np.asarray(rows, np.int64),
                                result=np.array(str(result_path)), track=np.array(int(track)),
                                **{f"v_{k}": v for k, v in table.items()}, **locks))


def load_take_file(path) -> dict:
    path = resolve_path(os.fspath(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ValueError(f"the take's sidecar {path} is missing: it is written beside the capture result "
                         "(the .blend's handtailor/ folder); move it with the .blend") from None
    out["table"] = {k[2:]: out.pop(k) for k in list(out) if k.startswith("v_")}
    return out


def backup_take(arm):
    """Copies the rig's current take (both actions) to its one backup `<take>_backup`, replacing an older
    backup of that take; returns the backup object action."""
    obj_action = arm.animation_data.action
    key_action = bpy.data.actions[obj_action["ht_shape_action"]]
    for old in [a for a in bpy.data.actions if a.get("ht_backup_of") in (obj_action.name, key_action.name)]:
        bpy.data.actions.remove(old)
    b_obj = obj_action.copy()
    b_key = key_action.copy()
    b_obj.name = f"{obj_action.name}_backup"
    b_key.name = f"{key_action.name}_backup"
    for b, src in ((b_obj, obj_action), (b_key, key_action)):
        b["ht_backup"] = True
        b["ht_backup_of"] = src.name
        b.use_fake_user = True
    b_obj["ht_shape_action"] = b_key.name
    arm["ht_last_backup"] = b_obj.name
    return b_obj


def _swap(a, b) -> None:
    """Swaps the names and roles of a take action and its backup (names stay: the take is `<take>`)."""
    name_a, name_b = a.name, b.name
    a.name = "__ht_swap__"
    b.name = name_a
    a.name = name_b
    for prop in ("ht_backup", "ht_backup_of"):
        va, vb = a.get(prop), b.get(prop)
        for action, value in ((a, vb), (b, va)):
            if value is None:
                action.pop(prop, None)
            else:
                action[prop] = value


def restore_backup(arm) -> bool:
    """Makes the rig's backup take active again and keeps the replaced keys as the backup (restoring twice
    gives the keys back); False when there is none."""
    name = arm.get("ht_last_backup")
    b_obj = bpy.data.actions.get(name) if name else None
    if b_obj is None or arm.animation_data is None or arm.animation_data.action is None:
        return False
    cur_obj = arm.animation_data.action
    cur_key = bpy.data.actions.get(cur_obj.get("ht_shape_action", ""))
    b_key = bpy.data.actions.get(b_obj.get("ht_shape_action", ""))
    if cur_key is None or b_key is None:
        return False
    _swap(cur_obj, b_obj)
    _swap(cur_key, b_key)
    b_obj["ht_shape_action"], cur_obj["ht_shape_action"] = b_key.name, cur_key.name
    arm["ht_last_backup"] = cur_obj.name
    actions.assign_action(arm, b_obj)
    mesh = rig.find_mesh(arm)
    if mesh is not None and mesh.data.shape_keys is not None:
        actions.assign_action(mesh.data.shape_keys, b_key)
    return True


def other_sidecar(path) -> pathlib.Path:
    """The take's other sidecar name (`.keys.npz` <-> `.prev.keys.npz`): a re-tailor writes there, so the
    backup keeps its own and no name ever grows."""
    p = pathlib.Path(path)
    if p.name.endswith(".prev.keys.npz"):
        return p.with_name(p.name[: -len(".prev.keys.npz")] + ".keys.npz")
    return p.with_name(p.name[: -len(".keys.npz")] + ".prev.keys.npz")
