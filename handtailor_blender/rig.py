"""The hand rig: one armature per hand track plus a skinned mesh child with shape keys (DESIGN.md).

Bones: `wrist.R`, `index1.R` .. `thumb3.R` (MANO joint names + Blender's side suffix, so mirror tools
work) and five tip bones (`thumb_tip.R` ...). Rest = template joints at beta 0, roll 0, not connected (heads
move with beta through location keys, see poses.py). Mesh: the template, vertex groups = skinning weights,
10 shape keys `beta0`..`beta9`, and for models with pose correctives 135 shape keys `pose_<joint>_<a><b>`
driven by simple expressions of the bone quaternions (no Python auto-run needed), switched by the mesh
object's `ht_correctives` property.
"""

from __future__ import annotations

import bpy
import numpy as np

from . import poses
from .io.results import MANO_JOINT_NAMES, MANO_PARENTS, TIP_NAMES, TIP_PARENTS, RigModel

# Children that give a joint's bone its direction (MANO order): wrist -> middle1, finger joints -> next.
_NEXT = {0: 4, 1: 2, 2: 3, 4: 5, 5: 6, 7: 8, 8: 9, 10: 11, 11: 12, 13: 14, 14: 15}
_LAST_TO_TIP = {int(p): k for k, p in enumerate(TIP_PARENTS)}  # last finger joint -> tip index


def side_suffix(side: str) -> str:
    return ".L" if side == "left" else ".R"


def bone_names(side: str) -> list[str]:
    """16 joint bones (MANO order) then 5 tip bones (model tip order)."""
    sfx = side_suffix(side)
    return [n + sfx for n in MANO_JOINT_NAMES] + [n + sfx for n in TIP_NAMES]


def _rest_points(model: RigModel):
    J0 = model.J0
    tips = model.v_template[model.tip_vertex_ids]
    heads, tails = [], []
    for j in range(16):
        head = J0[j]
        target = J0[_NEXT[j]] if j in _NEXT else tips[_LAST_TO_TIP[j]]
        # The child sits about 2 degrees off the bone's axis: a child exactly on the axis gets connected by
        # Blender's FBX importer, and a connected bone ignores its location keys (the shape's joint offsets).
        d = target - head
        side_dir = np.cross(d, [0.0, 0.0, 1.0])
        if np.linalg.norm(side_dir) < 1e-9 * max(np.linalg.norm(d), 1e-12):
            side_dir = np.cross(d, [1.0, 0.0, 0.0])
        side_dir *= 0.035 * np.linalg.norm(d) / np.linalg.norm(side_dir)
        tail = head + 0.9 * d + side_dir
        heads.append(head)
        tails.append(tail)
    for k in range(5):
        p = int(TIP_PARENTS[k])
        d = tips[k] - J0[p]
        length = max(np.linalg.norm(d), 1e-3)
        heads.append(tips[k])
        tails.append(tips[k] + d / length * 0.5 * length)
    return np.array(heads), np.array(tails)


def build_rig(model: RigModel, name: str, collection=None, correctives: bool = True):
    """Creates the armature object `name` and its mesh child `name + "_mesh"`; returns (armature, mesh)."""
    collection = collection or bpy.context.scene.collection
    side = model.side
    names = bone_names(side)
    arm_data = bpy.data.armatures.new(name)
    arm = bpy.data.objects.new(name, arm_data)
    collection.objects.link(arm)
    arm.rotation_mode = "QUATERNION"
    arm.show_in_front = True
    heads, tails = _rest_points(model)

    view_layer = bpy.context.view_layer
    prev_active = view_layer.objects.active
    prev_mode = prev_active.mode if prev_active is not None else "OBJECT"
    if prev_active is not None and prev_mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        ebones = []
        for i, bname in enumerate(names):
            eb = arm_data.edit_bones.new(bname)
            eb.head = tuple(heads[i])
            eb.tail = tuple(tails[i])
            eb.roll = 0.0
            eb.use_connect = False
            eb.use_deform = i < 16
            ebones.append(eb)
        for j in range(1, 16):
            ebones[j].parent = ebones[int(MANO_PARENTS[j])]
        for k in range(5):
            ebones[16 + k].parent = ebones[int(TIP_PARENTS[k])]
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    view_layer.objects.active = prev_active if prev_active is not None else arm
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"
    arm["ht_side"] = side
    arm["ht_model"] = model.path
    arm["ht_confidence"] = 1.0
    ui = arm.id_properties_ui("ht_confidence")
    ui.update(min=0.0, max=1.0, description="HandTailor: mean keypoint confidence of this frame")

    mesh = _build_mesh(model, name + "_mesh", names[:16])
    mesh_obj = bpy.data.objects.new(name + "_mesh", mesh)
    collection.objects.link(mesh_obj)
    mesh_obj.parent = arm
    mod = mesh_obj.modifiers.new("HandTailor Armature", "ARMATURE")
    mod.object = arm
    mod.use_vertex_groups = True
    mod.use_deform_preserve_volume = False
    _add_vertex_groups(model, mesh_obj, names[:16])
    _add_shape_keys(model, mesh_obj)
    mesh_obj["ht_correctives"] = 1.0 if correctives else 0.0
    if model.has_posedirs:
        _add_correctives(model, mesh_obj, arm, names[:16])
    return arm, mesh_obj


