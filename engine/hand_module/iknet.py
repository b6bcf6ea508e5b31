"""IKNet: 21 root-relative, reference-bone-normalized 3D joints -> 16 local joint rotations (quaternions).

The architecture follows the HandTailor release (itself after Zhou et al., "Monocular real-time hand shape
and motion capture using multi-modal data", CVPR 2020): 63 inputs, fully connected layers with batch norm and
ReLU, 16 x 4 outputs normalized to unit quaternions (w, x, y, z). The release's widths are
256-512-1024-1024-512-256 (`HIDDEN`, 2.4M parameters); the shipped weights use 512-512-512 (0.6M), because
training must take minutes on a shared CPU: after equal CPU time (~100 s) the narrow net reached 3.6 mm
held-out MPJPE and the release's widths 6.7 mm. `load_iknet` reads the widths from the weights file.
Unlike the release, the input is first rotated into a canonical palm frame (see `IKNet`).

Input: (B, K=21, 3) keypoints in the 21-keypoint order, minus keypoint 9 (the lifting root), divided by the
reference bone length |k9 - k0|, in camera-frame axes. Output: theta (B, 16, 4) in MANO joint order
(DESIGN.md), theta[0] the global rotation.

Weights are trained by `models/iknet/train_iknet.py` on poses sampled within the hand model's joint limits;
see `models/iknet/PROVENANCE.md` for the data and the held-out figures.

Left hands use the right-hand network through a mirror (the shipped left model is the right one mirrored
across the model's x = 0 plane, and the camera-frame x-mirror maps a left hand's joints onto a right hand's):
    joints_right = joints_left * (-1, 1, 1)
    q_left = (w, x, -y, -z) of q_right        (M R M for M = diag(-1, 1, 1), every joint, global included)
`tests/test_iknet.py` checks this on the shipped models.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import torch
from torch import nn

from engine.errors import ModelFileError
from engine.hand_model.constants import N_JOINTS, N_KEYPOINTS
from engine.hand_module.lifting import normalize_joints  # noqa: F401  (IKNet's input convention; re-exported)
from engine.hand_model.torch_layer import axis_angle_to_quat, quat_to_rotmat, rotmat_to_axis_angle
from engine.hand_module.iknet_numpy import (  # noqa: F401  (re-exported: what the torch module and numpy share)
    MODEL_DIR,
    PALM_KEYPOINTS,
    canonical_rotation,
    hidden_widths,
    kabsch,
    mirror_joints,
    mirror_quaternions,
    quaternions_from_mlp,
    read_iknet_state,
    weights_path,
)

log = logging.getLogger(__name__)

HIDDEN = (256, 512, 1024, 1024, 512, 256)


class IKNet(nn.Module):
    """MLP (B, 21, 3) normalized joints -> (B, 16, 4) unit quaternions (w, x, y, z).

    Before the MLP the input is turned into a canonical orientation: the rotation R that best maps the
    model's rest palm (keypoints 0, 1, 5, 9, 13, 17, rigid in the wrist frame for any pose) onto the input
    palm (Kabsch, buffer `palm_template` (6, 3)) is undone, the MLP sees R^T x and predicts the local
    rotations plus a residual global rotation q0', and theta[0] = quat(R) * q0'. An MLP then need not learn
    SO(3) equivariance from a few minutes of CPU training.
    """

    def __init__(self, hidden: tuple[int, ...] = HIDDEN, palm_template: torch.Tensor | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        width = N_KEYPOINTS * 3
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, N_JOINTS * 4)
        if palm_template is None:
            palm_template = torch.zeros(len(PALM_KEYPOINTS), 3)
        self.register_buffer("palm_template", palm_template.float().clone())

    def canonical_rotation(self, joints: torch.Tensor) -> torch.Tensor:
        """joints (B, 21, 3) -> R (B, 3, 3) with joints' palm ~= R @ palm_template (both centred)."""
        return canonical_rotation(joints, self.palm_template)

    def forward(self, joints: torch.Tensor) -> torch.Tensor:
        """joints (B, 21, 3) normalized (see `normalize_joints`) -> quaternions (B, 16, 4), w >= 0
        (the steps around the MLP: `iknet_numpy`)."""
        with torch.no_grad():
            R = self.canonical_rotation(joints)
        x = torch.einsum("bji,bkj->bki", R, joints)  # R^T x
        return quaternions_from_mlp(self.head(self.body(x.reshape(x.shape[0], -1))).reshape(-1, N_JOINTS, 4), R)




