"""Lifting: 21 (u, v, d) keypoints -> 3D joints (paper Sec. 3.3 Eq. 5 and Sec. 3.5 Eq. 14-15).

Pure numpy functions (`perspective_unproject` and `normalize_joints` take torch tensors too: the hourglass
and IKNet training use them). Letters in shapes: `...` any batch prefix (typically N frames), K = 21 keypoints.

Depth conventions
-----------------
The paper's keypoint network predicts `d'`: the depth of every keypoint relative to the root keypoint (9,
middle-finger MCP) divided by the metric length of the reference bone (keypoints 0 -> 9), so that
`z_j = z_root + d'_j * B` with B the reference bone length in meters (and `d'_root = 0`).

MediaPipe's landmark network gives `d` in "pixel-like" units instead: relative to the wrist, with roughly
the scale of x (the keypoint stage converts it to full-frame pixels). Locally the triplets (u, v, d) are then
a weak-perspective picture of the hand in pixels: the reference bone's length in (u, v, d) space is
`L = |(du, dv, dd)| ~= f * B / z_root`. `normalized_depth` maps MediaPipe's d to the paper's d' by

    d'_j = (d_j - d_root) / L

which is scale free (no K, no model needed) and exact under a weak-perspective camera with a correctly
scaled d. With this mapping Eq. 15 (`bone_scale`) returns s = L (pixels per reference-bone unit): the paper's weak
perspective and "trust MediaPipe's depth scale" coincide.

With K, `perspective_lift_pixel_depth` reads d as pixels at the root's depth instead (z_j = z_9 (1 + dd_j / f),
linear in z_9, no weak-perspective approximation of the bone's pixel length).

Measured (models/iknet/measure_mediapipe_depth.py): MediaPipe's d does NOT have the scale of x: against the
true depth its slope was 0.04-0.54 on the gt-sample hands, varying per hand. Its metric world landmarks give
the hand's 3D shape directly: `normalize_joints` turns them into root-relative,
reference-bone-normalized joints, and `hybrid_normalized_depth` takes only their depth (z) as d' (2D from uvd,
depth from the world landmarks). The hybrid was best on the real hands and on synthetic data with a d flattened
like that, so `hand_module.fit_init` uses it whenever world landmarks are given (models/iknet/PROVENANCE.md).
"""

from __future__ import annotations

import logging

import numpy as np

from engine.camera import backproject_perspective
from engine.hand_model.constants import KEYPOINT_PARENTS, REFERENCE_BONE, ROOT_KEYPOINT

log = logging.getLogger(__name__)

# Pairs of keypoints whose distance does not change with the pose (both ends rigidly attached to the wrist
# joint in the MANO tree): the 20 tree bones plus the palm across the MCPs.
RIGID_PAIRS = np.array(
    [(int(p), c) for c, p in enumerate(KEYPOINT_PARENTS) if p >= 0] + [(5, 9), (9, 13), (13, 17), (1, 5)]
)
# Palm pairs only (all rigid in the wrist frame, the most reliable for the weak-perspective fallback).
PALM_PAIRS = np.array([(0, 1), (0, 5), (0, 9), (0, 13), (0, 17), (5, 9), (9, 13), (13, 17), (1, 5)])

# Eq. 15 is used on the reference bone while 1 - dd'^2 >= EQ15_MIN_DENOM (the bone at least ~18 degrees
# out of the viewing direction); below that the scale comes from all palm pairs (see bone_scale).
EQ15_MIN_DENOM = 0.1


def normalized_depth(uvd: np.ndarray) -> np.ndarray:
    """MediaPipe-style pixel depth -> the paper's root-relative, reference-bone-normalized depth d'.

    Args:
        uvd: (..., K, 3) u, v in pixels and d a relative depth in the same pixel units (any origin).
    Returns:
        (..., K) d'_j = (d_j - d_9) / L with L the reference bone length in (u, v, d) space. A zero-length
        reference bone (all three components 0: no hand) gives d' = 0.
    """
    uvd = np.asarray(uvd, dtype=np.float64)
    a, b = REFERENCE_BONE
    length = np.linalg.norm(uvd[..., b, :] - uvd[..., a, :], axis=-1)
    safe = np.where(length > 1e-9, length, 1.0)
    d = (uvd[..., 2] - uvd[..., ROOT_KEYPOINT, None, 2]) / safe[..., None]
    return np.where((length > 1e-9)[..., None], d, 0.0)


