"""Retarget a take onto characters: Rigify's generated rig, Mixamo / UE5 / VRM named hands (relaxed rest,
random rolls), and an independently built Mixamo character through the headless command. Per finger, the
character's flexion follows the take's; keys are reduced within the tolerance; nothing else changes."""

import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import blender_helpers as helpers
import independent_character
import metarig_character
import preset_hands

bpy = pytest.importorskip("bpy")

from handtailor_blender import anatomy, bone_maps, capture, keys, retarget_scene  # noqa: E402
from handtailor_blender.io.results import read_model  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
OPEN_RIGHT = REPO / "models" / "open_hand" / "open_hand_right.npz"
log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def open_right():
    return read_model(OPEN_RIGHT, "right")


def _take(tmp_path, model, N=40, **kw):
    res = helpers.make_curl_result(tmp_path / "curl.npz", [model], N=N, **kw)
    [arm] = capture.apply_result(bpy.context.scene, str(res), tolerance_deg=0.5, tolerance_mm=0.5,
                                 interpolation="BEZIER")
    return arm


def _curl_of(H, E, side):
    """(flexion, signed flexion), (F, 5) degrees each, of posed points: the bend, and its direction."""
    return anatomy.flexion(H, E, side), helpers.signed_flexion(H, E, side)


def _agreement(take_curl, char, heads_of, tip_of, frames, side="right"):
    """Per finger: flexion correlation (5,), median |flexion difference| (5,) deg, signed flexion correlation
    (5,) of the character's posed hand against the take's (`_curl_of` of the take)."""
    ft, rt = take_curl
    fc, rc = _curl_of(*helpers.posed_points(char, heads_of, helpers.chain_ends(heads_of, tip_of), frames), side)
    corr = np.array([np.corrcoef(ft[:, f], fc[:, f])[0, 1] for f in range(5)])
    med = np.median(np.abs(ft - fc), axis=0)
    signed = np.array([np.corrcoef(rt[:, f], rc[:, f])[0, 1] for f in range(5)])
    log.info("%s: flexion corr %s, median diff %s deg, signed flexion corr %s (index, middle, pinky, ring, thumb)",
             char.name, np.round(corr, 3), np.round(med, 2), np.round(signed, 3))
    return corr, med, signed


def _flexion_agreement(take, char, heads_of, tip_of, frames):
    take_curl = _curl_of(*helpers.take_points(take, frames), take["ht_side"])
    return (*_agreement(take_curl, char, heads_of, tip_of, frames), np.ptp(take_curl[0], axis=0))


def _roll_offsets(char, mapping, side):
    """Degrees between each mapped bone's rest x axis and its anatomical flexion axis."""
    C, R = retarget_scene.character_rest(char, mapping, side)
    js = [j for j in mapping if j > 0]
    out = np.array([np.degrees(np.arccos(np.clip(R[j][:, 0] @ C[j][:, 0], -1, 1))) for j in js])
    log.info("%s: rest x axis vs flexion axis %s deg (median %.0f)", char.name, np.round(out), np.median(out))
    return out


@pytest.mark.parametrize("preset", ["mixamo", "ue5", "vrm"])
def test_named_hands_follow_flexion(blank, tmp_path, open_right, preset):
    take = _take(tmp_path, open_right)
    char, mapping, tip_of = preset_hands.build(preset, open_right, name="Char", seed=4)
    assert np.median(_roll_offsets(char, mapping, "right")) > 20  # rest rolls differ from the anatomy
    report = retarget_scene.retarget_takes([retarget_scene.read_take(take)], char)
    assert report.preset == preset and len(report.mapped) == 15 and not report.unmapped
    assert report.keys_after < report.keys_before and report.max_error_deg <= 0.5
    corr, med, signed, span = _flexion_agreement(take, char, mapping, tip_of, retarget_scene.read_take(take).frames)
    assert (span > 40).all()  # every finger really curls in the take
    assert (corr >= 0.9).all() and (signed >= 0.9).all(), (corr, signed)
    assert (med <= 10).all(), med


