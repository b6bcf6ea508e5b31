"""A loaded hand model written back as plain arrays (`.npz`, the shipped open model's field names).

This is how the Blender add-on gets a real MANO model: it never opens a pickle itself, the engine reads the
`.pkl` with its restricted unpickler and writes this file (protocol command `export_model`). The file loads
with `numpy.load(path, allow_pickle=False)` and with `engine.hand_model.load_hand_model`.
"""

from __future__ import annotations

import os

import numpy as np

from engine.hand_model.loading import HandModel

# kintree_table's parent row marks the root as MANO's files do: uint32 -1
_ROOT_PARENT = 4294967295


def model_arrays(model: HandModel) -> dict[str, np.ndarray]:
    """The model's fields under MANO's names: v_template (V,3), f (F,3), J_regressor (16,V), weights (V,16),
    kintree_table (2,16), shapedirs (V,3,10), posedirs (V,3,135), tip_vertex_ids (5,), name, side,
    source_sha256 (the sha256 of the file the model was read from), and joint_limits (16,3,2) when present."""
    arrays = {
        "name": np.asarray(str(model.name)),
        "side": np.asarray(str(model.side)),
        "source_sha256": np.asarray(str(model.sha256)),
        "v_template": np.asarray(model.v_template, np.float64),
        "f": np.asarray(model.faces, np.int32),
        "J_regressor": np.asarray(model.J_regressor, np.float64),
        "weights": np.asarray(model.weights, np.float64),
        "kintree_table": np.stack([np.where(model.parents < 0, _ROOT_PARENT, model.parents), np.arange(16)]).astype(np.int64),
        "shapedirs": np.asarray(model.shapedirs, np.float64),
        "posedirs": np.asarray(model.posedirs, np.float64),
        "tip_vertex_ids": np.asarray(model.tip_vertex_ids, np.int64),
    }
    if model.joint_limits is not None:
        arrays["joint_limits"] = np.asarray(model.joint_limits, np.float64)
        arrays["joint_limit_axes"] = np.asarray(str(model.joint_limit_axes))
    return arrays


def export_npz(model: HandModel, path: str | os.PathLike):
    """Writes `model_arrays(model)` to `path` atomically; returns the path written."""
    from engine.results import atomic_savez

    return atomic_savez(path, model_arrays(model))