def normalize_joints(joints):
    """Root-relative (keypoint 9) joints in reference-bone units: IKNet's input, the shape fit's.

    Args:
        joints: (..., K, 3) any units and origin, numpy or torch (e.g. MediaPipe's metric world landmarks,
            camera-aligned axes).
    Returns:
        (..., K, 3) (joints - joints[9]) / |joints[9] - joints[0]| (a zero-length reference bone: not divided).
    """
    if not hasattr(joints, "norm"):  # numpy (torch tensors have .norm)
        joints = np.asarray(joints, dtype=np.float64)
    a, b = REFERENCE_BONE
    d = joints[..., b, :] - joints[..., a, :]
    length = d.norm(dim=-1) if hasattr(d, "norm") else np.linalg.norm(d, axis=-1)
    length = length + (length <= 1e-12) * (1.0 - length)  # 1 where the bone has no length
    return (joints - joints[..., ROOT_KEYPOINT : ROOT_KEYPOINT + 1, :]) / length[..., None, None]


# the name models/iknet/measure_mediapipe_depth.py uses
world_landmarks_normalized = normalize_joints


def hybrid_normalized_depth(world: np.ndarray) -> np.ndarray:
    """d' taken from the world landmarks' depth (z) alone: (..., K, 3) -> (..., K)."""
    return normalize_joints(world)[..., 2]


def solve_root_depth(uv: np.ndarray, d_norm: np.ndarray, K: np.ndarray, bone_length) -> np.ndarray:
    """Root (keypoint 9) depth such that the lifted reference bone 0 -> 9 is `bone_length` meters long.

    With rays a_j = K^-1 (u_j, v_j, 1) and z_j = z + d'_j B, p_j = a_j z_j, the condition
    |p_0 - p_9| = B is the quadratic |a_0 - a_9|^2 z^2 + 2 z (a_0 - a_9).(a_0 d'_0 B) + |a_0 d'_0 B|^2 - B^2 = 0
    (using d'_9 = 0). Its larger root is the answer: the product of the roots is negative whenever
    |d'_0| < 1 / |a_0| (the bone is not close to the viewing ray), so that root is the only positive one.
    Otherwise (a reference bone within a few degrees of the line of sight) the geometry itself is ambiguous
    and the farther solution is taken. Without a real root (noisy input) the depth minimizing the
    bone length error, -b / 2a, is used. The result is kept >= 2 B (a hand in front of the camera).

    Args:
        uv: (..., K, 2) pixels. d_norm: (..., K) root-relative normalized depth d' (d'_9 may be nonzero:
            it is subtracted). K: (3, 3). bone_length: scalar or (...) meters.
    Returns:
        (...) z_root in meters.
    """
    uv = np.asarray(uv, dtype=np.float64)
    d_norm = np.asarray(d_norm, dtype=np.float64)
    d_norm = d_norm - d_norm[..., ROOT_KEYPOINT, None]
    a_i, b_i = REFERENCE_BONE
    rays = np.asarray(backproject_perspective(uv, np.ones(uv.shape[:-1]), np.asarray(K, np.float64)))
    B = np.broadcast_to(np.asarray(bone_length, dtype=np.float64), uv.shape[:-2])
    delta = rays[..., a_i, :] - rays[..., b_i, :]
    offset = rays[..., a_i, :] * (d_norm[..., a_i] * B)[..., None]
    qa = np.sum(delta * delta, axis=-1)
    qb = 2.0 * np.sum(delta * offset, axis=-1)
    qc = np.sum(offset * offset, axis=-1) - B * B
    qa_safe = np.where(qa > 1e-18, qa, 1e-18)
    disc = qb * qb - 4.0 * qa * qc
    z = np.where(disc >= 0.0, (-qb + np.sqrt(np.maximum(disc, 0.0))) / (2.0 * qa_safe), -qb / (2.0 * qa_safe))
    n_bad = int(np.count_nonzero(disc < 0.0))
    if n_bad:
        log.debug("root depth: %d frame(s) without a real root; using the least-error depth", n_bad)
    return np.maximum(z, 2.0 * B)


