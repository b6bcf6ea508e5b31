"""IKNet's inference on numpy: the shipped weights run without torch, so that a capture tracking on OpenVINO or
LiteRT never loads torch (torch and smplx cost each capture process, every job of the Blender add-on's engine
included, ~1.4 s and ~200 MB).

`iknet.IKNet` (torch) defines the network and trains it. What surrounds its MLP is defined here once, for numpy
and torch arrays alike, and its forward uses it:
    R = `canonical_rotation`(joints, palm_template)            the input palm turned onto the rest palm
    q' = MLP(R^T joints)                                       (B, 16, 4), raw
    theta = `quaternions_from_mlp`(q', R)                      unit, theta[0] = quat(R) * q0', w >= 0
Here the MLP is the trained layers in eval mode (batch norm with its running statistics), in float32 as torch
runs it. The weights files (`read_iknet_state`) and the left hand's mirror are also read here, for both.

Shapes: joints (B, K=21, 3) normalized (root-relative, reference bone 1: `lifting.normalize_joints`),
theta (B, 16, 4) (w, x, y, z) in MANO joint order.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import numpy as np

from engine.errors import ModelFileError
from engine.hand_model.constants import N_JOINTS, N_KEYPOINTS
from engine.hand_model.rotations import quat_multiply, rotmat_to_quat

MODEL_DIR = pathlib.Path(__file__).resolve().parents[2] / "models" / "iknet"
# Keypoints rigidly attached to the wrist joint (wrist, thumb CMC, the four MCPs): the palm.
PALM_KEYPOINTS = (0, 1, 5, 9, 13, 17)
BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm1d's default, which IKNet's layers use
_MIRROR_Q = (1.0, 1.0, -1.0, -1.0)


def _torch_or_numpy(x):
    """The array library of x: torch for a torch tensor (imported only when one comes in), else numpy."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def mirror_joints(joints):
    """x-mirror of points (..., 3) (torch or numpy)."""
    sign = np.array([-1.0, 1.0, 1.0])
    return joints * (joints.new_tensor(sign) if _torch_or_numpy(joints) is not np else sign)


def mirror_quaternions(q):
    """Rotation R -> M R M with M = diag(-1, 1, 1): (w, x, y, z) -> (w, x, -y, -z); (..., 4) torch or numpy."""
    sign = np.array(_MIRROR_Q)
    return q * (q.new_tensor(sign) if _torch_or_numpy(q) is not np else sign)


def kabsch(src, dst):
    """Rotation R (B, 3, 3) minimizing sum |R dst_i - src_i|^2 for centred src (B, P, 3), dst (P, 3)
    (torch or numpy, both of one library)."""
    xp = _torch_or_numpy(src)
    M = xp.einsum("bpi,pj->bij", src, dst)
    U, _, Vh = xp.linalg.svd(M)
    det = xp.linalg.det(U @ Vh)
    one = det * 0 + 1
    return (U * xp.stack([one, one, det], -1)[:, None, :]) @ Vh  # U diag(1, 1, det) Vh: a rotation, never a reflection


def canonical_rotation(joints, palm_template):
    """joints (B, 21, 3), palm_template (6, 3) the rest palm (PALM_KEYPOINTS) -> R (B, 3, 3) with the joints'
    palm ~= R @ palm_template (both centred), solved in float64, returned in the joints' dtype."""
    src = joints[:, list(PALM_KEYPOINTS)]
    src = src - src.mean(1)[:, None]
    dst = palm_template - palm_template.mean(0)[None]
    if _torch_or_numpy(joints) is np:
        return kabsch(src.astype(np.float64), dst.astype(np.float64)).astype(joints.dtype)
    return kabsch(src.double(), dst.double()).to(joints.dtype)


def quaternions_from_mlp(q, R):
    """The MLP's raw output q (B, 16, 4) and the canonical rotation R (B, 3, 3) -> theta (B, 16, 4): unit
    quaternions with w >= 0, theta[0] = quat(R) * q0' (the global rotation), theta[1:] the local ones."""
    xp = _torch_or_numpy(q)
    # a fixed offset towards the identity keeps the initial outputs well away from q = 0
    q = xp.concatenate([q[..., :1] + 1.0, q[..., 1:]], -1) if xp is np else xp.cat([q[..., :1] + 1.0, q[..., 1:]], -1)
    norm = xp.sqrt((q * q).sum(-1))[..., None]
    q = q / (np.maximum(norm, 1e-8) if xp is np else norm.clamp_min(1e-8))
    q0 = quat_multiply(rotmat_to_quat(R), q[:, 0])
    q = xp.concatenate([q0[:, None], q[:, 1:]], 1) if xp is np else xp.cat([q0[:, None], q[:, 1:]], 1)
    return q * xp.where(q[..., :1] < 0, -1.0, 1.0)


def weights_path(side: str = "right") -> pathlib.Path:
    return MODEL_DIR / f"iknet_{side}.safetensors"