def _build_mesh(model: RigModel, name: str, joint_bones: list[str]):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(model.v_template.tolist(), [], model.faces.tolist())
    mesh.update(calc_edges=True)
    # from_pydata goes through Python floats; set the exact float32 template once more
    mesh.vertices.foreach_set("co", model.v_template.astype(np.float32).ravel())
    return mesh


def _add_vertex_groups(model: RigModel, mesh_obj, joint_bones: list[str]) -> None:
    W = model.weights
    for j, bname in enumerate(joint_bones):
        vg = mesh_obj.vertex_groups.new(name=bname)
        idx = np.nonzero(W[:, j] > 0)[0]
        vals = W[idx, j]
        # one add() per distinct weight value keeps this fast for models with shared weights
        order = np.argsort(vals, kind="stable")
        idx, vals = idx[order], vals[order]
        cuts = np.nonzero(np.diff(vals))[0] + 1
        for part_idx, part_val in zip(np.split(idx, cuts), np.split(vals, cuts)):
            if len(part_idx):
                vg.add(part_idx.tolist(), float(part_val[0]), "REPLACE")


def _add_shape_keys(model: RigModel, mesh_obj) -> None:
    mesh_obj.shape_key_add(name="Basis", from_mix=False)
    base = model.v_template
    for b in range(10):
        kb = mesh_obj.shape_key_add(name=f"beta{b}", from_mix=False)
        kb.slider_min, kb.slider_max = -10.0, 10.0
        kb.data.foreach_set("co", (base + model.shapedirs[:, :, b]).astype(np.float32).ravel())
        kb.value = 0.0
    mesh_obj.data.shape_keys.use_relative = True


def bone_rest_rotations(arm) -> np.ndarray:
    """(21, 3, 3) rest orientation B of every rig bone (armature space), in bone_names order."""
    names = bone_names(arm["ht_side"])
    B = np.empty((len(names), 3, 3))
    for i, n in enumerate(names):
        B[i] = np.array(arm.data.bones[n].matrix_local.to_3x3())
    return B


def _add_correctives(model: RigModel, mesh_obj, arm, joint_bones: list[str]) -> None:
    B = bone_rest_rotations(arm)
    base = model.v_template
    for j in range(1, 16):
        for a in range(3):
            for b in range(3):
                k = (j - 1) * 9 + a * 3 + b
                col = model.posedirs[:, :, k]
                kb = mesh_obj.shape_key_add(name=f"pose_{MANO_JOINT_NAMES[j]}_{a}{b}", from_mix=False)
                kb.slider_min, kb.slider_max = -10.0, 10.0
                kb.data.foreach_set("co", (base + col).astype(np.float32).ravel())
                fc = kb.driver_add("value")
                drv = fc.driver
                drv.type = "SCRIPTED"
                for ci, var_name in enumerate("wxyz"):
                    var = drv.variables.new()
                    var.name = var_name
                    var.type = "SINGLE_PROP"
                    var.targets[0].id_type = "OBJECT"
                    var.targets[0].id = arm
                    var.targets[0].data_path = f'pose.bones["{joint_bones[j]}"].rotation_quaternion[{ci}]'
                var = drv.variables.new()
                var.name = "e"
                var.type = "SINGLE_PROP"
                var.targets[0].id_type = "OBJECT"
                var.targets[0].id = mesh_obj
                var.targets[0].data_path = '["ht_correctives"]'
                drv.expression = poses.corrective_expression(B[j], a, b)
                for m in list(fc.modifiers):
                    fc.modifiers.remove(m)


def find_mesh(arm):
    """The rig's mesh child (or None)."""
    for child in arm.children:
        if child.type == "MESH" and child.get("ht_correctives") is not None:
            return child
    return None
