"""Re-tailor bookkeeping: edited keys go out locked, stay bit-exact, the rest is rewritten from the
refit, the previous keys come back. The refit comes from the stand-in engine (locked values kept, the rest
nudged), so the checks are exact."""

import numpy as np
import pytest

import blender_helpers as helpers

bpy = pytest.importorskip("bpy")

from handtailor_blender import capture, keys, rig, takes  # noqa: E402
from handtailor_blender.io.results import read_result  # noqa: E402
from blender_helpers import evaluated_verts_camera, snapshot_keys  # noqa: E402


def _fc(arm, path, index, shape=False):
    act = arm.animation_data.action
    if shape:
        act = bpy.data.actions[act["ht_shape_action"]]
    return keys.fcurves_of(act).find(path, index=index)


def _set_key(fc, frame, value):
    for k in fc.keyframe_points:
        if k.co[0] == frame:
            k.co[1] = value
            return
    raise AssertionError(frame)


def test_retailor_keeps_edits_and_restores(fake_engine, tmp_path, models_dir):
    d, right, left = models_dir
    res_path = helpers.make_result(tmp_path / "cap.npz", [right, left], N=10, invalid=(), hand_model=str(d))
    scene = bpy.context.scene
    capture.apply_result(scene, str(res_path))
    arm = bpy.data.objects["HandTailor_right"]
    # the artist's edits: a finger rotation at frame 3, a shape value at frame 5, the root at frame 7
    rot = _fc(arm, 'pose.bones["index2.R"].rotation_quaternion', 1)
    _set_key(rot, 3.0, 0.3)
    sh = _fc(arm, 'key_blocks["beta2"].value', 0, shape=True)
    _set_key(sh, 5.0, 1.75)
    loc = _fc(arm, "location", 2)
    _set_key(loc, 7.0, 0.123)
    edited = snapshot_keys()
    bpy.context.view_layer.objects.active = arm
    fake_engine("ok")
    assert bpy.ops.handtailor.retailor("EXEC_DEFAULT") == {"FINISHED"}

    # the edits file: locks exactly where the artist changed keys, with the keyed values
    plan_edits = sorted(tmp_path.glob("cap.edits_*.npz"))[-1]
    ed = np.load(plan_edits)
    t = int(arm["ht_track"])
    assert ed["lock_theta"][t].sum() == 1 and ed["lock_theta"][t, 2, 2]  # frame 3 = row 2, joint index2
    assert ed["lock_beta"][t].sum() == 1 and ed["lock_beta"][t, 4] and ed["beta"][t, 4, 2] == np.float32(1.75)
    assert ed["lock_root"][t].sum() == 1 and ed["lock_root"][t, 6] and ed["lock_hand_scale"][t, 6]
    assert not ed["lock_theta"][1 - t].any()  # the other hand has no edits: refit too

    after = snapshot_keys()
    act = arm.animation_data.action.name
    shape_act = arm.animation_data.action["ht_shape_action"]
    # edited keys bit-exact (same frame, same float32)
    for key, frame in (((act, 'pose.bones["index2.R"].rotation_quaternion', 1), 3.0),
                       ((act, 'pose.bones["index2.R"].rotation_quaternion', 0), 3.0),
                       ((shape_act, 'key_blocks["beta2"].value', 0), 5.0),
                       ((shape_act, 'key_blocks["beta7"].value', 0), 5.0),
                       ((act, "location", 2), 7.0)):
        co_b, co_a = edited[key], after[key]
        i = int(np.nonzero(co_b[0::2] == frame)[0][0])
        assert co_a[2 * i + 1] == co_b[2 * i + 1], key
    # everything else changed (the stand-in nudges unlocked values)
    co_b = edited[(act, 'pose.bones["index2.R"].rotation_quaternion', 1)]
    co_a = after[(act, 'pose.bones["index2.R"].rotation_quaternion', 1)]
    changed = co_a[1::2] != co_b[1::2]
    assert changed.sum() == len(changed) - 1 and not changed[2]
    # the rewritten rig equals the refit result's mesh, also on the edited frames
    new = read_result(takes.resolve_path(arm.animation_data.action["ht_result"]))
    to_world = keys.to_world_matrix(scene)
    mesh = rig.find_mesh(arm)
    for n in (0, 1, 2, 3, 4, 5, 6, 8):
        scene.frame_set(1 + n)
        want, _ = helpers.lbs(right if arm["ht_side"] == "right" else left, new.theta[t, n], new.beta[t, n],
                              new.root[t, n], new.hand_scale[t, n])
        err = evaluated_verts_camera(mesh, to_world) - want
        assert np.abs(err).max() < 1e-4

    # a second re-tailor keeps the first edits locked even though they now match the stored values
    assert bpy.ops.handtailor.retailor("EXEC_DEFAULT") == {"FINISHED"}
    again = snapshot_keys()
    co = again[(act, 'pose.bones["index2.R"].rotation_quaternion', 1)]
    assert co[2 * 2 + 1] == np.float32(0.3)

    # the previous keys come back (headless: the backup action), under the take's own name; one backup per
    # take, and two sidecar files at most however often it is re-tailored
    assert [a.name for a in bpy.data.actions if a.get("ht_backup_of") == act] == [act + "_backup"]
    assert len(list(tmp_path.glob(f"*{act}*keys.npz"))) == 2
    assert all(p.name.count("retailor") == 1 for p in tmp_path.glob("cap.retailor_*.npz"))  # names never chain
    assert takes.restore_backup(arm)
    restored = snapshot_keys()
    assert arm.animation_data.action.name == act
    for (name, path, idx), co in after.items():
        if name == act:
            assert np.array_equal(restored[(act, path, idx)], co)
    assert bpy.ops.handtailor.restore_take() == {"FINISHED"}  # and back again
    for (name, path, idx), co in again.items():
        if name == act:
            assert np.array_equal(snapshot_keys()[(act, path, idx)], co)


