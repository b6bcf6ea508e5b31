"""MANO linear blend skinning in JAX: the tailor's posing, tested equal to smplx's layer.

Pure functions (style anchor 2): every array is an argument, dtype follows the inputs (float32 by default,
float64 under `jax.experimental.enable_x64`). The joint order and parents are MANO's, fixed
(`MANO_PARENTS`, validated at load), so forward kinematics is an unrolled loop over that table.

    J(beta)  = J0 + Jdirs . beta                                       (B, 16, 3)
    G_j      = G_parent(j) o [R_j | J_j - J_parent(j)],  G_0 = [R_0 | J_0]   (world transforms)
    A_j      = [Rg_j | tg_j - Rg_j J_j]                                 (skinning transforms)
    v_posed  = v_template + shapedirs . beta + posedirs . vec(R_1..15 - I)
    v        = sum_j w_vj A_j v_posed
    X_camera = root + hand_scale * (X_lbs - J(beta)[0])

`keypoints` evaluates only the 16 joints and the 5 fingertip vertices (no mesh): the fast path.
Shapes use B batch, V vertices, K = 21 keypoints.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from engine.hand_model.constants import JOINT_TO_KEYPOINT, MANO_PARENTS, MANO_TO_KEYPOINT, TIP_TO_KEYPOINT
from engine.hand_model.loading import HandModel
from engine.hand_model.rest import rest_keypoints
from engine.hand_model.rotations import (  # noqa: F401  (re-exported)
    axis_angle_to_quat, quat_multiply, quat_to_rotmat, rotmat_to_quat)

_PARENTS = tuple(int(p) for p in MANO_PARENTS)
_TO_KEYPOINT = np.asarray(MANO_TO_KEYPOINT)


class JaxHandParams(NamedTuple):
    """The model's arrays for posing (a pytree; pass it to jitted functions as an argument)."""

    J0: jax.Array  # (16, 3) rest joints at beta = 0
    Jdirs: jax.Array  # (16, 3, 10) joint shape directions: J(beta) = J0 + Jdirs . beta
    tip_template: jax.Array  # (5, 3) fingertip rows of v_template
    tip_shapedirs: jax.Array  # (5, 3, 10)
    tip_posedirs: jax.Array  # (5, 3, 135)
    tip_weights: jax.Array  # (5, 16)
    v_template: jax.Array  # (V, 3) full mesh, for `vertices`
    shapedirs: jax.Array  # (V, 3, 10)
    posedirs: jax.Array  # (V, 3, 135)
    weights: jax.Array  # (V, 16)


def prepare(model: HandModel, dtype=None) -> JaxHandParams:
    """Precomputes the posing arrays of `model`. dtype: None = JAX's default float (float64 under x64)."""
    dtype = np.dtype(dtype or jnp.result_type(float))
    rest = rest_keypoints(model)  # rest joints and tips, affine in beta
    tips = np.asarray(model.tip_vertex_ids)

    def arr(x):
        # converted by numpy, then put on the device: jnp.asarray(x, dtype) would compile a conversion per
        # array shape (ten XLA compiles, ~0.13 s of CPU in every process that fits)
        return jnp.asarray(np.asarray(x, dtype=dtype))

    return JaxHandParams(
        J0=arr(rest.k0[JOINT_TO_KEYPOINT]),  # (16, 3)
        Jdirs=arr(rest.kdirs[JOINT_TO_KEYPOINT]),  # (16, 3, 10)
        tip_template=arr(rest.k0[TIP_TO_KEYPOINT]),
        tip_shapedirs=arr(rest.kdirs[TIP_TO_KEYPOINT]),
        tip_posedirs=arr(model.posedirs[tips]),
        tip_weights=arr(model.weights[tips]),
        v_template=arr(model.v_template),
        shapedirs=arr(model.shapedirs),
        posedirs=arr(model.posedirs),
        weights=arr(model.weights),
    )


# ------------------------------------------------------------------------------------------------
# Rotations


