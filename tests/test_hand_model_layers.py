"""The two posing backends: our JAX LBS equals smplx's MANO layer within 1e-6 m (float64 on both sides),
documented output shapes, rotation helpers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

from jax.experimental import enable_x64  # noqa: E402

from engine.hand_model import MANO_PARENTS, load_hand_model  # noqa: E402
from engine.hand_model import jax_layer as jl  # noqa: E402
from engine.hand_model import torch_layer as tl  # noqa: E402
from engine.hand_model.loading import build_hand_model  # noqa: E402

TOL_M = 1e-6  # the requirement: jax == smplx within 1e-6 m


def random_model(n_vertices=60, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.random((n_vertices, 16)) ** 3
    weights /= weights.sum(axis=1, keepdims=True)
    regressor = rng.random((16, n_vertices))
    regressor /= regressor.sum(axis=1, keepdims=True)
    ids = np.arange(n_vertices)
    fields = dict(
        v_template=rng.normal(size=(n_vertices, 3)) * 0.05,
        f=np.stack([ids, (ids + 1) % n_vertices, (ids + 2) % n_vertices], axis=1),
        J_regressor=regressor,
        weights=weights,
        kintree_table=np.stack([MANO_PARENTS, np.arange(16)]),
        shapedirs=rng.normal(size=(n_vertices, 3, 10)) * 0.01,
        posedirs=rng.normal(size=(n_vertices, 3, 135)) * 0.01,
        tip_vertex_ids=np.array([3, 9, 17, 30, 44]),
    )
    return build_hand_model(fields, side="right")


def random_inputs(batch, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    quat = rng.normal(size=(batch, 16, 4))
    quat[..., 0] += 2.0 / scale  # mostly moderate rotations, some large
    beta = rng.normal(size=(batch, 10)) * 1.5
    root = rng.normal(size=(batch, 3))
    root[:, 2] += 0.6
    hand_scale = rng.uniform(0.7, 1.4, size=batch)
    return quat, beta, root, hand_scale


@jax.jit
def _jax_all(params, quat, beta, root, hand_scale):
    """Everything the JAX layer computes, in one compiled function (compiling is the slow part on CPU)."""
    rot = jl.quat_to_rotmat(quat)
    verts, kps, joints = jl.pose(params, rot, beta, root, hand_scale)
    return verts, kps, joints, jl.keypoints(params, rot, beta, root, hand_scale), jl.vertices(params, rot, beta, root, hand_scale)


def _compare(model, batch=4, seed=0):
    quat, beta, root, hand_scale = random_inputs(batch, seed)
    layer = tl.HandLayer(model, dtype=torch.float64)
    with torch.no_grad():
        v_t, k_t, j_t = (x.numpy() for x in layer(*(torch.from_numpy(a) for a in (quat, beta, root, hand_scale))))
    with enable_x64():
        params = jl.prepare(model)
        assert params.J0.dtype == np.float64
        v_j, k_j, j_j, k_fast, v_only = (np.asarray(x) for x in _jax_all(params, quat, beta, root, hand_scale))
    return dict(v=(v_t, v_j), k=(k_t, k_j), j=(j_t, j_j), kfast=(k_t, k_fast), vonly=(v_t, v_only))


@pytest.mark.parametrize("seed", [0, 1])
def test_jax_equals_smplx_on_a_random_model(seed):
    pairs = _compare(random_model(seed=seed), seed=seed)
    for name, (a, b) in pairs.items():
        assert a.shape == b.shape, name
        assert np.abs(a - b).max() < TOL_M, (name, np.abs(a - b).max())


def test_jax_equals_smplx_on_the_shipped_models():
    for side in ("right", "left"):
        model = load_hand_model(side=side)
        pairs = _compare(model, batch=4, seed=7)
        for name, (a, b) in pairs.items():
            assert np.abs(a - b).max() < TOL_M, (side, name, np.abs(a - b).max())


@pytest.mark.parametrize("batch", [3, 70])  # one padded chunk; a full chunk and a padded one
def test_model_keypoints_are_smplx_s_keypoints(batch):
    """`engine.tailor.posing.model_keypoints`, how the hand module and re-tailor pose the model without torch:
    the reference layer's keypoints within float32 rounding, with and without root and hand_scale."""
    from engine.tailor.posing import model_keypoints

    for side in ("right", "left"):
        model = load_hand_model(side=side)
        quat, beta, root, hand_scale = random_inputs(batch, seed=batch)
        quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
        layer = tl.HandLayer(model, dtype=torch.float64)
        with torch.no_grad():
            _, placed, _ = layer(*(torch.from_numpy(a) for a in (quat, beta, root, hand_scale)))
            _, at_origin, _ = layer(torch.from_numpy(quat), torch.from_numpy(beta))
        got = model_keypoints(model, quat, beta, root, hand_scale)
        assert got.shape == (batch, 21, 3) and got.dtype == np.float64
        np.testing.assert_allclose(got, placed.numpy(), atol=TOL_M, rtol=0)
        np.testing.assert_allclose(model_keypoints(model, quat, beta), at_origin.numpy(), atol=TOL_M, rtol=0)


