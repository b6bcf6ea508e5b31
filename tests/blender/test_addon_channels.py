"""Channels an animator edits: identity rigs (shape in the rest skeleton) and the per-frame fallback, Euler
channels, reduced curves that Blender evaluates within the tolerance, and take bookkeeping (names, paths)."""

import shutil

import numpy as np
import pytest

import blender_helpers as helpers
from blender_helpers import evaluated_verts_camera

bpy = pytest.importorskip("bpy")

from handtailor_blender import capture, keys, poses, reduce, rig, takes  # noqa: E402
from handtailor_blender.io.results import read_result  # noqa: E402


def _fcurve_paths(arm):
    return {fc.data_path for fc in keys.fcurves_of(arm.animation_data.action)}


def _mesh_error(scene, arm, model, result, t, frames):
    mesh = rig.find_mesh(arm)
    to_world = keys.to_world_matrix(scene)
    worst = 0.0
    for n in frames:
        scene.frame_set(1 + n)
        want, _ = helpers.lbs(model, result.theta[t, n], result.beta[t, n], result.root[t, n],
                              result.hand_scale[t, n])
        worst = max(worst, np.abs(evaluated_verts_camera(mesh, to_world) - want).max())
    return worst


def test_identity_rig_holds_the_shape_in_its_rest(blank, tmp_path, models_dir):
    """Constant beta and hand_scale over the track: rest skeleton at J(beta), shaped mesh, no bone location
    or shape curves, a constant object scale; the mesh still equals the hand model (with correctives)."""
    _, right, left = models_dir
    res = helpers.make_curl_result(tmp_path / "c.npz", [right, left], N=10)
    result = read_result(res)
    scene = bpy.context.scene
    arms = capture.apply_result(scene, str(res))
    for arm in arms:
        t = int(arm["ht_track"])
        model = right if arm["ht_side"] == "right" else left
        beta = rig.identity_beta(arm)
        np.testing.assert_allclose(beta, result.beta[t, 0])
        heads = np.array([arm.data.bones[n].head_local for n in rig.bone_names(arm["ht_side"])[:16]])
        np.testing.assert_allclose(heads, rig.rest_joints(model, beta), atol=1e-6)
        paths = _fcurve_paths(arm)
        assert not any(p.endswith(".location") for p in paths) and not any(p.endswith(".scale") for p in paths)
        mesh = rig.find_mesh(arm)
        assert not any(k.name.startswith("beta") for k in mesh.data.shape_keys.key_blocks)
        for i in range(3):
            fc = keys.fcurves_of(arm.animation_data.action).find("scale", index=i)
            assert len(fc.keyframe_points) == 1 and fc.keyframe_points[0].co[1] == np.float32(result.hand_scale[t, 0])
        assert _mesh_error(scene, arm, model, result, t, (0, 4, 9)) < 1e-4
        assert mesh.data.polygons[0].use_smooth and mesh.active_material.name == rig.SKIN_MATERIAL
    # a second take with the same identity reuses the rig; another identity gets its own rig
    again = capture.apply_result(scene, str(res))
    assert [a.name for a in again] == [a.name for a in arms]
    assert sorted(a.name for a in takes.take_actions(again[0])) == [f"{again[0].name}_take01",
                                                                     f"{again[0].name}_take02"]
    other = helpers.make_curl_result(tmp_path / "o.npz", [right], N=6, seed=9)
    [new] = capture.apply_result(scene, str(other))
    assert new.name not in [a.name for a in arms] and new.name.startswith("HandTailor_right")


def test_per_frame_shape_fallback(blank, tmp_path, models_dir):
    """Per-frame beta: location keys and shape keys carry the shape, the wrist bone the size; the object's
    scale stays constant."""
    _, right, _ = models_dir
    res = helpers.make_curl_result(tmp_path / "p.npz", [right], N=10, constant_identity=False)
    result = read_result(res)
    scene = bpy.context.scene
    [arm] = capture.apply_result(scene, str(res))
    assert rig.identity_beta(arm) is None
    paths = _fcurve_paths(arm)
    assert 'pose.bones["index2.R"].location' in paths and 'pose.bones["wrist.R"].scale' in paths
    for i in range(3):
        assert len(keys.fcurves_of(arm.animation_data.action).find("scale", index=i).keyframe_points) == 1
    assert _mesh_error(scene, arm, right, result, 0, (0, 5, 9)) < 1e-4


