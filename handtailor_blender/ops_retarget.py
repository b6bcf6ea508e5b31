"""Retarget operators: the captured fingers onto the character (undoable), and the bone mapping's rows,
filled from a preset, saved and loaded as the user's own preset (JSON in the add-on's user folder)."""

from __future__ import annotations

import pathlib

import bpy

from . import bone_maps, retarget_scene
from .io.results import MANO_JOINT_NAMES


def presets_dir() -> pathlib.Path:
    """The folder of saved mappings: the extension's user folder, or Blender's config folder for an add-on."""
    try:
        return pathlib.Path(bpy.utils.extension_path_user(__package__, path="retarget", create=True))
    except (ValueError, AttributeError):
        return pathlib.Path(bpy.utils.user_resource("CONFIG", path="handtailor/retarget", create=True))


def saved_presets() -> list[pathlib.Path]:
    return sorted(presets_dir().glob("*.json"))


def _takes(context) -> list:
    """Selected HandTailor rigs with a take, else every one in the scene."""
    rigs = [o for o in context.scene.objects if retarget_scene.is_hand_rig(o) and o.animation_data
            and o.animation_data.action]
    chosen = [o for o in rigs if o.select_get()]
    return chosen or rigs


def _map_templates(ht) -> dict[str, list[str]]:
    """The panel's mapping rows as side-free name templates."""
    side = bone_maps.guess_side([row.bone for row in ht.retarget_map if row.bone])
    return {row.joint: [bone_maps.side_template(row.bone, side)] for row in ht.retarget_map if row.bone}


class HANDTAILOR_OT_retarget(bpy.types.Operator):
    """Key the character's fingers from the captured take (Ctrl+Z undoes it)"""

    bl_idname = "handtailor.retarget"
    bl_label = "Retarget"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        ht = context.scene.handtailor
        try:
            takes = _takes(context)
            if not takes:
                raise ValueError("no HandTailor take in the scene: capture first")
            motions = [retarget_scene.read_take(a) for a in takes]
            templates = None
            if ht.retarget_preset == "MAPPING":
                templates = _map_templates(ht)
                if not templates:
                    raise ValueError("the mapping is empty: fill it from a preset first")
            report = retarget_scene.retarget_takes(
                motions, ht.retarget_character, preset=ht.retarget_preset.lower(), templates=templates,
                with_wrist=ht.retarget_with_wrist, tolerance_deg=ht.retarget_tolerance,
                interpolation=ht.interpolation, scene=context.scene)
        except (ValueError, KeyError, OSError) as exc:
            ht.status = f"Retarget failed: {exc}"[:500]
            self.report({"ERROR"}, ht.status)
            return {"CANCELLED"}
        ht.status = (f"Retargeted {len(report.mapped)} bones ({report.preset}) over {report.frames} frames; keys "
                     f"{report.keys_before} -> {report.keys_after}, max error {report.max_error_deg:.2f} deg"
                     + (f"; not found: {', '.join(report.unmapped)}" if report.unmapped else ""))
        self.report({"INFO"}, ht.status)
        return {"FINISHED"}


class HANDTAILOR_OT_retarget_fill(bpy.types.Operator):
    """Fill the mapping rows from the chosen preset (Auto: detected from the bone names)"""

    bl_idname = "handtailor.retarget_fill"
    bl_label = "Fill from preset"
    bl_options = {"REGISTER", "UNDO"}

    side: bpy.props.EnumProperty(name="Side", items=[("right", "Right", "The right hand's bones"),
                                                     ("left", "Left", "The left hand's bones")],
                                 default="right", description="Which of the character's hands to read")

    def execute(self, context):
        ht = context.scene.handtailor
        char = ht.retarget_character
        if char is None:
            self.report({"ERROR"}, "choose the character's armature first")
            return {"CANCELLED"}
        preset = "auto" if ht.retarget_preset == "MAPPING" else ht.retarget_preset.lower()
        try:
            label, mapping = retarget_scene.resolve_mapping(char, self.side, preset)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        ht.retarget_map.clear()
        for j, joint in enumerate(MANO_JOINT_NAMES):
            row = ht.retarget_map.add()
            row.joint, row.bone = joint, mapping.get(j, "")
        ht.retarget_preset = "MAPPING"
        self.report({"INFO"}, f"{len(mapping)} bones found ({label}); edit the rows, then Retarget")
        return {"FINISHED"}


class HANDTAILOR_OT_retarget_save(bpy.types.Operator):
    """Save the mapping rows as your own preset (side-free: it serves both hands)"""

    bl_idname = "handtailor.retarget_save"
    bl_label = "Save mapping"

    def execute(self, context):
        ht = context.scene.handtailor
        name = bpy.path.clean_name(ht.retarget_map_name) or "mapping"
        bones = {j: t[0] for j, t in _map_templates(ht).items()}
        if not bones:
            self.report({"ERROR"}, "the mapping is empty: fill it from a preset first")
            return {"CANCELLED"}
        path = bone_maps.save_mapping(presets_dir() / f"{name}.json", name, bones)
        self.report({"INFO"}, f"Saved {path}")
        return {"FINISHED"}


def _preset_items(self, context):
    items = [(str(p), p.stem, f"Mapping saved in {p.parent}") for p in saved_presets()]
    _preset_items.cache = items or [("", "(none saved)", "No mapping saved yet")]  # Blender needs them kept
    return _preset_items.cache


class HANDTAILOR_OT_retarget_load(bpy.types.Operator):
    """Load one of your saved mappings into the mapping rows"""

    bl_idname = "handtailor.retarget_load"
    bl_label = "Load mapping"
    bl_options = {"REGISTER", "UNDO"}
    bl_property = "preset"

    preset: bpy.props.EnumProperty(name="Mapping", items=_preset_items, description="A saved mapping")
    side: bpy.props.EnumProperty(name="Side", items=[("right", "Right", "Fill in the right hand's names"),
                                                     ("left", "Left", "Fill in the left hand's names")],
                                 default="right", description="Which hand's bone names the rows show")

    def invoke(self, context, event):
        context.window_manager.invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        ht = context.scene.handtailor
        try:
            name, templates = bone_maps.load_mapping(self.preset)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        names = bone_maps.fill(templates, self.side)
        ht.retarget_map.clear()
        for joint in MANO_JOINT_NAMES:
            row = ht.retarget_map.add()
            row.joint, row.bone = joint, names.get(joint, "")
        ht.retarget_map_name = name
        ht.retarget_preset = "MAPPING"
        return {"FINISHED"}


class HANDTAILOR_UL_bone_map(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        char = context.scene.handtailor.retarget_character
        row = layout.row(align=True)
        row.label(text=item.joint)
        if char is not None:
            row.prop_search(item, "bone", char.data, "bones", text="")
        else:
            row.prop(item, "bone", text="")


classes = (HANDTAILOR_OT_retarget, HANDTAILOR_OT_retarget_fill, HANDTAILOR_OT_retarget_save,
           HANDTAILOR_OT_retarget_load, HANDTAILOR_UL_bone_map)
