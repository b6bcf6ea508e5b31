"""The hand model's floor: the model fitted directly to ground-truth 3D joints (`python -m engine eval --fit-3d`).

How close can the hand model get to a real hand at all, whatever the keypoints, the hand module or the tailor
do? Every free parameter is fitted to the 21 ground-truth joints by Levenberg-Marquardt:

    min over theta, beta, s, t of  sum_k |s * P_k(theta, beta) + t - G_k|^2  +  (BETA_PRIOR_M * |beta|)^2

theta (16 axis-angle rotations, the global one included), beta (10; or held at 0), s (a size factor about the
wrist, as log s) and t (3). P(theta, beta) are the model's keypoints with the wrist at the origin
(`jax_layer.keypoints`). The shape prior is loose: one beta unit costs as much as 1 mm of joint error, so the
floor says what the model's shape space can reach, not what a fit from images would pick. The pose starts from
IKNet on the normalized ground truth and is free (no joint limits): a floor, not a plausible pose.

What is left over is the model's own error (joint centres, proportions it cannot express); the gap between a
stage and this floor is what the pipeline loses. Shapes: K = 21 keypoints.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from engine.hand_model import HandModel
from engine.hand_model import jax_layer

__all__ = ["fit_joints_3d", "BETA_PRIOR_M"]

BETA_PRIOR_M = 1e-3  # meters of joint error one beta unit costs (loose: the floor of the shape space)


@functools.partial(jax.jit, static_argnames=("free_beta",))
def _residuals(x, params, target, free_beta):
    """x: (48 + 10 + 1 + 3,) = axis-angle (16, 3), beta (10), log s, t (3) -> (63 + 10,) meters."""
    aa = x[:48].reshape(1, 16, 3)
    beta = x[48:58].reshape(1, 10) * (1.0 if free_beta else 0.0)
    s, t = jnp.exp(x[58]), x[59:62]
    kp = jax_layer.keypoints(params, jax_layer.axis_angle_to_rotmat(aa), beta, None, None)[0]
    r = (s * kp + t - target).reshape(-1)
    return jnp.concatenate([r, BETA_PRIOR_M * beta[0]])


_jacobian = jax.jit(jax.jacfwd(_residuals), static_argnames=("free_beta",))


def fit_joints_3d(model: HandModel, joints_3d: np.ndarray, free_beta: bool = True, theta0=None,
                  params=None) -> dict:
    """Fits the hand model to one hand's ground-truth joints.

    Args:
      model: the hand model of the hand's side.
      joints_3d: (K, 3) ground-truth keypoints, meters, any frame (camera frame in eval).
      free_beta: fit the shape too (False: beta = 0).
      theta0: (16, 4) initial quaternions (w, x, y, z) or None (IKNet on the normalized joints).
      params: `jax_layer.prepare(model)` (float32), or None (made here; pass it when fitting many hands).
    Returns:
      dict: joints_3d (K, 3) the fitted keypoints in the frame of `joints_3d`, theta (16, 4), beta (10,),
      scale (), translation (3,), root (3,) the fitted wrist (the tailor's `root`: with `scale` as its
      `hand_scale`, `jax_layer.keypoints` gives joints_3d back), rms_m () the root-mean-square joint error.
    """
    from scipy.optimize import least_squares

    from engine.hand_module.lifting import normalize_joints

    G = np.asarray(joints_3d, np.float64)
    if G.shape != (21, 3) or not np.isfinite(G).all():
        raise ValueError(f"fit_joints_3d needs (21, 3) finite joints, got {G.shape}")
    params = params if params is not None else jax_layer.prepare(model, jnp.float32)
    if theta0 is None:
        from engine.hand_module.hand_module import _cached_iknet
        from engine.hand_module.iknet_numpy import predict_theta

        theta0 = predict_theta(_cached_iknet(model.side), normalize_joints(G)[None])[0]
    R0 = np.asarray(jax_layer.quat_to_rotmat(jnp.asarray(theta0, jnp.float32)))
    aa0 = np.asarray(jax_layer.rotmat_to_axis_angle(jnp.asarray(R0)), np.float64)
    kp0 = np.asarray(jax_layer.keypoints(params, jnp.asarray(R0[None]), jnp.zeros((1, 10), jnp.float32),
                                         None, None)[0], np.float64)
    # start: the size and position that best match the ground truth's spread and centroid
    s0 = np.sqrt(((G - G.mean(0)) ** 2).sum() / max(((kp0 - kp0.mean(0)) ** 2).sum(), 1e-12))
    x0 = np.concatenate([aa0.reshape(-1), np.zeros(10), [np.log(s0)], G.mean(0) - s0 * kp0.mean(0)])
    target = jnp.asarray(G, jnp.float32)

    def fun(x):
        return np.asarray(_residuals(jnp.asarray(x, jnp.float32), params, target, free_beta), np.float64)

    def jac(x):
        return np.asarray(_jacobian(jnp.asarray(x, jnp.float32), params, target, free_beta), np.float64)

    sol = least_squares(fun, x0, jac=jac, method="lm", max_nfev=200, xtol=1e-10, ftol=1e-12)
    x = sol.x
    beta = x[48:58] if free_beta else np.zeros(10)
    aa = x[:48].reshape(16, 3)
    rot = jax_layer.axis_angle_to_rotmat(jnp.asarray(aa[None], jnp.float32))
    kp = np.asarray(jax_layer.keypoints(params, rot, jnp.asarray(beta[None], jnp.float32), None, None)[0], np.float64)
    fitted = np.exp(x[58]) * kp + x[59:62]
    theta = np.asarray(jax_layer.rotmat_to_quat(rot)[0], np.float64)
    return dict(joints_3d=fitted, theta=theta, beta=beta, scale=float(np.exp(x[58])), translation=x[59:62],
                root=fitted[0].copy(), rms_m=float(np.sqrt(np.mean(np.sum((fitted - G) ** 2, axis=-1)))))