def read_iknet_state(path: str | pathlib.Path | None = None, side: str = "right") -> tuple[dict, bool]:
    """An IKNet weights file's arrays (numpy, as stored) and whether they serve `side` through the mirror.

    path: a `.safetensors` file of IKNet weights; None: the shipped `models/iknet/iknet_right.safetensors`.
    side: "right" or "left". A left hand uses `iknet_left.safetensors` when `path` is None and that file exists,
    else the right network through the x-mirror. An explicit `path` is read as right-hand weights.
    ModelFileError for a missing or unreadable file."""
    from safetensors.numpy import load_file

    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    mirrored = side == "left"
    if path is None:
        left = weights_path("left")
        if side == "left" and left.is_file():
            path, mirrored = left, False
        else:
            path = weights_path("right")
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"IKNet weights not found at {path}: reinstall the package or run models/iknet/train_iknet.py"
        )
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a broken file
        raise ModelFileError(f"cannot read IKNet weights {path}: {exc}") from exc
    return state, mirrored


def hidden_widths(state: dict) -> tuple[int, ...] | None:
    """The hidden layers' widths of IKNet weights (layers `body.{3i}` linear, `body.{3i+1}` batch norm), or
    None when the state has no batch norm layer at all."""
    n_hidden = sum(1 for k in state if k.startswith("body.") and k.endswith(".running_mean"))
    return tuple(int(state[f"body.{3 * i}.weight"].shape[0]) for i in range(n_hidden)) if n_hidden else None


class IKNetArrays(NamedTuple):
    """IKNet's weights for numpy inference (float32): per hidden layer (W (out, in), b, bn_scale, bn_shift), the
    batch norm folded to y = x * bn_scale + bn_shift after the linear layer; the head (W (64, in), b); the rest
    palm (6, 3); mirrored: a right-hand network serving a left hand."""

    hidden: tuple
    head: tuple
    palm_template: np.ndarray
    mirrored: bool


def load_iknet_arrays(path: str | pathlib.Path | None = None, side: str = "right") -> IKNetArrays:
    """The IKNet for one side as numpy arrays (`read_iknet_state`'s path and side rules); ModelFileError for
    weights that are not an IKNet's."""
    state, mirrored = read_iknet_state(path, side)
    try:
        f32 = {k: np.asarray(v, np.float32) for k, v in state.items()}
        layers, width = [], N_KEYPOINTS * 3
        for i in range(len(hidden_widths(state) or ())):
            W, b = f32[f"body.{3 * i}.weight"], f32[f"body.{3 * i}.bias"]
            bn = {k: f32[f"body.{3 * i + 1}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
            if W.shape != (len(b), width) or any(v.shape != b.shape for v in bn.values()):
                raise ValueError(f"layer {i}: {W.shape} after {width} inputs")
            scale = (bn["weight"] / np.sqrt(bn["running_var"] + np.float32(BATCH_NORM_EPS))).astype(np.float32)
            layers.append((W, b, scale, (bn["bias"] - bn["running_mean"] * scale).astype(np.float32)))
            width = len(b)
        head = (f32["head.weight"], f32["head.bias"])
        palm = f32["palm_template"]
        if (head[0].shape != (N_JOINTS * 4, width) or head[1].shape != (N_JOINTS * 4,)
                or palm.shape != (len(PALM_KEYPOINTS), 3)):
            raise ValueError(f"head {head[0].shape} after {width} inputs, palm_template {palm.shape}")
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"{path or weights_path(side)} does not hold IKNet weights of the expected shapes: "
                             f"{exc}") from exc
    return IKNetArrays(tuple(layers), head, palm, mirrored)


def _forward(net: IKNetArrays, joints: np.ndarray) -> np.ndarray:
    """(B, 21, 3) float32 normalized joints of a right hand -> theta (B, 16, 4) float32."""
    R = canonical_rotation(joints, net.palm_template)
    x = np.einsum("bji,bkj->bki", R, joints).reshape(len(joints), -1)  # R^T x
    for W, b, scale, shift in net.hidden:
        x = np.maximum((x @ W.T + b) * scale + shift, np.float32(0.0))
    W, b = net.head
    return quaternions_from_mlp((x @ W.T + b).reshape(-1, N_JOINTS, 4), R)


def predict_theta(net: IKNetArrays, joints_normalized: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Runs IKNet on numpy input: (N, 21, 3) normalized joints -> (N, 16, 4) float64 quaternions."""
    from threadpoolctl import threadpool_limits

    joints = np.asarray(joints_normalized, dtype=np.float32)
    if len(joints) == 0:
        return np.zeros((0, N_JOINTS, 4))
    outs = []
    # One BLAS thread: the same theta whatever the environment's thread settings. On two threads OpenBLAS
    # splits a product differently (last-bit differences), which a batch's fit carried to 2e-3 in theta between
    # its local and its Ray workers (Ray sets OMP_NUM_THREADS=1). The torch module ran on the capture's one
    # torch thread.
    with threadpool_limits(limits=1, user_api="blas"):
        for i in range(0, len(joints), batch_size):
            chunk = joints[i : i + batch_size]
            if net.mirrored:
                outs.append(mirror_quaternions(_forward(net, mirror_joints(chunk).astype(np.float32))))
            else:
                outs.append(_forward(net, chunk))
    return np.concatenate(outs, axis=0).astype(np.float64)