RIGIFY_SCRIPT = """
import os, sys
import bpy
import addon_utils
bpy.ops.wm.read_factory_settings(use_empty=True)
try:
    addon_utils.enable("rigify", default_set=True, handle_error=None)
    bpy.ops.object.armature_human_metarig_add()
except Exception as exc:
    print("RIGIFY-UNAVAILABLE", exc)
    sys.stdout.flush()
    os._exit(3)
# the right hand's fingers rolled a quarter turn, bending about their Z (Rigify's manual axis keeps the
# rolls; 'automatic' would re-roll every chain to bend about X): rest rolls unlike the take's
meta = bpy.data.objects["metarig"]
chains = ("f_index", "f_middle", "f_ring", "f_pinky", "thumb")
bpy.ops.object.mode_set(mode="EDIT")
for b in meta.data.edit_bones:
    if b.name.endswith(".R") and b.name.split(".")[0] in chains:
        b.roll += 1.5707963
bpy.ops.object.mode_set(mode="OBJECT")
for c in chains:
    meta.pose.bones[c + ".01.R"].rigify_parameters.primary_rotation_axis = "Z"
try:
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
    rolls = _roll_offsets(char, mapping, "right")
    assert np.median(rolls) > 60, rolls  # the controls are rolled: they do not bend about their X
    corr, med, signed, _ = _flexion_agreement(take, char, deform, None, retarget_scene.read_take(take).frames)
    assert (corr >= 0.9).all() and (signed >= 0.9).all(), (corr, signed)
    assert (med <= 10).all(), med


def _retarget_headless(take_blend, char_blend, out, take_curl, frames, char_name, tips=True, extra=()):
    """`retarget --preset auto --json` of a saved take onto a saved character: (report, then `_agreement`'s
    flexion correlation, median difference and signed flexion correlation), the character read from OUT."""
    digest = hashlib.sha256(char_blend.read_bytes()).hexdigest()
    proc = subprocess.run([sys.executable, "-m", "handtailor_blender", "retarget", str(take_blend), "--character",
                           str(char_blend), "--preset", "auto", "--tolerance-deg", "0.5", "--out", str(out),
                           "--json", *extra], cwd=REPO, env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert set(report) == {"preset", "mapped", "unmapped", "frames", "keys_before", "keys_after", "max_error_deg"}
    assert hashlib.sha256(char_blend.read_bytes()).hexdigest() == digest  # the character's own file unchanged
    bpy.ops.wm.open_mainfile(filepath=str(out))
    char = bpy.data.objects[char_name]
    mapping = bone_maps.detect([b.name for b in char.data.bones], "right")[1]
    tip_of = {j: mapping[j][:-1] + "4" for j in (3, 6, 9, 12, 15)} if tips else None
    log.info("%s: %s", char_name, {k: v for k, v in report.items() if k != "mapped"} | {"mapped": len(report["mapped"])})
    return (report, *_agreement(take_curl, char, mapping, tip_of, frames))


def _world_bones(arm, names, frame):
    """(len(names), 4, 4) world matrices of pose bones at a frame."""
    bpy.context.scene.frame_set(frame)
    return np.stack([np.array(arm.matrix_world @ arm.pose.bones[n].matrix) for n in names])


def _saved_take(tmp_path, model):
    """A take with a gap, saved: (take.blend, frames, `_curl_of` the take); its fingers curl about local X."""
    take = _take(tmp_path, model, N=48, invalid=(20, 21))
    take_blend = tmp_path / "take.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(take_blend))
    frames = retarget_scene.read_take(take).frames
    per_bone, share = helpers.bone_x_share(take, frames)
    log.info("take: rotation about local X %.3f (per bone %s)", share, np.round(per_bone, 2))
    assert share >= 0.8 and per_bone.min() >= 0.5, per_bone
    return take_blend, frames, _curl_of(*helpers.take_points(take, frames), "right")


def test_independent_character_headless(blank, tmp_path, open_right):
    """Mixamo names, T-pose, rolled finger bones, relaxed rest: `retarget --preset auto --json`; the body's
    keys, the finger keys outside the take and the other hand stay as they were."""
    take_blend, frames, take_curl = _saved_take(tmp_path, open_right)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    char = independent_character.build("Hero")
    _, mapping = bone_maps.detect([b.name for b in char.data.bones], "right")
    for j, nxt in anatomy.NEXT.items():  # a real skeleton: every bone points at the next joint
        bone = char.data.bones[mapping[j]]
        to_next = np.array(char.data.bones[mapping[nxt]].head_local - bone.head_local)
        assert np.array(bone.matrix_local)[:3, 1] @ to_next / np.linalg.norm(to_next) > 0.9999, bone.name
    assert np.median(_roll_offsets(char, mapping, "right")) > 20
    forearm = char.pose.bones["mixamorig:RightForeArm"]  # the body's own animation, which must stay
    forearm.rotation_quaternion = (0.9, 0.0, 0.3, 0.1)
    forearm.keyframe_insert("rotation_quaternion", frame=10)
    finger = char.pose.bones["mixamorig:RightHandIndex2"]
    finger.rotation_quaternion = (0.95, 0.3, 0.0, 0.0)
    finger.keyframe_insert("rotation_quaternion", frame=200)  # outside the take: kept
    char_blend = tmp_path / "char.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(char_blend))
    before = helpers.snapshot_keys()
    fbx = tmp_path / "hero.fbx"
    report, corr, med, signed = _retarget_headless(take_blend, char_blend, tmp_path / "out.blend", take_curl, frames,
                                                  "Hero", extra=("--fbx", str(fbx)))
    assert report["preset"] == "mixamo" and len(report["mapped"]) >= 15 and report["frames"] == len(frames)
    assert "wrist.R" not in report["mapped"]  # fingers only by default
    assert report["keys_after"] < report["keys_before"] and report["max_error_deg"] <= 0.5
    assert (corr >= 0.9).all() and (signed >= 0.9).all() and (med <= 10).all(), (corr, signed, med)
    after = helpers.snapshot_keys()
    act = bpy.data.objects["Hero"].animation_data.action.name
    fa = (act, 'pose.bones["mixamorig:RightForeArm"].rotation_quaternion', 0)
    assert np.array_equal(after[fa], before[fa])  # the body's keys are untouched
    ix = (act, 'pose.bones["mixamorig:RightHandIndex2"].rotation_quaternion', 0)
    assert 200.0 in after[ix][0::2] and after[ix][0::2].max() == 200.0  # the key outside the take stays
    assert not any("LeftHand" in k[1] for k in after if k not in before)  # the other hand is not keyed
    assert not any(k[1].startswith('pose.bones["mixamorig:RightHand"]') for k in after)  # nor the wrist
    # --fbx: Blender's default import (animation offset 1) shows every frame's pose on its own frame
    hero = bpy.data.objects["Hero"]
    names = [f"mixamorig:RightHand{f}{k}" for f in ("Index", "Thumb", "Pinky") for k in (1, 3)]
    shots = [int(frames[0]), int(frames[len(frames) // 2]), int(frames[-1])]
    want = {f: _world_bones(hero, names, f) for f in shots}
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.fbx(filepath=str(fbx))
    [imported] = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    for f in shots:
        assert np.abs(_world_bones(imported, names, f) - want[f]).max() < 1e-4, f


def test_metarig_character_headless(rigify_blend, tmp_path, open_right):
    """Rigify's human metarig (bones by Rigify's authors) converted to a Mixamo skeleton: T-pose, no
    metacarpals, every finger bone rolled again, its own relaxed rest hand; `retarget --preset auto`."""
    take_blend, frames, take_curl = _saved_take(tmp_path, open_right)
    bpy.ops.wm.open_mainfile(filepath=str(rigify_blend))
    char = metarig_character.build(bpy.data.objects["metarig"], "Metahuman")
    _, mapping = bone_maps.detect([b.name for b in char.data.bones], "right")
    rolls = _roll_offsets(char, mapping, "right")
    assert np.median(rolls) > 20, rolls
    char_blend = tmp_path / "metahuman.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(char_blend))
    report, corr, med, signed = _retarget_headless(take_blend, char_blend, tmp_path / "out.blend", take_curl, frames,
                                                  "Metahuman", tips=False)
    assert report["preset"] == "mixamo" and len(report["mapped"]) >= 15 and not report["unmapped"]
    assert report["keys_after"] < report["keys_before"] and report["max_error_deg"] <= 0.5
    assert (corr >= 0.9).all() and (signed >= 0.9).all() and (med <= 10).all(), (corr, signed, med)


def test_both_hands_onto_one_character(blank, tmp_path, open_right):
    """A take of two hands: each goes onto the character's hand of its side (the left through the mirrored
    anatomy), and both bend like the captured ones."""
    left = read_model(OPEN_RIGHT.with_name("open_hand_left.npz"), "left")
    res = helpers.make_curl_result(tmp_path / "two.npz", [open_right, left], N=30)
    takes_ = capture.apply_result(bpy.context.scene, str(res), tolerance_deg=0.5, tolerance_mm=0.5)
    char = independent_character.build("Both", with_mesh=False)
    motions = [retarget_scene.read_take(t) for t in takes_]
    report = retarget_scene.retarget_takes(motions, char)
    assert report.preset == "mixamo" and len(report.mapped) == 30 and not report.unmapped
    assert report.mapped["index1.L"] == "mixamorig:LeftHandIndex1"
    for take, motion in zip(takes_, motions):
        side = take["ht_side"]
        mapping = bone_maps.detect([b.name for b in char.data.bones], side)[1]
        tip_of = {j: mapping[j][:-1] + "4" for j in (3, 6, 9, 12, 15)}
        take_curl = _curl_of(*helpers.take_points(take, motion.frames), side)
        corr, med, signed = _agreement(take_curl, char, mapping, tip_of, motion.frames, side)
        assert (corr >= 0.9).all() and (signed >= 0.9).all() and (med <= 10).all(), (side, corr, signed, med)


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
    # the saved file as the headless command reads it (--mapping)
    again = retarget_scene.retarget_takes([retarget_scene.read_take(take)], char,
                                          mapping_file=str(tmp_path / "presets" / "studio.json"))
    assert again.preset == "studio" and again.mapped["thumb1.R"] == "rig_pollex_01_r" and not again.unmapped


def test_retarget_is_one_undo_step(addon, tmp_path, open_right):
    """Ctrl+Z after Retarget gives the character back as it was (no action, every bone at rest)."""
    take = _take(tmp_path, open_right, N=16)
    take_name = take.name
    char, _, _ = preset_hands.build("vrm", open_right, name="Undone", seed=3)
    ht = bpy.context.scene.handtailor
    ht.retarget_character = char
    take.select_set(True)
    bpy.ops.ed.undo_push(message="before the retarget")
    assert bpy.ops.handtailor.retarget("EXEC_DEFAULT", True) == {"FINISHED"}  # True: undoable, as from the UI
    char = bpy.data.objects["Undone"]
    assert char.animation_data is not None and len(keys.fcurves_of(char.animation_data.action)) == 60
    assert bpy.ops.ed.undo() == {"FINISHED"}
    char = bpy.data.objects["Undone"]  # undo reloads the data: look the objects up again
    assert char.animation_data is None or char.animation_data.action is None
    assert not [a for a in bpy.data.actions if a.name.startswith("Undone")]
    assert bpy.data.objects[take_name].animation_data.action is not None  # the take is still there
    assert bpy.ops.ed.redo() == {"FINISHED"}
    assert bpy.data.objects["Undone"].animation_data.action is not None


def test_bad_choices_say_what_to_do(blank, tmp_path, open_right):
    take = _take(tmp_path, open_right, N=8)
    empty = bpy.data.objects.new("Empty", bpy.data.armatures.new("Empty"))
    bpy.context.scene.collection.objects.link(empty)
    with pytest.raises(ValueError, match="no known right hand"):
        retarget_scene.retarget_takes([retarget_scene.read_take(take)], empty)
    with pytest.raises(ValueError, match="HandTailor rig"):
        retarget_scene.retarget_takes([retarget_scene.read_take(take)], take)
    assert keys.fcurves_of(take.animation_data.action) is not None and empty.animation_data is None
