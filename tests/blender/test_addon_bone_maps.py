"""Bone-name presets, their detection and user mappings (no scene)."""

import json

import pytest

from handtailor_blender import bone_maps

JOINTS = ("index", "middle", "pinky", "ring", "thumb")


def mixamo(prefix="mixamorig:", side="Right"):
    return [f"{prefix}{side}Hand"] + [f"{prefix}{side}Hand{f.title()}{k}" for f in JOINTS for k in (1, 2, 3, 4)]


def ue(side="r", metacarpals=True):
    names = [f"hand_{side}"] + [f"{f}_0{k}_{side}" for f in JOINTS for k in (1, 2, 3)]
    return names + ([f"{f}_metacarpal_{side}" for f in JOINTS[:4]] if metacarpals else [])


def vrm(version=1, side="right"):
    thumb = ("Metacarpal", "Proximal", "Distal") if version == 1 else ("Proximal", "Intermediate", "Distal")
    names = [f"{side}Hand"] + [f"{side}Thumb{p}" for p in thumb]
    return names + [f"{side}{w}{p}" for w in ("Index", "Middle", "Ring", "Little")
                    for p in ("Proximal", "Intermediate", "Distal")]


@pytest.mark.parametrize("names,side,preset,index1,thumb1", [
    (mixamo(), "right", "mixamo", "mixamorig:RightHandIndex1", "mixamorig:RightHandThumb1"),
    (mixamo("mixamorig1:", "Left"), "left", "mixamo", "mixamorig1:LeftHandIndex1", "mixamorig1:LeftHandThumb1"),
    (mixamo(""), "right", "mixamo", "RightHandIndex1", "RightHandThumb1"),
    (ue(), "right", "ue5", "index_01_r", "thumb_01_r"),
    (ue("l", metacarpals=False), "left", "ue4", "index_01_l", "thumb_01_l"),
    (vrm(1), "right", "vrm", "rightIndexProximal", "rightThumbMetacarpal"),
    (vrm(0), "right", "vrm", "rightIndexProximal", "rightThumbProximal"),
    (["c_hand_fk.r"] + [f"c_{f}{k}.r" for f in JOINTS for k in (1, 2, 3)], "right", "arp", "c_index1.r",
     "c_thumb1.r"),
    (["hand.l"] + [f"{f}{k}.l" for f in JOINTS for k in (1, 2, 3)], "left", "arp", "index1.l", "thumb1.l"),
    (["DEF-hand.R"] + [f"DEF-f_{f}.0{k}.R" for f in JOINTS[:4] for k in (1, 2, 3)]
     + [f"DEF-thumb.0{k}.R" for k in (1, 2, 3)], "right", "rigify", "DEF-f_index.01.R", "DEF-thumb.01.R"),
])
def test_detect(names, side, preset, index1, thumb1):
    got, mapping = bone_maps.detect(names + ["spine", "head"], side)
    assert got == preset and len(mapping) == 16
    assert mapping[1] == index1 and mapping[13] == thumb1  # finger 1 = the proximal phalanx, not a metacarpal
    with pytest.raises(ValueError, match=f"no known {'left' if side == 'right' else 'right'} hand"):
        bone_maps.detect(names, "left" if side == "right" else "right")


def test_prefix_needs_a_separator_and_no_ambiguity():
    names = ["rig_index_01_r", "xindex_02_r", "a_index_03_r", "b_index_03_r"]
    got = bone_maps.resolve({"index1": ["index_01_{s}"], "index2": ["index_02_{s}"], "index3": ["index_03_{s}"]},
                            names, "right")
    assert got == {1: "rig_index_01_r"}


def test_user_mapping_files(tmp_path):
    bones = {"wrist": bone_maps.side_template("CC_Base_R_Hand", "right"),
             "index1": bone_maps.side_template("CC_Base_R_Index1", "right")}
    assert bones == {"wrist": "CC_Base_{S}_Hand", "index1": "CC_Base_{S}_Index1"}
    assert bone_maps.guess_side(["CC_Base_L_Hand", "CC_Base_L_Index1"]) == "left"
    path = bone_maps.save_mapping(tmp_path / "cc.json", "cc", bones)
    name, templates = bone_maps.load_mapping(path)
    assert name == "cc" and bone_maps.fill(templates, "left") == {"wrist": "CC_Base_L_Hand",
                                                                  "index1": "CC_Base_L_Index1"}
    (tmp_path / "bad.json").write_text(json.dumps({"bones": {"knee": "x"}}))
    with pytest.raises(ValueError, match="unknown joints"):
        bone_maps.load_mapping(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no such mapping"):
        bone_maps.load_mapping(tmp_path / "missing.json")
