"""The hand rig: one armature per hand track plus a skinned mesh child (DESIGN.md "Blender side").

Bones: `wrist.R`, `index1.R` .. `thumb3.R` (MANO joint names + Blender's side suffix, so mirror tools
work) and five tip bones (`thumb_tip.R` ...), rolled so that a finger curls about its local X
(anatomy.bone_frames), not connected. Two kinds of rig:
- identity rig (`ht_beta` set; beta and size constant over the track): the track's one shape is in the rest
  skeleton (joints J(beta)) and in the mesh, so no bone location or shape key is keyed, and its size is a
  constant object scale;
- per-frame shape rig: rest = template joints at beta 0; shape moves the heads through location keys and 10
  shape keys `beta0`..`beta9` (poses.py).
Mesh: smooth shaded, a skin material, vertex groups = skinning weights; for models with pose correctives 135
shape keys `pose_<joint>_<a><b>` driven by simple expressions of the bones' local rotations (no Python
auto-run needed), switched by the mesh object's `ht_correctives`; its visibility follows the armature's
keyed `ht_visible`.
"""

from __future__ import annotations

import bpy
import numpy as np

from . import anatomy, poses
from .io.results import MANO_JOINT_NAMES, MANO_PARENTS, TIP_NAMES, TIP_PARENTS, RigModel

_LAST_TO_TIP = {int(p): k for k, p in enumerate(TIP_PARENTS)}  # last finger joint -> tip index


def side_suffix(side: str) -> str:
    return ".L" if side == "left" else ".R"


def bone_names(side: str) -> list[str]:
    """16 joint bones (MANO order) then 5 tip bones (model tip order)."""
    sfx = side_suffix(side)
    return [n + sfx for n in MANO_JOINT_NAMES] + [n + sfx for n in TIP_NAMES]


def rest_joints(model: RigModel, beta=None) -> np.ndarray:
    """(16, 3) rest joints: J(beta) for an identity rig, the template's J0 otherwise."""
    if beta is None:
        return model.J0
    return model.J0 + np.einsum("jcb,b->jc", model.Jdirs, np.asarray(beta, np.float64))


def rest_vertices(model: RigModel, beta=None) -> np.ndarray:
    """(V, 3) rest mesh: the template shaped by beta (identity rig) or the template."""
    if beta is None:
        return model.v_template
    return model.v_template + model.shapedirs @ np.asarray(beta, np.float64)


def track_identity(beta: np.ndarray, hand_scale=None, atol: float = 1e-6):
    """The one shape (10,) of a track whose identity is constant, else None: beta rows (M, 10) all the same
    and, when given, hand_scale (M,) too (an identity rig's size is its object scale, which must not be
    animated; a varying size goes to the per-frame rig's wrist bone)."""
    beta = np.asarray(beta, np.float64)
    if not len(beta) or np.abs(beta - beta[:1]).max() > atol:
        return None
    if hand_scale is not None:
        s = np.asarray(hand_scale, np.float64)
        if np.abs(s - s[:1]).max() > atol * max(1.0, abs(float(s[0]))):
            return None
    return beta[0].copy()


def set_rotation_mode(arm, rotation_mode: str) -> None:
    """Keys of the next take go to this rotation mode ('QUATERNION' or an Euler order)."""
    for pb in arm.pose.bones:
        pb.rotation_mode = rotation_mode
    arm["ht_rotation_mode"] = rotation_mode


def identity_beta(arm):
    """The identity rig's beta (10,), or None for a per-frame shape rig."""
    b = arm.get("ht_beta")
    return None if b is None else np.asarray(list(b), np.float64)


def _rest_points(model: RigModel, beta=None):
    J0 = rest_joints(model, beta)
    tips = rest_vertices(model, beta)[model.tip_vertex_ids]
    heads, tails = [], []
    for j in range(16):
        head = J0[j]
        target = J0[anatomy.NEXT[j]] if j in anatomy.NEXT else tips[_LAST_TO_TIP[j]]
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
    heads = np.array(heads)
    frames = anatomy.bone_frames(J0, anatomy.skeleton_ends(J0, tips), model.side)
    frames = np.concatenate([frames, frames[TIP_PARENTS]])  # a tip bone shares its finger bone's roll
    return heads, np.array(tails), frames