def test_posing_contract():
    """X_camera = root + hand_scale * (X_lbs - J(beta)[0]); tips are the tip vertices; flat pose = template."""
    model = random_model(seed=4)
    layer = tl.HandLayer(model, dtype=torch.float64)
    quat, beta, root, s = random_inputs(3, seed=2)
    args = [torch.from_numpy(a) for a in (quat, beta, root, s)]
    with torch.no_grad():
        v, k, j = layer(*args)
        v0, k0, j0 = layer(args[0], args[1])  # root None = origin, hand_scale None = 1
    np.testing.assert_allclose(k[:, 0].numpy(), root, atol=1e-12)  # the wrist lands on root
    np.testing.assert_allclose(v.numpy(), root[:, None] + s[:, None, None] * v0.numpy(), atol=1e-12)
    tips = v[:, np.array(model.tip_vertex_ids)].numpy()
    np.testing.assert_allclose(k[:, [4, 8, 12, 16, 20]].numpy(), tips, atol=1e-12)
    flat = np.zeros((1, 16, 4))
    flat[..., 0] = 1.0
    with torch.no_grad():
        vf, kf, jf = layer(torch.from_numpy(flat), torch.from_numpy(beta[:1]))
    shaped = model.shaped_vertices(beta[0])
    rest_j = model.rest_joints(beta[0])
    np.testing.assert_allclose(vf[0].numpy(), shaped - rest_j[0], atol=1e-12)
    np.testing.assert_allclose(jf[0].numpy(), rest_j - rest_j[0], atol=1e-12)


