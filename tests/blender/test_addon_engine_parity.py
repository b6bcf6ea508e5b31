"""The Blender rig built from the shipped open hand model equals the engine's torch layer (smplx MANO)."""

import logging

import numpy as np
import pytest

import blender_helpers as helpers

bpy = pytest.importorskip("bpy")
torch = pytest.importorskip(
    "torch", reason="no torch in this venv (an older Blender's, see test.sh): the parity tests run under .venv")
torch_layer = pytest.importorskip("engine.hand_model.torch_layer")

from engine.hand_model import load_hand_model  # noqa: E402
from handtailor_blender import camera, keys, rig  # noqa: E402
from handtailor_blender.io.results import read_model, read_result  # noqa: E402
from blender_helpers import engine_result, evaluated_verts_camera  # noqa: E402


def test_open_model_mesh_equals_engine(blank, tmp_path):
    verts = engine_result(tmp_path / "r.npz")
    result = read_result(tmp_path / "r.npz")
    scene = bpy.context.scene
    camera.ensure_camera(scene, result.K, result.image_size)
    to_world = keys.to_world_matrix(scene)
    from handtailor_blender.io.results import resolve_model_path

    worst = 0.0
    rigs = []
    for t, side in enumerate(result.hand_side):
        model = read_model(resolve_model_path(result.hand_model[t], side, sha256=result.hand_model_sha256[t]), side)
        arm, mesh = rig.build_rig(model, f"HT_{side}")
        keys.key_take(arm, mesh, model, result, t, to_world=to_world)
        rigs.append(mesh)
    for n in range(result.num_frames):
        scene.frame_set(1 + n)
        for t, mesh in enumerate(rigs):
            worst = max(worst, np.abs(evaluated_verts_camera(mesh, to_world) - verts[t, n]).max())
    logging.getLogger(__name__).info("%s", ("open model mesh worst", worst))
    assert worst < 1e-4


def test_reference_lbs_equals_engine(models_dir):
    """helpers.lbs (the ground truth of the other tests) is the engine's posing."""
    d, right, _ = models_dir
    model = load_hand_model(d / "open_hand_right.npz", side="right")
    rng = np.random.default_rng(0)
    theta = helpers.random_theta(rng, 3)
    beta = rng.normal(size=(3, 10))
    root = rng.normal(size=(3, 3))
    s = np.array([0.9, 1.0, 1.2])
    layer = torch_layer.HandLayer(model, dtype=torch.float64)
    with torch.no_grad():
        v, kp, _ = layer(*(torch.from_numpy(a) for a in (theta, beta, root, s)))
    for n in range(3):
        rv, rkp = helpers.lbs(right, theta[n], beta[n], root[n], s[n])
        np.testing.assert_allclose(rv, v[n].numpy(), atol=1e-9)
        np.testing.assert_allclose(rkp, kp[n].numpy(), atol=1e-9)


def test_mano_pickle_converted_by_engine(blank, tmp_path, models_dir, monkeypatch):
    """A MANO-style .pkl (here: our test model pickled) is read by the engine's restricted loader in a child
    process and rigged with its pose correctives; the add-on never unpickles."""
    import pickle

    from handtailor_blender import capture

    d, right, _ = models_dir
    mano = tmp_path / "mano"
    mano.mkdir()
    data = dict(np.load(d / "open_hand_right.npz"))
    data = {k: v for k, v in data.items() if k not in ("name", "side")}
    with open(mano / "MANO_RIGHT.pkl", "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    res = helpers.make_result(tmp_path / "r.npz", [right], N=4, invalid=(), hand_model=str(mano / "MANO_RIGHT.pkl"))
    monkeypatch.setattr(capture, "output_dir", lambda: tmp_path / "out")
    [arm] = capture.apply_result(bpy.context.scene, str(res))
    mesh = rig.find_mesh(arm)
    assert len(mesh.data.shape_keys.key_blocks) == 11 + 135
    assert list((tmp_path / "out" / "models").glob("MANO_RIGHT_right_*.npz"))
    result = read_result(res)
    to_world = keys.to_world_matrix(bpy.context.scene)
    bpy.context.scene.frame_set(3)
    want, _ = helpers.lbs(right, result.theta[0, 2], result.beta[0, 2], result.root[0, 2], result.hand_scale[0, 2])
    assert np.abs(evaluated_verts_camera(mesh, to_world) - want).max() < 1e-4
