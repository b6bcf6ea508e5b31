"""Evaluation metrics of the paper's Sec. 4: MPJPE, PA-MPJPE, 2D error, PCK and AUC.

Plain numpy functions. Letters: B samples, K = 21 keypoints, T thresholds. Distances are in the units of the
inputs (meters for 3D, pixels for 2D); the report converts to mm.

PCK / AUC follow Zimmermann & Brox (RHD's evaluation, used by the paper's Tables 1-3):
- thresholds are sampled uniformly with both ends included: `np.linspace(lo, hi, steps)`, `steps = 20` by
  default (AUC 20-50 mm: 20 thresholds 20.0, 21.58, ..., 50.0 mm; AUC 5-20 mm: 5.0, 5.79, ..., 20.0 mm);
- PCK at a threshold is computed per keypoint over the samples where that keypoint is valid, then averaged
  over the keypoints that have at least one valid sample;
- AUC is the trapezoidal area under the PCK curve divided by `hi - lo` (so it lies in [0, 1]).
"""

from __future__ import annotations

import numpy as np

DEFAULT_AUC_STEPS = 20


def procrustes_align(pred: np.ndarray, gt: np.ndarray, scale: bool = True) -> np.ndarray:
    """Similarity-aligns each prediction onto its ground truth (Umeyama: scale, rotation, translation).

    Args:
        pred: (B, K, 3) or (K, 3) predicted points.
        gt: (B, K, 3) or (K, 3) ground-truth points.
        scale: False gives the rigid alignment (rotation + translation, scale 1: Kabsch).
    Returns:
        (B, K, 3) or (K, 3): s * R @ pred + t minimising the squared distance to gt, R a proper rotation
        (det +1: reflections are not allowed).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    single = pred.ndim == 2
    if single:
        pred, gt = pred[None], gt[None]
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"procrustes_align: shapes must match (B, K, 3), got {pred.shape} and {gt.shape}")
    mu_p = pred.mean(axis=1, keepdims=True)
    mu_g = gt.mean(axis=1, keepdims=True)
    p0 = pred - mu_p
    g0 = gt - mu_g
    var_p = (p0**2).sum(axis=(1, 2))  # (B,)
    cov = np.einsum("bki,bkj->bij", g0, p0)  # (B, 3, 3)  sum g p^T
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))  # (B,)
    d = np.where(d == 0, 1.0, d)
    e = np.ones_like(sig)
    e[:, -1] = d
    rot = u @ (e[:, :, None] * vt)  # (B, 3, 3)
    s = (sig * e).sum(axis=1) / np.maximum(var_p, 1e-300) if scale else np.ones(len(p0))  # (B,)
    aligned = s[:, None, None] * np.einsum("bij,bkj->bki", rot, p0) + mu_g
    return aligned[0] if single else aligned


def root_align(points: np.ndarray, root: int = 0) -> np.ndarray:
    """Translates each point set so that its root keypoint is at the origin.

    Args:
        points: (B, K, D) points.
        root: keypoint index of the root (0 = wrist).
    Returns:
        (B, K, D).
    """
    points = np.asarray(points, dtype=np.float64)
    return points - points[..., root : root + 1, :]


def joint_errors_3d(pred: np.ndarray, gt: np.ndarray, align: str = "root", root: int = 0) -> np.ndarray:
    """Per-keypoint Euclidean 3D errors after alignment.

    Args:
        pred: (B, K, 3) predicted joints.
        gt: (B, K, 3) ground-truth joints.
        align: "root" (translate both so the root keypoint coincides), "procrustes" (similarity transform of
            pred onto gt), "rigid" (rotation + translation, no scale) or "none".
        root: root keypoint for align="root".
    Returns:
        (B, K) distances, in the inputs' unit.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if align == "root":
        pred, gt = root_align(pred, root), root_align(gt, root)
    elif align in ("procrustes", "rigid"):
        pred = procrustes_align(pred, gt, scale=align == "procrustes")
    elif align != "none":
        raise ValueError(f"align must be 'root', 'procrustes', 'rigid' or 'none', not {align!r}")
    return np.linalg.norm(pred - gt, axis=-1)


