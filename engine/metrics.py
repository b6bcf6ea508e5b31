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
