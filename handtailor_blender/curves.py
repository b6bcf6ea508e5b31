"""Writing channel groups as reduced fcurves, and reading curves back by sampling (bpy side of reduce.py).

A channel group is the curves of one property (a bone's 4 quaternion values, 3 location values ...). They
are written together: the same key frames for every component (an animator sees aligned keys), in bulk
(`keyframe_points.add` + `foreach_set`), with Blender's own evaluation checked afterwards at every sample
frame: if a curve breaks the tolerance (float32 storage), the group is rewritten with a tighter one, and at
worst with every key. Letters: M samples, C components.
"""

from __future__ import annotations

import dataclasses

import bpy
import numpy as np

from . import actions, reduce


@dataclasses.dataclass
class WriteStats:
    """Key counts of what was written: one key per sample and component before reduction."""

    keys_before: int = 0
    keys_after: int = 0
    max_error: dict = dataclasses.field(default_factory=dict)  # unit ('deg', 'mm', ...) -> largest error

    def add(self, other: "WriteStats") -> None:
        self.keys_before += other.keys_before
        self.keys_after += other.keys_after
        for unit, err in other.max_error.items():
            self.max_error[unit] = max(self.max_error.get(unit, 0.0), err)


def _enum_value(prop: str, name: str) -> int:
    return bpy.types.Keyframe.bl_rna.properties[prop].enum_items[name].value


_KEY_FIELDS = (("co", 2, np.float32), ("handle_left", 2, np.float32), ("handle_right", 2, np.float32),
               ("handle_left_type", 1, np.int32), ("handle_right_type", 1, np.int32), ("interpolation", 1, np.int32))


def ensure_fcurve(curves, data_path: str, index: int, group: str):
    """The fcurve for (data_path, index), created (in `group`) when missing; its keys are cleared."""
    fc = curves.find(data_path, index=index)
    if fc is None:
        fc = actions.new_fcurve(curves, data_path, index, group)
    elif len(fc.keyframe_points):
        fc.keyframe_points.clear()
    return fc


def keys_outside(fc, lo: float, hi: float) -> dict:
    """Every field of fc's keys whose frame is outside [lo, hi] ({field: (K, width) array})."""
    n = len(fc.keyframe_points)
    out = {}
    for name, width, dtype in _KEY_FIELDS:
        a = np.empty(n * width, dtype)
        fc.keyframe_points.foreach_get(name, a)
        out[name] = a.reshape(n, width)
    keep = (out["co"][:, 0] < lo) | (out["co"][:, 0] > hi)
    return {k: v[keep] for k, v in out.items()}


def write_reduced(fc, red: reduce.Reduced, component: int, keep: dict | None = None) -> None:
    """Replaces fc's keys by one component of a reduction (Bezier: aligned handles on the fitted slopes),
    plus the keys `keep` (keys_outside) exactly as they were."""
    K = len(red.frames)
    co = np.stack([red.frames, red.values[:, component]], -1).astype(np.float32)
    kp = fc.keyframe_points
    if red.interpolation != "BEZIER" and keep is None:
        # LINEAR / CONSTANT never read the handles, but a later switch to Bezier does: new keys sit at (0, 0)
        # with their handles and `co_ui` moves the handles with the key, so one call sets all three
        if len(kp):
            kp.clear()
        kp.add(K)
        kp.foreach_set("co_ui", co.ravel())
        kp.foreach_set("interpolation", np.full(K, _enum_value("interpolation", red.interpolation), np.int32))
        return
    if red.interpolation == "BEZIER":
        left, right = (h[:, component].astype(np.float32) for h in red.handles())
        htype = _enum_value("handle_left_type", "ALIGNED")
    else:
        # LINEAR / CONSTANT never read the handles, but a later switch to Bezier does: put them on the keys
        left, right, htype = co, co, _enum_value("handle_left_type", "AUTO_CLAMPED")
    fields = dict(co=co, handle_left=left, handle_right=right, handle_left_type=np.full((K, 1), htype, np.int32),
                  handle_right_type=np.full((K, 1), htype, np.int32),
                  interpolation=np.full((K, 1), _enum_value("interpolation", red.interpolation), np.int32))
    if keep is not None and len(keep["co"]):
        fields = {k: np.concatenate([v, keep[k].astype(v.dtype)]) for k, v in fields.items()}
        order = np.argsort(fields["co"][:, 0], kind="stable")
        fields = {k: v[order] for k, v in fields.items()}
    if len(kp):
        kp.clear()
    kp.add(len(fields["co"]))
    for name, _, _ in _KEY_FIELDS:
        kp.foreach_set(name, np.ascontiguousarray(fields[name]).ravel())


def sample(fcs, frames: np.ndarray) -> np.ndarray:
    """Blender's evaluation of curves `fcs` (C,) at frames (M,) -> (M, C) float64."""
    frames = [float(f) for f in frames]
    return np.array([[fc.evaluate(f) for fc in fcs] for f in frames], np.float64).reshape(len(frames), len(fcs))


def write_group(curves, data_path: str, group: str, frames: np.ndarray, values: np.ndarray, *, kind: str,
                tolerance: float, scale: float = 1.0, interpolation: str = "BEZIER", unit: str = "",
                required: np.ndarray | None = None, keep_outside: bool = False) -> WriteStats:
    """Writes values (M, C) at frames (M,) as C curves of `data_path` reduced to `tolerance` (in the kind's
    unit; see reduce.reduce_keys), then checks Blender's evaluation at every frame. keep_outside: keys the
    curves already have before the first / after the last frame stay as they are."""
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    M, C = values.shape
    kept = []
    for i in range(C):
        fc = curves.find(data_path, index=i)
        kept.append(keys_outside(fc, frames[0], frames[-1]) if keep_outside and fc is not None else None)
    fcs = [ensure_fcurve(curves, data_path, i, group) for i in range(C)]
    tol = float(tolerance)
    for attempt in range(4):
        red = reduce.reduce_keys(frames, values, tol if attempt < 3 else 0.0, kind, interpolation=interpolation,
                                 scale=scale, required=required)
        for c, fc in enumerate(fcs):
            write_reduced(fc, red, c, kept[c])
        if tolerance <= 0:  # a key on every sample: Blender evaluates a key's frame to its value
            worst = 0.0
            break
        err = reduce.group_error(kind, values, sample(fcs, frames), scale)
        worst = float(err.max()) if len(err) else 0.0
        if worst <= tolerance:
            break
        tol *= 0.5
    return WriteStats(M * C, len(red.frames) * C, {unit or kind: worst})


def count_keys(action) -> int:
    curves = actions.fcurves_of(action)
    return sum(len(fc.keyframe_points) for fc in curves) if curves is not None else 0
