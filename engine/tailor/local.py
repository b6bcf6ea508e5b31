"""A local re-tailor (issue 15): an artist's edit reaches only the frames near it, and smoothly.

    changed = the locked entries whose value differs from the take   (no change: nothing to do, the take as is)
    w = falloff_weights(changed frames, falloff)                      1 on a changed frame .. 0 beyond `falloff`
    blended = take with each change carried to its neighbours, scaled by w   (`propagate_rotations`, `propagate_additive`)
    refit = the tailor on the window, starting from blended, the edits and everything outside held
    result = blended + w * (refit - blended)                          (`fade_rotations`, `fade_additive`)

So frames beyond the window keep the take bit for bit (w = 0 there: they are not even written), a change is
felt in full where it was made and fades out over `falloff` frames on both sides (raised cosine: no step at
the window's edge), and a re-tailor with no change returns the take exactly (deterministic, no drift).
Rotations are combined in each joint's own axes: q = q_take * exp(w * log(q_take^-1 * q_edit)); the take's
quaternion sign is kept on every frame (the keys stay continuous).

Shapes: N frames, J = 16 joints; quaternions (w, x, y, z).
"""

from __future__ import annotations

import numpy as np

from engine.hand_model.rotations import axis_angle_to_quat, quat_conjugate, quat_log, quat_multiply

DEFAULT_FALLOFF = 10  # frames on each side of an edit; at 25 fps 0.4 s (a 25-degree edit ramps in <= 4 deg/frame)


def falloff_weights(changed: np.ndarray, falloff: int) -> np.ndarray:
    """(N,) bool frames with a change -> (N,) weights: 1 on them, 0.5 (1 + cos(pi d / (falloff + 1))) at d frames
    from the nearest one (d <= falloff), 0 beyond."""
    changed = np.asarray(changed, bool)
    n = changed.shape[0]
    if not changed.any():
        return np.zeros(n)
    idx = np.flatnonzero(changed)
    pos = np.arange(n)
    d = np.min(np.abs(pos[:, None] - idx[None, :]), axis=1)
    w = 0.5 * (1.0 + np.cos(np.pi * d / (falloff + 1)))
    return np.where(d <= falloff, w, 0.0)


def _weighted_deltas(delta: np.ndarray, changed: np.ndarray, falloff: int) -> np.ndarray:
    """Per frame, the changes of the nearest changed frame before it and after it, each weighted by its
    falloff, normalized where both reach: (w_l delta_l + w_r delta_r) / max(1, w_l + w_r). On a changed frame
    its own change. delta (N, ...) is read where changed (N,)."""
    n = changed.shape[0]
    shape = (n,) + (1,) * (delta.ndim - 1)
    pos = np.arange(n)
    idx = np.flatnonzero(changed)
    out = np.zeros_like(delta)
    if idx.size == 0:
        return out
    total = np.zeros(n)
    left = np.searchsorted(idx, pos, side="right") - 1  # the last changed frame at or before each frame
    right = np.searchsorted(idx, pos, side="left")  # the first changed frame at or after it
    for side, ok in ((left, left >= 0), (right, right < idx.size)):
        e = idx[np.clip(side, 0, idx.size - 1)]
        d = np.abs(pos - e)
        w = np.where(ok & (d <= falloff), 0.5 * (1.0 + np.cos(np.pi * d / (falloff + 1))), 0.0)
        w = np.where(changed, 0.5, w)  # a changed frame is its own left and right neighbour
        out += w.reshape(shape) * delta[e]
        total += w
    return out / np.maximum(total, 1.0).reshape(shape)


def propagate_rotations(take: np.ndarray, edited: np.ndarray, changed: np.ndarray, falloff: int) -> np.ndarray:
    """One joint's edit carried to its neighbours. take, edited (N, 4) quaternions; changed (N,) bool (the
    edited frames). Returns (N, 4): edited where changed, elsewhere q_take * exp(sum of weighted changes)."""
    take = np.asarray(take, np.float64)
    delta = np.zeros(take.shape[:-1] + (3,))
    ch = np.asarray(changed, bool)
    delta[ch] = quat_log(quat_multiply(quat_conjugate(take[ch]), np.asarray(edited, np.float64)[ch]))
    out = quat_multiply(take, axis_angle_to_quat(_weighted_deltas(delta, ch, falloff)))
    out = np.where(ch[:, None], edited, out)
    return out


def propagate_additive(take: np.ndarray, edited: np.ndarray, changed: np.ndarray, falloff: int) -> np.ndarray:
    """The same for values that add (root (N, 3), a per-frame beta or hand_scale): edited where changed."""
    take = np.asarray(take, np.float64)
    ch = np.asarray(changed, bool)
    delta = np.zeros_like(take)
    delta[ch] = np.asarray(edited, np.float64)[ch] - take[ch]
    out = take + _weighted_deltas(delta, ch, falloff)
    return np.where(ch.reshape((-1,) + (1,) * (take.ndim - 1)), edited, out)


def fade_rotations(base: np.ndarray, refit: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """base * exp(w * log(base^-1 * refit)) per frame: (N, J, 4), (N, J, 4), (N,) -> (N, J, 4), base's sign."""
    base = np.asarray(base, np.float64)
    delta = quat_log(quat_multiply(quat_conjugate(base), np.asarray(refit, np.float64)))
    return quat_multiply(base, axis_angle_to_quat(np.asarray(weights)[:, None, None] * delta))


def fade_additive(base: np.ndarray, refit: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """base + w * (refit - base): (N, ...), (N, ...), (N,)."""
    base = np.asarray(base, np.float64)
    w = np.asarray(weights).reshape((-1,) + (1,) * (base.ndim - 1))
    return base + w * (np.asarray(refit, np.float64) - base)