def axis_angle_to_rotmat(axis_angle: jax.Array) -> jax.Array:
    """Axis-angle vectors (..., 3) (angle = norm, radians) -> rotation matrices (..., 3, 3).

    Rodrigues with a Taylor expansion near 0, so values and gradients are finite at the identity.
    """
    v = axis_angle
    th2 = jnp.sum(v * v, axis=-1)
    small = th2 < 1e-12
    th2_safe = jnp.where(small, 1.0, th2)
    th = jnp.sqrt(th2_safe)
    a = jnp.where(small, 1.0 - th2 / 6.0, jnp.sin(th) / th)
    b = jnp.where(small, 0.5 - th2 / 24.0, (1.0 - jnp.cos(th)) / th2_safe)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    K = jnp.stack(
        [jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1), jnp.stack([-y, x, zero], -1)], axis=-2
    )
    eye = jnp.eye(3, dtype=v.dtype)
    if v.size * 3 > _ELEMENTWISE_MAX:  # large batches: the library product
        KK = K @ K
    else:  # K @ K = v v^T - |v|^2 I, elementwise (fuses; a 3x3 `dot` is a separate call, slow at B = 1)
        KK = v[..., :, None] * v[..., None, :] - th2[..., None, None] * eye
    return eye + a[..., None, None] * K + b[..., None, None] * KK


def matmul3(a: jax.Array, b: jax.Array) -> jax.Array:
    """(..., 3, 3) @ (..., 3, 3) (broadcasting) as elementwise products and a sum: XLA fuses it with its
    neighbours, where a `dot` of 3x3 matrices is a separate library call (what costs at B = 1). Large
    arrays use `@` (library dots are faster there)."""
    if max(a.size, b.size) > _ELEMENTWISE_MAX:
        return a @ b
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def matvec3(a: jax.Array, v: jax.Array) -> jax.Array:
    """(..., 3, 3) @ (..., 3) -> (..., 3), elementwise like `matmul3`."""
    if a.size > _ELEMENTWISE_MAX:
        return (a @ v[..., None])[..., 0]
    return jnp.sum(a * v[..., None, :], axis=-1)


_ELEMENTWISE_MAX = 16 * 16 * 9  # arrays up to this size (16 frames of 16 joints) use the elementwise forms


def take_static(x: jax.Array, ids, axis: int = 1) -> jax.Array:
    """x[:, ids] for a fixed index list, as static slices and one concatenation: no gather (whose gradient
    is a scatter, slow on CPU) for small arrays; one gather for large ones. Values are the same."""
    if x.size > _ELEMENTWISE_MAX * 2:  # large batches: one gather
        return x[(slice(None),) * axis + (np.asarray(ids).reshape(-1),)]
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    parts, start = [], 0
    while start < len(ids):  # merge runs of consecutive indices into one slice
        stop = start + 1
        while stop < len(ids) and ids[stop] == ids[stop - 1] + 1:
            stop += 1
        parts.append(jax.lax.slice_in_dim(x, ids[start], ids[stop - 1] + 1, axis=axis))
        start = stop
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis)


