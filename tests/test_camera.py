"""engine.camera: projections on numpy and jax alike, hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from engine import camera
from engine.errors import InputError

K = np.array([[1000.0, 0.0, 320.0], [0.0, 900.0, 240.0], [0.0, 0.0, 1.0]])


def test_project_perspective_hand_computed():
    p = np.array([[0.1, -0.2, 2.0], [0.0, 0.0, 1.0]])
    uv = camera.project_perspective(p, K)
    assert uv.shape == (2, 2)
    np.testing.assert_allclose(uv, [[320 + 1000 * 0.05, 240 - 900 * 0.1], [320, 240]])


def test_numpy_and_jax_agree_and_jit():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(4, 21, 3)) * 0.1 + [0, 0, 0.6]
    uv_np = camera.project_perspective(p, K)
    uv_jx = jax.jit(camera.project_perspective)(jnp.asarray(p), jnp.asarray(K))
    assert isinstance(uv_np, np.ndarray) and uv_np.shape == (4, 21, 2)
    np.testing.assert_allclose(np.asarray(uv_jx), uv_np, rtol=1e-5, atol=1e-3)


def test_backproject_inverts_project():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(7, 3)) * 0.1 + [0, 0, 0.8]
    back = camera.backproject_perspective(camera.project_perspective(p, K), p[:, 2], K)
    assert back.shape == (7, 3)
    np.testing.assert_allclose(back, p, atol=1e-12)
    back_j = camera.backproject_perspective(jnp.asarray(camera.project_perspective(p, K)), jnp.asarray(p[:, 2]), K)
    np.testing.assert_allclose(np.asarray(back_j), p, atol=1e-5)


def test_weak_perspective_eq16():
    p = np.array([[[0.01, 0.02, 0.5], [-0.03, 0.0, 0.1]]])  # (1, 2, 3)
    uv = camera.project_weak_perspective(p, np.array([[1000.0, 1000.0]]), np.array([[[100.0, 50.0]]]))
    assert uv.shape == (1, 2, 2)
    np.testing.assert_allclose(uv, [[[110, 70], [70, 50]]])


def test_nominal_K():
    Kn = camera.nominal_K((1920, 1080))
    np.testing.assert_array_equal(Kn, [[1920, 0, 960], [0, 1920, 540], [0, 0, 1]])
    np.testing.assert_array_equal(camera.nominal_K((640, 480), focal_px=500)[0], [500, 0, 320])
    with pytest.raises(InputError):
        camera.nominal_K((0, 480))
    with pytest.raises(InputError):
        camera.nominal_K((640, 480), focal_px=-1)


def test_undistort_roundtrip():
    import cv2

    dist = np.array([-0.2, 0.05, 0.001, -0.001, 0.0])
    rng = np.random.default_rng(2)
    p = rng.uniform(-0.2, 0.2, size=(10, 3)) + [0, 0, 1.0]
    distorted, _ = cv2.projectPoints(p, np.zeros(3), np.zeros(3), K, dist)
    und = camera.undistort_points(distorted.reshape(10, 2), K, dist)
    np.testing.assert_allclose(und, camera.project_perspective(p, K), atol=0.05)
    np.testing.assert_array_equal(camera.undistort_points(np.ones((3, 2)), K, np.zeros(5)), np.ones((3, 2)))