def build_rig(model: RigModel, name: str, collection=None, correctives: bool = True, beta=None,
              rotation_mode: str = "QUATERNION"):
    """Creates the armature object `name` and its mesh child `name + "_mesh"`; returns (armature, mesh).

    beta (10,): an identity rig with this shape in its rest skeleton and mesh; None: a per-frame shape rig."""
    collection = collection or bpy.context.scene.collection
    side = model.side
    names = bone_names(side)
    arm_data = bpy.data.armatures.new(name)
    arm = bpy.data.objects.new(name, arm_data)
    collection.objects.link(arm)
    arm.rotation_mode = "QUATERNION"
    arm.show_in_front = True
    heads, tails, frames = _rest_points(model, beta)

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
            eb.align_roll(tuple(np.cross(frames[i][:, 0], tails[i] - heads[i])))  # z = x cross y: x flexes
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
        pb.rotation_mode = rotation_mode
    arm["ht_rotation_mode"] = rotation_mode
    if beta is not None:
        arm["ht_beta"] = [float(b) for b in beta]
    arm["ht_side"] = side
    arm["ht_model"] = model.path
    arm["ht_confidence"] = 1.0
    ui = arm.id_properties_ui("ht_confidence")
    ui.update(min=0.0, max=1.0, description="HandTailor: mean keypoint confidence of this frame")
    arm["ht_visible"] = 1.0
    arm.id_properties_ui("ht_visible").update(
        min=0.0, max=1.0, description="HandTailor: 1 where the hand was tracked, 0 where it was not (hides the mesh)")

    mesh = _build_mesh(model, name + "_mesh", rest_vertices(model, beta))
    mesh_obj = bpy.data.objects.new(name + "_mesh", mesh)
    collection.objects.link(mesh_obj)
    mesh_obj.parent = arm
    mod = mesh_obj.modifiers.new("HandTailor Armature", "ARMATURE")
    mod.object = arm
    mod.use_vertex_groups = True
    mod.use_deform_preserve_volume = False
    _add_vertex_groups(model, mesh_obj, names[:16])
    _add_shape_keys(model, mesh_obj, rest_vertices(model, beta), with_betas=beta is None)
    mesh_obj["ht_correctives"] = 1.0 if correctives else 0.0
    if model.has_posedirs:
        _add_correctives(model, mesh_obj, arm, names[:16], rest_vertices(model, beta))
    _drive_visibility(mesh_obj, arm)
    return arm, mesh_obj


SKIN_MATERIAL = "HandTailor Skin"
SKIN_RGBA = (0.80, 0.56, 0.46, 1.0)


def skin_material():
    """The shared skin material (Principled BSDF with some subsurface; the same colour in Workbench)."""
    mat = bpy.data.materials.get(SKIN_MATERIAL)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(SKIN_MATERIAL)
    mat.diffuse_color = SKIN_RGBA
    mat.roughness = 0.55
    if mat.node_tree is None:  # Blender < 5.0 makes node trees on request
        mat.use_nodes = True
    bsdf = next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = SKIN_RGBA
        bsdf.inputs["Roughness"].default_value = 0.55
        for name, value in (("Subsurface Weight", 0.15), ("Subsurface Radius", (0.01, 0.004, 0.002))):
            if name in bsdf.inputs:
                bsdf.inputs[name].default_value = value
    return mat


def _build_mesh(model: RigModel, name: str, verts: np.ndarray):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], model.faces.tolist())
    mesh.update(calc_edges=True)
    # from_pydata goes through Python floats; set the exact float32 rest once more
    mesh.vertices.foreach_set("co", verts.astype(np.float32).ravel())
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), bool))
    mesh.materials.append(skin_material())
    return mesh


def _drive_visibility(mesh_obj, arm) -> None:
    """The mesh hides (viewport and render) where the armature's `ht_visible` is keyed 0."""
    for prop in ("hide_viewport", "hide_render"):
        drv = mesh_obj.driver_add(prop).driver
        drv.type = "SCRIPTED"
        var = drv.variables.new()
        var.name = "v"
        var.type = "SINGLE_PROP"
        var.targets[0].id_type = "OBJECT"
        var.targets[0].id = arm
        var.targets[0].data_path = '["ht_visible"]'
        drv.expression = "v < 0.5"


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


def _add_shape_keys(model: RigModel, mesh_obj, base: np.ndarray, with_betas: bool = True) -> None:
    mesh_obj.shape_key_add(name="Basis", from_mix=False)
    for b in range(10 if with_betas else 0):
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


def _add_correctives(model: RigModel, mesh_obj, arm, joint_bones: list[str], base: np.ndarray) -> None:
    B = bone_rest_rotations(arm)
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
                for var_name in "wxyz":
                    # the bone's own rotation as a quaternion, whatever its rotation mode
                    var = drv.variables.new()
                    var.name = var_name
                    var.type = "TRANSFORMS"
                    tgt = var.targets[0]
                    tgt.id = arm
                    tgt.bone_target = joint_bones[j]
                    tgt.transform_type = "ROT_" + var_name.upper()
                    tgt.rotation_mode = "QUATERNION"
                    tgt.transform_space = "LOCAL_SPACE"
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
