"""Hand armatures named like the rigs users retarget onto (Mixamo, UE5, VRM), for the preset tests.

Built from the shipped hand model's joints, turned and scaled into the character's frame, with a relaxed
rest (every finger joint bent) and each finger bone rolled at random, so nothing lines up with the
HandTailor rig except the anatomy. (The independently built character is in independent_character.py.)
"""

from __future__ import annotations

import numpy as np

FINGER_ORDER = ("index", "middle", "pinky", "ring", "thumb")  # MANO joint order 1..15


def _names(preset: str, side: str) -> dict[int, str]:
    """{MANO joint: bone name} plus tips as {100 + finger index: leaf name}."""
    R = side == "right"
    out = {}
    if preset == "mixamo":
        S = "Right" if R else "Left"
        out[0] = f"mixamorig:{S}Hand"
        for f, word in enumerate(("Index", "Middle", "Pinky", "Ring", "Thumb")):
            for k in range(3):
                out[1 + 3 * f + k] = f"mixamorig:{S}Hand{word}{k + 1}"
            out[100 + f] = f"mixamorig:{S}Hand{word}4"
    elif preset == "ue5":
        s = "r" if R else "l"
        out[0] = f"hand_{s}"
        for f, word in enumerate(FINGER_ORDER):
            for k in range(3):
                out[1 + 3 * f + k] = f"{word}_0{k + 1}_{s}"
    elif preset == "vrm":
        s = "right" if R else "left"
        out[0] = f"{s}Hand"
        for f, word in enumerate(("Index", "Middle", "Little", "Ring", "Thumb")):
            parts = ("Metacarpal", "Proximal", "Distal") if word == "Thumb" else ("Proximal", "Intermediate", "Distal")
            for k in range(3):
                out[1 + 3 * f + k] = f"{s}{word}{parts[k]}"
    else:
        raise ValueError(preset)
    return out


def _rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def relaxed_joints(model, bend_deg=(12.0, 18.0, 10.0), seed: int = 0):
    """(16, 3) joints and (5, 3) tips of the model's rest hand with every finger bent at each joint by about
    bend_deg (MCP, PIP, DIP) about its flexion axis, then turned by a random rotation and scaled x1.6."""
    from handtailor_blender import anatomy

    rng = np.random.default_rng(seed)
    J = model.J0.copy()
    tips = model.v_template[model.tip_vertex_ids].copy()
    F = anatomy.bone_frames(J, anatomy.skeleton_ends(J, tips), model.side)
    tip_index = {3: 1, 6: 2, 12: 3, 9: 4, 15: 0}
    for f, (a, b, c) in enumerate(anatomy.FINGERS.values()):
        for k, j in enumerate((a, b, c)):
            Rj = _rot(F[j][:, 0], np.radians(bend_deg[k] * rng.uniform(0.7, 1.3)))
            moved = [m for m in (a, b, c) if m > j] if f < 5 else []
            for m in moved:
                J[m] = J[j] + Rj @ (J[m] - J[j])
            tips[tip_index[c]] = J[j] + Rj @ (tips[tip_index[c]] - J[j])
    turn = _rot(rng.normal(size=3), rng.uniform(0.5, 2.5))
    return (J - J[0]) @ turn.T * 1.6, (tips - J[0]) @ turn.T * 1.6


def build(preset: str, model, name: str = "Character", seed: int = 0, side: str | None = None):
    """An armature object with a hand named like `preset` (relaxed rest, random rolls; UE5 with metacarpals,
    Mixamo with leaf tip bones); returns (object, {MANO joint: bone}, {last joint: tip bone})."""
    import bpy

    side = side or model.side
    rng = np.random.default_rng(seed + 17)
    J, tips = relaxed_joints(model, seed=seed)
    names = _names(preset, side)
    arm = bpy.data.objects.new(name, bpy.data.armatures.new(name))
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    eb = arm.data.edit_bones
    forearm = eb.new("forearm")
    forearm.head, forearm.tail = tuple(J[0] - (J[4] - J[0]) * 2.5), tuple(J[0])
    hand = eb.new(names[0])
    hand.head, hand.tail = tuple(J[0]), tuple(J[4])
    hand.parent = forearm
    hand.roll = rng.uniform(-np.pi, np.pi)
    tip_of = {}
    tip_index = {3: 1, 6: 2, 12: 3, 9: 4, 15: 0}
    for f, word in enumerate(FINGER_ORDER):
        parent = hand
        a = 1 + 3 * f
        if preset == "ue5" and word != "thumb":
            meta = eb.new(f"{word}_metacarpal_{'r' if side == 'right' else 'l'}")
            meta.head, meta.tail = tuple(J[0] + 0.15 * (J[a] - J[0])), tuple(J[a])
            meta.parent = hand
            meta.roll = rng.uniform(-np.pi, np.pi)
            parent = meta
        for k in range(3):
            j = a + k
            b = eb.new(names[j])
            b.head = tuple(J[j])
            b.tail = tuple(J[j + 1] if k < 2 else tips[tip_index[j]])
            b.roll = rng.uniform(-np.pi, np.pi)
            b.parent = parent
            parent = b
        if 100 + f in names:
            leaf = eb.new(names[100 + f])
            d = tips[tip_index[a + 2]] - J[a + 2]
            leaf.head, leaf.tail = tuple(tips[tip_index[a + 2]]), tuple(tips[tip_index[a + 2]] + 0.3 * d)
            leaf.parent = parent
            tip_of[a + 2] = leaf.name
    bpy.ops.object.mode_set(mode="OBJECT")
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"
    return arm, {j: n for j, n in names.items() if j < 16}, tip_of