def mpjpe(pred: np.ndarray, gt: np.ndarray, root: int = 0) -> np.ndarray:
    """Root-aligned mean per-joint position error.

    Args:
        pred: (B, K, 3); gt: (B, K, 3).
    Returns:
        (B,) mean over the K keypoints of |(pred - pred_root) - (gt - gt_root)|.
    """
    return joint_errors_3d(pred, gt, "root", root).mean(axis=-1)


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Procrustes-aligned (similarity transform) mean per-joint position error.

    Args:
        pred: (B, K, 3); gt: (B, K, 3).
    Returns:
        (B,).
    """
    return joint_errors_3d(pred, gt, "procrustes").mean(axis=-1)


def joint_errors_2d(pred_uv: np.ndarray, gt_uv: np.ndarray) -> np.ndarray:
    """Per-keypoint pixel distances.

    Args:
        pred_uv: (B, K, 2); gt_uv: (B, K, 2).
    Returns:
        (B, K).
    """
    return np.linalg.norm(np.asarray(pred_uv, np.float64) - np.asarray(gt_uv, np.float64), axis=-1)


def masked_mean(errors: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean of `errors` over the entries where `mask` is true (all when None); NaN when nothing is valid.

    Args:
        errors: (B, K); mask: (B, K) bool or None.
    Returns:
        float.
    """
    errors = np.asarray(errors, dtype=np.float64)
    if mask is None:
        mask = np.ones(errors.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool) & np.isfinite(errors)
    if not mask.any():
        return float("nan")
    return float(errors[mask].mean())


