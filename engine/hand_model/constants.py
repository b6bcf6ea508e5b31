"""Joint names, orders and the 16+5 -> 21 mapping: defined here once, used everywhere.

Two orders exist and must never be confused:

* the hand model's 16 joints keep MANO's order
  (0 wrist; 1-3 index; 4-6 middle; 7-9 pinky; 10-12 ring; 13-15 thumb), with
  `MANO_PARENTS` = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14];
* the 21 keypoints everywhere outside the hand model follow FreiHAND / OpenPose / MediaPipe
  (0 wrist; 1-4 thumb CMC, MCP, IP, tip; 5-8 index MCP, PIP, DIP, tip; 9-12 middle; 13-16 ring;
  17-20 pinky).

The five fingertips are not MANO joints: they are mesh vertices (`HandModel.tip_vertex_ids`, in
`TIP_NAMES` order thumb, index, middle, ring, pinky). Appending them to the 16 joints gives 21 points
in "MANO order + tips" (indices 16-20); `MANO_TO_KEYPOINT` picks from that concatenation:

    keypoints (..., 21, 3) = concat(joints16, tips5)[..., MANO_TO_KEYPOINT, :]

All arrays here are read-only numpy int64 arrays.
"""

from __future__ import annotations

import numpy as np


def _frozen(values) -> np.ndarray:
    array = np.asarray(values, dtype=np.int64)
    array.setflags(write=False)
    return array


N_JOINTS = 16
N_KEYPOINTS = 21
N_TIPS = 5
N_SHAPE = 10
N_POSE_CORRECTIVES = 9 * (N_JOINTS - 1)  # 135: (R_j - I) of the 15 non-root joints, flattened

MANO_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)

MANO_PARENTS = _frozen([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])

TIP_NAMES: tuple[str, ...] = ("thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip")

KEYPOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)

# Index into concat(16 MANO joints, 5 tips in TIP_NAMES order) for each of the 21 keypoints.
MANO_TO_KEYPOINT = _frozen([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20])

# Inverse direction: for each of the 16 MANO joints, its keypoint index.
JOINT_TO_KEYPOINT = _frozen([int(np.flatnonzero(MANO_TO_KEYPOINT == j)[0]) for j in range(N_JOINTS)])

# For each tip (TIP_NAMES order), its keypoint index.
TIP_TO_KEYPOINT = _frozen([int(np.flatnonzero(MANO_TO_KEYPOINT == N_JOINTS + t)[0]) for t in range(N_TIPS)])

FINGER_NAMES: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")

# (5, 4) keypoint ids per finger (thumb, index, middle, ring, pinky), TIP-TO-PALM (E_g, Eq. 10).
FINGER_KEYPOINTS = _frozen([[4 * f + 4, 4 * f + 3, 4 * f + 2, 4 * f + 1] for f in range(5)])

# Parent of each keypoint in the 21-keypoint skeleton (bones for drawing; -1 for the wrist).
KEYPOINT_PARENTS = _frozen([-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19])

REFERENCE_BONE: tuple[int, int] = (0, 9)  # wrist -> middle-finger MCP, in keypoint indices
ROOT_KEYPOINT = 9  # root for lifting (middle MCP); the rig and the result use the wrist

SIDES: tuple[str, ...] = ("right", "left")

# Fingertip vertex ids of the official 778-vertex MANO mesh (thumb, index, middle, ring, pinky), used when a
# MANO file carries none. These are manopth's ids (HandTailor's reference code builds on manopth); smplx's
# differ by a vertex or two (744, 320, 443, 554, 671). Our own model files store theirs.
MANO_TIP_VERTEX_IDS = _frozen([745, 317, 444, 556, 673])
MANO_N_VERTICES = 778
MANO_N_FACES = 1538
