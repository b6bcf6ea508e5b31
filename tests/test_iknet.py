"""IKNet: shapes, the keypoint-only model, left-hand mirroring, the shipped weights' held-out accuracy."""

import numpy as np
import pytest
import torch

from engine.errors import ModelFileError
from engine.hand_model import load_hand_model
from engine.hand_model.torch_layer import HandLayer, quat_to_rotmat
from engine.hand_module import iknet as ik
from engine.hand_module import iknet_numpy


@pytest.fixture(scope="module")
def right():
    return load_hand_model(side="right")


@pytest.fixture(scope="module")
def left():
    return load_hand_model(side="left")


def test_forward_shapes_unit_quaternions():
    net = ik.IKNet(hidden=(32, 32)).eval()
    q = net(torch.randn(5, 21, 3))
    assert q.shape == (5, 16, 4)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(5, 16))
    assert bool((q[..., 0] >= 0).all())


def test_keypoint_model_equals_full_model(right):
    full = HandLayer(right, dtype=torch.float64)
    small = HandLayer(ik.keypoint_model(right), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    theta, beta, kp = ik.sample_training_batch(full, right, 32, gen)
    torch.testing.assert_close(small(theta, beta)[1], kp, atol=1e-12, rtol=0)


def test_sampled_poses_respect_limits(right):
    gen = torch.Generator().manual_seed(1)
    theta = ik.sample_poses(right.joint_limits, 500, gen, torch.float64)
    lim = torch.as_tensor(np.array(right.joint_limits))
    assert float(ik.limit_excess(theta, lim).max()) < 1e-6
    assert not bool(ik.limit_violations(theta, right.joint_limits, tol=1e-6).any())


def test_mirroring_scheme_on_the_shipped_models(right, left):
    """left model posed with mirrored theta == x-mirror of the right model's keypoints (same beta)."""
    lr, ll = HandLayer(right, dtype=torch.float64), HandLayer(left, dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    theta, beta, kp_right = ik.sample_training_batch(lr, right, 16, gen)
    _, kp_left, _ = ll(ik.mirror_quaternions(theta), beta)
    torch.testing.assert_close(kp_left, ik.mirror_joints(kp_right), atol=1e-9, rtol=0)
    # Rotation algebra: quat(M R M) == mirror_quaternions(quat(R)).
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    R = quat_to_rotmat(theta)
    torch.testing.assert_close(quat_to_rotmat(ik.mirror_quaternions(theta)), M @ R @ M)


def test_mirrored_net_and_rotation_equivariance():
    torch.manual_seed(0)
    net = ik.IKNet(hidden=(32, 32), palm_template=torch.randn(6, 3)).eval()
    x = torch.randn(4, 21, 3)
    with torch.no_grad():
        torch.testing.assert_close(ik.MirroredIKNet(net)(ik.mirror_joints(x)), ik.mirror_quaternions(net(x)))
        # The canonical frame makes IKNet exactly equivariant to a global rotation of its input.
        q = ik.random_rotations(1, torch.Generator().manual_seed(3))
        R = quat_to_rotmat(q)[0]
        out, out_rot = net(x), net(x @ R.T)
        torch.testing.assert_close(out_rot[:, 1:], out[:, 1:], atol=1e-4, rtol=0)
        r0, r1 = quat_to_rotmat(out[:, 0]), quat_to_rotmat(out_rot[:, 0])
        torch.testing.assert_close(r1, R @ r0, atol=1e-4, rtol=0)


@pytest.mark.parametrize("load", [ik.load_iknet, iknet_numpy.load_iknet_arrays], ids=["torch", "numpy"])
def test_load_errors(tmp_path, load):
    with pytest.raises(ModelFileError):
        load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError):
        load(bad)
    from safetensors.numpy import save_file  # an IKNet's file with a layer missing

    state, _ = iknet_numpy.read_iknet_state()
    save_file({k: v for k, v in state.items() if not k.startswith("head.")}, str(tmp_path / "headless.safetensors"))
    with pytest.raises(ModelFileError, match="does not hold IKNet weights"):
        load(tmp_path / "headless.safetensors")


def test_numpy_inference_is_the_torch_network(right, left):
    """What a capture runs (the shipped weights on numpy, no torch) gives the torch module's theta: both sides
    (the left one through the mirror), any batch, palms in every orientation."""
    for model in (right, left):
        layer = HandLayer(ik.keypoint_model(model))
        _, _, kp = ik.sample_training_batch(layer, model, 1500, torch.Generator().manual_seed(7))
        x = ik.normalize_joints(kp).numpy()
        q_torch = ik.predict_theta(ik.load_iknet(side=model.side), x)
        q_numpy = iknet_numpy.predict_theta(iknet_numpy.load_iknet_arrays(side=model.side), x, batch_size=600)
        assert q_numpy.shape == (1500, 16, 4) and q_numpy.dtype == np.float64
        np.testing.assert_allclose(q_numpy, q_torch, atol=2e-6, rtol=0)  # float32 rounding only
    assert iknet_numpy.predict_theta(iknet_numpy.load_iknet_arrays(), np.zeros((0, 21, 3))).shape == (0, 16, 4)


def test_numpy_inference_does_not_depend_on_the_blas_threads():
    """A batch's local and Ray workers (Ray sets OMP_NUM_THREADS=1) must give the same theta to the last bit:
    OpenBLAS on two threads rounds a product differently, and the fit carries that difference to 1e-3."""
    from threadpoolctl import threadpool_limits

    net = iknet_numpy.load_iknet_arrays()
    x = np.random.default_rng(0).normal(size=(621, 21, 3)).astype(np.float32)
    with threadpool_limits(limits=2, user_api="blas"):
        two = iknet_numpy.predict_theta(net, x)
    with threadpool_limits(limits=1, user_api="blas"):
        one = iknet_numpy.predict_theta(net, x)
    assert np.array_equal(one, two)


def test_shipped_weights_heldout(right, left):
    """The shipped network on held-out poses: MPJPE (true beta) and joint-limit violations, both sides."""
    if not ik.weights_path("right").is_file():
        pytest.fail("models/iknet/iknet_right.safetensors is missing: run models/iknet/train_iknet.py")
    for model in (right, left):
        net = ik.load_iknet(side=model.side)
        layer = HandLayer(ik.keypoint_model(model))
        gen = torch.Generator().manual_seed(123)
        theta, beta, kp = ik.sample_training_batch(layer, model, 300, gen)
        with torch.no_grad():
            q = net(ik.normalize_joints(kp))
            _, kp_pred, _ = layer(q, beta)
        mpjpe_mm = float((kp_pred - kp).norm(dim=-1).mean()) * 1000
        assert mpjpe_mm < 6.0, (model.side, mpjpe_mm)
        viol = float(ik.limit_violations(q, model.joint_limits, tol=0.1).float().mean())
        assert viol < 0.05, (model.side, viol)
    theta_np = ik.predict_theta(net, ik.normalize_joints(kp).numpy())
    assert theta_np.shape == (300, 16, 4) and theta_np.dtype == np.float64
