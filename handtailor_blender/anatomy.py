"""Hand bone frames from a skeleton's rest geometry, numpy only: the one rule for bone rolls and retargeting.

Every hand skeleton (ours, Rigify, Mixamo, UE, VRM ...) gets the same frame per finger bone from joint
positions alone: y along the bone (head -> next joint), x the bone's flexion axis, z = x cross y. A curl is
then a positive rotation about x on both sides (Blender/Rigify convention, mirror-consistent: the left
frame is the X-mirror of the right one with x negated, as Blender's symmetrize makes it).
Measured on captures (ASL clip): index..pinky bend about the palm's lateral axis (97-100% of their
rotation), the thumb about the palm normal (58% CMC, 88% MCP, 79% IP).

Joint arrays are in MANO order (J=16: wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3); a joint a
skeleton lacks is NaN.
"""

from __future__ import annotations

import numpy as np

FINGERS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12),
           "thumb": (13, 14, 15)}
THUMB = (13, 14, 15)
PARENT = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
NEXT = {0: 4, 1: 2, 2: 3, 4: 5, 5: 6, 7: 8, 8: 9, 10: 11, 11: 12, 13: 14, 14: 15}


def side_sign(side: str) -> float:
    return 1.0 if side == "right" else -1.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def palm_axes(heads: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lateral, forward, palmar) unit vectors (3,) of a hand from its joints (16, 3).

    lateral: pinky knuckle -> index knuckle; forward: wrist -> middle knuckle; palmar: out of the palm."""
    h = np.asarray(heads, np.float64)
    pinky = h[7] if np.isfinite(h[7]).all() else h[10]
    if not (np.isfinite(h[[0, 1, 4]]).all() and np.isfinite(pinky).all()):
        raise ValueError("the hand needs a wrist, index, middle and pinky (or ring) knuckle to find the palm")
    lateral = _unit(h[1] - pinky)
    forward = _unit(h[4] - h[0])
    palmar = side_sign(side) * _unit(np.cross(lateral, forward))
    lateral = _unit(np.cross(forward, palmar)) * side_sign(side)
    return lateral, forward, palmar


def bone_frames(heads: np.ndarray, ends: np.ndarray, side: str) -> np.ndarray:
    """(16, 3, 3) rest frames (columns x, y, z; armature space) for joints (16, 3) and the points their
    bones point to (16, 3) (the next joint, or the fingertip for the last one). NaN rows stay NaN.

    y = bone direction; x = the flexion axis: the palm's lateral axis (index..pinky, wrist) or the palm
    normal (thumb) made perpendicular to y, times the side's sign for the thumb so that positive x curls on
    both hands."""
    heads = np.asarray(heads, np.float64)
    ends = np.asarray(ends, np.float64)
    lateral, _, palmar = palm_axes(heads, side)
    s = side_sign(side)
    F = np.full((16, 3, 3), np.nan)
    for j in range(16):
        y = ends[j] - heads[j]
        if not np.isfinite(y).all() or np.linalg.norm(y) < 1e-9:
            continue
        y = _unit(y)
        ref = s * palmar if j in THUMB else s * lateral
        if abs(ref @ y) > 0.95:  # a bone along its reference axis: the other palm axis decides
            ref = s * lateral if j in THUMB else np.cross(y, palmar)
        x = _unit(ref - (ref @ y) * y)
        F[j] = np.stack([x, y, np.cross(x, y)], axis=1)
    return F


def skeleton_ends(heads: np.ndarray, tips: np.ndarray, tails: np.ndarray | None = None) -> np.ndarray:
    """(16, 3) points each bone points to: the next joint in its finger, the fingertip (5, 3; thumb, index,
    middle, ring, pinky; NaN if unknown) for the last joint, else `tails` (16, 3) if given."""
    heads = np.asarray(heads, np.float64)
    ends = np.full((16, 3), np.nan) if tails is None else np.array(tails, np.float64, copy=True)
    tip_of = {15: 0, 3: 1, 6: 2, 12: 3, 9: 4}
    for j in range(16):
        target = heads[NEXT[j]] if j in NEXT else np.asarray(tips[tip_of[j]], np.float64)
        if np.isfinite(target).all():
            ends[j] = target
    return ends


def flexion(heads: np.ndarray, ends: np.ndarray, side: str) -> np.ndarray:
    """Per-finger flexion (..., 5) in degrees (index, middle, pinky, ring, thumb order of FINGERS): the sum of
    the bend angles between consecutive segments, from the palm's forward axis (thumb: from the thumb's
    first bone) down the finger. Posed joints (..., 16, 3) and bone end points (..., 16, 3)."""
    heads = np.asarray(heads, np.float64)
    ends = np.asarray(ends, np.float64)
    d = _unit(ends - heads)
    fwd = _unit(heads[..., 4, :] - heads[..., 0, :])
    out = []
    for name, (a, b, c) in FINGERS.items():
        segs = [d[..., a, :], d[..., b, :], d[..., c, :]]
        prev = [fwd, segs[0], segs[1]] if name != "thumb" else [segs[0], segs[1]]
        nxt = segs if name != "thumb" else segs[1:]
        total = 0.0
        for p, n in zip(prev, nxt):
            total = total + np.degrees(np.arccos(np.clip(np.sum(p * n, -1), -1.0, 1.0)))
        out.append(total)
    return np.stack(out, -1)