def test_documented_output_shapes():
    model = random_model()
    B, V = 5, model.n_vertices
    quat, beta, root, s = random_inputs(B, seed=3)
    params = jl.prepare(model)
    assert params.J0.shape == (16, 3) and params.Jdirs.shape == (16, 3, 10)
    assert params.tip_template.shape == (5, 3) and params.tip_shapedirs.shape == (5, 3, 10)
    assert params.tip_posedirs.shape == (5, 3, 135) and params.tip_weights.shape == (5, 16)
    f32 = jax.ShapeDtypeStruct
    rot = f32((B, 16, 3, 3), np.float32)
    beta_s, root_s, s_s = f32((B, 10), np.float32), f32((B, 3), np.float32), f32((B,), np.float32)

    def shape(fn, *args):
        return jax.eval_shape(fn, *args).shape  # traced, not compiled: shapes are what the docstrings say

    assert shape(jl.quat_to_rotmat, f32((B, 16, 4), np.float32)) == (B, 16, 3, 3)
    assert shape(jl.keypoints, params, rot, beta_s, root_s, s_s) == (B, 21, 3)
    assert shape(lambda p, r, b: jl.keypoints(p, r, b, None, None), params, rot, beta_s) == (B, 21, 3)
    assert shape(jl.vertices, params, rot, beta_s, root_s, s_s) == (B, V, 3)
    v, k, j = jax.eval_shape(jl.pose, params, rot, beta_s, root_s, s_s)
    assert (v.shape, k.shape, j.shape) == ((B, V, 3), (B, 21, 3), (B, 16, 3))
    assert v.dtype == np.float32
    assert shape(jl.rest_joints, params, beta_s) == (B, 16, 3)
    assert shape(jl.rotmat_to_quat, rot) == (B, 16, 4)
    assert shape(jl.axis_angle_to_rotmat, f32((B, 16, 3), np.float32)) == (B, 16, 3, 3)
    assert shape(jl.rotmat_to_axis_angle, rot) == (B, 16, 3)
    wr, po = jax.eval_shape(jl.forward_kinematics, rot, f32((B, 16, 3), np.float32))
    assert (wr.shape, po.shape) == ((B, 16, 3, 3), (B, 16, 3))
    layer = tl.HandLayer(model)
    vt, kt, jt = layer(torch.from_numpy(quat).float(), torch.from_numpy(beta).float(), torch.from_numpy(root).float(),
                       torch.from_numpy(s).float())
    assert (vt.shape, kt.shape, jt.shape) == ((B, V, 3), (B, 21, 3), (B, 16, 3))
    assert vt.dtype == torch.float32
    assert layer.faces.shape == (model.n_faces, 3)
    assert tl.quat_to_rotmat(torch.from_numpy(quat)).shape == (B, 16, 3, 3)
    assert tl.rotmat_to_quat(torch.eye(3).expand(B, 16, 3, 3)).shape == (B, 16, 4)
    assert tl.axis_angle_to_rotmat(torch.zeros(B, 3)).shape == (B, 3, 3)
    assert tl.rotmat_to_axis_angle(torch.eye(3).expand(B, 3, 3)).shape == (B, 3)
    assert tl.axis_angle_to_quat(torch.zeros(B, 16, 3)).shape == (B, 16, 4)


def test_rotation_helpers_agree():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(200, 3))
    aa *= (rng.uniform(0, np.pi - 1e-3, size=(200, 1)) / np.linalg.norm(aa, axis=1, keepdims=True))
    aa[:3] = [[0, 0, 0], [1e-9, 0, 0], [0, 0, np.pi - 1e-6]]

    @jax.jit
    def chain(aa):
        R = jl.axis_angle_to_rotmat(aa)
        q = jl.rotmat_to_quat(R)
        return R, q, jl.quat_to_rotmat(q), jl.rotmat_to_axis_angle(R)

    with enable_x64():
        R, q, R_back, aa_back = (np.array(x) for x in chain(jax.numpy.asarray(aa)))
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(R_back, R, atol=1e-9)
    np.testing.assert_allclose(aa_back[:2], aa[:2], atol=1e-9)
    np.testing.assert_allclose(aa_back[3:], aa[3:], atol=1e-7)
    Rt = tl.axis_angle_to_rotmat(torch.from_numpy(aa)).numpy()
    np.testing.assert_allclose(Rt, R, atol=1e-12)
    qt = tl.axis_angle_to_quat(torch.from_numpy(aa))
    np.testing.assert_allclose(tl.quat_to_rotmat(qt).numpy(), R, atol=1e-12)
    np.testing.assert_allclose(tl.rotmat_to_quat(torch.from_numpy(R)).numpy(), q, atol=1e-9)
    np.testing.assert_allclose(tl.rotmat_to_axis_angle(torch.from_numpy(R)).numpy()[3:], aa[3:], atol=1e-7)


def test_jax_gradients_are_finite_at_the_identity():
    model = random_model()
    params = jl.prepare(model)

    def loss(aa, beta):
        rot = jl.axis_angle_to_rotmat(aa)
        return jax.numpy.sum(jl.keypoints(params, rot, beta, None, None) ** 2)

    g_aa, g_beta = jax.jit(jax.grad(loss, argnums=(0, 1)))(jax.numpy.zeros((2, 16, 3)), jax.numpy.zeros((2, 10)))
    assert np.all(np.isfinite(g_aa)) and np.all(np.isfinite(g_beta))
    assert np.abs(g_aa).max() > 0
