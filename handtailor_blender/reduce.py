"""Key reduction with a guaranteed tolerance, numpy only (no bpy): the math behind curves.py.

A channel group (the 4 quaternion curves of a bone, the 3 location curves, one shape value ...) is sampled on
M frames (M,) with values (M, C). `reduce_keys` keeps the fewest keys it can find (greedy refinement: start
from the end keys, insert the worst frame of every segment that breaks the tolerance, refit, repeat) such
that the curve Blender draws through the kept keys stays within `tolerance` of every sample, measured by the
group's own error (`ERRORS`): degrees between rotations for quaternions and Eulers, a norm for vectors.

Bezier keys are cubic Hermite segments whose handles sit at 1/3 and 2/3 of the segment in time, so Blender's
Bezier (which solves x(t) = frame) reduces to t = (frame - f0) / h exactly; the slope at each kept key is
shared by both its handles (aligned handles, C1 curves) and fitted by least squares to all samples. Letters:
M samples, K kept keys, C components.
"""

from __future__ import annotations

import dataclasses

import numpy as np

INTERPOLATIONS = ("BEZIER", "LINEAR", "CONSTANT")
PEAK_ROUNDS = 12  # rounds of one key per bad segment before every bad peak gets one (long noisy takes)


@dataclasses.dataclass(frozen=True)
class Reduced:
    """Kept keys: `index` (K,) into the samples, `frames` (K,), `values` (K, C), `slopes` (K, C) (value per
    frame at each key; zeros unless BEZIER)."""

    index: np.ndarray
    frames: np.ndarray
    values: np.ndarray
    slopes: np.ndarray
    interpolation: str

    def handles(self) -> tuple[np.ndarray, np.ndarray]:
        """Bezier handles ((K, C, 2) left, (K, C, 2) right) as (frame, value) pairs."""
        return bezier_handles(self.frames, self.values, self.slopes)


# ------------------------------------------------------------------------------------------ errors


