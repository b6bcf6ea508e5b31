"""The tailor's energies (paper Eq. 9, 10, 11, 13; the project's P1, P2) as pure jitted functions of arrays.

Units decide what the paper's weights (lambda_J, lambda_g, lambda_id = 1, 100, 0.1) mean, so they are fixed
here for any footage:

* E_J is measured in pixels of a 256-px hand crop: a 2D error in image pixels times `crop_scale` =
  256 / (the hand's bounding size in image pixels), squared, confidence-weighted mean over the 21 keypoints.
  A 1-crop-px error everywhere gives E_J = 1.
* E_g is evaluated on joints divided by the reference bone length (keypoint 0 -> 9), so it is dimensionless
  (a unit-bone hand) and independent of the hand's size and distance.
* E_id is in radians^2 (pose, as the axis-angle change of each joint rotation) plus beta units^2.
* E_z (P1, the fingers' depth prior) is in reference-bone lengths squared; E_size (P2, the size held) is a
  squared relative size change: both dimensionless, whatever the hand's size and distance.
* The temporal term E_t is on camera-frame joints divided by the reference bone length (dimensionless).

Every function takes a leading batch axis B (frames) and returns one value per frame unless stated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from engine.camera import project_perspective
from engine.hand_model import FINGER_KEYPOINTS, REFERENCE_BONE
from engine.hand_model.jax_layer import take_static  # x[:, ids] without a gather (no scatter in the gradient)

__all__ = [
    "CROP_PX",
    "crop_scale",
    "joint_energy_perspective",
    "twist_energy",
    "twist_terms",
    "identity_energy",
    "depth_prior_energy",
    "size_energy",
    "temporal_energy",
    "rotation_temporal_energy",
    "total_energy",
]

CROP_PX = 256.0
_MIN_HAND_PX = 1.0  # floor of the hand's bounding size: all keypoints on one point stays finite
_MIN_Z = 1e-3  # meters: points at or behind the camera are projected as if 1 mm in front of it
_EPS = 1e-12


@jax.jit
def crop_scale(keypoints_2d, confidence):
    """256 / the hand's bounding size in pixels: multiplies image pixels into 256-px crop pixels.

    The size is the longer side of the bounding box of the keypoints with confidence > 0 (of all keypoints
    when none has), floored at 1 px.

    Args:
      keypoints_2d: (B, K, 2) observed keypoints, image pixels.
      confidence: (B, K) per-keypoint confidence in [0, 1].
    Returns:
      (B,) crop pixels per image pixel.
    """
    seen = confidence > 0
    seen = jnp.where(jnp.any(seen, axis=-1, keepdims=True), seen, True)[..., None]
    big = jnp.asarray(jnp.finfo(keypoints_2d.dtype).max, keypoints_2d.dtype)
    lo = jnp.min(jnp.where(seen, keypoints_2d, big), axis=-2)
    hi = jnp.max(jnp.where(seen, keypoints_2d, -big), axis=-2)
    size = jnp.max(hi - lo, axis=-1)
    size = jnp.where(jnp.isfinite(size), size, _MIN_HAND_PX)
    return CROP_PX / jnp.maximum(size, _MIN_HAND_PX)


def _weighted_mean_sq(err_crop, confidence):
    """(B, K, 2) crop-pixel errors, (B, K) weights -> (B,) weighted mean of squared norms (0 if no weight)."""
    sq = jnp.sum(err_crop * err_crop, axis=-1)
    wsum = jnp.sum(confidence, axis=-1)
    return jnp.sum(confidence * sq, axis=-1) / jnp.maximum(wsum, _EPS)


@jax.jit
def joint_energy_perspective(joints_3d, K, keypoints_2d, confidence, crop):
    """E_J, Eq. 9: confidence-weighted mean squared 2D error of the pinhole projection, in crop px^2.

    Args:
      joints_3d: (B, K, 3) model keypoints in the camera frame, meters (root + s* * posed joints).
      K: (3, 3) intrinsics, pixels.
      keypoints_2d: (B, K, 2) observed keypoints, image pixels.
      confidence: (B, K) per-keypoint weights (0 ignores a keypoint).
      crop: (B,) crop pixels per image pixel (`crop_scale`).
    Returns:
      (B,) E_J in 256-px-crop pixels squared.
    """
    z = joints_3d[..., 2:3]
    safe = jnp.concatenate([joints_3d[..., :2], jnp.maximum(z, _MIN_Z)], axis=-1)
    uv = project_perspective(safe, K)
    err = (uv - keypoints_2d) * crop[:, None, None]
    return _weighted_mean_sq(err, confidence)


def _bone_normalized(joints):
    """(B, K, 3) -> (B, K, 3) joints divided by the reference bone length (floored: never inf)."""
    a, b = REFERENCE_BONE
    bone = jnp.sqrt(jnp.sum((joints[:, b] - joints[:, a]) ** 2, axis=-1) + _EPS)
    scale = jnp.maximum(bone, 1e-6 * (1.0 + jnp.max(jnp.abs(joints), axis=(-2, -1))))
    return joints / scale[:, None, None]


@jax.jit
def twist_terms(joints_3d):
    """The two terms `twist_energy` sums, per finger, on joints divided by the reference bone length.

    For a finger with joints a, b, c, d in tip-to-palm order (FINGER_KEYPOINTS), V_ab = p_a - p_b, ...:
    coplanarity = |(V_ab x V_bc) . V_cd| (the finger leaves its bending plane) and
    bend_consistency = (V_ab x V_bc) . (V_bc x V_cd) (negative when two joints bend opposite ways).

    Args:
      joints_3d: (B, K, 3) keypoints (any frame, any units: normalized by the reference bone here).
    Returns:
      coplanarity (B, 5), bend_consistency (B, 5), dimensionless (unit reference bone), thumb..pinky.
    """
    # read palm-to-tip (keypoints 1..20: one slice, where tip-to-palm would be 20 slices and, in the
    # gradient, 20 pads: a quarter of the tailor's per-step ops at B = 1), then index tip-to-palm
    q = take_static(_bone_normalized(joints_3d), _PALM_TO_TIP).reshape(joints_3d.shape[0], 5, 4, 3)
    a, b, c, d = (q[:, :, 3 - i] for i in range(4))
    v_ab, v_bc, v_cd = a - b, b - c, c - d
    n1 = _cross(v_ab, v_bc)
    n2 = _cross(v_bc, v_cd)
    return jnp.abs(jnp.sum(n1 * v_cd, axis=-1)), jnp.sum(n1 * n2, axis=-1)


_PALM_TO_TIP = FINGER_KEYPOINTS[:, ::-1]  # (5, 4): 1-4, 5-8, ... : consecutive


def _cross(u, v):
    """(..., 3) x (..., 3) cross product from component slices (fuses; `jnp.cross` pads in its gradient)."""
    ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    return jnp.stack([uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx], axis=-1)


@jax.jit
def twist_energy(joints_3d):
    """E_g, Eq. 10: |(V_ab x V_bc) . V_cd| - min(0, (V_ab x V_bc).(V_bc x V_cd)), summed over the five fingers.

    Args:
      joints_3d: (B, K, 3) keypoints; evaluated on joints divided by the reference bone length.
    Returns:
      (B,) dimensionless energy (unit reference bone).
    """
    coplanarity, bend = twist_terms(joints_3d)
    return jnp.sum(coplanarity - jnp.minimum(0.0, bend), axis=-1)


@jax.jit
def identity_energy(delta_pose, beta, beta0, global_weight=1.0, beta_weight=1.0):
    """Eq. 11: E_id = ||beta - beta'||^2 + ||theta - theta'||^2, each part weighted (paper: 1 and 1).

    The global rotation (joint 0) and the shape have their own weights relative to the 15 finger joints:
    2D sees the hand's orientation in the image and its proportions better than each finger's depth, so
    the tailor holds the fingers' articulation (the hand module's) more firmly than those two.

    Args:
      delta_pose: (B, J, 3) axis-angle of each joint's rotation relative to its initial value (theta - theta'
        in the tangent space), radians.
      beta: (B, 10) shape; beta0: (B, 10) its initial value.
      global_weight: weight of joint 0's change (the global rotation); beta_weight: weight of the shape part.
    Returns:
      (B,) energy in radians^2 + beta units^2.
    """
    sq = jnp.sum(delta_pose**2, axis=-1)  # (B, J)
    pose = jnp.sum(sq, axis=-1) + (global_weight - 1.0) * sq[:, 0]
    return pose + beta_weight * jnp.sum((beta - beta0) ** 2, axis=-1)


@jax.jit
def depth_prior_energy(joints_rel, joints_rel0, bone):
    """Eq. P1: E_z, each finger's depth kept near the hand module's, which 2D cannot see.

    E_z = mean over the 15 finger keypoints k (not the wrist, not the finger bases: thumb CMC, MCPs) of
    ((z_k - z_b(k)) - (z'_k - z'_b(k)))^2 / B'^2, where b(k) is k's finger base and primes are the initial
    (hand module's) values: how far each finger bends towards or away from the camera relative to its base,
    compared with the hand module's estimate, in reference-bone lengths. The palm's own tilt is left to 2D
    (its foreshortening) and to E_id's global part. A Gaussian prior of sd sigma_z (m) on these depths
    against 2D noise of sd sigma_2D (crop px) has the weight lambda_z ~ (sigma_2D B' / sigma_z)^2 / 2.

    Args:
      joints_rel: (B, K, 3) posed keypoints, camera axes, meters (any origin, any common scale with rel0).
      joints_rel0: (B, K, 3) the initial keypoints, same axes and scale.
      bone: (B,) the reference bone length of joints_rel0, same units (floored at 1e-9).
    Returns:
      (B,) dimensionless energy (reference-bone lengths squared).
    """
    b = joints_rel.shape[0]

    def finger_depths(j):  # (B, 5, 4): each finger's keypoints base-to-tip, depth relative to the base
        z = j[:, 1:, 2].reshape(b, 5, 4)
        return z[:, :, 1:] - z[:, :, :1]

    d = finger_depths(joints_rel) - finger_depths(joints_rel0)
    return jnp.mean(d * d, axis=(-2, -1)) / jnp.maximum(bone, 1e-9) ** 2


def hand_size(J0, Jdirs, beta):
    """The hand's size at rest: the RMS distance of the 16 rest joints from the wrist joint.

    Args:
      J0: (J, 3) rest joints at beta = 0; Jdirs: (J, 3, 10) their shape directions (`jax_layer.JaxHandParams`).
      beta: (B, 10) shape.
    Returns:
      (B,) meters.
    """
    J = J0[None] + jnp.einsum("jcs,bs->bjc", Jdirs, beta)
    return jnp.sqrt(jnp.mean(jnp.sum((J - J[:, :1]) ** 2, axis=-1), axis=-1))


@jax.jit
def size_energy(beta, size0, J0, Jdirs):
    """Eq. P2: E_size = ((S(beta) - S0) / S0)^2, the hand's size held at its initial value.

    A hand's metric size is one number per person, not a per-frame unknown: 2D keypoints cannot tell it
    from the distance (which the analytic scale sets), so shape changes that grow or shrink the hand are
    held here while its proportions stay free. S is `hand_size`.

    Args:
      beta: (B, 10) shape.
      size0: (B,) the size to hold (S(beta') of the initial shape), meters.
      J0: (J, 3) rest joints at beta = 0; Jdirs: (J, 3, 10) their shape directions.
    Returns:
      (B,) dimensionless energy (squared relative size change).
    """
    s0 = jnp.maximum(size0, 1e-9)
    return ((hand_size(J0, Jdirs, beta) - s0) / s0) ** 2


@jax.jit
def temporal_energy(joints_3d, valid):
    """Joint acceleration over consecutive frames of a batch (optional video term): couples the frames.

    sum over n of the mean over keypoints of |J[n+1] - 2 J[n] + J[n-1]|^2, counting only triples of valid
    frames, on camera-frame joints divided by the batch's mean reference bone length over its valid frames
    (one unit for the whole batch, held constant in the gradient).

    Args:
      joints_3d: (N, K, 3) camera-frame keypoints of consecutive frames, meters.
      valid: (N,) bool.
    Returns:
      () dimensionless energy (0 for fewer than 3 frames).
    """
    n = joints_3d.shape[0]
    if n < 3:
        return jnp.zeros((), joints_3d.dtype)
    a, b = REFERENCE_BONE
    bone = jnp.sqrt(jnp.sum((joints_3d[:, b] - joints_3d[:, a]) ** 2, axis=-1) + _EPS)
    vf = valid.astype(joints_3d.dtype)
    unit = jax.lax.stop_gradient(jnp.sum(vf * bone) / jnp.maximum(jnp.sum(vf), 1.0))
    j = joints_3d / jnp.maximum(unit, 1e-6)
    acc = j[2:] - 2.0 * j[1:-1] + j[:-2]
    ok = (valid[2:] & valid[1:-1] & valid[:-2]).astype(joints_3d.dtype)
    per = jnp.mean(jnp.sum(acc * acc, axis=-1), axis=-1)
    return jnp.sum(ok * per)


@jax.jit
def rotation_temporal_energy(quats, valid):
    """Rotation acceleration over consecutive frames of a batch (video term, issue 15): couples the frames.

    sum over valid triples n and joints j of 4 |q[n+1] - 2 q[n] + q[n-1]|^2, which is, for small angles, the
    squared angle (radians) between q[n] and the midpoint of its neighbours: the clip's chatter. Zero phase
    (symmetric in time): it smooths without delaying motion. The quaternions must be sign-continuous along
    the frames (the tailor keeps the signs of its initialization, which the clip fit makes continuous).

    Args:
      quats: (N, J, 4) unit quaternions (w, x, y, z) of consecutive frames.
      valid: (N,) bool.
    Returns:
      () energy in radians^2 (0 for fewer than 3 frames).
    """
    if quats.shape[0] < 3:
        return jnp.zeros((), quats.dtype)
    acc = quats[2:] - 2.0 * quats[1:-1] + quats[:-2]
    ok = (valid[2:] & valid[1:-1] & valid[:-2]).astype(quats.dtype)
    return 4.0 * jnp.sum(ok * jnp.sum(acc * acc, axis=(-2, -1)))


@jax.jit
def total_energy(e_j, e_g, e_id, lambda_j=1.0, lambda_g=100.0, lambda_id=0.1, e_z=0.0, e_size=0.0, lambda_z=0.0,
                 lambda_size=0.0):
    """Eq. 13: E = lambda_J E_J + lambda_g E_g + lambda_id E_id (paper: 1, 100, 0.1), plus the project's
    lambda_z E_z (P1) + lambda_size E_size (P2) (0 in the paper).

    Args:
      e_j, e_g, e_id: (B,) the three energies in their units (crop px^2, unit-bone, rad^2 + beta^2).
      e_z, e_size: (B,) or scalars, the depth prior and the size term (dimensionless).
    Returns:
      (B,) total energy.
    """
    return lambda_j * e_j + lambda_g * e_g + lambda_id * e_id + lambda_z * e_z + lambda_size * e_size
