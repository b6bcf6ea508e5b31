"""Retargeting math, numpy only: a captured hand's finger rotations onto another skeleton's bones.

Both skeletons get the same anatomical frame per bone from their rest geometry (anatomy.bone_frames: y
along the bone, x the flexion axis), so rolls, bone axes and rest poses stop mattering. For every frame the
take gives each finger bone's frame relative to its parent's (the hand's for a proximal bone):

    G_b = C_a^T theta_b C_b          (theta_b: the take bone's rotation from rest, armature axes)

and the character bone gets the pose basis that puts its frame in the same place relative to its parent:

    basis_b = R_b^T C'_a G_b C'_b^T R_b     (R: the character bone's rest, C': its anatomical frames)

A curl stays a curl and a relaxed rest hand is corrected (the character reproduces the captured bend, not
its rest plus the capture's). Bones between the character's mapped bones (UE5 metacarpals, Rigify's
mechanism bones) are assumed at rest. The wrist, when asked for, copies the captured hand's orientation in
the world. Letters: N frames, J=16 joints (MANO order).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import anatomy, poses


@dataclasses.dataclass
class TakeMotion:
    """A take as the retarget needs it (read from the take rig, see retarget_scene.read_take)."""

    name: str
    side: str
    frames: np.ndarray  # (N,) scene frames with a tracked hand
    theta: np.ndarray  # (N, J, 3, 3) each bone's rotation from rest in armature axes (R basis R^T)
    frames_rest: np.ndarray  # (J, 3, 3) anatomical frames at rest
    hand_world: np.ndarray  # (N, 3, 3) the hand's (wrist) anatomical frame in world axes

    @property
    def bone_names(self) -> list[str]:
        from .rig import bone_names

        return bone_names(self.side)[:16]


def local_rotations(basis: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """theta = R basis R^T: pose bases (N, J, 3, 3) and rests (J, 3, 3) -> rotations from rest in armature
    axes (N, J, 3, 3)."""
    return np.einsum("jab,njbc,jdc->njad", rest, basis, rest)


def relative_frames(theta: np.ndarray, frames_rest: np.ndarray) -> np.ndarray:
    """G (N, J, 3, 3): each bone's anatomical frame in its parent's (the wrist's for the proximal bones); the
    wrist's own entry is its frame relative to its rest frame."""
    parent = np.array([p if p >= 0 else 0 for p in anatomy.PARENT])
    Ca = frames_rest[parent]  # (J, 3, 3)
    return np.einsum("jba,njbc,jcd->njad", Ca, theta, frames_rest)


def finger_bases(G: np.ndarray, char_frames: np.ndarray, char_rest: np.ndarray, joints) -> np.ndarray:
    """Pose bases (N, len(joints), 3, 3) of the character bones for the joints `joints` (MANO indices):
    basis_b = R_b^T C'_a G_b C'_b^T R_b. char_frames / char_rest: (J, 3, 3), NaN where unmapped."""
    out = []
    for b in joints:
        a = max(anatomy.PARENT[b], 0)
        R, Ca, Cb = char_rest[b], char_frames[a], char_frames[b]
        out.append(np.einsum("ba,bc,ncd,ed,ef->naf", R, Ca, G[:, b], Cb, R))
    return np.stack(out, axis=1)


def wrist_basis(hand_world: np.ndarray, parent_world: np.ndarray, parent_rest: np.ndarray,
                hand_rest: np.ndarray, hand_frame: np.ndarray) -> np.ndarray:
    """Pose basis (N, 3, 3) of the character's hand bone so that its anatomical frame `hand_frame` (3, 3)
    lands on the captured hand's world frame (N, 3, 3). parent_world (N, 3, 3): the parent bone's world
    rotation (object included; identity without a parent), parent_rest / hand_rest: (3, 3) rests."""
    A = np.einsum("ab,nbc->nac", hand_rest.T @ parent_rest, np.swapaxes(parent_world, -1, -2))
    return np.einsum("nab,nbc,cd->nad", A, hand_world, hand_frame.T @ hand_rest)


def to_channels(basis: np.ndarray, rotation_mode: str, compat_quat=None) -> np.ndarray:
    """Pose bases (N, 3, 3) -> channel values: quaternions (N, 4) sign-continuous, or Euler angles (N, 3) in
    `rotation_mode` order, continuous."""
    if rotation_mode == "QUATERNION":
        q = poses.continuous_signs(poses.rotmat_to_quat(basis))
        if compat_quat is not None and len(q) and np.dot(q[0], compat_quat) < 0:
            q = -q
        return q
    return poses.continuous_eulers(poses.rotmat_to_euler(basis, rotation_mode), rotation_mode)


def rotation_angle(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Degrees between rotations (..., 3, 3) and (..., 3, 3)."""
    c = (np.einsum("...ab,...ab->...", A, B) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))
