"""A second character built by someone else: Rigify's human metarig (its bones placed by Rigify's authors:
their hand proportions, their relaxed rest hand, their rolls) turned into a Mixamo skeleton the way a user's
conversion would: arms raised into a T-pose, the palm (metacarpal) bones removed, Mixamo names on the arms
and hands, and every finger bone rolled once more at random. Nothing here comes from the add-on or the hand
model.
"""

from __future__ import annotations

import numpy as np

ARM = {"shoulder": "Shoulder", "upper_arm": "Arm", "forearm": "ForeArm", "hand": "Hand"}
FINGERS = {"f_index": "Index", "f_middle": "Middle", "f_ring": "Ring", "f_pinky": "Pinky", "thumb": "Thumb"}


def mixamo_name(name: str) -> str:
    """`f_index.02.R` -> `mixamorig:RightHandIndex2`, `forearm.L` -> `mixamorig:LeftForeArm`; other names
    are kept."""
    stem, _, side = name.rpartition(".")
    if side not in ("L", "R"):
        return name
    word = "Right" if side == "R" else "Left"
    base, _, num = stem.partition(".")
    if base in ARM and not num:
        return f"mixamorig:{word}{ARM[base]}"
    if base in FINGERS and num.isdigit():
        return f"mixamorig:{word}Hand{FINGERS[base]}{int(num)}"
    return name


def _subtree(bone) -> list:
    return [bone] + list(bone.children_recursive)


def build(metarig, name: str = "Metahuman", seed: int = 5):
    """Converts the metarig object in place (renamed `name`) and returns it; every other object of the file
    is removed."""
    import bpy
    from mathutils import Matrix, Vector

    rng = np.random.default_rng(seed)
    for obj in list(bpy.data.objects):
        if obj != metarig:
            bpy.data.objects.remove(obj)
    metarig.name = metarig.data.name = name
    bpy.context.view_layer.objects.active = metarig
    bpy.ops.object.mode_set(mode="EDIT")
    eb = metarig.data.edit_bones
    for side, sx in (("R", -1.0), ("L", 1.0)):
        for seg in ("upper_arm", "forearm"):  # the arm straight out sideways; the wrist as Rigify made it
            top = eb[f"{seg}.{side}"]
            moved = _subtree(top)
            connected = {b.name: b.use_connect for b in moved}
            for b in moved:
                b.use_connect = False
            pivot = top.head.copy()
            turn = (top.tail - top.head).normalized().rotation_difference(Vector((sx, 0.0, 0.0)))
            M = Matrix.Translation(pivot) @ turn.to_matrix().to_4x4() @ Matrix.Translation(-pivot)
            for b in moved:
                length = b.length
                b.matrix = M @ b.matrix
                b.length = length
            for b in moved:
                b.use_connect = connected[b.name]  # heads stay put: the top turns about its own
        hand = eb[f"hand.{side}"]
        for palm in [b for b in hand.children if b.name.startswith("palm.")]:
            for child in list(palm.children):
                child.use_connect = False
                child.parent = hand
            eb.remove(palm)
        for b in eb:
            if b.name.endswith("." + side) and b.name.split(".")[0] in FINGERS:
                b.roll += float(rng.uniform(0.6, 2.5) * rng.choice([-1.0, 1.0]))
    bpy.ops.object.mode_set(mode="OBJECT")
    for bone in list(metarig.data.bones):
        bone.name = mixamo_name(bone.name)
    for pb in metarig.pose.bones:
        pb.rotation_mode = "QUATERNION"
    return metarig
