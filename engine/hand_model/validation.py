"""Validation of a hand model's raw fields (MANO names) and the build of a `HandModel`.

Every check names the field, what it holds and what was expected. Official layout and the MANO_LEFT fix: a
pickle is "official MANO" when it has 778 vertices and any of MANO's prior fields (`hands_components`,
`hands_mean`, `hands_coeffs`, `bs_style`, `bs_type`). For an official LEFT file the known defect of its
shape directions is fixed on load (`shapedirs[:, 0, :] *= -1`, see notes/smplx-mano.md) and
`HandModel.fixes` records it. A pickle's side comes from its file name (`LEFT`/`RIGHT`, as smplx does),
else from the `side` argument.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import numpy as np

from engine.errors import ModelFileError
from engine.hand_model.constants import (
    MANO_N_VERTICES,
    MANO_PARENTS,
    MANO_TIP_VERTEX_IDS,
    N_JOINTS,
    N_POSE_CORRECTIVES,
    N_SHAPE,
    SIDES,
)
from engine.hand_model.model import HandModel
from engine.hand_model.pickled_arrays import Unreadable

log = logging.getLogger("engine.hand_model.loading")

_PKL_PRIOR_FIELDS = ("hands_components", "hands_mean", "hands_coeffs", "bs_style", "bs_type")


def _other_model_message(n_vertices: int, n_joints: int | None) -> str | None:
    known = {
        6890: "an SMPL body model",
        10475: "an SMPL-X body model",
        5023: "a FLAME head model",
    }
    joints = {24: "an SMPL body model", 52: "an SMPL-H body model", 55: "an SMPL-X body model", 5: "a FLAME head model"}
    what = known.get(n_vertices) or (joints.get(n_joints) if n_joints is not None else None)
    if what is None:
        return None
    joint_text = f", {n_joints} joints" if n_joints is not None else ""
    return (
        f"this is {what} ({n_vertices} vertices{joint_text}), not MANO: point the engine at MANO_RIGHT.pkl / "
        "MANO_LEFT.pkl from the MANO download (mano.is.tue.mpg.de) or at a hand model .npz"
    )


def _as_float(fields: dict, key: str, name: str) -> np.ndarray:
    value = fields[key]
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any odd object: report it as a bad field
        raise ModelFileError(f"{name}: field {key!r} is not an array ({type(value).__name__})") from exc
    if array.dtype.kind not in "biuf":
        raise ModelFileError(f"{name}: field {key!r} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ModelFileError(f"{name}: field {key!r} holds NaN or infinite values; the file is corrupt")
    return array


def _expect_shape(array: np.ndarray, expected: tuple, key: str, name: str, meaning: str) -> None:
    if array.shape != expected:
        raise ModelFileError(
            f"{name}: field {key!r} has shape {tuple(array.shape)}, expected {expected} ({meaning})"
        )


def _text(value: Any, default: str = "") -> str:
    if value is None:
        return default
    array = np.asarray(value)
    if array.shape == () and array.dtype.kind in "US":
        return str(array.item().decode() if isinstance(array.item(), bytes) else array.item())
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    return default


def build_hand_model(
    fields: dict[str, Any],
    *,
    path: pathlib.Path | str = "",
    sha256: str = "",
    fmt: str = "npz",
    side: str = "right",
) -> HandModel:
    """Validates raw fields (MANO names) and builds a HandModel. Raises ModelFileError naming what is wrong."""
    path = pathlib.Path(path) if path else pathlib.Path("<memory>")
    name = path.name
    used = ("v_template", "f", "J_regressor", "weights", "kintree_table", "shapedirs", "posedirs",
            "tip_vertex_ids", "joint_limits", "name", "side", "joint_limit_axes")
    unreadable = {k: fields[k] for k in used if isinstance(fields.get(k), Unreadable)}
    fields = {k: v for k, v in fields.items() if not isinstance(v, Unreadable)}
    if "v_template" in fields:
        try:
            template_shape = np.shape(fields["v_template"])
        except Exception:  # noqa: BLE001
            template_shape = ()
        n_joints = None
        if "kintree_table" in fields:
            kt = np.shape(fields["kintree_table"])
            n_joints = kt[1] if len(kt) == 2 else None
        elif "J_regressor" in fields:
            n_joints = np.shape(fields["J_regressor"])[0] if len(np.shape(fields["J_regressor"])) == 2 else None
        if len(template_shape) == 2 and (template_shape[0] != MANO_N_VERTICES or n_joints != N_JOINTS):
            other = _other_model_message(template_shape[0], n_joints)
            if other:
                raise ModelFileError(f"{name}: {other}")

    if unreadable:
        raise ModelFileError(next(iter(unreadable.values())).message)
    required = ("v_template", "f", "J_regressor", "weights", "kintree_table", "shapedirs")
    missing = [k for k in required if k not in fields]
    if missing:
        present = ", ".join(sorted(fields)) or "nothing"
        raise ModelFileError(
            f"{name} is not a complete hand model: missing field(s) {', '.join(missing)} "
            f"(it holds {present}); expected a MANO .pkl or a hand model .npz"
        )

    v_template = _as_float(fields, "v_template", name)
    if v_template.ndim != 2 or v_template.shape[1] != 3 or v_template.shape[0] < 4:
        raise ModelFileError(f"{name}: field 'v_template' has shape {v_template.shape}, expected (V, 3) vertices")
    n_vertices = v_template.shape[0]

    faces_raw = np.asarray(fields["f"])
    if faces_raw.dtype.kind not in "iu" and not (
        faces_raw.dtype.kind == "f" and np.all(np.mod(faces_raw, 1) == 0)
    ):
        raise ModelFileError(f"{name}: field 'f' must hold integer vertex indices, got dtype {faces_raw.dtype}")
    if faces_raw.ndim != 2 or faces_raw.shape[1] != 3 or faces_raw.shape[0] == 0:
        raise ModelFileError(f"{name}: field 'f' has shape {faces_raw.shape}, expected (F, 3) triangles")
    if faces_raw.min() < 0 or faces_raw.max() >= n_vertices:
        raise ModelFileError(
            f"{name}: field 'f' indexes vertex {int(faces_raw.max())} (or {int(faces_raw.min())}) but the "
            f"template has {n_vertices} vertices (0..{n_vertices - 1})"
        )
    faces = faces_raw.astype(np.int32)

    J_regressor = _as_float(fields, "J_regressor", name)
    _expect_shape(J_regressor, (N_JOINTS, n_vertices), "J_regressor", name, "16 joints x V vertices")
    weights = _as_float(fields, "weights", name)
    _expect_shape(weights, (n_vertices, N_JOINTS), "weights", name, "V vertices x 16 joints")
    sums = weights.sum(axis=1)
    if np.max(np.abs(sums - 1.0)) > 1e-3:
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise ModelFileError(
            f"{name}: skinning weights of vertex {bad} sum to {sums[bad]:.4f}, expected 1 for every vertex"
        )

    kintree = np.asarray(fields["kintree_table"])
    if kintree.shape != (2, N_JOINTS):
        raise ModelFileError(f"{name}: field 'kintree_table' has shape {kintree.shape}, expected (2, 16)")
    parents = kintree[0].astype(np.int64)
    parents[0] = -1  # MANO stores 2**32-1 for the root
    if not np.array_equal(parents, MANO_PARENTS):
        raise ModelFileError(
            f"{name}: kinematic tree (kintree_table row 0) is {parents.tolist()}, expected MANO's "
            f"{MANO_PARENTS.tolist()}: the joints are in another order or this is not a MANO hand"
        )

    shapedirs = _as_float(fields, "shapedirs", name)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (n_vertices, 3) or shapedirs.shape[2] < N_SHAPE:
        raise ModelFileError(
            f"{name}: field 'shapedirs' has shape {shapedirs.shape}, expected ({n_vertices}, 3, 10) "
            "(V vertices x 3 x 10 shape directions)"
        )
    shapedirs = shapedirs[:, :, :N_SHAPE].copy()

    if "posedirs" in fields and fields["posedirs"] is not None and np.size(fields["posedirs"]) > 0:
        posedirs = _as_float(fields, "posedirs", name)
        if posedirs.shape == (n_vertices * 3, N_POSE_CORRECTIVES):
            posedirs = posedirs.reshape(n_vertices, 3, N_POSE_CORRECTIVES)
        _expect_shape(posedirs, (n_vertices, 3, N_POSE_CORRECTIVES), "posedirs", name,
                      "V vertices x 3 x 135 pose correctives")
    else:
        posedirs = np.zeros((n_vertices, 3, N_POSE_CORRECTIVES))

    if "tip_vertex_ids" in fields:
        tips = np.asarray(fields["tip_vertex_ids"])
        if tips.shape != (5,) or tips.dtype.kind not in "iu":
            raise ModelFileError(f"{name}: field 'tip_vertex_ids' has shape {tips.shape} dtype {tips.dtype}, expected (5,) integers")
    elif n_vertices == MANO_N_VERTICES:
        tips = MANO_TIP_VERTEX_IDS.copy()
    else:
        raise ModelFileError(
            f"{name}: missing field 'tip_vertex_ids' (5 fingertip vertex ids: thumb, index, middle, ring, "
            f"pinky); only the 778-vertex MANO mesh has known defaults, this mesh has {n_vertices}"
        )
    tips = tips.astype(np.int64)
    if tips.min() < 0 or tips.max() >= n_vertices:
        raise ModelFileError(f"{name}: 'tip_vertex_ids' {tips.tolist()} fall outside 0..{n_vertices - 1}")

    joint_limits = None
    if "joint_limits" in fields and fields["joint_limits"] is not None:
        joint_limits = _as_float(fields, "joint_limits", name)
        _expect_shape(joint_limits, (N_JOINTS, 3, 2), "joint_limits", name, "16 joints x 3 axes x (min, max) radians")
        if np.any(joint_limits[..., 0] > joint_limits[..., 1]):
            raise ModelFileError(f"{name}: 'joint_limits' has a minimum above its maximum")

    file_side = _text(fields.get("side"))
    if file_side:
        if file_side not in SIDES:
            raise ModelFileError(f"{name}: field 'side' is {file_side!r}, expected 'right' or 'left'")
        model_side = file_side
    elif "LEFT" in name.upper():
        model_side = "left"
    elif "RIGHT" in name.upper():
        model_side = "right"
    else:
        model_side = side

    fixes: list[str] = []
    official = fmt == "mano_pkl" and n_vertices == MANO_N_VERTICES and any(k in fields for k in _PKL_PRIOR_FIELDS)
    if official and model_side == "left":
        shapedirs[:, 0, :] *= -1.0
        fixes.append("official MANO_LEFT shapedirs: x component sign flipped (shapedirs[:, 0, :] *= -1)")
        log.info("%s: applied the official MANO_LEFT shapedirs fix", name)

    model_name = _text(fields.get("name")) or path.stem
    arrays = dict(
        v_template=v_template, faces=faces, J_regressor=J_regressor, weights=weights, parents=parents,
        shapedirs=shapedirs, posedirs=posedirs, tip_vertex_ids=tips, joint_limits=joint_limits,
    )
    for value in arrays.values():
        if value is not None:
            value.setflags(write=False)
    return HandModel(
        name=model_name,
        side=model_side,
        path=str(path),
        sha256=sha256,
        format=fmt,
        joint_limit_axes=_text(fields.get("joint_limit_axes")),
        fixes=tuple(fixes),
        **arrays,
    )

