"""Lifting (Eq. 5, Eq. 14-15) on synthetic projections with exact answers."""

import numpy as np
import pytest

from engine.camera import project_perspective
from engine.hand_module import lifting

K = np.array([[900.0, 0.0, 640.0], [0.0, 910.0, 360.0], [0.0, 0.0, 1.0]])


def _random_hands(n, seed=0):
    """(n, 21, 3) hand-sized point sets (meters) in front of the camera, with random orientation."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(scale=0.04, size=(n, 21, 3))
    # Reference bone off the line of sight (|d'_0| < 1/|a_0|: one positive root of the depth quadratic).
    bz, phi = rng.uniform(-0.8, 0.8, n), rng.uniform(0, 2 * np.pi, n)
    bone = np.stack([np.sqrt(1 - bz**2) * np.cos(phi), np.sqrt(1 - bz**2) * np.sin(phi), bz], -1)
    pts[:, 9] = pts[:, 0] + 0.08 * bone
    root = np.stack([rng.uniform(-0.3, 0.3, n), rng.uniform(-0.2, 0.2, n), rng.uniform(0.3, 1.5, n)], -1)
    return pts - pts[:, 9:10] + root[:, None]


def _normalized(points):
    B = np.linalg.norm(points[..., 9, :] - points[..., 0, :], axis=-1)
    return (points[..., 2] - points[..., 9:10, 2]) / B[..., None], B


def test_perspective_lift_exact():
    P = _random_hands(64)
    uv = project_perspective(P, K)
    d, B = _normalized(P)
    joints, z_root = lifting.perspective_lift(uv, d, K, B)
    assert joints.shape == (64, 21, 3) and z_root.shape == (64,)
    np.testing.assert_allclose(joints, P, atol=1e-6)
    np.testing.assert_allclose(z_root, P[:, 9, 2], atol=1e-6)


def test_perspective_lift_scalar_bone_and_single_frame():
    P = _random_hands(1, seed=3)[0]
    d, B = _normalized(P)
    joints, z_root = lifting.perspective_lift(project_perspective(P, K), d, K, float(B))
    assert joints.shape == (21, 3) and np.shape(z_root) == ()
    np.testing.assert_allclose(joints, P, atol=1e-6)


def test_perspective_lift_noisy_is_finite():
    P = _random_hands(200, seed=1)
    rng = np.random.default_rng(1)
    uv = project_perspective(P, K) + rng.normal(scale=3.0, size=(200, 21, 2))
    d, B = _normalized(P)
    d = d + rng.normal(scale=0.3, size=d.shape)  # far more depth noise than any network
    joints, z_root = lifting.perspective_lift(uv, d, K, B)
    assert np.all(np.isfinite(joints)) and np.all(z_root > 0) and np.all(joints[..., 2] > 0)


def _weak_camera(P, s_m, t):
    return P[..., :2] * s_m[..., None, None] + t[..., None, :]


def test_weak_perspective_lift_exact():
    P = _random_hands(64, seed=2)
    rng = np.random.default_rng(2)
    s_m = rng.uniform(500, 5000, 64)  # px per meter
    t = rng.uniform(0, 1000, (64, 2))
    uv = _weak_camera(P, s_m, t)
    d, B = _normalized(P)
    joints, s, fallback = lifting.weak_perspective_lift(uv, d)
    assert joints.shape == (64, 21, 3) and s.shape == (64,) and fallback.shape == (64,)
    ok = ~fallback
    assert ok.sum() > 50
    expect = (P - P[:, 9:10]) / B[:, None, None]
    np.testing.assert_allclose(joints[ok], expect[ok], atol=1e-9)
    np.testing.assert_allclose(s[ok], (s_m * B)[ok], rtol=1e-9)


def test_mediapipe_depth_mapping_exact_under_weak_perspective():
    """MediaPipe-like d (wrist-relative, pixel units) -> d' is exact under a weak-perspective camera."""
    P = _random_hands(16, seed=4)
    s_m = np.full(16, 1500.0)
    uv = _weak_camera(P, s_m, np.full((16, 2), 300.0))
    d_px = (P[..., 2] - P[:, :1, 2]) * s_m[:, None] + 17.0
    d_norm = lifting.normalized_depth(np.concatenate([uv, d_px[..., None]], -1))
    expect, B = _normalized(P)
    np.testing.assert_allclose(d_norm, expect, atol=1e-12)
    joints, s, _ = lifting.weak_perspective_lift(uv, d_norm)
    np.testing.assert_allclose(joints, (P - P[:, 9:10]) / B[:, None, None], atol=1e-9)


def test_weak_perspective_edge_on_reference_bone():
    """The reference bone pointing at the camera (|dd'| = 1) made the original blow up: finite, exact here."""
    P = _random_hands(8, seed=5)
    P[:, 0] = P[:, 9] + np.array([0.0, 0.0, 0.08])  # wrist straight behind the middle MCP
    s_m = np.full(8, 2000.0)
    uv = _weak_camera(P, s_m, np.zeros((8, 2)))
    d, B = _normalized(P)
    np.testing.assert_allclose(np.abs(d[:, 0]), 1.0)
    lengths = lifting.pair_ratios(P, lifting.PALM_PAIRS)
    joints, s, fallback = lifting.weak_perspective_lift(uv, d, lengths)
    assert np.all(fallback) and np.all(np.isfinite(joints)) and np.all(np.isfinite(s))
    np.testing.assert_allclose(s, s_m * B, rtol=1e-9)  # palm pairs with the true lengths: exact
    np.testing.assert_allclose(joints, (P - P[:, 9:10]) / B[:, None, None], atol=1e-9)
    # Near edge-on with noise, and with generic lengths: still finite and sane.
    rng = np.random.default_rng(5)
    uv_n = uv + rng.normal(scale=2.0, size=uv.shape)
    d_n = d + rng.normal(scale=0.05, size=d.shape)
    joints, s, fallback = lifting.weak_perspective_lift(uv_n, d_n)
    assert np.all(np.isfinite(joints)) and np.all(s > 0)
    # Fully degenerate input (every keypoint on one pixel, |dd'| > 1): finite output.
    joints, s, fallback = lifting.weak_perspective_lift(np.zeros((21, 2)), np.linspace(-2, 2, 21))
    assert np.all(np.isfinite(joints)) and s > 0 and fallback


