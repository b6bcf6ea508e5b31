"""The ONE place for projections: pinhole (perspective), weak perspective, nominal intrinsics, undistortion.

Conventions (DESIGN.md): meters, OpenCV camera frame (x right, y down, z forward), pixels with the origin at
the top-left corner, K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]].

The projection functions use array operators only, so they work on numpy and jax arrays alike (and inside
`jax.jit`); the dtype comes from the inputs. `undistort_points` is numpy/OpenCV only (not for jit).
"""

from __future__ import annotations

import numpy as np

from engine.errors import InputError

__all__ = [
    "project_perspective",
    "backproject_perspective",
    "project_weak_perspective",
    "nominal_K",
    "undistort_points",
]


def project_perspective(points, K):
    """Pinhole projection (paper Eq. 2): u = fx * x / z + cx, v = fy * y / z + cy.

    Args:
      points: (..., 3) camera-frame points, meters.
      K: (3, 3) intrinsics, pixels.
    Returns:
      (..., 2) pixel coordinates. No guard against z = 0: callers keep points in front of the camera.
    """
    x = points[..., 0]
    y = points[..., 1]
    z = points[..., 2]
    u = K[0, 0] * x / z + K[0, 1] * y / z + K[0, 2]
    v = K[1, 1] * y / z + K[1, 2]
    return _stack2(u, v)


def backproject_perspective(uv, z, K):
    """Inverse pinhole (pi^-1): the camera-frame point at depth z that projects onto uv.

    Args:
      uv: (..., 2) pixels.
      z: (...) depth along the optical axis, meters.
      K: (3, 3) intrinsics.
    Returns:
      (..., 3) camera-frame points, meters.
    """
    y = (uv[..., 1] - K[1, 2]) / K[1, 1] * z
    x = (uv[..., 0] - K[0, 2] - K[0, 1] * y / z) / K[0, 0] * z
    return _stack3(x, y, z + 0.0 * x)


def project_weak_perspective(points, s, t):
    """Eq. 16: weak perspective (also Eq. 3), u = s * x + t_u, v = s * y + t_v (depth dropped).

    Args:
      points: (..., 3) points (meters, usually relative to the root joint).
      s: (...) scale, pixels per meter (broadcast against points[..., 0]).
      t: (..., 2) translation, pixels.
    Returns:
      (..., 2) pixel coordinates.
    """
    return points[..., :2] * s[..., None] + t


def focal_length(K):
    """The one focal length of a camera, in pixels: the mean of fx and fy (they are equal for square pixels
    and for the nominal camera). K: (3, 3) numpy or JAX."""
    return 0.5 * (K[0, 0] + K[1, 1])


def intrinsics_matrix(fx, fy, cx, cy):
    """K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (pixels) as a (3, 3) float64 numpy array."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def nominal_K(image_size, focal_px=None):
    """The nominal pinhole camera used when the intrinsics are unknown (weak perspective, DESIGN.md).

    Args:
      image_size: (width, height) in pixels.
      focal_px: focal length in pixels; None means the image's long side (about a 53 degree field of view).
    Returns:
      (3, 3) float64 numpy K with the principal point at the image centre.
    """
    w, h = (float(image_size[0]), float(image_size[1]))
    if not (np.isfinite(w) and np.isfinite(h) and w > 0 and h > 0):
        raise InputError(f"image size must be two positive numbers (width, height), got {image_size!r}")
    f = max(w, h) if focal_px is None else float(focal_px)
    if not (np.isfinite(f) and f > 0):
        raise InputError(f"focal length must be a positive number of pixels, got {focal_px!r}")
    return intrinsics_matrix(f, f, w / 2.0, h / 2.0)


def undistort_points(uv, K, dist):
    """Removes lens distortion from pixel coordinates (OpenCV model k1, k2, p1, p2, k3); numpy only.

    Args:
      uv: (..., 2) distorted pixel coordinates.
      K: (3, 3) intrinsics.
      dist: (5,) distortion coefficients (k1, k2, p1, p2, k3).
    Returns:
      (..., 2) float64 undistorted pixel coordinates, under the same K.
    """
    import cv2

    uv = np.asarray(uv, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    dist = np.asarray(dist, dtype=np.float64).reshape(-1)
    if dist.shape != (5,):
        raise InputError(f"distortion must have 5 coefficients (k1, k2, p1, p2, k3), got {dist.size}")
    if uv.size == 0 or not np.any(dist):
        return uv.copy()
    flat = uv.reshape(-1, 1, 2)
    out = cv2.undistortPoints(flat, K, dist, P=K)
    return out.reshape(uv.shape)


def _stack2(a, b):
    xp = _xp(a)
    return xp.stack([a, b], axis=-1)


def _stack3(a, b, c):
    xp = _xp(a)
    return xp.stack([a, b, c], axis=-1)


def _xp(a):
    """numpy for numpy arrays and Python scalars, jax.numpy for jax arrays (tracers included)."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return np
    import jax.numpy as jnp

    return jnp
