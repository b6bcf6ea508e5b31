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
    pair_weights: np.ndarray | None = None,
    held: np.ndarray | None = None,
    effective_frames: float | None = None,
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
        pair_weights: (N, P) extra weight of each frame's pair ratios (None: 1).
        held: (D, 10) unit directions of beta held at 0 (a prior 1e6 times stronger along them), or None.
        effective_frames: steady only: the data term is weighted as if the track had at most this many
            independent frames (a track's frames share their errors: the same hand, the same lifting bias,
            so 300 frames do not know the shape 300 times better than one); None: every frame counts.
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
    if pair_weights is not None:
        w = w * np.nan_to_num(np.asarray(pair_weights, np.float64))
    w = np.where(ok[:, None], w, 0.0) / sigma**2  # (N, P)
    prior = prior_weight * np.eye(N_SHAPE)
    if held is not None:
        held = np.atleast_2d(np.asarray(held, np.float64))
        prior = prior + 1e6 * prior_weight * held.T @ held
    if steady:
        if effective_frames is not None:
            frames = np.sum(w, axis=1) / max(float(np.max(np.sum(w, axis=1), initial=0.0)), 1e-12)
            total = float(np.sum(frames))
            if total > effective_frames:
                w = w * (effective_frames / total)
        beta = np.zeros(N_SHAPE)
        for _ in range(iterations):
            ratio, jac = _ratios_and_jacobian(rest, beta, pairs)  # (P,), (P, 10)
            r = ratio[None] - rho  # (N, P)
            H = np.einsum("np,ps,pt->st", w, jac, jac) + prior
            g = np.einsum("np,np,ps->s", w, r, jac) + prior @ beta
            beta = beta - np.linalg.solve(H, g)
        return np.repeat(beta[None], n, axis=0)
    beta = np.zeros((n, N_SHAPE))
    for _ in range(iterations):
        ratio, jac = _ratios_and_jacobian(rest, beta, pairs)  # (N, P), (N, P, 10)
        r = ratio - rho
        H = np.einsum("np,nps,npt->nst", w, jac, jac) + prior
        g = np.einsum("np,np,nps->ns", w, r, jac) + beta @ prior
        beta = beta - np.linalg.solve(H, g[..., None])[..., 0]
    return beta


# ------------------------------------------------------------------------------ one identity per track

# The metric size of a hand: its length, distal wrist crease to the middle fingertip. Monocular footage shows
# size / distance, never size alone (2D, and the keypoint network's "metric" world landmarks are a learned
# guess: measured 0.7-1.05x the real hands, issue 14): the size is the population's unless the user knows
# the actor's (`hand_length`). ANSUR II (Gordon et al. 2014) pooled mean; the mismatch set draws N(0.186, 0.010).
DEFAULT_HAND_LENGTH = 0.187  # meters
TRACK_SHAPE_FRAMES = 10.0  # fit_track_shape's effective frames (see fit_shape); chosen on the synthetic clip


def hand_length(rest: RestKeypoints, beta: np.ndarray) -> np.ndarray:
    """The model's hand length (rest pose, wrist keypoint -> middle fingertip) at beta (..., 10) -> (...) m."""
    k = keypoints_at(rest, beta)
    return np.linalg.norm(k[..., 12, :] - k[..., 0, :], axis=-1)


def size_direction(rest: RestKeypoints) -> np.ndarray:
    """(10,) unit direction of beta that best makes the rest hand uniformly larger about its wrist (least
    squares): bone ratios cannot see it, so a track's shape fit holds it and the size goes to hand_scale."""
    k0 = keypoints_at(rest, np.zeros(N_SHAPE))
    rel = (k0 - k0[0]).reshape(-1)
    dirs = (rest.kdirs - rest.kdirs[0]).reshape(-1, N_SHAPE)
    u = np.linalg.lstsq(dirs, rel, rcond=None)[0]
    return u / max(float(np.linalg.norm(u)), 1e-12)


def in_plane_weights(joints: np.ndarray, pairs: np.ndarray = RIGID_PAIRS) -> np.ndarray:
    """(N, K, 3) camera-axis joints -> (N, P) how much of each pair (and of the reference bone) lies across the
    view: (|d xy| / |d xyz|)^2 of the pair times that of the reference bone. A bone seen end-on has its lifted
    length from the depth estimate alone, the least reliable part of a lift."""
    j = np.asarray(joints, np.float64)

    def frac(i, k):
        d = j[:, k] - j[:, i]
        return np.sum(d[..., :2] ** 2, axis=-1) / np.maximum(np.sum(d * d, axis=-1), 1e-30)

    a, b = REFERENCE_BONE
    return frac(pairs[:, 0], pairs[:, 1]) * frac(a, b)[:, None]


def fit_track_shape(joints: np.ndarray, rest: RestKeypoints, confidence: np.ndarray | None = None,
                    hand_length_m: float | None = None) -> tuple[np.ndarray, float]:
    """One identity for a hand track: (beta (10,), hand_scale) from all its lifted frames at once.

    A clip-level fit (one least-squares problem over the frames, not an average of per-frame fits) of the
    bone ratios, each weighted by its keypoints' confidence and by how much it lies across the view
    (`in_plane_weights`), with the size direction of beta held (`size_direction`) and the track's frames
    counted as `TRACK_SHAPE_FRAMES` independent ones. Then the metric size: hand_scale makes the hand
    `hand_length_m` long (None: DEFAULT_HAND_LENGTH).

    Args:
        joints: (N, K, 3) lifted joints in camera axes (any scale and origin); non-finite frames are left out.
        rest: the model's `rest_keypoints`. confidence: (N, K) or None.
    Returns:
        beta (10,), hand_scale (float, > 0).
    """
    j = np.asarray(joints, np.float64)
    ok = np.all(np.isfinite(j), axis=(1, 2))
    pw = np.where(ok[:, None], in_plane_weights(np.where(ok[:, None, None], j, 0.0)), 0.0)
    beta = fit_shape(j, rest=rest, confidence=confidence, steady=True, pair_weights=pw,
                     held=size_direction(rest)[None], effective_frames=TRACK_SHAPE_FRAMES)[0]
    length = DEFAULT_HAND_LENGTH if hand_length_m is None else float(hand_length_m)
    return beta, float(length / hand_length(rest, beta))