def test_world_landmarks_normalized():
    P = _random_hands(4, seed=6)
    n = lifting.world_landmarks_normalized(P + 5.0)
    np.testing.assert_allclose(np.linalg.norm(n[:, 0] - n[:, 9], axis=-1), 1.0)
    np.testing.assert_allclose(n[:, 9], 0.0, atol=1e-12)
    np.testing.assert_allclose(lifting.hybrid_normalized_depth(P), _normalized(P)[0], atol=1e-12)


def test_rigid_pairs_are_pose_invariant_on_the_model():
    """RIGID_PAIRS / PALM_PAIRS distances do not change with the pose of the hand model."""
    torch = pytest.importorskip("torch")
    from engine.hand_model import load_hand_model
    from engine.hand_model.torch_layer import HandLayer
    from engine.hand_module.iknet import sample_training_batch

    model = load_hand_model(side="right")
    layer = HandLayer(model)
    gen = torch.Generator().manual_seed(0)
    theta, beta, kp = sample_training_batch(layer, model, 16, gen)
    beta0 = beta.clone()
    _, kp_rest, _ = layer(torch.tensor([[1.0, 0, 0, 0]]).repeat(16, 16, 1).double(), beta0.double())
    kp, kp_rest = kp.double().numpy(), kp_rest.numpy()
    for pairs in (lifting.PALM_PAIRS, lifting.RIGID_PAIRS):
        a = np.linalg.norm(kp[:, pairs[:, 1]] - kp[:, pairs[:, 0]], axis=-1)
        b = np.linalg.norm(kp_rest[:, pairs[:, 1]] - kp_rest[:, pairs[:, 0]], axis=-1)
        np.testing.assert_allclose(a, b, atol=2e-3)  # tips are LBS vertices: ~rigid
    rest0 = layer(torch.tensor([[1.0, 0, 0, 0]]).repeat(1, 16, 1).double(), torch.zeros(1, 10).double())[1]
    generic = lifting.pair_ratios(rest0.numpy()[0], lifting.PALM_PAIRS)
    np.testing.assert_allclose(lifting.GENERIC_PALM_LENGTHS, generic, atol=5e-3)


def test_perspective_lift_pixel_depth_exact():
    """d = f (z - z_0) / z_9 (pixels at the root's depth, MediaPipe-like): joints recovered exactly."""
    P = _random_hands(32, seed=7)
    z = P[..., 2]
    d = K[0, 0] * (z - z[:, :1]) / z[:, 9:10] + 3.0
    uvd = np.concatenate([project_perspective(P, K), d[..., None]], -1)
    B = np.linalg.norm(P[:, 9] - P[:, 0], axis=-1)
    joints, z_root = lifting.perspective_lift_pixel_depth(uvd, K, B)
    assert joints.shape == (32, 21, 3) and z_root.shape == (32,)
    np.testing.assert_allclose(joints, P, atol=1e-9)


def test_lifting_exact_on_the_hand_model():
    """Projections of the posed hand model: perspective to ~1e-6 m, weak perspective exact."""
    torch = pytest.importorskip("torch")
    from engine.hand_model import load_hand_model
    from engine.hand_model.torch_layer import HandLayer
    from engine.hand_module.iknet import keypoint_model, sample_training_batch

    model = load_hand_model(side="right")
    layer = HandLayer(keypoint_model(model), dtype=torch.float64)
    _, _, kp = sample_training_batch(layer, model, 64, torch.Generator().manual_seed(4))
    rng = np.random.default_rng(4)
    wrist = np.stack([rng.uniform(-0.2, 0.2, 64), rng.uniform(-0.1, 0.1, 64), rng.uniform(0.3, 1.0, 64)], -1)
    P = kp.numpy() + wrist[:, None]
    d, B = _normalized(P)
    rays = np.linalg.solve(K, np.concatenate([project_perspective(P, K), np.ones((64, 21, 1))], -1)[..., None])[..., 0]
    unique = np.abs(d[:, 0]) < 0.99 / np.linalg.norm(rays[:, 0], axis=-1)  # one positive root (see solve_root_depth)
    joints, _ = lifting.perspective_lift(project_perspective(P, K), d, K, B)
    np.testing.assert_allclose(joints[unique], P[unique], atol=1e-6)
    assert unique.sum() > 50
    s_m = rng.uniform(800, 3000, 64)
    uv = _weak_camera(P, s_m, rng.uniform(0, 500, (64, 2)))
    joints, s, fallback = lifting.weak_perspective_lift(uv, d, lifting.pair_ratios(P, lifting.PALM_PAIRS))
    np.testing.assert_allclose(joints, (P - P[:, 9:10]) / B[:, None, None], atol=1e-9)
    np.testing.assert_allclose(s, s_m * B, rtol=1e-9)
