"""Key reduction, Euler angles and anatomical frames: the add-on's pure math (numpy, no scene)."""

import numpy as np
import pytest

from handtailor_blender import anatomy, poses, reduce


def _signal(M=200, seed=0, noise=0.0):
    """(frames (M,), values (M, 3)) in metres: smooth motion of a few cm (+ noise), with a gap in the frames."""
    rng = np.random.default_rng(seed)
    frames = np.arange(M, dtype=float) + 1
    frames[M // 2:] += 7  # untracked frames in between
    t = frames / 20.0
    v = 0.02 * np.stack([np.sin(t), 0.5 * np.cos(1.7 * t), 0.2 * t], -1) + noise * rng.normal(size=(M, 3))
    return frames, v


@pytest.mark.parametrize("interpolation", ["BEZIER", "LINEAR", "CONSTANT"])
@pytest.mark.parametrize("noise", [0.0, 0.0002])
def test_vector_reduction_keeps_tolerance(interpolation, noise):
    frames, v = _signal(noise=noise)
    tol = 0.5  # mm, values in m
    red = reduce.reduce_keys(frames, v, tol, "vector", interpolation=interpolation, scale=1000.0)
    got = reduce.evaluate(red.frames, red.values, red.slopes, frames, interpolation)
    err = reduce.vector_error(v, got, 1000.0)
    assert err.max() <= tol and len(red.frames) < len(frames)
    assert red.frames[0] == frames[0] and red.frames[-1] == frames[-1]
    np.testing.assert_array_equal(red.values, v[red.index])  # keys sit on samples, exactly


def test_bezier_needs_fewer_keys_than_linear_on_smooth_motion():
    frames, v = _signal()
    n = {i: len(reduce.reduce_keys(frames, v, 0.2, "vector", interpolation=i, scale=1000.0).frames)
         for i in ("BEZIER", "LINEAR")}
    assert n["BEZIER"] < n["LINEAR"] / 2


def test_quaternion_and_euler_reduction_keep_degrees():
    rng = np.random.default_rng(1)
    M = 150
    frames = np.arange(M, dtype=float)
    aa = np.cumsum(rng.normal(scale=0.03, size=(M, 3)), 0)
    ang = np.linalg.norm(aa, axis=-1, keepdims=True)
    q = poses.continuous_signs(np.concatenate([np.cos(ang / 2), np.sin(ang / 2) * aa / np.maximum(ang, 1e-12)], -1))
    red = reduce.reduce_keys(frames, q, 0.5, "quaternion")
    got = reduce.evaluate(red.frames, red.values, red.slopes, frames, "BEZIER")
    assert reduce.quat_angle_error(q, got).max() <= 0.5 and len(red.frames) < M
    e = poses.continuous_eulers(poses.rotmat_to_euler(poses.quat_to_rotmat(q), "XYZ"), "XYZ")
    red = reduce.reduce_keys(frames, e, 0.5, "euler_XYZ")
    got = reduce.evaluate(red.frames, red.values, red.slopes, frames, "BEZIER")
    assert reduce.euler_angle_error(e, got, "XYZ").max() <= 0.5 and len(red.frames) < M


def test_zero_tolerance_required_keys_and_constants():
    frames, v = _signal(M=40, noise=0.0002)
    assert len(reduce.reduce_keys(frames, v, 0.0, "vector").frames) == 40
    req = np.zeros(40, bool)
    req[[5, 17]] = True
    red = reduce.reduce_keys(frames, v, 5.0, "vector", scale=1000.0, required=req)
    assert {5, 17} <= set(red.index.tolist())
    const = np.tile([1.0, 2.0], (30, 1))
    red = reduce.reduce_keys(np.arange(30.0), const, 0.0, "vector")
    assert len(red.frames) == 1 and reduce.evaluate(red.frames, red.values, red.slopes, [3.0, 29.0]).tolist() == \
        [[1.0, 2.0], [1.0, 2.0]]


def test_handles_are_aligned_thirds():
    frames, v = _signal(M=60)
    red = reduce.reduce_keys(frames, v, 0.3, "vector", scale=1000.0)
    left, right = red.handles()
    assert left.shape == right.shape == (len(red.frames), 3, 2)
    h = np.diff(red.frames)
    np.testing.assert_allclose(right[:-1, 0, 0] - red.frames[:-1], h / 3)
    np.testing.assert_allclose(red.frames[1:] - left[1:, 0, 0], h / 3)
    # both handles of a key on one line through it (aligned)
    sl = (red.values - left[..., 1]) / (red.frames[:, None] - left[..., 0])
    sr = (right[..., 1] - red.values) / (right[..., 0] - red.frames[:, None])
    np.testing.assert_allclose(sl, sr, atol=1e-9)


@pytest.mark.parametrize("order", poses.EULER_ORDERS)
def test_euler_round_trip_and_continuity(order):
    rng = np.random.default_rng(2)
    aa = np.cumsum(rng.normal(scale=0.2, size=(300, 3)), 0)  # wanders through every angle
    ang = np.linalg.norm(aa, axis=-1, keepdims=True)
    q = np.concatenate([np.cos(ang / 2), np.sin(ang / 2) * aa / np.maximum(ang, 1e-12)], -1)
    R = poses.quat_to_rotmat(q)
    raw = poses.rotmat_to_euler(R, order)
    e = poses.continuous_eulers(raw, order)
    np.testing.assert_allclose(poses.euler_to_rotmat(e, order), R, atol=1e-9)
    assert np.abs(np.diff(raw, axis=0)).max() > 4.0  # the plain conversion wraps around
    assert np.abs(np.diff(e, axis=0)).max() < 2.0  # the continuous one does not


def test_frames_mirror_between_hands_and_bend_about_x():
    """The left hand's frames are the X-mirror of the right's with x negated (Blender's symmetrize), and a
    rotation about a finger's x moves it toward the palm on both hands."""
    from blender_helpers import _joint_layout

    J, tips = _joint_layout()
    M = np.diag([-1.0, 1.0, 1.0])
    FR = anatomy.bone_frames(J, anatomy.skeleton_ends(J, tips), "right")
    FL = anatomy.bone_frames(J @ M, anatomy.skeleton_ends(J @ M, tips @ M), "left")
    np.testing.assert_allclose(FL, M @ FR @ np.diag([-1.0, 1.0, 1.0]), atol=1e-12)
    for side, F, Jh in (("right", FR, J), ("left", FL, J @ M)):
        palmar = anatomy.palm_axes(Jh, side)[2]
        for j in (1, 5, 8, 11):  # a positive turn about x: y gains a palmar component
            x, y = F[j][:, 0], F[j][:, 1]
            y2 = np.cos(0.3) * y + np.sin(0.3) * np.cross(x, y)
            assert (y2 - y) @ palmar > 0, (side, j)
    assert np.allclose(np.einsum("jab,jac->jbc", FR, FR), np.eye(3), atol=1e-12)  # orthonormal


def test_documented_shapes():
    """Each array function's output has the shape its docstring gives."""
    from blender_helpers import _joint_layout
    from handtailor_blender import retarget

    rng = np.random.default_rng(0)
    N, K, C = 7, 4, 3
    frames = np.arange(N, dtype=float)
    v = rng.normal(size=(N, C))
    idx = np.array([0, 2, 4, 6])
    s = reduce.fit_slopes(frames, v, idx)
    assert s.shape == (K, C)
    left, right = reduce.bezier_handles(frames[idx], v[idx], s)
    assert left.shape == right.shape == (K, C, 2)
    assert reduce.evaluate(frames[idx], v[idx], s, frames).shape == (N, C)
    assert reduce.group_error("vector", v, v).shape == (N,)
    J, tips = _joint_layout()
    ends = anatomy.skeleton_ends(J, tips)
    F = anatomy.bone_frames(J, ends, "right")
    assert ends.shape == (16, 3) and F.shape == (16, 3, 3)
    assert anatomy.flexion(np.stack([J] * N), np.stack([ends] * N), "right").shape == (N, 5)
    R = poses.quat_to_rotmat(poses.quat_normalize(rng.normal(size=(N, 16, 4))))
    theta = retarget.local_rotations(R, F)
    assert theta.shape == (N, 16, 3, 3)
    G = retarget.relative_frames(theta, F)
    assert G.shape == (N, 16, 3, 3)
    assert retarget.finger_bases(G, F, F, [1, 2, 13]).shape == (N, 3, 3, 3)
    assert retarget.wrist_basis(R[:, 0], R[:, 1], F[0], F[1], F[2]).shape == (N, 3, 3)
    assert retarget.to_channels(R[:, 0], "QUATERNION").shape == (N, 4)
    assert retarget.to_channels(R[:, 0], "ZXY").shape == (N, 3)
    assert poses.rotmat_to_euler(R, "XYZ").shape == (N, 16, 3)
    assert poses.euler_to_rotmat(np.zeros((N, 16, 3)), "XYZ").shape == (N, 16, 3, 3)
    assert poses.continuous_eulers(np.zeros((N, 16, 3))).shape == (N, 16, 3)
    # a take whose rest equals the character's gives the take's own bases back
    np.testing.assert_allclose(retarget.finger_bases(G, F, F, [5])[:, 0], R[:, 5], atol=1e-9)
