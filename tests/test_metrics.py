"""engine.metrics against hand-computed values."""

import numpy as np
import pytest

from engine import metrics


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_procrustes_recovers_similarity_exactly():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, 21, 3))
    rot = _rot_z(0.7) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0.0]])
    gt = 2.5 * pred @ rot.T + np.array([0.1, -0.2, 0.3])
    aligned = metrics.procrustes_align(pred, gt)
    assert aligned.shape == (2, 21, 3)
    np.testing.assert_allclose(aligned, gt, atol=1e-12)
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, gt), [0.0, 0.0], atol=1e-12)
    # unbatched (K, 3)
    assert metrics.procrustes_align(pred[0], gt[0]).shape == (21, 3)


def test_rigid_alignment_keeps_scale():
    # gt = 2 x a rotated, shifted pred: the rigid alignment recovers rotation and translation but not the
    # size, so each point stays off by |p - centroid| (scale 2 vs 1); the similarity alignment is exact.
    rng = np.random.default_rng(2)
    pred = rng.normal(size=(1, 21, 3))
    rot = _rot_z(-1.1)
    gt = 2.0 * pred @ rot.T + np.array([0.5, 0.0, -0.2])
    centred = pred[0] - pred[0].mean(0)
    expect = np.linalg.norm(centred, axis=1)  # |2 R c - R c| = |c|
    np.testing.assert_allclose(metrics.joint_errors_3d(pred, gt, "rigid")[0], expect, atol=1e-12)
    np.testing.assert_allclose(metrics.joint_errors_3d(pred, gt, "procrustes")[0], 0.0, atol=1e-12)
    # a pure rigid motion is undone exactly
    np.testing.assert_allclose(metrics.joint_errors_3d(pred, pred @ rot.T + 1.0, "rigid"), 0.0, atol=1e-12)


def test_procrustes_hand_computed_residual():
    # pred on the x axis, gt the same two points plus one lifted by 3: best similarity is a pure shift by
    # (0, 1, 0) (mean of gt), scale 1: aligned = (-1,1,0), (1,1,0), (0,1,0); errors 1, 1, 2.
    pred = np.array([[-1.0, 0, 0], [1, 0, 0], [0, 0, 0]])
    gt = np.array([[-1.0, 0, 0], [1, 0, 0], [0, 3, 0]])
    np.testing.assert_allclose(metrics.procrustes_align(pred, gt), [[-1, 1, 0], [1, 1, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(metrics.pa_mpjpe(pred[None], gt[None]), [4.0 / 3.0], atol=1e-12)


def test_procrustes_refuses_reflection():
    # gt is pred mirrored in x: the best proper rotation cannot reach it, so the error is not zero.
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(1, 21, 3))
    gt = pred * np.array([-1.0, 1, 1])
    aligned = metrics.procrustes_align(pred, gt)
    r = np.linalg.lstsq(pred[0] - pred[0].mean(0), aligned[0] - aligned[0].mean(0), rcond=None)[0]
    assert np.linalg.det(r) > 0
    assert metrics.pa_mpjpe(pred, gt)[0] > 1e-3


def test_mpjpe_root_aligned_hand_computed():
    gt = np.zeros((1, 21, 3))
    gt[0, :, 0] = np.arange(21) * 0.01
    pred = gt + np.array([5.0, -2.0, 7.0])  # a global shift is removed by root alignment
    pred[0, 4] += np.array([0.003, 0.004, 0.0])  # one joint off by 5 mm
    np.testing.assert_allclose(metrics.mpjpe(pred, gt), [0.005 / 21], atol=1e-12)
    e = metrics.joint_errors_3d(pred, gt, "root")
    assert e.shape == (1, 21)
    np.testing.assert_allclose(e[0, 4], 0.005, atol=1e-12)
    # root other than the wrist
    np.testing.assert_allclose(metrics.mpjpe(pred, gt, root=9), [0.005 / 21], atol=1e-12)
    with pytest.raises(ValueError):
        metrics.joint_errors_3d(pred, gt, "bogus")


def test_2d_error_and_masked_mean():
    pred = np.array([[[0.0, 0], [3, 4]]])
    gt = np.zeros((1, 2, 2))
    e = metrics.joint_errors_2d(pred, gt)
    np.testing.assert_allclose(e, [[0.0, 5.0]])
    assert metrics.masked_mean(e) == pytest.approx(2.5)
    assert metrics.masked_mean(e, np.array([[False, True]])) == pytest.approx(5.0)
    assert np.isnan(metrics.masked_mean(e, np.zeros((1, 2), bool)))


def test_pck_per_keypoint_then_mean():
    errors = np.array([[1.0, 2, 3], [4, 5, 6]])
    assert metrics.pck(errors, 3.5) == pytest.approx(0.5)  # each keypoint 1 of 2
    mask = np.array([[True, True, True], [False, True, True]])
    # keypoint 0 only counts sample 0 (correct): (1 + 0.5 + 0.5) / 3
    assert metrics.pck(errors, 3.5, mask) == pytest.approx(2.0 / 3.0)
    # a threshold equal to an error counts it as correct
    assert metrics.pck(errors, 1.0) == pytest.approx(1.0 / 6.0)
    curve = metrics.pck_curve(errors, np.array([0.0, 3.5, 10.0]))
    np.testing.assert_allclose(curve, [0.0, 0.5, 1.0])
    assert np.isnan(metrics.pck(errors, 1.0, np.zeros_like(mask)))


def test_auc_hand_computed():
    # 3 thresholds 0, 1, 2 and every error exactly 1: PCK = 0, 1, 1 -> area (0.5 + 1) / 2 = 0.75
    errors = np.ones((4, 21))
    assert metrics.auc(errors, 0.0, 2.0, steps=3) == pytest.approx(0.75)
    assert metrics.auc(np.zeros((2, 21)), 0.020, 0.050) == pytest.approx(1.0)
    assert metrics.auc(np.full((2, 21), 1.0), 0.020, 0.050) == pytest.approx(0.0)
    # uniformly spread errors over [lo, hi]: the PCK curve is the identity -> AUC 1/2
    errs = np.linspace(0.005, 0.020, 100001)[:, None]
    assert metrics.auc(errs, 0.005, 0.020) == pytest.approx(0.5, abs=1e-3)


def test_auc_threshold_sampling():
    t = metrics.auc_thresholds(0.020, 0.050)
    assert t.shape == (metrics.DEFAULT_AUC_STEPS,) == (20,)
    assert t[0] == pytest.approx(0.020) and t[-1] == pytest.approx(0.050)
    assert t[1] - t[0] == pytest.approx(0.030 / 19)
    with pytest.raises(ValueError):
        metrics.auc_thresholds(0.05, 0.02)
