"""The model's 21 keypoints in the rest pose (theta = identity), affine in the shape beta.

    k(beta) = k0 + kdirs . beta      joints: J_regressor applied to the shaped template; tips: the tip
                                     vertices' template + shape directions; keypoint order (MANO_TO_KEYPOINT)

Model frame (the wrist is not moved to the origin). Shapes: K = 21 keypoints, `...` any batch prefix.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from engine.hand_model.constants import MANO_TO_KEYPOINT, N_SHAPE


class RestKeypoints(NamedTuple):
    """Rest-pose keypoints linear in beta: k(beta) = k0 + kdirs . beta."""

    k0: np.ndarray  # (K, 3) meters
    kdirs: np.ndarray  # (K, 3, 10)


def rest_keypoints(model) -> RestKeypoints:
    """The model's rest keypoints as an affine function of beta: (HandModel) -> RestKeypoints."""
    Jr = np.asarray(model.J_regressor)
    tips = np.asarray(model.tip_vertex_ids)
    k0 = np.concatenate([Jr @ model.v_template, model.v_template[tips]], axis=0)[MANO_TO_KEYPOINT]
    kd = np.concatenate([np.einsum("jv,vck->jck", Jr, model.shapedirs), model.shapedirs[tips]], axis=0)
    return RestKeypoints(k0, kd[MANO_TO_KEYPOINT][..., :N_SHAPE])


def keypoints_at(rest: RestKeypoints, beta=None) -> np.ndarray:
    """Rest keypoints for beta (..., 10) (None: zeros) -> (..., K, 3)."""
    if beta is None:
        return rest.k0.copy()
    return rest.k0 + np.einsum("kcs,...s->...kc", rest.kdirs, np.asarray(beta, dtype=np.float64))
