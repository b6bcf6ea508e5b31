"""The hand model in torch: smplx's MANO layer fed through `data_struct`, plus rotation helpers.

`HandLayer(model)` wraps `smplx.MANOLayer` (a `smplx.MANO` taking rotation matrices) built with
`use_pca=False, flat_hand_mean=True` from our `HandModel` (smplx never reads a file). smplx's own fingertip
selection is never used: our tips are `vertices[:, tip_vertex_ids]`. After construction the buffers are
replaced by exact copies of the model's float64 arrays in the layer's dtype (smplx rounds through float32).

    X_camera = root + hand_scale * (X_lbs - J(beta)[0])     (see engine.hand_model)

Shapes: B batch, V vertices, K = 21 keypoints.
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import torch
from torch import nn

from engine.hand_model.constants import MANO_TO_KEYPOINT, N_JOINTS
from engine.hand_model.loading import HandModel
from engine.hand_model.rotations import (  # noqa: F401  (re-exported)
    axis_angle_to_quat, quat_multiply, quat_to_rotmat, rotmat_to_quat)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Rotations (torch)


def axis_angle_to_rotmat(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) (radians) -> rotation matrices (..., 3, 3); finite values/gradients at 0."""
    v = axis_angle
    th2 = (v * v).sum(-1)
    small = th2 < 1e-12
    th2_safe = torch.where(small, torch.ones_like(th2), th2)
    th = th2_safe.sqrt()
    a = torch.where(small, 1.0 - th2 / 6.0, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24.0, (1.0 - torch.cos(th)) / th2_safe)
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)],
        dim=-2,
    )
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def rotmat_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi]."""
    q = rotmat_to_quat(rotmat)
    s = q[..., 1:].norm(dim=-1)
    angle = 2.0 * torch.atan2(s, q[..., 0])
    small = s < 1e-12
    scale = torch.where(small, torch.full_like(s, 2.0), angle / torch.where(small, torch.ones_like(s), s))
    return q[..., 1:] * scale[..., None]


# ------------------------------------------------------------------------------------------------
# The layer


class _Struct:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def mano_data_struct(model: HandModel) -> _Struct:
    """The fields smplx's MANO reads from `data_struct` (no pose prior: zero hands_mean/components)."""
    kintree = np.stack([model.parents, np.arange(N_JOINTS)]).astype(np.int64)
    return _Struct(
        f=np.asarray(model.faces, dtype=np.int64),
        v_template=np.array(model.v_template),
        shapedirs=np.array(model.shapedirs),
        posedirs=np.array(model.posedirs),
        J_regressor=np.array(model.J_regressor),
        kintree_table=kintree,
        weights=np.array(model.weights),
        hands_components=np.zeros((45, 45)),
        hands_mean=np.zeros(45),
    )


class HandLayer(nn.Module):
    """theta (16 local rotations as quaternions), beta, root, hand_scale -> mesh, 21 keypoints, 16 joints.

    Buffers: the smplx layer's model arrays, `tip_vertex_ids` (5,), `mano_to_keypoint` (21,).
    """

    def __init__(self, model: HandModel, dtype: torch.dtype = torch.float32):
        super().__init__()
        import smplx  # heavy; only here

        out = io.StringIO()
        with contextlib.redirect_stdout(out):  # smplx prints a warning about 10 shape coefficients
            self.mano = smplx.MANOLayer(
                "",
                is_rhand=model.side == "right",
                data_struct=mano_data_struct(model),
                use_pca=False,
                flat_hand_mean=True,
                num_pca_comps=45,
                dtype=dtype,
            )
        if out.getvalue().strip():
            log.debug("smplx: %s", out.getvalue().strip())
        exact = {
            "v_template": model.v_template,
            "shapedirs": model.shapedirs,
            "J_regressor": model.J_regressor,
            "posedirs": model.posedirs.reshape(-1, model.posedirs.shape[-1]).T,
            "lbs_weights": model.weights,
        }
        for name, array in exact.items():
            setattr(self.mano, name, torch.tensor(np.array(array), dtype=dtype))  # re-registers the buffer
        self.register_buffer("tip_vertex_ids", torch.as_tensor(np.array(model.tip_vertex_ids), dtype=torch.long))
        self.register_buffer("mano_to_keypoint", torch.as_tensor(np.array(MANO_TO_KEYPOINT), dtype=torch.long))
        self.side = model.side
        self.model_name = model.name

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) int64 triangle vertex indices."""
        return self.mano.faces_tensor

    def forward(
        self,
        theta_quat: torch.Tensor,
        beta: torch.Tensor,
        root: torch.Tensor | None = None,
        hand_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """theta_quat (B, 16, 4) (w, x, y, z) local rotations; beta (B, 10); root (B, 3) wrist position in
        the camera frame (None: the origin); hand_scale (B,) (None: 1)
        -> (vertices (B, V, 3), keypoints (B, K=21, 3), joints16 (B, 16, 3)), camera frame, in the
        layer's dtype."""
        return self.forward_rotmat(quat_to_rotmat(theta_quat), beta, root, hand_scale)

    def forward_rotmat(
        self,
        rotmats: torch.Tensor,
        beta: torch.Tensor,
        root: torch.Tensor | None = None,
        hand_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As `forward` with rotation matrices (B, 16, 3, 3) instead of quaternions.

        Inputs are cast to the layer's dtype (the dtype it was built with, or `.double()`)."""
        dtype = self.mano.shapedirs.dtype
        rotmats, beta = rotmats.to(dtype), beta.to(dtype)
        root = None if root is None else root.to(dtype)
        hand_scale = None if hand_scale is None else hand_scale.to(dtype)
        out = self.mano(
            betas=beta,
            global_orient=rotmats[:, :1],
            hand_pose=rotmats[:, 1:],
        )
        verts, joints = out.vertices, out.joints  # (B, V, 3), (B, 16, 3) model frame
        tips = verts[:, self.tip_vertex_ids]  # (B, 5, 3)
        keypoints = torch.cat([joints, tips], dim=1)[:, self.mano_to_keypoint]
        wrist = joints[:, :1]  # J(beta)[0]: the root rotates about it, so it stays put

        def to_camera(points):
            points = points - wrist
            if hand_scale is not None:
                points = points * hand_scale[:, None, None]
            if root is not None:
                points = points + root[:, None, :]
            return points

        return to_camera(verts), to_camera(keypoints), to_camera(joints)
