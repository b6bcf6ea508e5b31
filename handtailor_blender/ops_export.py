"""FBX export with settings that round-trip: no leaf bones, baked animation, no key simplification.

FBX time 0 is scene frame 1, so Blender's default import (`anim_offset` 1) and other applications put every
key back on its own frame; the exported range is the animation's whole range, whatever the scene's.
"""

import contextlib
import logging

import bpy
import numpy as np
from bpy.props import EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

# axes and unit scale each target expects
PRESETS = {
    "BLENDER": dict(axis_forward="-Z", axis_up="Y", global_scale=1.0, apply_unit_scale=True,
                    apply_scale_options="FBX_SCALE_NONE"),
    "UNITY": dict(axis_forward="-Z", axis_up="Y", global_scale=1.0, apply_unit_scale=True,
                  apply_scale_options="FBX_SCALE_ALL"),
    "UNREAL": dict(axis_forward="X", axis_up="Z", global_scale=1.0, apply_unit_scale=True,
                   apply_scale_options="FBX_SCALE_NONE"),
}
ROUND_TRIP = dict(add_leaf_bones=False, bake_anim=True, bake_anim_use_all_bones=True,
                  bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False,
                  bake_anim_force_startend_keying=True, bake_anim_step=1.0, bake_anim_simplify_factor=0.0,
                  primary_bone_axis="Y", secondary_bone_axis="X", use_armature_deform_only=False,
                  armature_nodetype="NULL", object_types={"ARMATURE", "MESH"}, use_mesh_modifiers=False)


log = logging.getLogger(__name__)


def supported_options(operator, options: dict) -> dict:
    """`options` less those this Blender's `operator` does not have (logged): an exporter option renamed or
    dropped by a newer Blender costs that setting, not the export."""
    known = operator.get_rna_type().properties.keys()
    missing = sorted(set(options) - set(known))
    if missing:
        log.warning("%s: this Blender has no option %s; exporting without", operator.idname_py(),
                    ", ".join(missing))
    return {k: v for k, v in options.items() if k in known}


def hand_rigs(scene) -> list:
    return [o for o in scene.objects if o.type == "ARMATURE" and "ht_side" in o]


def _exported_actions(objects) -> list:
    """The active actions of `objects`, their children and the children's shape keys."""
    ids = []
    for obj in objects:
        ids.append(obj)
        for child in obj.children:
            ids.append(child)
            if child.type == "MESH" and child.data.shape_keys is not None:
                ids.append(child.data.shape_keys)
    out = []
    for id_block in ids:
        ad = id_block.animation_data
        if ad is not None and ad.action is not None and ad.action not in out:
            out.append(ad.action)
    return out


@contextlib.contextmanager
def _fbx_timing(scene, objects):
    """Shifts the exported keys one frame earlier (FBX time 0 = frame 1) and the scene range onto the
    animation's range; both come back exactly afterwards."""
    from .actions import all_fcurves

    actions = _exported_actions(objects)
    fcs = [fc for a in actions for fc in all_fcurves(a) if len(fc.keyframe_points)]
    saved = []
    for fc in fcs:
        arrays = {}
        for name in ("co", "handle_left", "handle_right"):
            a = np.empty(2 * len(fc.keyframe_points), np.float32)
            fc.keyframe_points.foreach_get(name, a)
            arrays[name] = a
        saved.append(arrays)
    rng = (scene.frame_start, scene.frame_end, scene.frame_current)
    try:
        if fcs:
            lo = min(float(a["co"][0::2].min()) for a in saved)
            hi = max(float(a["co"][0::2].max()) for a in saved)
            scene.frame_start, scene.frame_end = int(np.floor(lo)) - 1, max(int(np.ceil(hi)) - 1, int(lo) - 1)
        for fc, arrays in zip(fcs, saved):
            for name, a in arrays.items():
                b = a.copy()
                b[0::2] -= 1.0
                fc.keyframe_points.foreach_set(name, b)
        for action in actions:  # the depsgraph evaluates its own copy of an action (Blender 4.2)
            action.update_tag()
        yield
    finally:
        for fc, arrays in zip(fcs, saved):
            for name, a in arrays.items():
                fc.keyframe_points.foreach_set(name, a)
        for action in actions:
            action.update_tag()
        scene.frame_start, scene.frame_end = rng[0], rng[1]
        scene.frame_set(rng[2])


def export_fbx(filepath: str, objects, preset: str = "BLENDER", context=None) -> None:
    """Exports `objects` (armatures; their mesh children come along) with the round-trip settings."""
    context = context or bpy.context
    if preset not in PRESETS:
        raise ValueError(f"unknown export preset {preset!r}: one of {sorted(PRESETS)}")
    view_layer = context.view_layer
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    try:
        for o in selected:
            o.select_set(False)
        for arm in objects:
            arm.select_set(True)
            for child in arm.children:
                child.select_set(True)
        if objects:
            view_layer.objects.active = objects[0]
        fbx = bpy.ops.export_scene.fbx
        with _fbx_timing(context.scene, objects):
            fbx(filepath=filepath, use_selection=True, **supported_options(fbx, {**ROUND_TRIP, **PRESETS[preset]}))
    finally:
        for o in view_layer.objects:
            o.select_set(o in selected)
        view_layer.objects.active = active


class HANDTAILOR_OT_export_fbx(bpy.types.Operator, ExportHelper):
    """Export the hand rigs and their animation as FBX (no leaf bones, every frame baked)"""

    bl_idname = "handtailor.export_fbx"
    bl_label = "Export FBX"
    filename_ext = ".fbx"
    filter_glob: StringProperty(default="*.fbx", options={"HIDDEN"})
    preset: EnumProperty(name="Target", items=[(k, k.title(), f"Axes and units for {k.title()}") for k in PRESETS],
                         default="BLENDER", description="The application the FBX is for (axes, units)")

    def invoke(self, context, event):
        self.preset = context.scene.handtailor.export_preset
        return ExportHelper.invoke(self, context, event)

    def execute(self, context):
        rigs = [o for o in context.selected_objects if o.type == "ARMATURE" and "ht_side" in o] or hand_rigs(
            context.scene)
        if not rigs:
            self.report({"ERROR"}, "no HandTailor hand rig to export: capture first")
            return {"CANCELLED"}
        try:
            export_fbx(self.filepath, rigs, self.preset, context)
        except (RuntimeError, ValueError, OSError) as exc:
            self.report({"ERROR"}, f"FBX export failed: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {len(rigs)} hand(s) to {self.filepath}")
        return {"FINISHED"}


classes = (HANDTAILOR_OT_export_fbx,)
