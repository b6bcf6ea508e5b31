"""Shape: beta from lifted bone lengths by regularized least squares (the paper's ||beta||^2 prior).

The distances between keypoints that are rigidly linked in the kinematic tree (`lifting.RIGID_PAIRS`: the 20
bones plus the palm across the MCPs) do not depend on the pose, so in the rest pose they are functions of beta
alone: the rest keypoints are linear in beta, k(beta) = k0 + kdirs . beta (joints: J_regressor applied to the
shaped template; tips: the tip vertices' template + shape directions).

Lifted joints carry no trustworthy metric size (monocular scale ambiguity; under weak perspective none at all),
so beta is fitted to the bone lengths' RATIOS to the reference bone (0 -> 9):

    min_beta  sum_frames sum_b w_b (l_b(beta) / l_ref(beta) - rho_b)^2 / sigma^2  +  ||beta||^2

with rho_b the lifted ratio, w_b = conf_i * conf_j of the pair's keypoints and sigma the expected ratio noise.
The ratios are nonlinear in beta: Gauss-Newton from beta = 0 (3 steps; the first is the linearization about
beta = 0). beta's overall-size component is barely observable from ratios and stays near the prior: the
metric size is whatever the model says for that beta (hand_scale = 1); the pixels-per-meter of the footage go
into the root depth (perspective) or the projection scale (weak perspective).

Shapes: N frames, K = 21 keypoints, P pairs.
"""

from __future__ import annotations

import numpy as np

from engine.hand_model.constants import N_SHAPE, REFERENCE_BONE
from engine.hand_model.rest import RestKeypoints, keypoints_at, rest_keypoints  # noqa: F401  (re-exported)
from engine.hand_module.lifting import RIGID_PAIRS, pair_ratios  # noqa: F401  (re-exported)


def reference_bone_length(rest: RestKeypoints, beta: np.ndarray) -> np.ndarray:
    """Metric reference bone length |k9 - k0| for beta (..., 10) -> (...)."""
    k = keypoints_at(rest, beta)
    a, b = REFERENCE_BONE
    return np.linalg.norm(k[..., b, :] - k[..., a, :], axis=-1)


def _ratios_and_jacobian(rest: RestKeypoints, beta: np.ndarray, pairs: np.ndarray):
    """Model ratios (..., P) and their Jacobian (..., P, 10) at beta (..., 10)."""
    k = keypoints_at(rest, beta)  # (..., K, 3)
    a, b = REFERENCE_BONE

    def length_and_grad(i, j):
        e = k[..., j, :] - k[..., i, :]
        E = rest.kdirs[j] - rest.kdirs[i]  # (..., 3, 10)
        length = np.linalg.norm(e, axis=-1)
        grad = np.einsum("...c,...cs->...s", e / length[..., None], E)
        return length, grad

    l_ref, g_ref = length_and_grad(a, b)
    l_p, g_p = length_and_grad(pairs[:, 0], pairs[:, 1])  # (..., P), (..., P, 10)
    ratio = l_p / l_ref[..., None]
    jac = (g_p - ratio[..., None] * g_ref[..., None, :]) / l_ref[..., None, None]
    return ratio, jac


def fit_shape(
    joints: np.ndarray,
    model=None,
    confidence: np.ndarray | None = None,
    steady: bool = False,
    sigma: float = 0.1,
    prior_weight: float = 1.0,
    iterations: int = 3,
    rest: RestKeypoints | None = None,
    pairs: np.ndarray = RIGID_PAIRS,
) -> np.ndarray:
    """beta per frame (or one per track) from lifted joints, by regularized Gauss-Newton on bone ratios.

    Args:
        joints: (N, K, 3) lifted joints, any scale and origin (only ratios are used). Frames with a non-finite
            value get beta = 0 (per frame) or are left out (steady).
        model: HandModel (or give `rest`). confidence: (N, K) in [0, 1] or None (all 1).
        steady: one beta for all frames (every frame's ratios in one least-squares problem).
        sigma: expected noise of a lifted ratio (reference-bone units); smaller trusts the data more.
        prior_weight: weight of ||beta||^2 (the paper's L_beta).
        iterations: Gauss-Newton steps from beta = 0 (1 = the linearization about beta = 0).
    Returns:
        beta (N, 10) (steady: the same row repeated).
    """
    if rest is None:
        rest = rest_keypoints(model)
    joints = np.asarray(joints, dtype=np.float64)
    n = joints.shape[0]
    ok = np.all(np.isfinite(joints), axis=(1, 2))
    conf = np.ones(joints.shape[:2]) if confidence is None else np.nan_to_num(np.asarray(confidence, np.float64))
    rho = np.where(ok[:, None], pair_ratios(np.where(ok[:, None, None], joints, 0.0), pairs), 0.0)
    a, b = REFERENCE_BONE
    w = conf[:, pairs[:, 0]] * conf[:, pairs[:, 1]] * (conf[:, a] * conf[:, b])[:, None]
    w = np.where(ok[:, None], w, 0.0) / sigma**2  # (N, P)
    eye = prior_weight * np.eye(N_SHAPE)
    if steady:
        beta = np.zeros(N_SHAPE)
        for _ in range(iterations):
            ratio, jac = _ratios_and_jacobian(rest, beta, pairs)  # (P,), (P, 10)
            r = ratio[None] - rho  # (N, P)
            H = np.einsum("np,ps,pt->st", w, jac, jac) + eye
            g = np.einsum("np,np,ps->s", w, r, jac) + prior_weight * beta
            beta = beta - np.linalg.solve(H, g)
        return np.repeat(beta[None], n, axis=0)
    beta = np.zeros((n, N_SHAPE))
    for _ in range(iterations):
        ratio, jac = _ratios_and_jacobian(rest, beta, pairs)  # (N, P), (N, P, 10)
        r = ratio - rho
        H = np.einsum("np,nps,npt->nst", w, jac, jac) + eye
        g = np.einsum("np,np,nps->ns", w, r, jac) + prior_weight * beta
        beta = beta - np.linalg.solve(H, g[..., None])[..., 0]
    return beta