def perspective_unproject(rays, z_root, d_norm, bone):
    """Eq. 5: p_j = pi^-1(K, (u_j, v_j)) at the depth z_root + d'_j B (the root keypoint's d' subtracted).

    Args:
        rays: (..., K, 3) K^-1 (u_j, v_j, 1), each with z = 1 (numpy or torch). z_root: (...) the root
            keypoint's depth. d_norm: (..., K) root-relative normalized depth d'. bone: (...) the reference
            bone length B (1: the result in bone units).
    Returns:
        (..., K, 3) joints in the camera frame, in the units of z_root and B.
    """
    d = d_norm - d_norm[..., ROOT_KEYPOINT : ROOT_KEYPOINT + 1]
    return rays * (z_root[..., None] + d * bone[..., None])[..., None]


def perspective_lift(uv: np.ndarray, d_norm: np.ndarray, K: np.ndarray, bone_length) -> tuple[np.ndarray, np.ndarray]:
    """The perspective lift: the root depth from the bone length (`solve_root_depth`), then Eq. 5.

    Args:
        uv: (..., K, 2) pixels (undistorted). d_norm: (..., K) normalized depth d'. K: (3, 3).
        bone_length: scalar or (...) metric reference bone length B of the current shape (meters).
    Returns:
        joints (..., K, 3) meters in the camera frame, z_root (...) meters.
    """
    uv = np.asarray(uv, dtype=np.float64)
    d_norm = np.asarray(d_norm, dtype=np.float64)
    d_norm = d_norm - d_norm[..., ROOT_KEYPOINT, None]
    B = np.broadcast_to(np.asarray(bone_length, dtype=np.float64), uv.shape[:-2])
    z_root = solve_root_depth(uv, d_norm, K, B)
    # A keypoint can only be in front of the camera; a wild depth (|d'| of several bones) is clamped there
    # (z_j >= 0.1 B).
    d_norm = np.maximum(d_norm, (0.1 - z_root / B)[..., None])
    rays = np.asarray(backproject_perspective(uv, np.ones(uv.shape[:-1]), np.asarray(K, np.float64)))
    return perspective_unproject(rays, z_root, d_norm, B), z_root


