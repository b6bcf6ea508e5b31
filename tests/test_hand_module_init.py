"""hand_module.fit_init: the contract, and lifting + shape + IKNet on synthetic ground truth (sane bounds)."""

import pathlib
import sys

import numpy as np
import pytest

from engine.camera import project_perspective
from engine.errors import InputError
from engine.hand_model import load_hand_model
from engine.hand_module import hand_module
from engine.hand_module.iknet import mirror_joints, mirror_quaternions

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "models" / "iknet"))
import eval_lifting_iknet as ev  # noqa: E402


@pytest.fixture(scope="module")
def right():
    return load_hand_model(side="right")


@pytest.fixture(scope="module")
def synthetic(right):
    theta, beta, gt, K = ev.synthetic_hands(right, 40, seed=5)
    uvd, world = ev.observations(gt, K, seed=5)
    return theta, beta, gt, K, uvd, world


def test_contract_shapes_and_placement(right, synthetic):
    _, _, gt, K, uvd, world = synthetic
    for camera in ("perspective", "weak_perspective"):
        out = hand_module.fit_init(uvd, None, world, camera, K, right)
        n = len(gt)
        shapes = {"theta": (n, 16, 4), "beta": (n, 10), "root": (n, 3), "hand_scale": (n,),
                  "projection_scale": (n,), "joints_3d_lifted": (n, 21, 3), "joints_3d_model": (n, 21, 3)}
        for key, shape in shapes.items():
            assert out[key].shape == shape, key
        assert np.all(np.isfinite(out["theta"])) and np.all(out["hand_scale"] == 1.0)
        np.testing.assert_allclose(np.linalg.norm(out["theta"], axis=-1), 1.0, atol=1e-6)
        if camera == "perspective":
            assert np.all(np.isnan(out["projection_scale"]))
        else:
            assert np.all(out["projection_scale"] > 0)
        # joints_3d_model is the posed model at root: its wrist is the root.
        np.testing.assert_allclose(out["joints_3d_model"][:, 0], out["root"], atol=1e-9)
        model_kp = hand_module.pose_keypoints(right, out["theta"], out["beta"])
        np.testing.assert_allclose(out["joints_3d_model"], model_kp + out["root"][:, None], atol=1e-9)
        # The lifted joints lie on the keypoints' rays (weak perspective: under the nominal camera K).
        np.testing.assert_allclose(project_perspective(out["joints_3d_lifted"], K), uvd[..., :2], atol=1e-6)
        # The init lands near the detected 2D keypoints (K is the nominal camera of the synthetic images).
        px = np.linalg.norm(project_perspective(out["joints_3d_model"], K) - uvd[..., :2], axis=-1)
        assert np.median(px) < 25.0, (camera, float(np.median(px)))


def test_invalid_frames_steady_shape_and_errors(right, synthetic):
    _, _, _, K, uvd, world = synthetic
    uvd = uvd.copy()
    uvd[3, 5] = np.nan
    out = hand_module.fit_init(uvd, np.ones((len(uvd), 21)), world, "perspective", K, right, steady_shape=True)
    assert not out["valid"][3] and out["valid"].sum() == len(uvd) - 1
    assert np.all(np.isnan(out["theta"][3])) and np.all(np.isnan(out["root"][3]))
    b = out["beta"][out["valid"]]
    np.testing.assert_allclose(b, np.repeat(b[:1], len(b), 0))
    with pytest.raises(InputError):
        hand_module.fit_init(uvd, None, world, "perspective", None, right)
    with pytest.raises(InputError):
        hand_module.fit_init(uvd, None, None, "weak_perspective", K, right, depth_source="hybrid")
    with pytest.raises(InputError):
        hand_module.fit_init(uvd[:, :20], None, world, "weak_perspective", K, right)


def test_left_hand_is_the_mirror_of_the_right(right, synthetic):
    """A left track (x-mirrored observations about the principal point) gives the mirrored init."""
    _, _, _, K, uvd, world = synthetic
    left = load_hand_model(side="left")
    uvd_l = uvd.copy()
    uvd_l[..., 0] = 2 * K[0, 2] - uvd[..., 0]
    out_r = hand_module.fit_init(uvd, None, world, "perspective", K, right)
    out_l = hand_module.fit_init(uvd_l, None, mirror_joints(world), "perspective", K, left)
    np.testing.assert_allclose(out_l["joints_3d_model"], mirror_joints(out_r["joints_3d_model"]), atol=1e-4)
    np.testing.assert_allclose(out_l["theta"], mirror_quaternions(out_r["theta"]), atol=1e-4)


def test_synthetic_ground_truth_bounds():
    """Must-show figures at small n: after lifting and after IKNet, both camera models (see PROVENANCE.md)."""
    res = ev.run_eval(n=60, seed=1, conditions=("mediapipe_like_d",), depth_sources=("uvd", "hybrid"))
    block = res["mediapipe_like_d"]
    for camera in ("perspective", "weak_perspective"):
        for src in ("uvd", "hybrid"):
            r = block[f"{camera}/{src}"]
            assert r["all_finite"]
            assert r["lifted"]["pa_mpjpe_mm"] < 20.0, (camera, src, r)
            assert r["model"]["pa_mpjpe_mm"] < 20.0, (camera, src, r)
            assert r["model"]["rr_mpjpe_mm"] < 35.0, (camera, src, r)
    for camera in ("perspective", "weak_perspective"):
        r = res["noise_free"][f"{camera}/uvd"]
        assert r["lifted"]["pa_mpjpe_mm"] < 5.0 and r["model"]["pa_mpjpe_mm"] < 8.0, (camera, r)


def test_shape_fit(right):
    """beta from bone ratios: documented shapes, exact ratios are fitted, steady gives one row, bad frames."""
    from engine.hand_module import shape

    rest = shape.rest_keypoints(right)
    assert rest.k0.shape == (21, 3) and rest.kdirs.shape == (21, 3, 10)
    rng = np.random.default_rng(0)
    beta_true = rng.normal(size=(6, 10))
    kp = shape.keypoints_at(rest, beta_true)
    assert kp.shape == (6, 21, 3) and shape.reference_bone_length(rest, beta_true).shape == (6,)
    # Rest keypoints agree with the posed model at the rest pose (posed in float32: to its rounding).
    theta0 = np.tile(np.array([1.0, 0, 0, 0]), (6, 16, 1))
    posed = hand_module.pose_keypoints(right, theta0, beta_true)
    np.testing.assert_allclose(posed - posed[:, :1], kp - kp[:, :1], atol=1e-7)
    beta = shape.fit_shape(kp * 7.0, rest=rest, sigma=1e-4)  # any scale: only ratios count
    assert beta.shape == (6, 10)
    ratios = shape.pair_ratios(shape.keypoints_at(rest, beta), shape.RIGID_PAIRS)
    np.testing.assert_allclose(ratios, shape.pair_ratios(kp, shape.RIGID_PAIRS), atol=5e-4)
    # The prior pulls towards 0 when the data are weighted down.
    assert np.abs(shape.fit_shape(kp, rest=rest, sigma=10.0)).max() < 0.05
    bad = kp.copy()
    bad[2, 4] = np.nan
    steady = shape.fit_shape(bad, rest=rest, steady=True)
    np.testing.assert_allclose(steady, np.repeat(steady[:1], 6, 0))
    per_frame = shape.fit_shape(bad, rest=rest)
    np.testing.assert_allclose(per_frame[2], 0.0)
