"""`HandModel`: a validated, immutable MANO-format hand model (what `load_hand_model` returns)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class HandModel:
    """A MANO-format hand model. Arrays are float64 (faces int32, ids int64) and read-only.

    Shapes: V vertices, F faces, J = 16 joints.
        v_template (V, 3) rest mesh, meters; faces (F, 3) int32; J_regressor (J, V) dense;
        weights (V, J); parents (J,) int64 (= MANO_PARENTS); shapedirs (V, 3, 10);
        posedirs (V, 3, 135) (zeros when the model has no pose correctives);
        tip_vertex_ids (5,) thumb, index, middle, ring, pinky; joint_limits (J, 3, 2) radians or None
        (bounds on the axis-angle components of each local rotation, in the rest-pose axes).
    """

    name: str
    side: str
    path: str
    sha256: str
    v_template: np.ndarray
    faces: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    tip_vertex_ids: np.ndarray
    joint_limits: np.ndarray | None
    format: str = "npz"  # "npz" (ours) or "mano_pkl"
    joint_limit_axes: str = ""
    fixes: tuple[str, ...] = ()  # what the loader changed, e.g. the official MANO_LEFT shapedirs fix

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def has_pose_correctives(self) -> bool:
        return bool(np.any(self.posedirs != 0.0))

    @property
    def has_joint_limits(self) -> bool:
        return self.joint_limits is not None

    def shaped_vertices(self, beta: np.ndarray | None = None) -> np.ndarray:
        """Rest mesh for shape beta (10,) (None: zeros) -> (V, 3)."""
        if beta is None:
            return self.v_template.copy()
        return self.v_template + np.einsum("vcs,s->vc", self.shapedirs, np.asarray(beta, np.float64))

    def rest_joints(self, beta: np.ndarray | None = None) -> np.ndarray:
        """J(beta) = J_regressor @ (v_template + shapedirs . beta): (16, 3), meters."""
        return self.J_regressor @ self.shaped_vertices(beta)
