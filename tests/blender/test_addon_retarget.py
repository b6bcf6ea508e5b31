"""Retarget a take onto characters: Rigify's generated rig, Mixamo / UE5 / VRM named hands (relaxed rest,
random rolls), and an independently built Mixamo character through the headless command. Per finger, the
character's flexion follows the take's; keys are reduced within the tolerance; nothing else changes."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import blender_helpers as helpers
import independent_character
import preset_hands

bpy = pytest.importorskip("bpy")

from handtailor_blender import anatomy, bone_maps, capture, keys, retarget_scene  # noqa: E402
from handtailor_blender.io.results import read_model  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
OPEN_RIGHT = REPO / "models" / "open_hand" / "open_hand_right.npz"


@pytest.fixture(scope="session")
def open_right():
    return read_model(OPEN_RIGHT, "right")


def _take(tmp_path, model, N=40, **kw):
    res = helpers.make_curl_result(tmp_path / "curl.npz", [model], N=N, **kw)
    [arm] = capture.apply_result(bpy.context.scene, str(res), tolerance_deg=0.5, tolerance_mm=0.5,
                                 interpolation="BEZIER")
    return arm


def _flexion_agreement(take, char, heads_of, tip_of, frames):
    ft = helpers.take_flexion(take, frames)
    H, E = helpers.posed_points(char, heads_of, helpers.chain_ends(heads_of, tip_of), frames)
    fc = anatomy.flexion(H, E, take["ht_side"])
    corr = np.array([np.corrcoef(ft[:, f], fc[:, f])[0, 1] for f in range(5)])
    return corr, np.median(np.abs(ft - fc), axis=0), np.ptp(ft, axis=0)


def _roll_offsets(char, mapping, side):
    """Degrees between each mapped bone's rest x axis and its anatomical flexion axis."""
    C, R = retarget_scene.character_rest(char, mapping, side)
    js = [j for j in mapping if j > 0]
    return np.array([np.degrees(np.arccos(np.clip(R[j][:, 0] @ C[j][:, 0], -1, 1))) for j in js])


@pytest.mark.parametrize("preset", ["mixamo", "ue5", "vrm"])
def test_named_hands_follow_flexion(blank, tmp_path, open_right, preset):
    take = _take(tmp_path, open_right)
    char, mapping, tip_of = preset_hands.build(preset, open_right, name="Char", seed=4)
    assert np.median(_roll_offsets(char, mapping, "right")) > 20  # rest rolls differ from the anatomy
    report = retarget_scene.retarget_takes([retarget_scene.read_take(take)], char)
    assert report.preset == preset and len(report.mapped) == 15 and not report.unmapped
    assert report.keys_after < report.keys_before and report.max_error_deg <= 0.5
    corr, med, span = _flexion_agreement(take, char, mapping, tip_of, retarget_scene.read_take(take).frames)
    assert (span > 40).all()  # every finger really curls in the take
    assert (corr >= 0.9).all(), corr
    assert (med <= 10).all(), med


RIGIFY_SCRIPT = """
import os, sys
import bpy
import addon_utils
bpy.ops.wm.read_factory_settings(use_empty=True)
try:
    addon_utils.enable("rigify", default_set=True, handle_error=None)
    bpy.ops.object.armature_human_metarig_add()
    bpy.ops.pose.rigify_generate()
except Exception as exc:
    print("RIGIFY-UNAVAILABLE", exc)
    sys.stdout.flush()
    os._exit(3)
bpy.ops.object.mode_set(mode="OBJECT")
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1])
sys.stdout.flush()
os._exit(0)  # an enabled Rigify keeps bpy 4.5 from exiting
"""