def pck_curve(errors: np.ndarray, thresholds: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Percentage of correct keypoints at each threshold (Zimmermann & Brox: per keypoint, then averaged).

    Args:
        errors: (B, K) distances.
        thresholds: (T,) distances in the same unit.
        mask: (B, K) bool, which entries count (visible / annotated); None = all.
    Returns:
        (T,) in [0, 1]; NaN everywhere when no entry is valid.
    """
    errors = np.asarray(errors, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if mask is None:
        mask = np.ones(errors.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool) & np.isfinite(errors)
    counts = mask.sum(axis=0)  # (K,)
    keep = counts > 0
    if not keep.any():
        return np.full(thresholds.shape, np.nan)
    hits = (errors[None, :, :] <= thresholds[:, None, None]) & mask[None]  # (T, B, K)
    per_kp = hits.sum(axis=1)[:, keep] / counts[keep][None, :]  # (T, K')
    return per_kp.mean(axis=1)


def pck(errors: np.ndarray, threshold: float, mask: np.ndarray | None = None) -> float:
    """PCK at one threshold.

    Args:
        errors: (B, K); threshold: float (same unit); mask: (B, K) bool or None.
    Returns:
        float in [0, 1] (NaN when nothing is valid).
    """
    return float(pck_curve(errors, np.array([threshold]), mask)[0])


def auc_thresholds(lo: float, hi: float, steps: int = DEFAULT_AUC_STEPS) -> np.ndarray:
    """The thresholds an AUC is sampled at: `np.linspace(lo, hi, steps)`, both ends included.

    Returns:
        (T,) with T = steps.
    """
    if not hi > lo or steps < 2:
        raise ValueError(f"auc_thresholds needs hi > lo and steps >= 2, got {lo}, {hi}, {steps}")
    return np.linspace(lo, hi, steps)


def auc(errors: np.ndarray, lo: float, hi: float, mask: np.ndarray | None = None,
        steps: int = DEFAULT_AUC_STEPS) -> float:
    """Normalised area under the PCK curve between thresholds lo and hi.

    Args:
        errors: (B, K); lo, hi: threshold range (same unit); mask: (B, K) bool or None;
        steps: number of uniformly spaced thresholds (both ends included).
    Returns:
        float in [0, 1] = trapz(PCK(t), t) / (hi - lo); NaN when nothing is valid.
    """
    t = auc_thresholds(lo, hi, steps)
    curve = pck_curve(errors, t, mask)
    if np.isnan(curve).any():
        return float("nan")
    area = float(np.sum((curve[1:] + curve[:-1]) * np.diff(t)) / 2.0)
    return area / (hi - lo)


# ------------------------------------------------------------------------- a clip's motion (issue 15)


def joint_jitter(joints: np.ndarray, valid: np.ndarray) -> float:
    """Mean |J[n+1] - 2 J[n] + J[n-1]| (same units as joints) over keypoints and valid triples.

    joints (N, K, 3), valid (N,). NaN when there is no valid triple.
    """
    if joints.shape[0] < 3:
        return float("nan")
    acc = np.linalg.norm(joints[2:] - 2 * joints[1:-1] + joints[:-2], axis=-1)  # (N-2, K)
    ok = valid[2:] & valid[1:-1] & valid[:-2]
    return float(acc[ok].mean()) if ok.any() else float("nan")


def trajectory_lag(smoothed: np.ndarray, raw: np.ndarray, valid: np.ndarray, max_shift: int = 5) -> float:
    """The shift k (frames) that best aligns a smoothed trajectory's motion with the raw one's; positive: the
    smoothed motion trails.

    Minimizes the mean squared difference of the frame-to-frame velocities, smoothed v[n] against raw v[n - k],
    over ONE set of frames for every shift (each n whose raw v[n - k] exists for all |k| <= max_shift),
    sub-frame by a parabola through the best integer shift and its neighbours. Velocities and one frame set:
    a trend (a hand coming closer) or a run's edges cannot bias it, so a zero-phase smoother scores 0 up to
    noise (comparing positions over each shift's own overlap did not: -1 / +0.6 frames on one clip).

    smoothed, raw (N, K, D); valid (N,). NaN when fewer than 4 frames can be compared.
    """
    valid = np.asarray(valid, bool)
    vs = np.diff(np.asarray(smoothed, np.float64), axis=0)
    vr = np.diff(np.asarray(raw, np.float64), axis=0)
    ok = valid[1:] & valid[:-1]
    m = vs.shape[0]
    shifts = list(range(-max_shift, max_shift + 1))
    common = np.array([ok[n] and all(0 <= n - k < m and ok[n - k] for k in shifts) for n in range(m)], bool)
    if common.sum() < 4:
        return float("nan")
    n = np.flatnonzero(common)
    errs = np.array([np.mean(np.sum((vs[n] - vr[n - k]) ** 2, axis=-1)) for k in shifts])
    i = int(np.argmin(errs))
    if 0 < i < len(errs) - 1:
        den = errs[i - 1] - 2 * errs[i] + errs[i + 1]
        frac = 0.5 * (errs[i - 1] - errs[i + 1]) / den if den > 0 else 0.0
        return float(shifts[i] + frac)
    return float(shifts[i])


def rotation_chatter_deg(theta: np.ndarray, valid: np.ndarray, joints=slice(1, 16)) -> np.ndarray:
    """Chatter: each rotation against the midpoint (slerp 0.5) of its two neighbouring frames, in degrees.

    A still or steadily turning joint scores 0; frame-to-frame noise scores about its own size. Counted over
    the triples of consecutive valid frames, for the finger joints by default (MANO joints 1-15).

    Args:
        theta: (N, J, 4) quaternions (w, x, y, z) of consecutive frames (any sign).
        valid: (N,) bool.
        joints: which joints (an index or slice of the J axis).
    Returns:
        (M, J') angles of the M valid triples (empty when there are none).
    """
    q = np.asarray(theta, np.float64)[:, joints]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    valid = np.asarray(valid, bool)
    if q.shape[0] < 3:
        return np.zeros((0,) + q.shape[1:-1])
    ok = valid[2:] & valid[1:-1] & valid[:-2]
    a, b, c = q[:-2][ok], q[1:-1][ok], q[2:][ok]
    c = np.where(np.sum(a * c, axis=-1, keepdims=True) < 0, -c, c)
    mid = a + c
    mid /= np.maximum(np.linalg.norm(mid, axis=-1, keepdims=True), 1e-12)
    cos = np.clip(np.abs(np.sum(mid * b, axis=-1)), 0.0, 1.0)
    return np.degrees(2.0 * np.arccos(cos))


def reprojection_px(joints_3d: np.ndarray, K: np.ndarray, keypoints_2d: np.ndarray, confidence: np.ndarray,
                    valid: np.ndarray) -> np.ndarray:
    """Per frame, the mean pixel distance between the fitted keypoints (pinhole projection of joints_3d) and the
    detected ones, over the keypoints with confidence > 0. Its median over the frames is `fit_residual_px`.

    Args:
        joints_3d: (N, K, 3) camera frame; K: (3, 3); keypoints_2d: (N, K, 2) detected; confidence: (N, K);
        valid: (N,) bool, the fitted frames.
    Returns:
        (N,) pixels, NaN on frames that are not valid or have no confident keypoint.
    """
    from engine.camera import project_perspective

    j = np.asarray(joints_3d, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        uv = np.asarray(project_perspective(j, np.asarray(K, np.float64)))
        d = np.linalg.norm(uv - np.asarray(keypoints_2d, np.float64), axis=-1)
    use = np.asarray(valid, bool)[:, None] & (np.nan_to_num(np.asarray(confidence, np.float64)) > 0) & np.isfinite(d)
    n = use.sum(axis=-1)
    out = np.full(j.shape[0], np.nan)
    out[n > 0] = np.where(use, d, 0.0).sum(axis=-1)[n > 0] / n[n > 0]
    return out