class MirroredIKNet(nn.Module):
    """A right-hand IKNet used for left hands through the x-mirror (module docstring)."""

    def __init__(self, right: IKNet):
        super().__init__()
        self.right = right

    def forward(self, joints: torch.Tensor) -> torch.Tensor:
        """joints (B, 21, 3) of a left hand -> left-hand quaternions (B, 16, 4)."""
        return mirror_quaternions(self.right(mirror_joints(joints)))


def quaternion_distance(q: torch.Tensor, q_ref: torch.Tensor) -> torch.Tensor:
    """Sign-invariant squared distance min(|q - r|^2, |q + r|^2): (..., 4), (..., 4) -> (...)."""
    return torch.minimum((q - q_ref).square().sum(-1), (q + q_ref).square().sum(-1))


def random_rotations(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """n rotations uniform over SO(3) as quaternions (n, 4) (normalized Gaussian 4-vectors)."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    return q / q.norm(dim=-1, keepdim=True)


def sample_poses(joint_limits: np.ndarray, n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Random hand poses: theta (n, 16, 4).

    Joints 1-15: axis-angle components uniform within the joint limits (16, 3, 2), then pulled towards the
    rest pose by a per-sample factor uniform in [0, 1] for half of the samples (open and relaxed hands are
    common; the limits' corners are not). Joint 0: uniform over SO(3).
    """
    lim = torch.as_tensor(np.array(joint_limits), dtype=dtype)
    lo, hi = lim[1:, :, 0], lim[1:, :, 1]
    u = torch.rand(n, N_JOINTS - 1, 3, generator=generator, dtype=dtype)
    aa = lo + u * (hi - lo)
    pull = torch.rand(n, 1, 1, generator=generator, dtype=dtype)
    relaxed = torch.rand(n, 1, 1, generator=generator, dtype=dtype) < 0.5
    # Pull towards zero clipped into the limits (zero need not be inside every interval).
    aa = torch.where(relaxed, (aa * pull).clamp(lo, hi), aa)
    return torch.cat([random_rotations(n, generator, dtype)[:, None], axis_angle_to_quat(aa)], dim=1)


def sample_training_batch(layer, model, n: int, generator: torch.Generator):
    """Poses, shapes and posed keypoints for training / evaluation.

    Args:
        layer: `engine.hand_model.torch_layer.HandLayer` of `model`. model: HandModel (joint_limits needed).
        n: batch size. generator: torch.Generator (fixes the sample).
    Returns:
        theta (n, 16, 4), beta (n, 10) ~ N(0, 1), keypoints (n, 21, 3) meters, wrist at the origin.
    """
    if model.joint_limits is None:
        raise ModelFileError(f"hand model {model.name!r} has no joint_limits: IKNet training needs them")
    dtype = layer.mano.v_template.dtype
    theta = sample_poses(model.joint_limits, n, generator, dtype)
    beta = torch.randn(n, 10, generator=generator, dtype=dtype)
    with torch.no_grad():
        _, keypoints, _ = layer(theta, beta)
    return theta, beta, keypoints


def limit_excess(theta: torch.Tensor, joint_limits: torch.Tensor) -> torch.Tensor:
    """How far (radians) each local rotation's axis-angle components lie outside the limits (differentiable).

    theta (B, 16, 4), joint_limits (16, 3, 2) tensor -> (B, 15, 3) >= 0 (joints 1-15).
    """
    q = theta[:, 1:]
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    v = q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)
    s_safe = s.clamp_min(1e-6)
    # angle / sin(angle / 2) -> 2 as s -> 0.
    k = torch.where(s > 1e-6, 2.0 * torch.atan2(s_safe, q[..., :1]) / s_safe, 2.0 / q[..., :1].clamp_min(1e-6))
    aa = v * k
    lim = joint_limits[1:].to(aa.dtype)
    return torch.relu(lim[..., 0] - aa) + torch.relu(aa - lim[..., 1])


