"""A character built independently of the add-on and of preset_hands.py: a Mixamo-named body in T-pose whose
hands come from a table of human hand proportions (not the MANO template), relaxed at rest, every bone
placed by a 4x4 matrix with a random roll. A skinned mesh (a tube per bone) makes it renderable.
"""

from __future__ import annotations

import numpy as np

# right hand, local frame: +x fingers, +y the thumb side, -z the palm (metres)
KNUCKLE = {"Index": (0.095, 0.024), "Middle": (0.098, 0.006), "Ring": (0.092, -0.012), "Pinky": (0.083, -0.028)}
PHALANX = {"Index": (0.039, 0.022, 0.017), "Middle": (0.044, 0.026, 0.019), "Ring": (0.041, 0.025, 0.018),
           "Pinky": (0.032, 0.019, 0.016), "Thumb": (0.044, 0.032, 0.027)}
FAN_DEG = {"Index": 7.0, "Middle": 1.0, "Ring": -5.0, "Pinky": -12.0}
RELAXED_DEG = (16.0, 24.0, 12.0)  # MCP, PIP, DIP bend at rest
THUMB_BASE = np.array([0.022, 0.021, -0.012])
THUMB_DIR = np.array([0.55, 0.72, -0.42])


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def hand_points():
    """{bone suffix: (head, tail)} of a relaxed right hand in its local frame (see above)."""
    pts = {"Hand": (np.zeros(3), np.array([0.098, 0.006, 0.0]))}
    down = np.array([0.0, 0.0, -1.0])
    for f, (x, y) in KNUCKLE.items():
        a = np.radians(FAN_DEG[f])
        d0 = np.array([np.cos(a), np.sin(a), 0.0])
        p = np.array([x, y, 0.0])
        bend = 0.0
        for k, length in enumerate(PHALANX[f]):
            bend += np.radians(RELAXED_DEG[k])
            d = np.cos(bend) * d0 + np.sin(bend) * down
            pts[f"{f}{k + 1}"] = (p, p + length * d)
            p = p + length * d
        pts[f"{f}4"] = (p, p + 0.008 * d)
    d0 = _unit(THUMB_DIR)
    toward_palm = _unit(np.cross(d0, [1.0, 0.0, 0.0]))
    if toward_palm[2] > 0:
        toward_palm = -toward_palm
    p, bend = THUMB_BASE.copy(), 0.0
    for k, length in enumerate(PHALANX["Thumb"]):
        bend += np.radians((8.0, 14.0, 10.0)[k])
        d = np.cos(bend) * d0 + np.sin(bend) * toward_palm
        pts[f"Thumb{k + 1}"] = (p, p + length * d)
        p = p + length * d
    pts["Thumb4"] = (p, p + 0.008 * d)
    return pts


def _matrix(head, tail, roll_rng):
    y = _unit(tail - head)
    x0 = _unit(np.cross(y, [0.0, 0.0, 1.0]) if abs(y[2]) < 0.9 else np.cross(y, [1.0, 0.0, 0.0]))
    phi = roll_rng.uniform(-np.pi, np.pi)
    x = np.cos(phi) * x0 + np.sin(phi) * np.cross(y, x0)
    M = np.eye(4)
    M[:3, 0], M[:3, 1], M[:3, 2], M[:3, 3] = x, y, np.cross(x, y), head
    return M


