"""All scene state of the add-on: one PropertyGroup at Scene.handtailor."""

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)


class HandTailorSettings(bpy.types.PropertyGroup):
    source_mode: EnumProperty(name="Source", items=[("CLIP", "Movie clip", "A movie clip loaded in Blender"),
                                                    ("FILE", "File", "A video file or an image folder")],
                              default="CLIP")
    clip: PointerProperty(name="Clip", type=bpy.types.MovieClip)
    filepath: StringProperty(name="Footage", subtype="FILE_PATH")
    use_frame_range: BoolProperty(name="Frame range", default=False,
                                  description="Capture only these footage frames (0-based, inclusive)")
    frame_start: IntProperty(name="Start", default=0, min=0)
    frame_end: IntProperty(name="End", default=100, min=0)
    stride: IntProperty(name="Stride", default=1, min=1, max=100)
    camera_mode: EnumProperty(
        name="Camera",
        items=[("WEAK", "Weak perspective", "No intrinsics needed: a nominal camera is used"),
               ("SOLVE", "Clip camera", "Focal length, principal point and k1-k3 from the clip's camera solve"),
               ("MANUAL", "Manual", "Intrinsics typed in")],
        default="WEAK")
    focal_px: FloatProperty(name="Focal (px)", default=1000.0, min=1.0)
    cx: FloatProperty(name="cx", default=0.0)
    cy: FloatProperty(name="cy", default=0.0)
    k1: FloatProperty(name="k1", default=0.0)
    k2: FloatProperty(name="k2", default=0.0)
    k3: FloatProperty(name="k3", default=0.0)
    hands: EnumProperty(name="Hands", items=[("1", "1", "One hand"), ("2", "2", "Up to two hands")], default="2")
    iterations: IntProperty(name="Tailor iterations", default=30, min=0, max=1000)
    smoothing: FloatProperty(name="Smoothing", default=10.0, min=0.0, max=100.0,
                             description="Weight of the tailor's temporal term (joint acceleration); 0 = off")
    per_frame_shape: BoolProperty(name="Per-frame shape", default=False,
                                  description="A hand shape (beta) and size per frame instead of one identity per "
                                              "hand (special cases: the size then changes where the distance should)")
    mirrored: BoolProperty(name="Mirrored footage", default=False)
    interpolation: EnumProperty(name="Interpolation", items=[("LINEAR", "Linear", ""), ("BEZIER", "Bezier", ""),
                                                             ("CONSTANT", "Constant", "")], default="LINEAR")
    correctives: BoolProperty(name="Pose correctives", default=True,
                              description="Drive the model's pose-corrective shape keys from the bones (MANO)")
    retailor_preview_range: BoolProperty(name="Preview range only", default=False)
    retailor_selected_bones: BoolProperty(name="Selected bones only", default=False)
    retailor_iterations: IntProperty(name="Iterations", default=30, min=1, max=1000)
    retailor_falloff: IntProperty(name="Falloff", default=10, min=0, max=1000,
                                  description="Frames an edit reaches on each side, fading out; frames farther "
                                              "away keep their keys exactly")
    export_preset: EnumProperty(name="Target", items=[("BLENDER", "Blender", "Blender's axes, meters"),
                                                      ("UNITY", "Unity", "Y up, -Z forward, meters"),
                                                      ("UNREAL", "Unreal", "Z up, X forward, centimeters")],
                                default="BLENDER")
    # runtime (drawn by the panel)
    running: BoolProperty(default=False, options={"SKIP_SAVE"})
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR", options={"SKIP_SAVE"})
    status: StringProperty(default="", options={"SKIP_SAVE"})
    last_result: StringProperty(name="Last result", subtype="FILE_PATH", default="")


def register_props():
    bpy.types.Scene.handtailor = PointerProperty(type=HandTailorSettings)


def unregister_props():
    del bpy.types.Scene.handtailor


classes = (HandTailorSettings,)
