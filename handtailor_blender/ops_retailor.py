"""Re-tailor: edited keys go to the engine as locked values; the frames near the edits (within the falloff)
are refit, every other key stays as it is."""

from __future__ import annotations

import bpy

from . import keys, retailor, takes
from .engine_modal import EngineModal
from .preferences import hand_model_path


def _active_rig(context):
    obj = context.active_object
    if obj is not None and obj.type == "MESH" and obj.parent is not None and obj.parent.type == "ARMATURE":
        obj = obj.parent
    if obj is None or obj.type != "ARMATURE" or "ht_side" not in obj:
        raise ValueError("select a HandTailor hand rig (armature) first")
    return obj


class HANDTAILOR_OT_retailor(EngineModal, bpy.types.Operator):
    """Refit the frames around your edited keys (within the falloff), the edits locked; other keys stay"""

    bl_idname = "handtailor.retailor"
    bl_label = "Re-tailor"
    bl_options = {"REGISTER", "UNDO"}
    cmd = "retailor"

    def prepare(self, context) -> dict:
        ht = context.scene.handtailor
        arm = _active_rig(context)
        frame_range = None
        scene = context.scene
        if ht.retailor_preview_range and scene.use_preview_range:
            clip = ht.clip if ht.source_mode == "CLIP" else None
            off = keys.frame_offset_for(clip, ht.start_frame)
            frame_range = (scene.frame_preview_start - off, scene.frame_preview_end - off)
        joints = retailor.selected_joint_names(arm) if ht.retailor_selected_bones else None
        self.plan = retailor.prepare_retailor(scene, arm, frame_range=frame_range, joints=joints,
                                              iterations=ht.retailor_iterations, hand_model=hand_model_path(context),
                                              falloff=ht.retailor_falloff)
        return self.plan.args

    def finish(self, context, result: dict) -> str:
        path = (result.get("files") or {}).get("result") or self.plan.output_path
        arms = retailor.apply_retailor(context.scene, self.plan, path)
        context.scene.handtailor.last_result = path
        return f"Re-tailored {len(arms)} hand(s), {self.plan.n_edited} edited key value(s) kept"


class HANDTAILOR_OT_restore_take(bpy.types.Operator):
    """Bring back the keys from before the last re-tailor"""

    bl_idname = "handtailor.restore_take"
    bl_label = "Restore previous keys"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        try:
            arm = _active_rig(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if not takes.restore_backup(arm):
            self.report({"ERROR"}, f"{arm.name} has no keys saved from before a re-tailor")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{arm.name}: previous keys restored")
        return {"FINISHED"}


classes = (HANDTAILOR_OT_retailor, HANDTAILOR_OT_restore_take)