def perspective_lift_pixel_depth(uvd: np.ndarray, K: np.ndarray, bone_length) -> tuple[np.ndarray, np.ndarray]:
    """The perspective lift with MediaPipe's d read as pixels at the root's depth (uvd input with K).

    If d is "the scale of x" in full-frame pixels, a depth offset of dz metres at depth z_9 shows as
    d = f dz / z_9, so z_j = z_9 (1 + (d_j - d_9) / f). Then p_j = a_j z_j and |p_0 - p_9| = B is LINEAR in
    z_9: z_9 = B / |a_0 (1 + (d_0 - d_9) / f) - a_9|. Unlike `normalized_depth` + `perspective_lift` this
    needs no weak-perspective approximation of the bone's pixel length (exact for such a d, see tests).
    Eq. 5 (`perspective_unproject`) with d' = (z_j / z_9 - 1) z_9 / B.

    Args:
        uvd: (..., K, 3) u, v pixels (undistorted), d pixel depth (any origin). K: (3, 3).
        bone_length: scalar or (...) metric reference bone length (meters).
    Returns:
        joints (..., K, 3) meters in the camera frame, z_root (...) meters.
    """
    uvd = np.asarray(uvd, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    uv = uvd[..., :2]
    B = np.broadcast_to(np.asarray(bone_length, dtype=np.float64), uv.shape[:-2])
    rel = 1.0 + (uvd[..., 2] - uvd[..., ROOT_KEYPOINT, None, 2]) / K[0, 0]  # d has the scale of x: fx
    rel = np.maximum(rel, 0.1)  # a keypoint stays in front of the camera
    rays = np.asarray(backproject_perspective(uv, np.ones(uv.shape[:-1]), K))
    a, b = REFERENCE_BONE
    span = np.linalg.norm(rays[..., a, :] * rel[..., a, None] - rays[..., b, :], axis=-1)
    z_root = B / np.maximum(span, 1e-9)
    return perspective_unproject(rays, z_root, (rel - 1.0) * (z_root / B)[..., None], B), z_root


def bone_scale(uv: np.ndarray, d_norm: np.ndarray, pair_lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 15: s = sqrt((du^2 + dv^2) / (1 - dd'^2)) on the reference bone (pixels per bone unit), guarded.

    Eq. 15 is 0/0 when the reference bone points at the camera (|dd'| -> 1) and amplifies noise near it
    (the released implementation produced inf/NaN joints there). Where 1 - dd'^2 < EQ15_MIN_DENOM the same
    relation is solved over the nine palm pairs in the least-squares sense instead,
        s^2 = sum_b (du_b^2 + dv_b^2) / max(sum_b max(l_b^2 - dd'_b^2, 0), 1e-3),
    with l_b the pair's length in reference-bone units (the hand model's rest lengths for the current shape,
    `pair_lengths`, (..., 9) in PALM_PAIRS order; a generic hand's are used when None). Whatever remains
    degenerate (every keypoint at one pixel) gets s = 1e-6 px per bone: finite joints, no inf/NaN.

    Args:
        uv: (..., K, 2) pixels. d_norm: (..., K) normalized depth d'. pair_lengths: None or (..., 9).
    Returns:
        s (...) pixels per reference-bone unit, fallback (...) bool: True where the palm fallback was used.
    """
    uv = np.asarray(uv, dtype=np.float64)
    d_norm = np.asarray(d_norm, dtype=np.float64)
    a, b = REFERENCE_BONE
    duv2 = np.sum((uv[..., b, :] - uv[..., a, :]) ** 2, axis=-1)
    dd2 = (d_norm[..., b] - d_norm[..., a]) ** 2
    denom = 1.0 - dd2
    fallback = denom < EQ15_MIN_DENOM
    s_ref = np.sqrt(duv2 / np.maximum(denom, EQ15_MIN_DENOM))
    if pair_lengths is None:
        pair_lengths = GENERIC_PALM_LENGTHS
    lengths = np.broadcast_to(np.asarray(pair_lengths, dtype=np.float64), uv.shape[:-2] + (len(PALM_PAIRS),))
    i, j = PALM_PAIRS[:, 0], PALM_PAIRS[:, 1]
    duv2_p = np.sum((uv[..., j, :] - uv[..., i, :]) ** 2, axis=-1)
    dd2_p = (d_norm[..., j] - d_norm[..., i]) ** 2
    den_p = np.maximum(lengths**2 - dd2_p, 0.0)
    s_palm = np.sqrt(np.sum(duv2_p, axis=-1) / np.maximum(np.sum(den_p, axis=-1), 1e-3))
    s = np.where(fallback, s_palm, s_ref)
    return np.maximum(s, 1e-6), fallback


def weak_perspective_lift(
    uv: np.ndarray, d_norm: np.ndarray, pair_lengths=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 14: [x, y, z] = Pi^-1(K', [u, v, d']) with s from `bone_scale` (Eq. 15, guarded).

    The result is root-relative (keypoint 9 at the origin) in reference-bone units: x = (u - u_9) / s,
    y = (v - v_9) / s, z = d' - d'_9. Multiply by a metric bone length to get meters; metric size and the
    absolute depth are unobservable without K.

    Args:
        uv: (..., K, 2) pixels. d_norm: (..., K) normalized depth d'. pair_lengths: None or (..., 9).
    Returns:
        joints (..., K, 3) bone units, s (...) pixels per bone unit, fallback (...) bool.
    """
    uv = np.asarray(uv, dtype=np.float64)
    d_norm = np.asarray(d_norm, dtype=np.float64)
    s, fallback = bone_scale(uv, d_norm, pair_lengths)
    xy = (uv - uv[..., ROOT_KEYPOINT, None, :]) / s[..., None, None]
    z = d_norm - d_norm[..., ROOT_KEYPOINT, None]
    return np.concatenate([xy, z[..., None]], axis=-1), s, fallback


def pair_ratios(keypoints: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Distances of keypoint pairs (P, 2) divided by the reference bone length: (..., K, 3) -> (..., P)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    a, b = REFERENCE_BONE
    ref = np.linalg.norm(keypoints[..., b, :] - keypoints[..., a, :], axis=-1)
    d = np.linalg.norm(keypoints[..., pairs[:, 1], :] - keypoints[..., pairs[:, 0], :], axis=-1)
    return d / np.where(ref > 1e-12, ref, 1.0)[..., None]


# Palm pair lengths (reference-bone units) of the shipped open hand model at beta = 0, rounded; used by the
# weak-perspective fallback when the caller gives no model (PALM_PAIRS order). Checked against the model in
# tests/test_lifting.py.
GENERIC_PALM_LENGTHS = np.array([0.442, 1.024, 1.0, 0.957, 0.91, 0.294, 0.262, 0.231, 0.666])