def quat_angle_error(want: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Degrees between unit quaternions want (M, 4) and got (M, 4) (any norm: Blender normalizes)."""
    g = got / np.maximum(np.linalg.norm(got, axis=-1, keepdims=True), 1e-12)
    w = want / np.maximum(np.linalg.norm(want, axis=-1, keepdims=True), 1e-12)
    c = np.clip(np.abs(np.sum(w * g, axis=-1)), 0.0, 1.0)
    return np.degrees(2.0 * np.arccos(c))


def euler_angle_error(want: np.ndarray, got: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """Degrees between the rotations of Euler angles want (M, 3) and got (M, 3) (radians, Blender order)."""
    from .poses import euler_to_rotmat

    R = np.einsum("mji,mjk->mik", euler_to_rotmat(want, order), euler_to_rotmat(got, order))
    c = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(c))


def vector_error(want: np.ndarray, got: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """scale * Euclidean distance (M,) between want (M, C) and got (M, C) (e.g. scale 1000: m -> mm)."""
    return scale * np.linalg.norm(np.asarray(want, np.float64) - got, axis=-1)


def group_error(kind: str, want: np.ndarray, got: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(M,) error of a channel group of `kind` ('quaternion', 'euler_<ORDER>', 'vector')."""
    if kind == "quaternion":
        return quat_angle_error(want, got)
    if kind.startswith("euler_"):
        return euler_angle_error(want, got, kind[6:])
    if kind == "vector":
        return vector_error(want, got, scale)
    raise ValueError(f"unknown channel kind {kind!r}")


# ------------------------------------------------------------------------------------- evaluation


def bezier_handles(frames: np.ndarray, values: np.ndarray, slopes: np.ndarray):
    """Handles of a Hermite curve: (K,), (K, C), (K, C) -> left (K, C, 2), right (K, C, 2).

    Each handle reaches a third of its segment in time along the key's slope (first/last key: the length
    of its only segment)."""
    f = np.asarray(frames, np.float64)
    K = len(f)
    h = np.diff(f)
    left_len = np.concatenate([h[:1], h]) / 3.0 if K > 1 else np.ones(1) / 3.0
    right_len = np.concatenate([h, h[-1:]]) / 3.0 if K > 1 else np.ones(1) / 3.0
    left = np.stack(np.broadcast_arrays((f - left_len)[:, None], values - slopes * left_len[:, None]), -1)
    right = np.stack(np.broadcast_arrays((f + right_len)[:, None], values + slopes * right_len[:, None]), -1)
    return left, right


def evaluate(key_frames: np.ndarray, key_values: np.ndarray, slopes: np.ndarray | None, at: np.ndarray,
             interpolation: str = "BEZIER") -> np.ndarray:
    """The curve through keys (K,), (K, C) [slopes (K, C) for BEZIER] at frames `at` (M,) -> (M, C), the way
    Blender evaluates it (constant extrapolation outside the keys)."""
    kf = np.asarray(key_frames, np.float64)
    kv = np.asarray(key_values, np.float64)
    at = np.asarray(at, np.float64)
    if len(kf) == 1:
        return np.broadcast_to(kv[:1], (len(at), kv.shape[1])).copy()
    seg = np.clip(np.searchsorted(kf, at, side="right") - 1, 0, len(kf) - 2)
    f0, f1 = kf[seg], kf[seg + 1]
    h = f1 - f0
    t = np.clip((at - f0) / h, 0.0, 1.0)[:, None]
    v0, v1 = kv[seg], kv[seg + 1]
    if interpolation == "CONSTANT":
        out = np.where(t >= 1.0, v1, v0)
    elif interpolation == "LINEAR":
        out = v0 + t * (v1 - v0)
    else:
        m0, m1 = slopes[seg], slopes[seg + 1]
        t2, t3 = t * t, t * t * t
        out = ((2 * t3 - 3 * t2 + 1) * v0 + (t3 - 2 * t2 + t) * h[:, None] * m0
               + (-2 * t3 + 3 * t2) * v1 + (t3 - t2) * h[:, None] * m1)
    return out


# ----------------------------------------------------------------------------------------- slopes


def _solve_tridiagonal(lower: np.ndarray, diag: np.ndarray, upper: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Symmetric positive definite tridiagonal system by cyclic reduction (vectorized, log2(K) levels; each
    level keeps the even unknowns, whose Schur complement is again SPD and tridiagonal):
    (K-1,), (K,), (K-1,), (K, C) -> (K, C)."""
    K = len(diag)
    b = np.asarray(diag, np.float64)
    d = np.asarray(rhs, np.float64)
    if K == 1:
        return d / b[0]
    lo = np.concatenate([[0.0], lower])  # lo[i]: coefficient of x[i-1] in equation i
    up = np.concatenate([upper, [0.0]])  # up[i]: coefficient of x[i+1] in equation i
    if K <= 3:  # Thomas algorithm
        c, e = np.zeros(K), np.zeros_like(d)
        for i in range(K):
            den = b[i] - (lo[i] * c[i - 1] if i else 0.0)
            c[i] = up[i] / den
            e[i] = (d[i] - (lo[i] * e[i - 1] if i else 0.0)) / den
        for i in range(K - 2, -1, -1):
            e[i] = e[i] - c[i] * e[i + 1]
        return e
    ev = np.arange(0, K, 2)
    prev, nxt = ev - 1, ev + 1
    has_p, has_n = prev >= 0, nxt < K
    p, n = np.clip(prev, 0, K - 1), np.clip(nxt, 0, K - 1)
    alpha = np.where(has_p, -lo[ev] / b[p], 0.0)
    gamma = np.where(has_n, -up[ev] / b[n], 0.0)
    b2 = b[ev] + alpha * np.where(has_p, up[p], 0.0) + gamma * np.where(has_n, lo[n], 0.0)
    d2 = d[ev] + alpha[:, None] * np.where(has_p[:, None], d[p], 0.0) + gamma[:, None] * np.where(
        has_n[:, None], d[n], 0.0)
    lo2 = alpha * np.where(has_p, lo[p], 0.0)  # couples even i to even i-2
    up2 = gamma * np.where(has_n, up[n], 0.0)  # couples even i to even i+2
    x = np.empty_like(d)
    x[ev] = _solve_tridiagonal(lo2[1:], b2, up2[:-1], d2)
    od = np.arange(1, K, 2)
    right = np.where((od + 1 < K)[:, None], x[np.clip(od + 1, 0, K - 1)], 0.0)
    x[od] = (d[od] - lo[od][:, None] * x[od - 1] - up[od][:, None] * right) / b[od][:, None]
    return x


def fit_slopes(frames: np.ndarray, values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Least-squares Hermite slopes (K, C) at the kept samples `index` (K,) for samples (M,), (M, C).

    The curve between two keys is linear in their two slopes, so the normal equations are tridiagonal; a
    weak pull toward the finite-difference slope of the neighbouring keys keeps keys with no samples in
    between (adjacent frames) well defined."""
    f = np.asarray(frames, np.float64)
    v = np.asarray(values, np.float64)
    K = len(index)
    C = v.shape[1]
    kf, kv = f[index], v[index]
    if K == 1:
        return np.zeros((1, C))
    h = np.diff(kf)
    # finite-difference slopes of the kept keys (Catmull-Rom style; one-sided at the ends)
    sec = np.diff(kv, axis=0) / h[:, None]
    prior = np.empty((K, C))
    prior[0], prior[-1] = sec[0], sec[-1]
    if K > 2:
        prior[1:-1] = (kv[2:] - kv[:-2]) / (kf[2:] - kf[:-2])[:, None]
    diag = np.zeros(K)
    off = np.zeros(K - 1)
    rhs = np.zeros((K, C))
    inner = np.ones(len(f), bool)
    inner[index] = False
    if inner.any():
        m = np.nonzero(inner)[0]
        seg = np.searchsorted(index, m) - 1
        hh = h[seg]
        t = (f[m] - kf[seg]) / hh
        t2, t3 = t * t, t * t * t
        base = (2 * t3 - 3 * t2 + 1)[:, None] * kv[seg] + (-2 * t3 + 3 * t2)[:, None] * kv[seg + 1]
        r = v[m] - base
        a = (t3 - 2 * t2 + t) * hh
        b = (t3 - t2) * hh
        diag += np.bincount(seg, a * a, K) + np.bincount(seg + 1, b * b, K)
        off += np.bincount(seg, a * b, K - 1)
        for c in range(C):
            rhs[:, c] += np.bincount(seg, a * r[:, c], K) + np.bincount(seg + 1, b * r[:, c], K)
    span = np.concatenate([h[:1], np.maximum(h[:-1], h[1:]), h[-1:]]) if K > 2 else np.full(K, h[0])
    lam = 1e-4 * span ** 3 + 1e-12
    diag += lam
    rhs += lam[:, None] * prior
    return _solve_tridiagonal(off, diag, off, rhs)


# --------------------------------------------------------------------------------------- reduction


def _worst_per_segment(err: np.ndarray, bad: np.ndarray, index: np.ndarray, peaks: bool = False) -> np.ndarray:
    """Sample indices of the largest bad error within each segment between kept keys (peaks: and every other
    local maximum of a bad error, which converges in a few rounds at the cost of a few more keys)."""
    m = np.nonzero(bad)[0]
    seg = np.searchsorted(index, m)
    order = np.lexsort((-err[m], seg))
    seg_sorted = seg[order]
    first = np.concatenate([[True], seg_sorted[1:] != seg_sorted[:-1]])
    out = m[order[first]]
    if peaks and len(err) > 2:
        e = np.where(bad, err, 0.0)
        pk = np.nonzero(bad[1:-1] & (e[1:-1] >= e[:-2]) & (e[1:-1] >= e[2:]))[0] + 1
        out = np.union1d(out, pk)
    return out


def reduce_keys(frames: np.ndarray, values: np.ndarray, tolerance: float, kind: str = "vector", *,
                interpolation: str = "BEZIER", scale: float = 1.0, required: np.ndarray | None = None) -> Reduced:
    """Fewest keys whose curve stays within `tolerance` of every sample.

    frames (M,) strictly increasing, values (M, C); tolerance in the kind's unit (degrees for rotations,
    scale * value units for vectors); `required` (M,) bool samples that must stay keys. A tolerance <= 0
    keeps every sample (an exactly constant group still collapses to one key)."""
    frames = np.asarray(frames, np.float64)
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r} is not one of {INTERPOLATIONS}")
    M, C = values.shape
    if M == 0:
        raise ValueError("no samples to key")
    req = np.zeros(M, bool) if required is None else np.asarray(required, bool).copy()
    constant = not req[1:].any() and bool(np.all(values == values[:1]))
    if M == 1 or constant:
        return Reduced(np.zeros(1, np.int64), frames[:1], values[:1].copy(), np.zeros((1, C)), interpolation)
    if tolerance <= 0:
        keep = np.ones(M, bool)
    else:
        keep = req
        keep[0] = keep[-1] = True
    rounds = 0
    while True:
        rounds += 1
        index = np.nonzero(keep)[0]
        slopes = (fit_slopes(frames, values, index) if interpolation == "BEZIER" and len(index) < M
                  else _dense_slopes(frames, values, index, interpolation))
        if len(index) == M:
            break
        recon = evaluate(frames[index], values[index], slopes, frames, interpolation)
        err = group_error(kind, values, recon, scale)
        bad = (err > tolerance) & ~keep
        if not bad.any():
            break
        keep[_worst_per_segment(err, bad, index, peaks=rounds > PEAK_ROUNDS)] = True
    return Reduced(index, frames[index], values[index], slopes, interpolation)


def _dense_slopes(frames, values, index, interpolation):
    """Slopes when every sample is a key: finite differences (a smooth Bezier through all samples)."""
    K = len(index)
    if interpolation != "BEZIER" or K < 2:
        return np.zeros((K, values.shape[1]))
    kf, kv = frames[index], values[index]
    s = np.empty_like(kv)
    s[0] = (kv[1] - kv[0]) / (kf[1] - kf[0])
    s[-1] = (kv[-1] - kv[-2]) / (kf[-1] - kf[-2])
    if K > 2:
        s[1:-1] = (kv[2:] - kv[:-2]) / (kf[2:] - kf[:-2])[:, None]
    return s