@pytest.fixture(scope="session")
def rigify_blend(tmp_path_factory):
    """Rigify's human metarig, generated under bpy once per session, in a process of its own (skipped when
    Rigify will not run under this bpy)."""
    path = tmp_path_factory.mktemp("rigify") / "rigify.blend"
    proc = subprocess.run([sys.executable, "-c", RIGIFY_SCRIPT, str(path)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode == 3:
        pytest.skip(f"Rigify does not run under this bpy: {proc.stdout.strip().splitlines()[-1]}")
    assert proc.returncode == 0 and path.is_file(), proc.stderr[-2000:]
    return path


def test_rigify_generated_rig(rigify_blend, tmp_path, open_right):
    """The finger controls get the keys; the deforming DEF- bones (moved by Rigify's constraints) follow."""
    bpy.ops.wm.open_mainfile(filepath=str(rigify_blend))
    char = bpy.data.objects["rig"]
    take = _take(tmp_path, open_right)
    report = retarget_scene.retarget_takes([retarget_scene.read_take(take)], char, preset="auto")
    assert report.preset == "rigify" and len(report.mapped) == 15
    assert report.mapped["index1.R"] == "f_index.01.R" and report.mapped["thumb1.R"] == "thumb.01.R"
    _, mapping = bone_maps.detect([b.name for b in char.data.bones], "right")
    deform = {j: "DEF-hand.R" if j == 0 else "DEF-" + n for j, n in mapping.items()}
    # Rigify rolls its finger controls itself so that they bend about X: the convention the take's rig
    # follows too (the rolls cannot be made to differ from the metarig: Rigify re-rolls the chain)
    assert np.median(_roll_offsets(char, mapping, "right")[:12]) < 15
    corr, med, _ = _flexion_agreement(take, char, deform, None, retarget_scene.read_take(take).frames)
    assert (corr >= 0.9).all(), corr
    assert (med <= 10).all(), med


def test_independent_character_headless(blank, tmp_path, open_right):
    """Mixamo names, T-pose, rolled finger bones, relaxed rest: `retarget --preset auto --json`."""
    take = _take(tmp_path, open_right, N=48, invalid=(20, 21))
    take_blend, char_blend, out = tmp_path / "take.blend", tmp_path / "char.blend", tmp_path / "out.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(take_blend))
    frames = retarget_scene.read_take(take).frames
    take_flex = helpers.take_flexion(take, frames)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    char = independent_character.build("Hero")
    forearm = char.pose.bones["mixamorig:RightForeArm"]  # the body's own animation, which must stay
    forearm.rotation_quaternion = (0.9, 0.0, 0.3, 0.1)
    forearm.keyframe_insert("rotation_quaternion", frame=10)
    finger = char.pose.bones["mixamorig:RightHandIndex2"]
    finger.rotation_quaternion = (0.95, 0.3, 0.0, 0.0)
    finger.keyframe_insert("rotation_quaternion", frame=200)  # outside the take: kept
    bpy.ops.wm.save_as_mainfile(filepath=str(char_blend))
    before = helpers.snapshot_keys()
    proc = subprocess.run([sys.executable, "-m", "handtailor_blender", "retarget", str(take_blend), "--character",
                           str(char_blend), "--preset", "auto", "--tolerance-deg", "0.5", "--out", str(out),
                           "--json"], cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert set(report) == {"preset", "mapped", "unmapped", "frames", "keys_before", "keys_after", "max_error_deg"}
    assert report["preset"] == "mixamo" and len(report["mapped"]) >= 15 and report["frames"] == len(frames)
    assert report["keys_after"] < report["keys_before"] and report["max_error_deg"] <= 0.5
    bpy.ops.wm.open_mainfile(filepath=str(out))
    char = bpy.data.objects["Hero"]
    mapping = bone_maps.detect([b.name for b in char.data.bones], "right")[1]
    tip_of = {j: mapping[j][:-1] + "4" for j in (3, 6, 9, 12, 15)}
    H, E = helpers.posed_points(char, mapping, helpers.chain_ends(mapping, tip_of), frames)
    char_flex = anatomy.flexion(H, E, "right")
    corr = [np.corrcoef(take_flex[:, f], char_flex[:, f])[0, 1] for f in range(5)]
    med = np.median(np.abs(take_flex - char_flex), axis=0)
    assert min(corr) >= 0.9 and med.max() <= 10, (corr, med)
    after = helpers.snapshot_keys()
    act = char.animation_data.action.name
    fa = (act, 'pose.bones["mixamorig:RightForeArm"].rotation_quaternion', 0)
    assert np.array_equal(after[fa], before[fa])  # the body's keys are untouched
    ix = (act, 'pose.bones["mixamorig:RightHandIndex2"].rotation_quaternion', 0)
    assert 200.0 in after[ix][0::2] and after[ix][0::2].max() == 200.0  # the key outside the take stays
    assert not any("LeftHand" in k[1] for k in after if k not in before)  # the other hand is not keyed
    assert char_blend.stat().st_size and (tmp_path / "char.blend").exists()  # the character file itself unchanged


def test_with_wrist_matches_the_hand(blank, tmp_path, open_right):
    """--with-wrist turns the character's hand bone like the captured hand (in the shared world)."""
    take = _take(tmp_path, open_right, N=20)
    char, mapping, _ = preset_hands.build("mixamo", open_right, name="Char", seed=1)
    motion = retarget_scene.read_take(take)
    report = retarget_scene.retarget_takes([motion], char, with_wrist=True, tolerance_deg=0.1)
    assert report.mapped["wrist.R"] == "mixamorig:RightHand"
    C, R = retarget_scene.character_rest(char, mapping, "right")
    scene = bpy.context.scene
    for n in (0, 7, 19):
        scene.frame_set(int(motion.frames[n]))
        Mw = np.array(char.matrix_world)[:3, :3] @ np.array(char.pose.bones[mapping[0]].matrix.to_3x3())
        got = Mw @ R[0].T @ C[0]
        ang = np.degrees(np.arccos(np.clip((np.trace(got.T @ motion.hand_world[n]) - 1) / 2, -1, 1)))
        assert ang < 0.2, ang


def test_user_mapping_round_trip(addon, tmp_path, open_right, monkeypatch):
    """A rig with its own names: fill the rows from a preset, fix them by hand, save, use the file headless."""
    from handtailor_blender import ops_retarget

    monkeypatch.setattr(ops_retarget, "presets_dir", lambda: tmp_path / "presets")
    take = _take(tmp_path, open_right, N=16)
    char, mapping, _ = preset_hands.build("ue5", open_right, name="Odd", seed=2)
    bpy.ops.object.mode_set(mode="OBJECT")
    for j, name in mapping.items():  # a studio's own names: ue5's with a prefix, the thumb renamed
        char.data.bones[name].name = "rig_" + name.replace("thumb", "pollex")
    ht = bpy.context.scene.handtailor
    ht.retarget_character = char
    ht.retarget_preset = "AUTO"
    assert bpy.ops.handtailor.retarget_fill(side="right") == {"FINISHED"}
    rows = {r.joint: r for r in ht.retarget_map}
    assert rows["index1"].bone == "rig_index_01_r"  # UE names behind a prefix are found
    assert rows["thumb1"].bone == ""  # the renamed thumb is not: the user fills it in
    for k in (1, 2, 3):
        rows[f"thumb{k}"].bone = f"rig_pollex_0{k}_r"
    ht.retarget_map_name = "studio"
    assert bpy.ops.handtailor.retarget_save() == {"FINISHED"}
    saved = json.loads((tmp_path / "presets" / "studio.json").read_text())
    assert saved["bones"]["thumb1"] == "rig_pollex_01_{s}"  # side-free: it also serves the left hand
    take.select_set(True)
    assert bpy.ops.handtailor.retarget() == {"FINISHED"}
    assert "15 bones" in ht.status
    name, templates = bone_maps.load_mapping(tmp_path / "presets" / "studio.json")
    assert bone_maps.resolve(templates, [b.name for b in char.data.bones], "right")[13] == "rig_pollex_01_r"


def test_bad_choices_say_what_to_do(blank, tmp_path, open_right):
    take = _take(tmp_path, open_right, N=8)
    empty = bpy.data.objects.new("Empty", bpy.data.armatures.new("Empty"))
    bpy.context.scene.collection.objects.link(empty)
    with pytest.raises(ValueError, match="no known right hand"):
        retarget_scene.retarget_takes([retarget_scene.read_take(take)], empty)
    with pytest.raises(ValueError, match="HandTailor rig"):
        retarget_scene.retarget_takes([retarget_scene.read_take(take)], take)
    assert keys.fcurves_of(take.animation_data.action) is not None and empty.animation_data is None
