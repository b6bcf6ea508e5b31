"""The HandTailor sidebar tab in the Movie Clip Editor and the 3D Viewport. Panels draw, never compute."""

from __future__ import annotations

import bpy


def _engine_hint(layout, context) -> None:
    from .preferences import ADDON_ID, engine_problem

    if not engine_problem(context):
        return
    box = layout.box()
    box.label(text="HandTailor engine not found", icon="ERROR")
    box.label(text="Set its folder in the add-on's preferences")
    box.operator("preferences.addon_show", text="Open preferences", icon="PREFERENCES").module = ADDON_ID


def draw_capture(layout, context):
    from .preferences import get_prefs

    ht = context.scene.handtailor
    _engine_hint(layout, context)
    col = layout.column()
    col.prop(ht, "source_mode", expand=True)
    if ht.source_mode == "CLIP":
        col.prop(ht, "clip")
        if ht.clip is not None:
            col.prop(ht.clip, "frame_start", text="Start frame")
    else:
        col.prop(ht, "filepath")
        col.prop(ht, "start_frame")
    row = col.row(heading="Range")
    row.prop(ht, "use_frame_range", text="")
    sub = row.row(align=True)
    sub.active = ht.use_frame_range
    sub.prop(ht, "frame_start")
    sub.prop(ht, "frame_end")
    col.prop(ht, "stride")
    col.prop(ht, "camera_mode")
    if ht.camera_mode == "MANUAL":
        box = col.box()
        box.prop(ht, "focal_px")
        r = box.row(align=True)
        r.prop(ht, "cx")
        r.prop(ht, "cy")
        r = box.row(align=True)
        r.prop(ht, "k1")
        r.prop(ht, "k2")
        r.prop(ht, "k3")
    col.prop(ht, "hands", expand=True)
    col.prop(ht, "side", expand=True)
    col.prop(ht, "iterations")
    col.prop(ht, "smoothing")
    col.prop(ht, "per_frame_shape")
    col.prop(ht, "mirrored")
    col.separator()
    col.prop(ht, "interpolation")
    col.prop(ht, "rotation_mode")
    row = col.row(align=True)
    row.prop(ht, "tolerance_deg")
    row.prop(ht, "tolerance_mm")
    prefs = get_prefs(context)
    if prefs is not None and prefs.hand_model == "MANO":  # the open model has no pose correctives
        col.prop(ht, "correctives")
    if ht.running:
        col.progress(factor=ht.progress, type="BAR", text=ht.status or "Working...") if hasattr(
            col, "progress") else col.label(text=f"{ht.status} {ht.progress * 100:.0f}%")
        col.label(text="Esc cancels", icon="INFO")
    else:
        col.operator("handtailor.capture", icon="REC")
        if ht.status:
            col.label(text=ht.status)


def draw_retailor(layout, context):
    ht = context.scene.handtailor
    col = layout.column()
    col.prop(ht, "retailor_preview_range")
    col.prop(ht, "retailor_selected_bones")
    col.prop(ht, "retailor_iterations")
    col.prop(ht, "retailor_falloff")
    col.operator("handtailor.retailor", icon="FILE_REFRESH")
    col.operator("handtailor.restore_take", icon="LOOP_BACK")
    col.separator()
    col.prop(ht, "export_preset")
    col.operator("handtailor.export_fbx", icon="EXPORT")


def draw_retarget(layout, context):
    ht = context.scene.handtailor
    col = layout.column()
    col.prop(ht, "retarget_character")
    char = ht.retarget_character
    if char is not None and (char.type != "ARMATURE" or "ht_side" in char):
        col.label(text="Choose the character's armature", icon="ERROR")
    col.prop(ht, "retarget_preset")
    col.prop(ht, "retarget_with_wrist")
    col.prop(ht, "retarget_tolerance")
    col.operator("handtailor.retarget", icon="ARMATURE_DATA")
    box = col.box()
    box.label(text="Bone mapping")
    row = box.row(align=True)
    row.operator("handtailor.retarget_fill", icon="VIEWZOOM")
    row.operator("handtailor.retarget_load", icon="FILE_FOLDER")
    if len(ht.retarget_map):
        box.template_list("HANDTAILOR_UL_bone_map", "", ht, "retarget_map", ht, "retarget_map_index", rows=4)
        row = box.row(align=True)
        row.prop(ht, "retarget_map_name")
        row.operator("handtailor.retarget_save", icon="FILE_TICK")


class _Base:
    bl_region_type = "UI"
    bl_category = "HandTailor"


class HANDTAILOR_PT_clip_capture(_Base, bpy.types.Panel):
    bl_space_type = "CLIP_EDITOR"
    bl_label = "Capture"

    def draw(self, context):
        draw_capture(self.layout, context)


class HANDTAILOR_PT_clip_retailor(_Base, bpy.types.Panel):
    bl_space_type = "CLIP_EDITOR"
    bl_label = "Re-tailor & Export"

    def draw(self, context):
        draw_retailor(self.layout, context)


class HANDTAILOR_PT_view3d_capture(_Base, bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_label = "Capture"

    def draw(self, context):
        draw_capture(self.layout, context)


class HANDTAILOR_PT_view3d_retailor(_Base, bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_label = "Re-tailor & Export"

    def draw(self, context):
        draw_retailor(self.layout, context)


class HANDTAILOR_PT_view3d_retarget(_Base, bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_label = "Retarget"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        draw_retarget(self.layout, context)


classes = (HANDTAILOR_PT_clip_capture, HANDTAILOR_PT_clip_retailor, HANDTAILOR_PT_view3d_capture,
           HANDTAILOR_PT_view3d_retailor, HANDTAILOR_PT_view3d_retarget)
