"""Channel values for the rig from engine quantities, numpy only (no bpy): the math of rig.py/keys.py.

Rig (DESIGN.md "Blender side"): bone i rests at the template joint J0_i with rest orientation B_i
(armature space, roll 0). Blender deforms a vertex x with  M_i Rest_i^-1 x  where
M_i = M_parent Rest_parent^-1 Rest_i [loc_i, Q_i]. MANO's LBS (rotation about J(beta)) is reproduced
exactly by
    Q_i   = B_i^T R_i B_i                       (R_i: the model's local rotation theta_i)
    loc_i = B_i^T (I - R_i) dJ_i,   dJ = Jdirs . beta   (zero at beta = 0)
except the wrist, which also takes the shape's wrist shift out: loc_0 = B_0^T (-R_0 dJ_0); then the
armature object carries root and hand_scale independently of beta:
    object = camera_world @ C @ T(root) @ S(s) @ T(-J0_0),  C = diag(1,-1,-1) (camera.py).
Letters: N frames, J=16 joints.
"""

from __future__ import annotations

import numpy as np


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """(..., 4) -> (..., 4) unit quaternions (w, x, y, z)."""
    return q / np.sqrt(np.einsum("...i,...i->...", q, q))[..., None]  # (einsum: 4x faster than linalg.norm)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) and (..., 4) -> (..., 4)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_conj(q: np.ndarray) -> np.ndarray:
    """(..., 4) -> (..., 4)."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """(..., 4) (any norm) -> (..., 3, 3) rotation matrices."""
    q = quat_normalize(np.asarray(q, np.float64))
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotates vectors v (..., 3) by unit quaternions q (..., 4): v + 2w (u x v) + 2 u x (u x v)."""
    w = q[..., :1]
    u = q[..., 1:]
    t = 2.0 * _cross(u, v)
    return v + w * t + _cross(u, t)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 3) x (..., 3) -> (..., 3); np.cross is ~5x slower on the (N, J, 3) arrays keyed here."""
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], axis=-1)


def rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 4) with w >= 0 (Shepperd's method, batched)."""
    R = np.asarray(R, np.float64)
    shape = R.shape[:-2]
    R = R.reshape(-1, 3, 3)
    tr = R[:, 0, 0] + R[:, 1, 1] + R[:, 2, 2]
    cands = np.stack([tr, R[:, 0, 0], R[:, 1, 1], R[:, 2, 2]], -1)
    k = np.argmax(cands, -1)
    q = np.empty((R.shape[0], 4))
    for case in range(4):
        m = k == case
        if not m.any():
            continue
        r = R[m]
        if case == 0:
            s = np.sqrt(1.0 + r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]) * 2
            q[m] = np.stack([0.25 * s, (r[:, 2, 1] - r[:, 1, 2]) / s, (r[:, 0, 2] - r[:, 2, 0]) / s,
                             (r[:, 1, 0] - r[:, 0, 1]) / s], -1)
        elif case == 1:
            s = np.sqrt(1.0 + r[:, 0, 0] - r[:, 1, 1] - r[:, 2, 2]) * 2
            q[m] = np.stack([(r[:, 2, 1] - r[:, 1, 2]) / s, 0.25 * s, (r[:, 0, 1] + r[:, 1, 0]) / s,
                             (r[:, 0, 2] + r[:, 2, 0]) / s], -1)
        elif case == 2:
            s = np.sqrt(1.0 + r[:, 1, 1] - r[:, 0, 0] - r[:, 2, 2]) * 2
            q[m] = np.stack([(r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 0, 1] + r[:, 1, 0]) / s, 0.25 * s,
                             (r[:, 1, 2] + r[:, 2, 1]) / s], -1)
        else:
            s = np.sqrt(1.0 + r[:, 2, 2] - r[:, 0, 0] - r[:, 1, 1]) * 2
            q[m] = np.stack([(r[:, 1, 0] - r[:, 0, 1]) / s, (r[:, 0, 2] + r[:, 2, 0]) / s,
                             (r[:, 1, 2] + r[:, 2, 1]) / s, 0.25 * s], -1)
    q = quat_normalize(q)
    q[q[:, 0] < 0] *= -1
    return q.reshape(*shape, 4)