def build(name: str = "Character", seed: int = 11, with_mesh: bool = True):
    """The character armature object (and its mesh child when asked)."""
    import bpy
    from mathutils import Matrix

    rng = np.random.default_rng(seed)
    bones = {"Hips": ((0, 0, 1.0), (0, 0, 1.1), None), "Spine": ((0, 0, 1.1), (0, 0, 1.25), "Hips"),
             "Spine1": ((0, 0, 1.25), (0, 0, 1.38), "Spine"), "Spine2": ((0, 0, 1.38), (0, 0, 1.48), "Spine1"),
             "Neck": ((0, 0, 1.48), (0, 0, 1.58), "Spine2"), "Head": ((0, 0, 1.58), (0, 0, 1.78), "Neck")}
    for side, sx in (("Right", -1.0), ("Left", 1.0)):
        bones[f"{side}Shoulder"] = ((sx * 0.04, 0, 1.45), (sx * 0.17, 0, 1.45), "Spine2")
        bones[f"{side}Arm"] = ((sx * 0.17, 0, 1.45), (sx * 0.45, 0, 1.45), f"{side}Shoulder")
        bones[f"{side}ForeArm"] = ((sx * 0.45, 0, 1.45), (sx * 0.71, 0, 1.45), f"{side}Arm")
        wrist = np.array([sx * 0.71, 0.0, 1.45])
        # T-pose, palms down: local +x (fingers) -> world -x for the right hand, +y (thumb) -> the front (-y),
        # -z (palm) -> down; the left hand is the mirror image
        R = np.diag([-1.0, -1.0, 1.0])
        for suffix, (h, t) in hand_points().items():
            h, t = R @ h, R @ t
            if side == "Left":  # mirror the hand about its wrist (x -> -x), then put it on the left wrist
                h, t = h * [-1, 1, 1], t * [-1, 1, 1]
            h, t = wrist + h, wrist + t
            parent = (f"{side}ForeArm" if suffix == "Hand" else
                      f"{side}Hand" if suffix.endswith("1") else f"{side}Hand{suffix[:-1]}{int(suffix[-1]) - 1}")
            bones[f"{side}Hand" if suffix == "Hand" else f"{side}Hand{suffix}"] = (h, t, parent)
    arm = bpy.data.objects.new(name, bpy.data.armatures.new(name))
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    eb = arm.data.edit_bones
    for short, (h, t, _) in bones.items():
        b = eb.new("mixamorig:" + short)
        h, t = np.asarray(h, float), np.asarray(t, float)
        b.head, b.tail = tuple(h), tuple(t)  # a new bone has no length: the matrix alone would lose its direction
        b.matrix = Matrix(_matrix(h, t, rng).tolist())
        b.length = float(np.linalg.norm(t - h))
    for short, (_, _, parent) in bones.items():
        if parent:
            eb["mixamorig:" + short].parent = eb["mixamorig:" + parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"
    if with_mesh:
        _tube_mesh(arm, name + "_body")
    return arm


def _tube_mesh(arm, name: str, sides: int = 10):
    """A tapered tube around every bone and a palm plate for each hand, each rigidly bound to its bone."""
    import bpy

    verts, faces, groups = [], [], []
    bones = arm.data.bones

    def add(points, quads, bone):
        base = len(verts)
        verts.extend(points)
        faces.extend(tuple(base + i for i in q) for q in quads)
        groups.append((bone, list(range(base, base + len(points)))))

    for b in bones:
        h, t = np.array(b.head_local), np.array(b.tail_local)
        if b.name.endswith("Hand"):  # a palm plate from the wrist to the knuckles
            side = b.name[len("mixamorig:"):-len("Hand")]
            k = [np.array(bones[f"mixamorig:{side}Hand{f}1"].head_local) for f in ("Index", "Pinky")]
            lat = _unit(k[0] - k[1])
            n = _unit(np.cross(lat, t - h)) * 0.012
            w = 0.6 * (k[0] - k[1])
            ring = [h + 0.45 * w, k[0] + 0.1 * w, k[1] - 0.1 * w, h - 0.45 * w]
            pts = [p + n for p in ring] + [p - n for p in ring]
            add(pts, [(0, 1, 2, 3), (7, 6, 5, 4), (0, 4, 5, 1), (1, 5, 6, 2), (2, 6, 7, 3), (3, 7, 4, 0)], b.name)
            continue
        finger = "Hand" in b.name
        r = 0.0085 if finger else min(0.05, 0.2 * np.linalg.norm(t - h) + 0.01)
        if finger:  # overlap the neighbours so a bent finger reads as one
            d = _unit(t - h)
            h, t = h - 0.5 * r * d, t + 0.5 * r * d
        X, Z = np.array(b.matrix_local)[:3, 0], np.array(b.matrix_local)[:3, 2]
        pts = [end + rad * (np.cos(a) * X + np.sin(a) * Z) for end, rad in ((h, r), (t, 0.85 * r))
               for a in 2 * np.pi * np.arange(sides) / sides]
        quads = [(k, (k + 1) % sides, sides + (k + 1) % sides, sides + k) for k in range(sides)]
        quads += [tuple(range(sides))[::-1], tuple(range(sides, 2 * sides))]
        add(pts, quads, b.name)
    me = bpy.data.meshes.new(name)
    me.from_pydata([tuple(v) for v in verts], [], faces)
    me.polygons.foreach_set("use_smooth", np.ones(len(me.polygons), bool))
    ob = bpy.data.objects.new(name, me)
    bpy.context.scene.collection.objects.link(ob)
    ob.parent = arm
    for bone, idx in groups:
        vg = ob.vertex_groups.get(bone) or ob.vertex_groups.new(name=bone)
        vg.add(idx, 1.0, "REPLACE")
    ob.modifiers.new("Armature", "ARMATURE").object = arm
    ob.modifiers.new("Bevel", "BEVEL").width = 0.002
    mat = bpy.data.materials.new(name + "_mat")
    mat.diffuse_color = (0.25, 0.45, 0.85, 1.0)
    me.materials.append(mat)
    return ob
