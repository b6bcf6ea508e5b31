"""The hand model posed outside the fit: its 21 keypoints for given theta, beta (and root, hand_scale), with the
tailor's own JAX layer (`jax_layer.keypoints`) on a stored executable (`executables.Exported`).

The hand module's initialization (`hand_module.pose_keypoints`) and a re-tailor's refitted frames use it, so a
capture needs no torch layer after tracking, and any number of frames runs on one executable: the frames go in
chunks of `POSE_CHUNK`, the last one padded. An eager call traced and compiled its ops for every new frame
count instead (measured here: 1.8-2.8 s for each of 621, 300 and 45 frames).
"""

from __future__ import annotations

import numpy as np

from engine.hand_model import jax_layer
from engine.tailor.api import model_params
from engine.tailor.executables import Exported

POSE_CHUNK = 64  # frames per call (the clip fit's window length: the same executable size)


def _posed_keypoints(params, theta, beta, root, hand_scale):
    return jax_layer.keypoints(params, jax_layer.quat_to_rotmat(theta), beta, root, hand_scale)


_posed_keypoints_exported = Exported(_posed_keypoints, "model-keypoints")


def model_keypoints(model, theta: np.ndarray, beta: np.ndarray, root: np.ndarray | None = None,
                    hand_scale: np.ndarray | None = None) -> np.ndarray:
    """The model's 21 keypoints posed by theta, computed in float32.

    Args:
      model: HandModel.
      theta: (N, 16, 4) local rotations (w, x, y, z); beta: (N, 10).
      root: (N, 3) the wrist in the camera frame, meters (None: the origin); hand_scale: (N,) (None: 1).
    Returns:
      (N, K=21, 3) float64, meters: root + hand_scale * (posed keypoints - posed wrist).
    """
    theta = np.asarray(theta, np.float32)
    n = len(theta)
    root = np.zeros((n, 3), np.float32) if root is None else np.asarray(root, np.float32)
    hand_scale = np.ones(n, np.float32) if hand_scale is None else np.asarray(hand_scale, np.float32)
    beta = np.asarray(beta, np.float32)
    # the keypoints need none of the mesh's arrays: they stay out of the call
    params = model_params(model)._replace(v_template=None, shapedirs=None, posedirs=None, weights=None)
    out = np.empty((n, 21, 3))
    for a in range(0, n, POSE_CHUNK):
        m = min(POSE_CHUNK, n - a)
        pad = POSE_CHUNK - m
        args = [theta[a : a + m], beta[a : a + m], root[a : a + m], hand_scale[a : a + m]]
        if pad:  # the identity pose at rest size fills the chunk
            fill = [np.tile(np.float32([1, 0, 0, 0]), (pad, 16, 1)), np.zeros((pad, 10), np.float32),
                    np.zeros((pad, 3), np.float32), np.ones(pad, np.float32)]
            args = [np.concatenate([x, f]) for x, f in zip(args, fill)]
        out[a : a + m] = np.asarray(_posed_keypoints_exported(params, *args))[:m]
    return out
