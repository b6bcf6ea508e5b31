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

from . import keys, reduce


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


def ensure_fcurve(curves, data_path: str, index: int, group: str):
    """The fcurve for (data_path, index), created (in `group`) when missing; its keys are cleared."""
    fc = curves.find(data_path, index=index)
    if fc is None:
        fc = keys.new_fcurve(curves, data_path, index, group)
    elif len(fc.keyframe_points):
        fc.keyframe_points.clear()
    return fc


def write_reduced(fc, red: reduce.Reduced, component: int) -> None:
    """Replaces fc's keys by one component of a reduction (Bezier: aligned handles on the fitted slopes)."""
    K = len(red.frames)
    kp = fc.keyframe_points
    if len(kp):
        kp.clear()
    kp.add(K)
    co = np.empty(2 * K, np.float32)
    co[0::2] = red.frames
    co[1::2] = red.values[:, component]
    kp.foreach_set("co", co)
    if red.interpolation == "BEZIER":
        left, right = red.handles()
        kp.foreach_set("handle_left", left[:, component].astype(np.float32).ravel())
        kp.foreach_set("handle_right", right[:, component].astype(np.float32).ravel())
        aligned = np.full(K, _enum_value("handle_left_type", "ALIGNED"), np.int32)
        kp.foreach_set("handle_left_type", aligned)
        kp.foreach_set("handle_right_type", aligned)
    else:
        # LINEAR / CONSTANT never read the handles, but a later switch to Bezier does: put them on the keys
        kp.foreach_set("handle_left", co)
        kp.foreach_set("handle_right", co)
    kp.foreach_set("interpolation", np.full(K, _enum_value("interpolation", red.interpolation), np.int32))


def sample(fcs, frames: np.ndarray) -> np.ndarray:
    """Blender's evaluation of curves `fcs` (C,) at frames (M,) -> (M, C) float64."""
    frames = [float(f) for f in frames]
    return np.array([[fc.evaluate(f) for fc in fcs] for f in frames], np.float64).reshape(len(frames), len(fcs))


def write_group(curves, data_path: str, group: str, frames: np.ndarray, values: np.ndarray, *, kind: str,
                tolerance: float, scale: float = 1.0, interpolation: str = "BEZIER", unit: str = "",
                required: np.ndarray | None = None, indices=None) -> WriteStats:
    """Writes values (M, C) at frames (M,) as C curves of `data_path` reduced to `tolerance` (in the kind's
    unit; see reduce.reduce_keys), then checks Blender's evaluation at every frame."""
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    M, C = values.shape
    indices = list(range(C)) if indices is None else list(indices)
    fcs = [ensure_fcurve(curves, data_path, i, group) for i in indices]
    tol = float(tolerance)
    for attempt in range(4):
        red = reduce.reduce_keys(frames, values, tol if attempt < 3 else 0.0, kind, interpolation=interpolation,
                                 scale=scale, required=required)
        for c, fc in enumerate(fcs):
            write_reduced(fc, red, c)
        err = reduce.group_error(kind, values, sample(fcs, frames), scale)
        worst = float(err.max()) if len(err) else 0.0
        if tolerance <= 0 or worst <= tolerance:
            break
        tol *= 0.5
    return WriteStats(M * C, len(red.frames) * C, {unit or kind: worst})


def count_keys(action) -> int:
    curves = keys.fcurves_of(action)
    return sum(len(fc.keyframe_points) for fc in curves) if curves is not None else 0
