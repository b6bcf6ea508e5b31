"""The hand model: joint orders, safe loading, and posing (the ONE place for all three).

Import cost stays low: this package imports numpy only. The posing backends are submodules:
`engine.hand_model.jax_layer` (our LBS in JAX, the tailor's fast path) and
`engine.hand_model.torch_layer` (smplx's MANO layer fed through `data_struct`). Both compute

    J(beta)  = J_regressor @ (v_template + shapedirs . beta)           (16, 3)
    X_lbs    = MANO LBS of (theta, beta), rotation about J(beta)[0]    verts (V, 3), joints (16, 3),
               tips = verts[tip_vertex_ids], keypoints = concat(joints, tips)[MANO_TO_KEYPOINT]
    X_camera = root + hand_scale * (X_lbs - J(beta)[0])
"""

from engine.hand_model.constants import (
    FINGER_KEYPOINTS,
    FINGER_NAMES,
    JOINT_TO_KEYPOINT,
    KEYPOINT_NAMES,
    KEYPOINT_PARENTS,
    MANO_JOINT_NAMES,
    MANO_PARENTS,
    MANO_TO_KEYPOINT,
    N_JOINTS,
    N_KEYPOINTS,
    N_POSE_CORRECTIVES,
    N_SHAPE,
    N_TIPS,
    REFERENCE_BONE,
    ROOT_KEYPOINT,
    TIP_NAMES,
    TIP_TO_KEYPOINT,
)
from engine.hand_model.loading import HandModel, default_model_path, load_hand_model

__all__ = [
    "FINGER_KEYPOINTS",
    "FINGER_NAMES",
    "JOINT_TO_KEYPOINT",
    "KEYPOINT_NAMES",
    "KEYPOINT_PARENTS",
    "MANO_JOINT_NAMES",
    "MANO_PARENTS",
    "MANO_TO_KEYPOINT",
    "N_JOINTS",
    "N_KEYPOINTS",
    "N_POSE_CORRECTIVES",
    "N_SHAPE",
    "N_TIPS",
    "REFERENCE_BONE",
    "ROOT_KEYPOINT",
    "TIP_NAMES",
    "TIP_TO_KEYPOINT",
    "HandModel",
    "default_model_path",
    "load_hand_model",
]
