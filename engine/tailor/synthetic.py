"""Synthetic tailor cases with ground truth (tests and `python -m engine bench tailor`).

Ground truth: random plausible poses (each local rotation uniform in the model's joint limits, the global
rotation a random tilt of a palm-towards-camera hand), shapes ~ N(0, 1), a known pinhole camera, the hand
at 0.35-0.8 m. Observations: the projected keypoints plus Gaussian noise of 1-3 px (per frame). The
initialization imitates a hand module: every joint rotation perturbed by 10-20 degrees about a random axis,
beta + N(0, 0.5), the wrist back-projected from its noisy 2D keypoint at a depth off by N(0, 5%), and
hand_scale 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from engine.camera import project_perspective
from engine.hand_model import HandModel, jax_layer, rotations

__all__ = ["make_case", "CASE_K", "CASE_IMAGE_SIZE"]

CASE_IMAGE_SIZE = (640, 480)
CASE_K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]], np.float32)


# The case is made in numpy and one jitted keypoints call: made with eager JAX ops, every op compiled
# on its own (~180 compiles, 7.6 s of each process that makes a case).
_keypoints = jax.jit(jax_layer.keypoints)


def _rotmats(axis_angle: np.ndarray) -> np.ndarray:
    return rotations.quat_to_rotmat(rotations.axis_angle_to_quat(np.asarray(axis_angle, np.float64))).astype(np.float32)


def _quats(rotmats: np.ndarray) -> np.ndarray:
    return rotations.rotmat_to_quat(np.asarray(rotmats, np.float64)).astype(np.float32)


def _random_axes(rng, shape):
    v = rng.normal(size=shape + (3,))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def make_case(
    model: HandModel,
    params,
    batch: int,
    seed: int = 0,
    pose_noise_deg=(10.0, 20.0),
    beta_noise: float = 0.5,
    pixel_noise=(1.0, 3.0),
    depth_noise: float = 0.05,
) -> dict:
    """One synthetic batch.

    Args:
      model: the hand model (joint_limits (16, 3, 2) are sampled; None limits: +-0.3 rad).
      params: `jax_layer.prepare(model)` (float32).
      batch: B frames.
    Returns:
      dict of numpy float32 arrays: gt_theta (B, 16, 4), gt_beta (B, 10), gt_root (B, 3), gt_joints (B, K, 3),
      gt_2d (B, K, 2), keypoints_2d (B, K, 2) noisy, confidence (B, K) ones, theta0 (B, 16, 4), beta0 (B, 10),
      root0 (B, 3), K (3, 3), image_size (2,).
    """
    rng = np.random.default_rng(seed)
    limits = model.joint_limits if model.joint_limits is not None else np.stack(
        [np.full((16, 3), -0.3), np.full((16, 3), 0.3)], -1
    )
    aa = rng.uniform(limits[..., 0], limits[..., 1], size=(batch, 16, 3))
    # global rotation: a random rotation of up to ~60 degrees applied to a base orientation facing the camera
    base = _rotmats(np.array([[np.pi / 2, 0.0, 0.0]]))[0]  # the palm (-y in the model) faces the camera (-z)
    tilt = _random_axes(rng, (batch,)) * rng.uniform(0, np.radians(60), size=(batch, 1))
    R = _rotmats(aa)
    R[:, 0] = _rotmats(tilt) @ base
    gt_theta = _quats(R)
    gt_beta = rng.normal(size=(batch, 10)).astype(np.float32)
    depth = rng.uniform(0.35, 0.8, size=batch)
    uv_root = rng.uniform([200, 150], [440, 330], size=(batch, 2))
    K = CASE_K
    gt_root = np.stack(
        [(uv_root[:, 0] - K[0, 2]) / K[0, 0] * depth, (uv_root[:, 1] - K[1, 2]) / K[1, 1] * depth, depth], -1
    ).astype(np.float32)
    ones = np.ones(batch, np.float32)
    gt_joints = np.asarray(
        _keypoints(params, jnp.asarray(R, jnp.float32), gt_beta, gt_root, ones)
    )
    gt_2d = np.asarray(project_perspective(gt_joints, K)).astype(np.float32)
    sigma = rng.uniform(*pixel_noise, size=(batch, 1, 1))
    kp = (gt_2d + rng.normal(size=gt_2d.shape) * sigma).astype(np.float32)

    angle = np.radians(rng.uniform(*pose_noise_deg, size=(batch, 16, 1)))
    noise = _rotmats(_random_axes(rng, (batch, 16)) * angle)
    theta0 = _quats(noise @ R)
    beta0 = (gt_beta + rng.normal(size=gt_beta.shape) * beta_noise).astype(np.float32)
    z0 = depth * (1.0 + rng.normal(size=batch) * depth_noise)
    root0 = np.stack(
        [(kp[:, 0, 0] - K[0, 2]) / K[0, 0] * z0, (kp[:, 0, 1] - K[1, 2]) / K[1, 1] * z0, z0], -1
    ).astype(np.float32)
    return dict(
        gt_theta=gt_theta, gt_beta=gt_beta, gt_root=gt_root, gt_joints=gt_joints, gt_2d=gt_2d,
        keypoints_2d=kp, confidence=np.ones((batch, 21), np.float32), theta0=theta0, beta0=beta0, root0=root0,
        K=K.copy(), image_size=np.array(CASE_IMAGE_SIZE),
    )