def rotmat_to_axis_angle(rotmat: jax.Array) -> jax.Array:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi] (through the quaternion)."""
    q = rotmat_to_quat(rotmat)
    s = jnp.linalg.norm(q[..., 1:], axis=-1)
    angle = 2.0 * jnp.arctan2(s, q[..., 0])
    small = s < 1e-12
    scale = jnp.where(small, 2.0, angle / jnp.where(small, 1.0, s))
    return q[..., 1:] * scale[..., None]


# ------------------------------------------------------------------------------------------------
# Posing


def rest_joints(params: JaxHandParams, beta: jax.Array) -> jax.Array:
    """J(beta) = J0 + Jdirs . beta: beta (B, 10) -> (B, 16, 3)."""
    if beta.shape[0] * 16 * 3 * 10 > _ELEMENTWISE_MAX * 10:  # large batches: a library dot
        return params.J0 + jnp.einsum("jcs,bs->bjc", params.Jdirs, beta)
    return params.J0 + jnp.sum(params.Jdirs * beta[:, None, None, :], axis=-1)  # few frames: fuses


def _depth_levels(parents: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Joints grouped by depth in the tree (root excluded): MANO gives 3 levels of 5 joints."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return tuple(tuple(j for j in range(len(parents)) if depth[j] == d) for d in range(1, max(depth) + 1))


_LEVELS = _depth_levels(_PARENTS)
_LEVEL_ORDER = np.concatenate([[0], *_LEVELS])  # joint ids in level order
_FROM_LEVEL_ORDER = np.argsort(_LEVEL_ORDER)  # level order -> MANO order


# MANO's tree is the root and five chains of three joints (1-3, 4-6, 7-9, 10-12, 13-15), each joint's parent
# the previous one: forward kinematics is then three steps over the chains at once, with no index gathers.
_CHAINS = _PARENTS == (-1,) + tuple(0 if j % 3 == 1 else j - 1 for j in range(1, 16))


def forward_kinematics(rotmats: jax.Array, joints: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Local rotations (B, 16, 3, 3) and rest joints (B, 16, 3) -> world rotations (B, 16, 3, 3) and
    posed joints (B, 16, 3). The root rotates about its own rest position (no translation).

    MANO's tree is five 3-joint chains on the root: three steps, each over the five chains at once (static
    slices and elementwise 3x3 products, which XLA fuses; few ops, fast to compile and to run at B = 1).
    """
    if not _CHAINS or rotmats.size > _ELEMENTWISE_MAX:  # large batches: by tree level, library dots
        return _forward_kinematics_levels(rotmats, joints)
    B = rotmats.shape[0]
    r_root, p_root = rotmats[:, 0], joints[:, 0]  # (B, 3, 3), (B, 3)
    r_ch = rotmats[:, 1:].reshape(B, 5, 3, 3, 3)  # (B, chain, link, 3, 3)
    j_ch = joints[:, 1:].reshape(B, 5, 3, 3)  # (B, chain, link, 3)
    g, p = r_root[:, None], p_root[:, None]  # parent transform, broadcast over the chains
    prev = jnp.broadcast_to(p_root[:, None], (B, 5, 3))  # parent's rest position
    rots, poss = [], []
    for k in range(3):
        p = p + matvec3(g, j_ch[:, :, k] - prev)
        g = matmul3(g, r_ch[:, :, k])
        prev = j_ch[:, :, k]
        rots.append(g)
        poss.append(p)
    world_rot = jnp.concatenate([r_root[:, None], jnp.stack(rots, axis=2).reshape(B, 15, 3, 3)], axis=1)
    posed = jnp.concatenate([p_root[:, None], jnp.stack(poss, axis=2).reshape(B, 15, 3)], axis=1)
    return world_rot, posed