def continuous_signs(q: np.ndarray) -> np.ndarray:
    """(N, ..., 4) -> (N, ..., 4): flips signs along axis 0 so consecutive quaternions have dot >= 0."""
    q = np.array(q, np.float64, copy=True)
    if q.shape[0] < 2:
        return q
    # c_n = c_{n-1} * sign(q_n . q_{n-1}) makes every consecutive dot product non-negative
    step = np.where(np.sum(q[1:] * q[:-1], axis=-1) < 0, -1.0, 1.0)
    c = np.concatenate([np.ones((1,) + step.shape[1:]), np.cumprod(step, axis=0)])
    return q * c[..., None]


def bone_quats(theta: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Model local rotations theta (N, J, 4) -> bone-local quaternions (N, J, 4) = B^T R B, sign-continuous.

    B: (J, 3, 3) bone rest orientations (armature space)."""
    qB = rotmat_to_quat(B)  # (J, 4)
    qb = quat_mul(quat_mul(quat_conj(qB)[None], quat_normalize(np.asarray(theta, np.float64))), qB[None])
    return continuous_signs(qb)


def model_quats(qb: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Inverse of bone_quats: bone-local (N, J, 4) -> model local rotations (N, J, 4), unit norm."""
    qB = rotmat_to_quat(B)
    return quat_normalize(quat_mul(quat_mul(qB[None], np.asarray(qb, np.float64)), quat_conj(qB)[None]))


def bone_locations(theta: np.ndarray, beta: np.ndarray, B: np.ndarray, Jdirs: np.ndarray) -> np.ndarray:
    """loc_i = B_i^T (I - R_i) (Jdirs_i . beta), loc_0 = -B_0^T R_0 (Jdirs_0 . beta):
    (N, J, 4), (N, 10), (J, 3, 3), (J, 3, 10) -> (N, J, 3)."""
    J = Jdirs.shape[0]
    dJ = (np.asarray(beta, np.float64) @ Jdirs.transpose(2, 0, 1).reshape(-1, 3 * J)).reshape(-1, J, 3)
    w = dJ - quat_rotate(quat_normalize(np.asarray(theta, np.float64)), dJ)
    w[:, 0] -= dJ[:, 0]
    return np.matmul(w[:, :, None, :], B[None])[:, :, 0, :]  # B_i^T w_i for every frame


def object_transforms(root: np.ndarray, hand_scale: np.ndarray, beta: np.ndarray, J0: np.ndarray,
                      Jdirs: np.ndarray, to_world: np.ndarray):
    """Armature object location (N, 3), rotation quaternion (4,) and uniform scale (N,).

    to_world (4, 4): OpenCV camera frame -> Blender world (camera.opencv_to_world_matrix)."""
    p_cam = root - hand_scale[:, None] * J0[0][None]
    loc = p_cam @ to_world[:3, :3].T + to_world[:3, 3]
    rot = rotmat_to_quat(to_world[:3, :3])
    return loc, rot, np.asarray(hand_scale, np.float64)


def root_from_object(loc: np.ndarray, hand_scale: np.ndarray, beta: np.ndarray, J0: np.ndarray,
                     Jdirs: np.ndarray, to_world: np.ndarray) -> np.ndarray:
    """Inverse of object_transforms for the root: (N, 3) world locations -> (N, 3) camera-frame wrist."""
    A = to_world[:3, :3]
    p_cam = (loc - to_world[:3, 3]) @ np.linalg.inv(A).T
    return p_cam + hand_scale[:, None] * J0[0][None]


# Pose correctives: MANO's feature k = (j-1)*9 + 3a + b is (R_j - I)[a, b], R_j = B_j R(q_b) B_j^T.
_MONOMIALS = ("ww", "xx", "yy", "zz", "wx", "wy", "wz", "xy", "xz", "yz")


def _rotmat_monomial_coeffs() -> np.ndarray:
    """(3, 3, 10): R(q)[k,l] * |q|^2 as a combination of the quadratic monomials of (w,x,y,z)."""
    M = np.zeros((3, 3, 10))
    idx = {m: i for i, m in enumerate(_MONOMIALS)}
    def put(k, l, terms):
        for coef, mono in terms:
            M[k, l, idx[mono]] += coef
    put(0, 0, [(1, "ww"), (1, "xx"), (-1, "yy"), (-1, "zz")])
    put(1, 1, [(1, "ww"), (-1, "xx"), (1, "yy"), (-1, "zz")])
    put(2, 2, [(1, "ww"), (-1, "xx"), (-1, "yy"), (1, "zz")])
    put(0, 1, [(2, "xy"), (-2, "wz")])
    put(1, 0, [(2, "xy"), (2, "wz")])
    put(0, 2, [(2, "xz"), (2, "wy")])
    put(2, 0, [(2, "xz"), (-2, "wy")])
    put(1, 2, [(2, "yz"), (-2, "wx")])
    put(2, 1, [(2, "yz"), (2, "wx")])
    return M


def corrective_expression(B: np.ndarray, a: int, b: int) -> str:
    """Simple driver expression (variables w, x, y, z: the bone's quaternion; e: on/off) for
    (B R(q) B^T - I)[a, b]. B: (3, 3)."""
    M = _rotmat_monomial_coeffs()
    c = np.einsum("k,l,klm->m", B[a], B[b], M)
    terms = []
    for coef, mono in zip(c, _MONOMIALS):
        if abs(coef) < 1e-9:
            continue
        terms.append(f"{coef:+.10g}*{mono[0]}*{mono[1]}")
    num = "".join(terms) or "0"
    delta = "-1" if a == b else ""
    return f"e*(({num})/(w*w+x*x+y*y+z*z){delta})"


# Euler angles, Blender's convention: order "ABC" applies A first: R = R_C(c) R_B(b) R_A(a), angles stored
# as (x, y, z) whatever the order.
EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")


def _axis_rotmat(axis: int, angle: np.ndarray) -> np.ndarray:
    """(...,) angles about axis 0/1/2 -> (..., 3, 3)."""
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(np.shape(angle) + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R[..., axis, axis] = 1.0
    R[..., i, i], R[..., j, j] = c, c
    R[..., i, j], R[..., j, i] = -s, s
    return R


def euler_to_rotmat(e: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """(..., 3) Euler angles (radians, x/y/z) -> (..., 3, 3)."""
    e = np.asarray(e, np.float64)
    R = np.broadcast_to(np.eye(3), e.shape[:-1] + (3, 3)).copy()
    for ch in order:
        a = "XYZ".index(ch)
        R = _axis_rotmat(a, e[..., a]) @ R
    return R


def rotmat_to_euler(R: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """(..., 3, 3) rotations -> (..., 3) Euler angles (x, y, z) for `order` (b in [-pi/2, pi/2])."""
    R = np.asarray(R, np.float64)
    i, j, k = ("XYZ".index(c) for c in order)
    s = 1.0 if (i, j, k) in ((0, 1, 2), (1, 2, 0), (2, 0, 1)) else -1.0
    b = np.arcsin(np.clip(-s * R[..., k, i], -1.0, 1.0))
    a = np.arctan2(s * R[..., k, j], R[..., k, k])
    c = np.arctan2(s * R[..., j, i], R[..., i, i])
    out = np.empty(R.shape[:-2] + (3,))
    out[..., i], out[..., j], out[..., k] = a, b, c
    return out


def continuous_eulers(e: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """(N, ..., 3) -> (N, ..., 3): each frame's angles rewritten as the equivalent Euler triple (the other
    solution (a+pi, pi-b, c+pi) and/or 2 pi turns) closest to the previous frame, so curves do not jump."""
    e = np.array(e, np.float64, copy=True)
    i, j, k = ("XYZ".index(c) for c in order)
    alt = e.copy()
    alt[..., i] += np.pi
    alt[..., j] = np.pi - alt[..., j]
    alt[..., k] += np.pi
    for n in range(1, len(e)):
        prev = e[n - 1]
        best = None
        for cand in (e[n], alt[n]):
            cand = cand + 2 * np.pi * np.round((prev - cand) / (2 * np.pi))
            dist = np.abs(cand - prev).sum(-1)
            if best is None:
                best, best_d = cand, dist
            else:
                pick = dist < best_d
                best = np.where(pick[..., None], cand, best)
                best_d = np.where(pick, dist, best_d)
        e[n] = best
    return e
