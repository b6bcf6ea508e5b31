"""FBX export round trip with Blender's default import (animation offset 1): every key on its own frame, bone
world matrices within 1e-4, tip bones kept, no animated scale on the top node; the export covers the whole
take even when the scene range does not."""

import logging

import numpy as np
import pytest

import blender_helpers as helpers

bpy = pytest.importorskip("bpy")

from handtailor_blender import capture, keys, ops_export, rig  # noqa: E402


def bone_world(arm, names):
    Mw = np.array(arm.matrix_world)
    return np.stack([Mw @ np.array(arm.pose.bones[n].matrix) for n in names])


@pytest.mark.parametrize("shape", ["identity", "per_frame"])
@pytest.mark.parametrize("preset", ["BLENDER", "UNITY", "UNREAL"])
def test_fbx_round_trip(blank, tmp_path, models_dir, preset, shape):
    d, right, left = models_dir
    res = helpers.make_curl_result(tmp_path / "cap.npz", [right, left], N=8, constant_identity=shape == "identity")
    scene = bpy.context.scene
    arms = capture.apply_result(scene, str(res))
    frames = (1, 4, 8)
    scene.frame_end = 5  # a scene range that cuts the take must not cut the export
    want = {}
    for f in frames:
        scene.frame_set(f)
        for arm in arms:
            want[(arm.name, f)] = bone_world(arm, rig.bone_names(arm["ht_side"]))
    path = tmp_path / f"hands_{preset}.fbx"
    ops_export.export_fbx(str(path), arms, preset)
    assert path.stat().st_size > 0

    bpy.ops.wm.read_factory_settings(use_empty=True)
    p = ops_export.PRESETS[preset]
    bpy.ops.import_scene.fbx(filepath=str(path), ignore_leaf_bones=False,
                             automatic_bone_orientation=False, axis_forward=p["axis_forward"],
                             axis_up=p["axis_up"], global_scale=p["global_scale"],
                             use_custom_props=True)
    scene = bpy.context.scene
    imported = {o.name: o for o in scene.objects if o.type == "ARMATURE"}
    assert set(imported) == {a for a, _ in want}, imported.keys()
    worst = 0.0
    for f in frames:
        scene.frame_set(f)
        for name, arm in imported.items():
            side = "right" if name.endswith("right") else "left"
            names = rig.bone_names(side)
            assert all(n in arm.pose.bones for n in names)  # fingertip bones survive
            got = bone_world(arm, names)
            ref = want[(name, f)]
            if preset == "BLENDER":
                worst = max(worst, np.abs(got - ref).max())
            else:  # other axes: same up to one global rotation/scale the importer undoes; compare positions
                worst = max(worst, np.abs(got[:, :3, 3] - ref[:, :3, 3]).max())
    logging.getLogger(__name__).info("%s", (preset, "fbx worst", worst))
    assert worst < 1e-4
    for arm in imported.values():  # the top node's scale is constant (the size is in the rig, not animated)
        fcs = [fc for fc in keys.fcurves_of(arm.animation_data.action) if fc.data_path == "scale"]
        for fc in fcs:
            _, v = keys.read_keys(fc)
            assert np.ptp(v) < 1e-6 * max(1.0, abs(v).max())


def test_export_options_this_blender_lacks_are_dropped(blank, caplog):
    fbx = bpy.ops.export_scene.fbx
    opts = {**ops_export.ROUND_TRIP, **ops_export.PRESETS["UNITY"]}
    assert ops_export.supported_options(fbx, opts) == opts  # every tested Blender has them all
    with caplog.at_level(logging.WARNING):
        got = ops_export.supported_options(fbx, {**opts, "use_future_option": True})
    assert got == opts and "use_future_option" in caplog.text