def _forward_kinematics_levels(rotmats: jax.Array, joints: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`forward_kinematics` for any parent table: unrolled by tree depth (each level's joints at once)."""
    rot = {0: rotmats[:, :1]}  # level -> (B, n, 3, 3)
    pos = {0: joints[:, :1]}  # level -> (B, n, 3)
    level_ids = {0: (0,)}
    for d, ids in enumerate(_LEVELS, start=1):
        ids_arr = np.asarray(ids)
        parent_ids = [_PARENTS[j] for j in ids]
        prev = level_ids[d - 1]
        pick = np.asarray([prev.index(p) for p in parent_ids])  # parent's slot in the previous level
        parent_rot = rot[d - 1][:, pick]  # (B, n, 3, 3)
        parent_pos = pos[d - 1][:, pick]
        bone = joints[:, ids_arr] - joints[:, np.asarray(parent_ids)]  # (B, n, 3)
        rot[d] = parent_rot @ rotmats[:, ids_arr]
        pos[d] = parent_pos + (parent_rot @ bone[..., None])[..., 0]
        level_ids[d] = ids
    n_levels = len(_LEVELS) + 1
    world_rot = jnp.concatenate([rot[d] for d in range(n_levels)], axis=1)[:, _FROM_LEVEL_ORDER]
    posed = jnp.concatenate([pos[d] for d in range(n_levels)], axis=1)[:, _FROM_LEVEL_ORDER]
    return world_rot, posed


def _skin(
    rest: jax.Array,
    shapedirs: jax.Array,
    posedirs: jax.Array,
    weights: jax.Array,
    beta: jax.Array,
    rotmats: jax.Array,
    world_rot: jax.Array,
    posed_joints: jax.Array,
    joints: jax.Array,
) -> jax.Array:
    """LBS of a set of P mesh rows: rest (P, 3), shapedirs (P, 3, 10), posedirs (P, 3, 135), weights (P, 16)
    -> (B, P, 3) posed, in the model frame."""
    batch = rotmats.shape[0]
    eye = jnp.eye(3, dtype=rotmats.dtype)
    pose_feature = (rotmats[:, 1:] - eye).reshape(batch, -1)  # (B, 135)
    if rest.shape[0] * batch * 135 > _ELEMENTWISE_MAX * 16:  # the mesh, large batches: library dots
        v_posed = (
            rest
            + jnp.einsum("pcs,bs->bpc", shapedirs, beta)
            + jnp.einsum("pck,bk->bpc", posedirs, pose_feature)
        )  # (B, P, 3)
        trans = posed_joints - jnp.einsum("bjik,bjk->bji", world_rot, joints)  # (B, 16, 3)
        blend_rot = jnp.einsum("pj,bjik->bpik", weights, world_rot)  # (B, P, 3, 3)
        blend_trans = jnp.einsum("pj,bji->bpi", weights, trans)  # (B, P, 3)
        return jnp.einsum("bpik,bpk->bpi", blend_rot, v_posed) + blend_trans
    # a few rows (the fingertips) of a few frames: the same sums written elementwise, fused by XLA (no dots)
    v_posed = (
        rest
        + jnp.sum(shapedirs * beta[:, None, None, :], axis=-1)
        + jnp.sum(posedirs * pose_feature[:, None, None, :], axis=-1)
    )  # (B, P, 3)
    trans = posed_joints - matvec3(world_rot, joints)  # (B, 16, 3)
    w = weights[None, :, :, None, None]  # (1, P, 16, 1, 1)
    blend_rot = jnp.sum(w * world_rot[:, None], axis=2)  # (B, P, 3, 3)
    blend_trans = jnp.sum(w[..., 0] * trans[:, None], axis=2)  # (B, P, 3)
    return matvec3(blend_rot, v_posed) + blend_trans


def _to_camera(points: jax.Array, wrist: jax.Array, root, hand_scale) -> jax.Array:
    """points (B, P, 3) model frame -> root + hand_scale * (points - wrist); root (B,3)|None, scale (B,)|None."""
    out = points - wrist[:, None, :]
    if hand_scale is not None:
        out = out * jnp.asarray(hand_scale, points.dtype)[:, None, None]
    if root is not None:
        out = out + jnp.asarray(root, points.dtype)[:, None, :]
    return out


def keypoints(
    params: JaxHandParams,
    rotmats: jax.Array,
    beta: jax.Array,
    root: jax.Array | None,
    hand_scale: jax.Array | None,
) -> jax.Array:
    """The 21 keypoints only (16 joints + 5 fingertip vertex rows; no mesh): the tailor's fast path.

    rotmats (B, 16, 3, 3) local rotations; beta (B, 10); root (B, 3) wrist position in the camera frame
    (None: the origin); hand_scale (B,) (None: 1) -> keypoints (B, K=21, 3).
    """
    joints, _, _, points = _skeleton(params, rotmats, beta)
    return _to_camera(points, joints[:, 0], root, hand_scale)


def _skeleton(params: JaxHandParams, rotmats: jax.Array, beta: jax.Array):
    """Rest joints (B, 16, 3), world rotations (B, 16, 3, 3), posed joints (B, 16, 3) and the 21 keypoints
    (B, K, 3) (joints + skinned fingertip rows), all in the model frame."""
    joints = rest_joints(params, beta)
    world_rot, posed = forward_kinematics(rotmats, joints)
    tips = _skin(
        params.tip_template, params.tip_shapedirs, params.tip_posedirs, params.tip_weights,
        beta, rotmats, world_rot, posed, joints,
    )  # (B, 5, 3)
    return joints, world_rot, posed, take_static(jnp.concatenate([posed, tips], axis=1), _TO_KEYPOINT)


def pose(
    params: JaxHandParams,
    rotmats: jax.Array,
    beta: jax.Array,
    root: jax.Array | None,
    hand_scale: jax.Array | None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Full mesh and joints: (vertices (B, V, 3), keypoints (B, K=21, 3), joints16 (B, 16, 3)), camera frame.

    Arguments as in `keypoints`. The keypoints' tips are the mesh's `tip_vertex_ids` rows.
    """
    joints, world_rot, posed, points = _skeleton(params, rotmats, beta)
    verts = _skin(
        params.v_template, params.shapedirs, params.posedirs, params.weights,
        beta, rotmats, world_rot, posed, joints,
    )  # (B, V, 3)
    wrist = joints[:, 0]
    return (
        _to_camera(verts, wrist, root, hand_scale),
        _to_camera(points, wrist, root, hand_scale),
        _to_camera(posed, wrist, root, hand_scale),
    )


def vertices(
    params: JaxHandParams,
    rotmats: jax.Array,
    beta: jax.Array,
    root: jax.Array | None,
    hand_scale: jax.Array | None,
) -> jax.Array:
    """The posed mesh: arguments as in `keypoints` -> vertices (B, V, 3), camera frame."""
    return pose(params, rotmats, beta, root, hand_scale)[0]
