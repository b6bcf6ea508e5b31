"""Rig + bulk keys + camera against ground truth (numpy MANO LBS) on synthesized result files."""

import logging

import numpy as np
import pytest

import blender_helpers as helpers
from blender_helpers import evaluated_verts_camera, projected_mesh_joints

bpy = pytest.importorskip("bpy")

from handtailor_blender import camera, keys, rig  # noqa: E402
from handtailor_blender.io.results import read_result  # noqa: E402


def setup_capture(tmp_path, models, N=12, **kw):
    res_path = helpers.make_result(tmp_path / "res.npz", models, N=N, **kw)
    result = read_result(res_path)
    scene = bpy.context.scene
    camera.ensure_camera(scene, result.K, result.image_size)
    to_world = keys.to_world_matrix(scene)
    rigs = []
    for t, m in enumerate(models):
        arm, mesh = rig.build_rig(m, f"HT_{m.side}_{t}")
        keys.key_take(arm, mesh, m, result, t, frame_offset=1, to_world=to_world)
        rigs.append((arm, mesh))
    return result, rigs, to_world


def test_rig_structure(blank, models_dir):
    _, right, left = models_dir
    arm, mesh = rig.build_rig(left, "HT_left")
    names = [b.name for b in arm.data.bones]
    assert "wrist.L" in names and "thumb3.L" in names and "index_tip.L" in names and len(names) == 21
    assert all(pb.rotation_mode == "QUATERNION" for pb in arm.pose.bones)
    assert mesh.parent == arm and mesh.modifiers[0].object == arm
    kb = mesh.data.shape_keys.key_blocks
    assert [k.name for k in kb][:11] == ["Basis"] + [f"beta{b}" for b in range(10)]
    assert len(kb) == 11 + 135  # correctives for a model with posedirs
    drivers = mesh.data.shape_keys.animation_data.drivers
    assert len(drivers) == 135 and all(d.driver.is_simple_expression for d in drivers)
    heads = np.array([arm.data.bones[n].head_local for n in rig.bone_names("left")[:16]])
    np.testing.assert_allclose(heads, left.J0, atol=1e-6)


@pytest.mark.parametrize("side_set", ["right", "both"])
def test_mesh_matches_reference(blank, models_dir, tmp_path, side_set):
    _, right, left = models_dir
    models = [right] if side_set == "right" else [right, left]
    result, rigs, to_world = setup_capture(tmp_path, models)
    scene = bpy.context.scene
    worst = 0.0
    for n in (0, 2, 5, 11):
        scene.frame_set(1 + n)
        for t, (arm, mesh) in enumerate(rigs):
            got = evaluated_verts_camera(mesh, to_world)
            want, _ = helpers.lbs(models[t], result.theta[t, n], result.beta[t, n], result.root[t, n],
                                  result.hand_scale[t, n])
            worst = max(worst, np.abs(got - want).max())
    logging.getLogger(__name__).info("%s", ("mesh worst", worst))
    assert worst < 1e-4, worst


def test_keys_only_on_valid_frames_and_continuous(blank, models_dir, tmp_path):
    _, right, _ = models_dir
    result, [(arm, mesh)], _ = setup_capture(tmp_path, [right], invalid=(3, 4))
    act = arm.animation_data.action
    curves = keys.fcurves_of(act)
    fc = curves.find('pose.bones["index1.R"].rotation_quaternion', index=0)
    frames, _ = keys.read_keys(fc)
    want = 1 + np.nonzero(result.valid[0])[0]
    np.testing.assert_array_equal(frames, want)
    assert all(k.interpolation == "LINEAR" for k in fc.keyframe_points)
    q = np.stack([keys.read_keys(curves.find('pose.bones["index1.R"].rotation_quaternion', index=i))[1]
                  for i in range(4)], -1)
    assert (np.sum(q[1:] * q[:-1], -1) >= 0).all()
    conf = keys.read_keys(curves.find('["ht_confidence"]'))[1]
    np.testing.assert_allclose(conf, result.confidence[0][result.valid[0]].mean(-1), rtol=1e-6)
    # a second take goes into a new action, the first stays
    keys.key_take(arm, mesh, right, result, 0, frame_offset=1, to_world=keys.to_world_matrix(bpy.context.scene))
    assert arm.animation_data.action != act and act.name in bpy.data.actions
    assert act.use_fake_user and len(keys.fcurves_of(act)) == len(keys.fcurves_of(arm.animation_data.action))


def test_camera_overlay_within_2px(blank, models_dir, tmp_path):
    _, right, _ = models_dir
    K = np.array([[700.0, 0, 300.0], [0, 700.0, 260.0], [0, 0, 1]])
    result, [(arm, mesh)], to_world = setup_capture(tmp_path, [right], K=K, image_size=(640, 480))
    scene = bpy.context.scene
    worst = 0.0
    for n in (0, 6, 11):
        scene.frame_set(1 + n)
        uv = projected_mesh_joints(scene, arm, mesh, right, result.beta[0, n])
        proj = result.joints_3d[0, n] @ K.T
        worst = max(worst, np.abs(uv - proj[:, :2] / proj[:, 2:]).max())
    logging.getLogger(__name__).info("%s", ("overlay worst px", worst))
    assert worst < 2.0, worst
    assert scene.render.resolution_x == 640 and scene.camera.data.lens == pytest.approx(700 * 36 / 640)


@pytest.mark.parametrize("interp", ["BEZIER", "CONSTANT"])
def test_interpolation_choice(blank, models_dir, tmp_path, interp):
    _, right, _ = models_dir
    res = read_result(helpers.make_result(tmp_path / "r.npz", [right], N=5))
    camera.ensure_camera(bpy.context.scene, res.K, res.image_size)
    arm, mesh = rig.build_rig(right, "HT")
    act, shape_act = keys.key_take(arm, mesh, right, res, 0, interpolation=interp)
    for a in (act, shape_act):
        assert all(k.interpolation == interp for fc in keys.fcurves_of(a) for k in fc.keyframe_points
                   if fc.data_path != '["ht_visible"]')


def test_correctives_toggle_and_selected_joints(blank, models_dir, tmp_path):
    from handtailor_blender import retailor

    _, right, _ = models_dir
    result, [(arm, mesh)], to_world = setup_capture(tmp_path, [right], N=4, invalid=())
    scene = bpy.context.scene
    scene.frame_set(2)
    on = evaluated_verts_camera(mesh, to_world)
    mesh["ht_correctives"] = 0.0
    mesh.update_tag()
    scene.frame_set(2)
    off = evaluated_verts_camera(mesh, to_world)
    plain = helpers.lbs(dataclasses_replace(right, posedirs=np.zeros_like(right.posedirs)), result.theta[0, 1],
                        result.beta[0, 1], result.root[0, 1], result.hand_scale[0, 1])[0]
    assert np.abs(off - plain).max() < 1e-4 and np.abs(on - off).max() > 1e-3
    assert retailor.selected_joint_names(arm) is None
    pb = arm.pose.bones["index2.R"]
    if hasattr(pb, "select"):
        pb.select = True
    else:
        arm.data.bones["index2.R"].select = True
    assert retailor.selected_joint_names(arm) == ["index2"]


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)