def limit_violations(theta: torch.Tensor, joint_limits: np.ndarray, tol: float = 0.0) -> torch.Tensor:
    """Which local joint rotations break the joint limits: theta (B, 16, 4) -> (B, 15) bool (joints 1-15)."""
    aa = rotmat_to_axis_angle(quat_to_rotmat(theta[:, 1:]))
    lim = torch.as_tensor(np.array(joint_limits)[1:], dtype=aa.dtype)
    return ((aa < lim[..., 0] - tol) | (aa > lim[..., 1] + tol)).any(dim=-1)


def load_iknet(path: str | pathlib.Path | None = None, side: str = "right", device: str = "cpu") -> nn.Module:
    """The IKNet for one side as a torch module, in eval mode, float32 (the capture runs the same weights on
    numpy: `iknet_numpy.load_iknet_arrays`).

    Args:
        path: a `.safetensors` file of IKNet weights; None: the shipped `models/iknet/iknet_right.safetensors`.
        side: "right" or "left". A left hand uses `iknet_left.safetensors` when `path` is None and that file
            exists, else the right network through the x-mirror (`MirroredIKNet`). An explicit `path` is read
            as right-hand weights (mirrored for side="left").
    Returns:
        nn.Module: joints (B, 21, 3) normalized -> theta (B, 16, 4).
    """
    state, mirrored = read_iknet_state(path, side)
    state = {k: torch.from_numpy(np.array(v)).float() for k, v in state.items()}
    net = IKNet(hidden=hidden_widths(state) or HIDDEN, palm_template=state.get("palm_template"))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"{path or weights_path(side)} does not hold IKNet weights of the expected shapes: "
                             f"{exc}") from exc
    net.eval().to(device)
    out: nn.Module = MirroredIKNet(net) if mirrored else net
    return out.eval()


def predict_theta(net: nn.Module, joints_normalized: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Runs an IKNet on numpy input: (N, 21, 3) normalized joints -> (N, 16, 4) float64 quaternions."""
    joints_normalized = np.asarray(joints_normalized, dtype=np.float32)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(joints_normalized), batch_size):
            outs.append(net(torch.from_numpy(joints_normalized[i : i + batch_size])).double().numpy())
    if not outs:
        return np.zeros((0, N_JOINTS, 4))
    return np.concatenate(outs, axis=0)



def keypoint_model(model):
    """The same hand model reduced to what its 21 keypoints need (fast posing for IKNet training).

    Vertices: 16 "joint vertices" (J_regressor applied to the template and to the shape directions; their
    skinning weights are irrelevant to the joints) and the 5 fingertip vertices with their own template,
    shape directions, pose correctives and skinning weights; J_regressor = [I 0]. Posing it with the same
    `HandLayer` gives exactly the full model's keypoints (the regressor is linear): (model) -> HandModel.
    """
    import dataclasses

    tips = np.asarray(model.tip_vertex_ids)
    Jr = np.asarray(model.J_regressor)
    v = np.concatenate([Jr @ model.v_template, model.v_template[tips]], axis=0)
    sd = np.concatenate([np.einsum("jv,vck->jck", Jr, model.shapedirs), model.shapedirs[tips]], axis=0)
    pd = np.concatenate([np.zeros((N_JOINTS,) + model.posedirs.shape[1:]), model.posedirs[tips]], axis=0)
    w = np.concatenate([np.eye(N_JOINTS), model.weights[tips]], axis=0)
    reg = np.concatenate([np.eye(N_JOINTS), np.zeros((N_JOINTS, len(tips)))], axis=1)
    return dataclasses.replace(
        model,
        name=f"{model.name}_keypoints",
        v_template=v,
        faces=np.array([[0, 1, 2]], dtype=np.int32),
        J_regressor=reg,
        weights=w,
        shapedirs=sd,
        posedirs=pd,
        tip_vertex_ids=np.arange(N_JOINTS, N_JOINTS + len(tips)),
    )
