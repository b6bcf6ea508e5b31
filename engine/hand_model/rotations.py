"""Quaternions (w, x, y, z), one definition each for numpy, JAX and torch arrays.

The functions read components with `x[..., i]` and build results with the array's own library (picked from
the argument's type; torch and JAX are imported only when their arrays come in), so the JAX tailor, the
torch hand module and numpy tools share them. Shapes: `...` any batch prefix.
"""

from __future__ import annotations

import numpy as np


class _Ops:
    """The few array operations the formulas need, for one library."""

    def __init__(self, stack, cat, where, clamp_min, sqrt, rsqrt, sin, cos, tiny):
        self.stack, self.cat, self.where, self.clamp_min = stack, cat, where, clamp_min
        self.sqrt, self.rsqrt, self.sin, self.cos, self.tiny = sqrt, rsqrt, sin, cos, tiny


def _ops(x) -> _Ops:
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        return _Ops(lambda xs, axis: torch.stack(xs, dim=axis), lambda xs, axis: torch.cat(xs, dim=axis), torch.where,
                    torch.clamp_min, torch.sqrt, torch.rsqrt, torch.sin, torch.cos, torch.finfo(x.dtype).tiny)
    if module.startswith("jax"):
        import jax
        import jax.numpy as jnp

        return _Ops(lambda xs, axis: jnp.stack(xs, axis=axis), lambda xs, axis: jnp.concatenate(xs, axis=axis), jnp.where,
                    jnp.maximum, jnp.sqrt, jax.lax.rsqrt, jnp.sin, jnp.cos, jnp.finfo(x.dtype).tiny)
    dtype = np.asarray(x).dtype
    return _Ops(lambda xs, axis: np.stack(xs, axis=axis), lambda xs, axis: np.concatenate(xs, axis=axis), np.where,
                np.maximum, np.sqrt, lambda v: 1.0 / np.sqrt(v), np.sin, np.cos,
                np.finfo(dtype if dtype.kind == "f" else np.float64).tiny)


def quat_multiply(a, b):
    """Hamilton product a * b of (..., 4) quaternions (w, x, y, z): the rotation b, then a."""
    xp = _ops(a)
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return xp.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


def quat_to_rotmat(quat):
    """Quaternions (..., 4) (w, x, y, z), normalized here -> rotation matrices (..., 3, 3)."""
    xp = _ops(quat)
    norm2 = (quat * quat).sum(-1)[..., None]
    q = quat * xp.rsqrt(xp.clamp_min(norm2, xp.tiny))
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    row0 = xp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1)
    row1 = xp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1)
    row2 = xp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)
    return xp.stack([row0, row1, row2], -2)


def axis_angle_to_quat(axis_angle):
    """Axis-angle (..., 3) (angle = norm, radians) -> unit quaternions (..., 4) (w, x, y, z); finite, with
    finite gradients, at the identity (Taylor expansion below 1e-6 rad)."""
    xp = _ops(axis_angle)
    v = axis_angle
    th2 = (v * v).sum(-1)[..., None]
    small = th2 < 1e-12
    th = xp.sqrt(xp.where(small, 1.0 + 0.0 * th2, th2))
    w = xp.where(small, 1.0 - th2 / 8.0, xp.cos(0.5 * th))
    k = xp.where(small, 0.5 - th2 / 48.0, xp.sin(0.5 * th) / th)
    return xp.cat([w, k * v], -1)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """numpy (..., 4) -> (..., 4): the inverse rotation of a unit quaternion."""
    return np.asarray(q) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_log(q: np.ndarray) -> np.ndarray:
    """numpy unit quaternions (..., 4) -> axis-angle (..., 3) of the shorter rotation (angle in [0, pi])."""
    q = np.asarray(q, np.float64)
    q = np.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    return np.where(s > 1e-12, v * angle / np.maximum(s, 1e-300), 2.0 * v)


def rotmat_to_quat(rotmat):
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) (w, x, y, z) with w >= 0.

    Shepperd's method: the candidate with the largest denominator is picked, so it is stable everywhere.
    """
    xp = _ops(rotmat)
    m = rotmat
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    t = [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22]  # 4w^2, 4x^2, ...
    cands = [
        xp.stack([t[0], m21 - m12, m02 - m20, m10 - m01], -1),
        xp.stack([m21 - m12, t[1], m10 + m01, m02 + m20], -1),
        xp.stack([m02 - m20, m10 + m01, t[2], m21 + m12], -1),
        xp.stack([m10 - m01, m02 + m20, m21 + m12, t[3]], -1),
    ]
    t_best, cand = t[0], cands[0]
    for i in (1, 2, 3):  # the largest t (the first of equal ones)
        pick = t[i] > t_best
        t_best = xp.where(pick, t[i], t_best)
        cand = xp.where(pick[..., None], cands[i], cand)
    q = cand * (0.5 * xp.rsqrt(xp.clamp_min(t_best, xp.tiny)))[..., None]
    q = q / xp.sqrt((q * q).sum(-1))[..., None]
    return xp.where(q[..., :1] < 0, -q, q)


def sign_continuous(quats: np.ndarray) -> np.ndarray:
    """numpy (N, ..., 4) quaternions of consecutive frames -> the same rotations with each frame's sign
    picked in the hemisphere of the last finite frame before it (q and -q are one rotation; a clip's
    temporal terms and its keys need neighbours on the same side). Non-finite frames pass through."""
    q = np.array(quats, copy=True)
    prev = None
    for n in range(q.shape[0]):
        if not np.all(np.isfinite(q[n])):
            continue
        if prev is not None:
            flip = np.sum(q[n] * prev, axis=-1) < 0
            q[n][flip] *= -1
        prev = q[n]
    return q