def test_steady_shape_with_changing_size_keeps_a_constant_object_scale(blank, tmp_path, models_dir):
    """One beta but a size that changes over the track: not an identity rig (its size would be an animated
    object scale, an animated FBX top node); the wrist bone carries the size."""
    from handtailor_blender.io.results import write_npz_atomic

    _, right, _ = models_dir
    res = helpers.make_curl_result(tmp_path / "s.npz", [right], N=10, constant_identity=False)
    data = dict(np.load(res))
    data["beta"][:] = data["beta"][:, :1]
    write_npz_atomic(res, data)
    result = read_result(res)
    assert np.ptp(result.hand_scale[0]) > 0.01
    [arm] = capture.apply_result(bpy.context.scene, str(res))
    assert rig.identity_beta(arm) is None
    fcs = keys.fcurves_of(arm.animation_data.action)
    assert all(len(fcs.find("scale", index=i).keyframe_points) == 1 for i in range(3))
    assert len(fcs.find('pose.bones["wrist.R"].scale', index=0).keyframe_points) > 1
    assert _mesh_error(bpy.context.scene, arm, right, result, 0, (0, 5, 9)) < 1e-4


def test_euler_channels(blank, tmp_path, models_dir):
    """Euler XYZ bones: three angle curves per bone, the mesh (pose correctives included) unchanged."""
    d, right, _ = models_dir
    res = helpers.make_result(tmp_path / "e.npz", [right], N=8, invalid=(), hand_model=str(d))
    result = read_result(res)
    scene = bpy.context.scene
    [arm] = capture.apply_result(scene, str(res), rotation_mode="XYZ")
    paths = _fcurve_paths(arm)
    assert 'pose.bones["index1.R"].rotation_euler' in paths
    assert not any("rotation_quaternion" in p and "pose.bones" in p for p in paths)
    assert _mesh_error(scene, arm, right, result, 0, (0, 3, 7)) < 1e-4


def test_reduced_curves_keep_the_tolerance_in_blender(blank, tmp_path):
    """With the shipped model and 0.5 deg / 0.5 mm, every bone's pose (Blender's own evaluation, normalized
    quaternion) and the hand's placement stay within the tolerance on every tracked frame, with fewer keys."""
    from handtailor_blender.io.results import read_model

    model = read_model(helpers.pathlib.Path(__file__).resolve().parents[2] / "models" / "open_hand" /
                       "open_hand_right.npz", "right")
    res = helpers.make_curl_result(tmp_path / "r.npz", [model], N=60, constant_identity=False, invalid=(30,))
    result = read_result(res)
    scene = bpy.context.scene
    [arm] = capture.apply_result(scene, str(res), tolerance_deg=0.5, tolerance_mm=0.5, interpolation="BEZIER")
    act = arm.animation_data.action
    assert act["ht_keys_after"] < act["ht_keys_before"] / 2
    assert act["ht_max_error_deg"] <= 0.5 and act["ht_max_error_mm"] <= 0.5
    rows = np.nonzero(result.valid[0])[0]
    table = keys.channel_table(arm, model, result.theta[0, rows], result.beta[0, rows], result.root[0, rows],
                               result.hand_scale[0, rows], np.ones(len(rows)), keys.to_world_matrix(scene))
    names = rig.bone_names("right")[:16]
    worst_deg = worst_mm = 0.0
    for m, n in enumerate(rows):
        scene.frame_set(int(1 + n))
        for j, name in enumerate(names):
            R = np.array(arm.pose.bones[name].matrix_basis.to_3x3())
            got = poses.rotmat_to_quat(R / np.linalg.norm(R, axis=0))  # the wrist also scales
            worst_deg = max(worst_deg, float(reduce.quat_angle_error(table["bone_rot"][m, j][None], got[None])[0]))
        worst_mm = max(worst_mm, 1000 * np.linalg.norm(np.array(arm.location) - table["obj_loc"][m]))
    assert worst_deg <= 0.5 + 1e-3 and worst_mm <= 0.5 + 1e-3, (worst_deg, worst_mm)


def test_sidecars_are_relative_and_survive_a_move(fake_engine, tmp_path, models_dir):
    """Results and sidecars beside the .blend are stored as // paths: a moved project can re-tailor."""
    d, right, _ = models_dir
    proj = tmp_path / "proj"
    (proj / "handtailor").mkdir(parents=True)
    res = helpers.make_result(proj / "handtailor" / "cap.npz", [right], N=6, invalid=(), hand_model=str(d))
    scene = bpy.context.scene
    [arm] = capture.apply_result(scene, str(res))
    name = arm.name
    bpy.ops.wm.save_as_mainfile(filepath=str(proj / "take.blend"))
    act = arm.animation_data.action
    assert act["ht_take_file"].startswith("//handtailor/") and act["ht_result"] == "//handtailor/cap.npz"
    moved = tmp_path / "elsewhere"
    shutil.move(str(proj), str(moved))
    bpy.ops.wm.open_mainfile(filepath=str(moved / "take.blend"))
    bpy.context.view_layer.objects.active = bpy.data.objects[name]
    fake_engine("ok")
    assert bpy.ops.handtailor.retailor("EXEC_DEFAULT") == {"FINISHED"}
    act = bpy.data.objects[name].animation_data.action
    assert takes.resolve_path(act["ht_result"]).startswith(str(moved))
    names = sorted(p.name for p in (moved / "handtailor").glob("*keys.npz"))
    assert names == [f"cap.{act.name}.keys.npz", f"cap.{act.name}.prev.keys.npz"]
