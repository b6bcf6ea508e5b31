"""Analytic hand scale: the first step of the two-step optimization (paper Eq. 12 and Eq. 17).

The scale is solved in closed form before the Adam iterations and never optimized by them (paper Sec. 3.4:
jointly optimizing the global scale with the local joint terms is unstable); read as a distance it is solved
again in closed form after each Adam step (`redistance`, Eq. P6), never letting E_J rise. How s* is applied
is the tailor's setting `scale_as_distance`: the paper scales the hand about the wrist (`hand_scale` = s*, a
dimensionless factor; 1 is the model's metric size); by default the tailor reads the same s* as a distance
instead (`place_at_distance`: the hand keeps its metric size and moves along its viewing ray), which gives the
same image without inflating the hand. It is never folded into beta.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from engine.camera import project_perspective
from engine.tailor.energies import joint_energy_perspective

__all__ = ["perspective_scale", "weak_perspective_scale", "place_at_distance", "redistance", "S_MIN", "S_MAX"]

S_MIN = 0.25  # bounds of the perspective s*: a hand module off by more than 4x in size is not refit
S_MAX = 4.0
_MIN_Z = 1e-3
_TINY = 1e-12


@partial(jax.jit, static_argnames=("gauss_newton_steps",))
def perspective_scale(joints_rel, root, K, keypoints_2d, confidence, fallback, gauss_newton_steps=2):
    """Eq. 12: the hand scale s* of Eq. 8 in closed form, then refined by a few Gauss-Newton steps on Eq. 8.

    Eq. 12 linearizes the projection of root + s * P about the root: u_i - u_root ~ (s / z_root) a_i with
    a_i = (f_u (x_i - z_i X_root / z_root), f_v (y_i - z_i Y_root / z_root)); for a root on the optical
    axis (X_root = Y_root = 0) this is exactly the paper's Eq. 12. Here u_root is the projection of the
    (fixed) root, as in Eq. 8. The Gauss-Newton steps then use each joint's own depth (the authors' code
    does the same with z_root + z_i), which makes s* the minimizer of Eq. 8 rather than of its
    linearization. Keypoints are weighted by their confidence.

    Args:
      joints_rel: (B, K, 3) posed model keypoints relative to the wrist at hand_scale 1, meters, camera axes.
      root: (B, 3) wrist position in the camera frame, meters.
      K: (3, 3) intrinsics.
      keypoints_2d: (B, K, 2) observed keypoints, pixels.
      confidence: (B, K) weights.
      fallback: (B,) the value returned where the problem is degenerate (no weight, no extent, non-finite).
      gauss_newton_steps: static number of refinement steps (0: Eq. 12 alone).
    Returns:
      (B,) s*, dimensionless, clipped to [S_MIN, S_MAX].
    """
    fx, fy = K[0, 0], K[1, 1]
    zr = jnp.maximum(root[:, 2], _MIN_Z)
    u_root = project_perspective(jnp.concatenate([root[:, :2], zr[:, None]], axis=-1), K)  # (B, 2)
    x, y, z = joints_rel[..., 0], joints_rel[..., 1], joints_rel[..., 2]
    a = jnp.stack(
        [fx * (x - z * root[:, None, 0] / zr[:, None]), fy * (y - z * root[:, None, 1] / zr[:, None])], axis=-1
    )
    d = keypoints_2d - u_root[:, None, :]
    w = confidence[..., None]
    num = jnp.sum(w * a * d, axis=(-2, -1))
    den = jnp.sum(w * a * a, axis=(-2, -1))
    ok = den > _TINY * (1.0 + jnp.sum(w * d * d, axis=(-2, -1)))
    s = jnp.where(ok, zr * num / jnp.where(ok, den, 1.0), fallback)
    s = jnp.clip(jnp.where(jnp.isfinite(s), s, fallback), S_MIN, S_MAX)

    def residual(s_):
        p = root[:, None, :] + s_[:, None, None] * joints_rel
        p = jnp.concatenate([p[..., :2], jnp.maximum(p[..., 2:], _MIN_Z)], axis=-1)
        return project_perspective(p, K) - keypoints_2d

    for _ in range(gauss_newton_steps):
        r, jac = jax.jvp(residual, (s,), (jnp.ones_like(s),))
        g = jnp.sum(w * jac * r, axis=(-2, -1))
        h = jnp.sum(w * jac * jac, axis=(-2, -1))
        step = jnp.where(h > _TINY, g / jnp.where(h > _TINY, h, 1.0), 0.0)
        s_new = jnp.clip(s - step, S_MIN, S_MAX)
        s = jnp.where(jnp.isfinite(s_new) & ok, s_new, s)
    return s


@jax.jit
def weak_perspective_scale(joints_rel, t, keypoints_2d, confidence, fallback):
    """Eq. 17: the weak-perspective s = sum (x_i, y_i).(u_i - t_u, v_i - t_v) / sum |(x_i, y_i)|^2.

    The least-squares minimizer of the Eq. 16 reprojection error over s with t fixed, confidence-weighted.
    Robust where Eq. 15 (`hand_module.lifting.bone_scale`) is not: an edge-on or end-on hand only shrinks the denominator, which is floored
    relative to the hand's 3D extent; a non-positive or non-finite s falls back.

    Args:
      joints_rel: (B, K, 3) model keypoints relative to the root joint, meters (camera axes).
      t: (B, 2) pixel position of the root joint (the paper: the observed root keypoint).
      keypoints_2d: (B, K, 2) observed keypoints, pixels.
      confidence: (B, K) weights.
      fallback: (B,) pixels per meter returned where the problem is degenerate.
    Returns:
      (B,) s in pixels per meter (per unit of joints_rel), > 0.
    """
    xy = joints_rel[..., :2]
    d = keypoints_2d - t[:, None, :]
    w = confidence[..., None]
    num = jnp.sum(w * xy * d, axis=(-2, -1))
    den = jnp.sum(w * xy * xy, axis=(-2, -1))
    extent = jnp.sum(w * joints_rel * joints_rel, axis=(-2, -1))
    ok = (den > 1e-4 * extent) & (den > _TINY)
    s = jnp.where(ok, num / jnp.where(ok, den, 1.0), fallback)
    return jnp.where(jnp.isfinite(s) & (s > 0), s, fallback)


def place_at_distance(root, s):
    """Eq. P3: s* as a distance: the root moved along its viewing ray to root / s*, the hand kept at its size.

    Eq. 8 projects root + s* P; dividing every point by s* (a scaling about the camera centre) changes no
    pixel, so root / s* + P projects exactly as root + s* P: the same image, the hand at its metric size
    (P at hand_scale), s* times nearer (s* > 1) or farther. From 2D keypoints the two are one unknown; a
    hand's size is one number per person (the hand module's metric size), so the distance takes s*.

    Args:
      root: (B, 3) wrist in the camera frame, meters.
      s: (B,) s* (`perspective_scale`), > 0.
    Returns:
      (B, 3) the wrist at the distance that gives the same image at hand_scale 1 (relative to s*'s scale).
    """
    return root / s[:, None]


@jax.jit
def redistance(joints_rel, root, hand_scale, K, keypoints_2d, confidence, crop, free):
    """Eq. P6: the distance re-solved at the current pose: s* (Eq. 12 + Gauss-Newton) at joints_rel, the wrist
    moved along its ray by it (Eq. P3), kept only where that lowers E_J (Eq. 9).

    Step 1 solves s* at the hand module's pose; held through Adam, that is the distance of a hand in another
    pose. Fingers the fit spreads, curls or turns change the hand's 2D extent, and with the size held (E_size)
    only the articulation and the shape's proportions could follow it, trading 3D for 2D. Re-solved after each
    Adam step (`transform.tailor`), the distance follows the fitted pose: Adam on the pose and the shape, the
    closed form on the distance, in turn. The acceptance test keeps this step from ever raising E_J: where the
    view is strongly perspective Eq. 12's linearization can step far (without it, one hand of the 300 of the
    mismatch set ran towards the camera after 60 iterations, 243 px off).

    Measured with `python -m engine eval --iterations 10,20,50,100` (perspective, with the record's K), px to
    the 2D truth / wrist-aligned MPJPE / PA-MPJPE mm at 20 and 100 iterations, without -> with Eq. P6:

    | set | 20 iterations | 100 iterations |
    |---|---|---|
    | 400 renders of MakeHuman's hand (300 found, keypoints 8.24 px) | 8.28 / 21.6 / 12.45 -> 8.25 / 21.1 / 12.34 | 8.12 / 21.1 / 12.21 -> 8.21 / 20.4 / 12.04 |
    | the same, ground-truth 2D | 3.24 / 19.4 / 10.23 -> 3.13 / 18.2 / 10.03 | 2.45 / 19.8 / 10.37 -> 2.42 / 15.5 / 9.89 |
    | mismatch set (300, keypoints 14.61 px) | 15.06 / 16.1 / 8.28 -> 14.94 / 15.5 / 8.21 | 14.68 / 15.5 / 8.15 -> 14.59 / 14.6 / 8.05 |
    | the same, ground-truth 2D | 4.35 / 14.1 / 6.75 -> 4.19 / 13.5 / 6.66 | 3.75 / 13.3 / 6.52 -> 3.66 / 12.3 / 6.40 |
    | gt-sample InterHand2.6M (2 real hands, keypoints 5.79 px) | 6.35 / 23.7 / 13.32 -> 5.93 / 23.2 / 12.55 | 5.94 / 26.9 / 13.56 -> 5.80 / 23.6 / 13.16 |
    | the same, ground-truth 2D | 3.98 / 24.2 / 15.43 -> 3.50 / 19.9 / 13.84 | 2.89 / 30.9 / 15.28 -> 2.68 / 25.1 / 14.32 |
    | gt-sample RHD (3 renders, keypoints 5.17 px) | 5.41 / 17.5 / 11.18 -> 5.40 / 18.5 / 11.48 | 5.25 / 19.5 / 12.22 -> 5.26 / 19.2 / 11.82 |
    | the same, ground-truth 2D | 2.17 / 16.8 / 10.66 -> 2.11 / 13.8 / 10.15 | 1.69 / 19.9 / 12.68 -> 1.67 / 15.0 / 11.41 |

    Only RHD's detected 2D at 20 iterations lost (its 3 hands). Re-solving every 2nd step gained about half as
    much; the distance alone re-solved once after the last step changed 2D by <= 0.1 px (what Adam fitted at the
    old distance stays fitted to it).

    Args:
      joints_rel: (B, K, 3) posed keypoints relative to the wrist at hand_scale 1, meters, camera axes.
      root: (B, 3) the wrist, camera frame, meters.
      hand_scale: (B,) the hand's scale: the keypoints are root + hand_scale * joints_rel.
      K: (3, 3) intrinsics; keypoints_2d (B, K, 2) px; confidence (B, K); crop (B,): E_J's (`energies`).
      free: (B,) bool, the frames whose distance may move.
    Returns:
      (B, 3) the wrist, unchanged where not free or not better.
    """
    s = perspective_scale(joints_rel, root, K, keypoints_2d, confidence, hand_scale)
    ratio = s / hand_scale
    ok = free & jnp.isfinite(ratio) & (ratio > 0)
    moved = place_at_distance(root, jnp.where(ok, ratio, 1.0))
    e_before = joint_energy_perspective(root[:, None, :] + hand_scale[:, None, None] * joints_rel, K, keypoints_2d,
                                        confidence, crop)
    e_after = joint_energy_perspective(moved[:, None, :] + hand_scale[:, None, None] * joints_rel, K, keypoints_2d,
                                       confidence, crop)
    return jnp.where((ok & (e_after < e_before))[:, None], moved, root)