def test_retailor_without_take_says_so(addon, blank):
    arm = bpy.data.objects.new("x", bpy.data.armatures.new("x"))
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    with pytest.raises(RuntimeError, match="select a HandTailor hand rig"):
        bpy.ops.handtailor.retailor("EXEC_DEFAULT")


def test_retailor_of_a_reduced_take(fake_engine, tmp_path, models_dir):
    """A take reduced to 0.5 deg / 0.5 mm: an edited key stays a key with its exact value, the refit curves
    are reduced again with the take's tolerances, and at most one backup is kept."""
    d, right, _ = models_dir
    res_path = helpers.make_curl_result(tmp_path / "cap.npz", [right], N=30)
    scene = bpy.context.scene
    [arm] = capture.apply_result(scene, str(res_path), tolerance_deg=0.5, tolerance_mm=0.5,
                                 interpolation="BEZIER")
    act = arm.animation_data.action.name
    rot = _fc(arm, 'pose.bones["index2.R"].rotation_quaternion', 1)
    frames, _ = keys.read_keys(rot)
    edit_frame = float(frames[len(frames) // 2])
    _set_key(rot, edit_frame, 0.3)
    bpy.context.view_layer.objects.active = arm
    fake_engine("ok")
    for _ in range(2):
        assert bpy.ops.handtailor.retailor("EXEC_DEFAULT") == {"FINISHED"}
    rot = _fc(arm, 'pose.bones["index2.R"].rotation_quaternion', 1)
    f, v = keys.read_keys(rot)
    assert v[f == edit_frame].tolist() == [np.float32(0.3)]
    new = bpy.data.actions[act]
    assert new["ht_keys_after"] < new["ht_keys_before"] / 2
    assert new["ht_max_error_deg"] <= 0.5 and new["ht_max_error_mm"] <= 0.5  # Blender's curves, sampled
    assert [a.name for a in bpy.data.actions if a.get("ht_backup_of") == act] == [act + "_backup"]
