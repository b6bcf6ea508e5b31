"""actions.py under whichever Blender runs the suite (test.sh runs it under bpy 4.2, 4.5 and 5.0): takes keyed in
grouped channels, assigned with their slot, surviving a save and reload; foreign actions read without error."""

import numpy as np
import pytest

import blender_helpers as helpers

bpy = pytest.importorskip("bpy")

from handtailor_blender import actions, camera, keys, rig  # noqa: E402
from handtailor_blender.io.results import read_result  # noqa: E402


def _take(tmp_path, model, N=5):
    result = read_result(helpers.make_result(tmp_path / "r.npz", [model], N=N, invalid=()))
    camera.ensure_camera(bpy.context.scene, result.K, result.image_size)
    arm, mesh = rig.build_rig(model, "HT")
    obj_action, key_action = keys.key_take(arm, mesh, model, result, 0)
    return result, arm, mesh, obj_action, key_action


def test_new_fcurves_in_their_groups(blank, models_dir, tmp_path):
    ob = bpy.data.objects.new("Rig", None)
    bpy.context.scene.collection.objects.link(ob)
    action, curves = actions.new_action(ob, "Rig_take", "OBJECT")
    assert ob.animation_data.action == action and action.use_fake_user
    made = [(f'pose.bones["{b}"].rotation_quaternion', i, b) for b in ("wrist.R", "index1.R") for i in range(4)]
    made += [("location", i, "Object Transforms") for i in range(3)]
    for path, index, group in made:
        actions.new_fcurve(curves, path, index, group)
    got = {(fc.data_path, fc.array_index): fc.group.name for fc in actions.fcurves_of(action)}
    assert got == {(p, i): g for p, i, g in made}
    groups = [fc.group for fc in actions.fcurves_of(action)]  # one group per name, shared by its channels
    assert len({g.as_pointer() for g in groups}) == 3
    # a take: every channel the add-on keys sits in a group
    _, arm, _, obj_action, key_action = _take(tmp_path, models_dir[1])
    assert all(fc.group is not None for a in (obj_action, key_action) for fc in actions.fcurves_of(a))


def test_take_plays_after_save_and_reload(blank, models_dir, tmp_path):
    _, right, _ = models_dir
    result, arm, mesh, obj_action, _ = _take(tmp_path, right)
    blend, name = tmp_path / "take.blend", obj_action.name
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    arm = bpy.data.objects["HT"]
    assert arm.animation_data.action.name == name and len(actions.fcurves_of(arm.animation_data.action))
    scene = bpy.context.scene
    to_world = keys.to_world_matrix(scene)
    for n in (0, 3):
        scene.frame_set(1 + n)
        v, _ = helpers.lbs(right, result.theta[0, n], result.beta[0, n], result.root[0, n],
                           result.hand_scale[0, n])
        assert np.abs(helpers.evaluated_verts_camera(rig.find_mesh(arm), to_world) - v).max() < 1e-4


def test_assign_action_switches_takes(blank, models_dir, tmp_path):
    _, right, _ = models_dir
    result, arm, mesh, first, first_shape = _take(tmp_path, right)
    result.beta[:] = 0.0
    second, _ = keys.key_take(arm, mesh, right, result, 0)
    assert arm.animation_data.action == second
    actions.assign_action(arm, first)
    actions.assign_action(mesh.data.shape_keys, first_shape)
    scene = bpy.context.scene
    scene.frame_set(2)
    v, _ = helpers.lbs(right, result.theta[0, 1], read_result(result.path).beta[0, 1], result.root[0, 1],
                       result.hand_scale[0, 1])
    assert np.abs(helpers.evaluated_verts_camera(mesh, keys.to_world_matrix(scene)) - v).max() < 1e-4


def test_foreign_and_empty_actions_read_without_error(blank):
    empty = bpy.data.actions.new("not a take")
    assert not list(actions.fcurves_of(empty) or ())
    ob = bpy.data.objects.new("Empty", None)
    bpy.context.scene.collection.objects.link(ob)
    ob.location = (1.0, 2.0, 3.0)
    ob.keyframe_insert("location", frame=1)  # Blender's own keying, whatever this version makes
    curves = actions.fcurves_of(ob.animation_data.action)
    assert sorted(fc.array_index for fc in curves if fc.data_path == "location") == [0, 1, 2]
    assert len(helpers.snapshot_keys()) == 3


def test_own_fcurves_key_into_the_action_a_user_made(blank):
    ob = bpy.data.objects.new("Prop", None)
    bpy.context.scene.collection.objects.link(ob)
    action, curves = actions.own_fcurves(ob, "Prop_action")  # none yet: a new one, no fake user
    assert ob.animation_data.action == action and not action.use_fake_user
    fc = actions.new_fcurve(curves, "location", 2, "Object Transforms")
    for frame, value in ((1.0, 0.0), (5.0, 2.0)):
        fc.keyframe_points.insert(frame, value)
    ob.location = (1.0, 0.0, 0.0)
    ob.keyframe_insert("location", index=0, frame=1)  # Blender's own key, same action
    again, curves2 = actions.own_fcurves(ob, "unused")
    assert again == action and "unused" not in bpy.data.actions
    assert sorted(fc.array_index for fc in curves2) == [0, 2]
    assert sorted(fc.array_index for fc in actions.all_fcurves(action)) == [0, 2]
    bpy.context.scene.frame_set(5)
    assert ob.location[2] == pytest.approx(2.0)
