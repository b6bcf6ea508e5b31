"""All scene state of the add-on: one PropertyGroup at Scene.handtailor. Every property says what it does."""

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

RETARGET_PRESETS = [
    ("AUTO", "Auto", "Detect the rig from its bone names"),
    ("RIGIFY", "Rigify", "Rigify's generated rig (finger controls f_index.01.R ...)"),
    ("MIXAMO", "Mixamo", "Mixamo names (mixamorig:RightHandIndex1 ...)"),
    ("UE4", "Unreal UE4", "UE4 mannequin (index_01_r ...)"),
    ("UE5", "Unreal UE5", "UE5 Manny/Quinn (index_01_r ..., metacarpals left at rest)"),
    ("ARP", "Auto-Rig Pro", "Auto-Rig Pro controls (c_index1.r ...)"),
    ("VRM", "VRM", "VRM humanoid names (rightIndexProximal ...)"),
    ("MAPPING", "Mapping below", "The bone mapping listed below (fill it from a preset, edit, save it)"),
]


class HandTailorBonePair(bpy.types.PropertyGroup):
    joint: StringProperty(name="Joint", description="The captured hand's joint (wrist, index1 ... thumb3)")
    bone: StringProperty(name="Bone", description="The character's bone that follows this joint (empty: none)")


class HandTailorSettings(bpy.types.PropertyGroup):
    source_mode: EnumProperty(name="Source", items=[("CLIP", "Movie clip", "A movie clip loaded in Blender"),
                                                    ("FILE", "File", "A video file or an image folder")],
                              default="CLIP", description="Where the footage comes from")
    clip: PointerProperty(name="Clip", type=bpy.types.MovieClip,
                          description="The movie clip to capture (its Start Frame places the keys)")
    filepath: StringProperty(name="Footage", subtype="FILE_PATH",
                             description="A video file or a folder of images to capture")
    start_frame: IntProperty(name="Start frame", default=1,
                             description="Timeline frame of the footage's first frame (a movie clip uses its own "
                                         "Start Frame)")
    use_frame_range: BoolProperty(name="Frame range", default=False,
                                  description="Capture only these timeline frames of the footage")
    frame_start: IntProperty(name="Start", default=1,
                             description="First timeline frame to capture (inclusive)")
    frame_end: IntProperty(name="End", default=100, description="Last timeline frame to capture (inclusive)")
    stride: IntProperty(name="Stride", default=1, min=1, max=100,
                        description="Capture every Nth frame (the keys land on the frames captured)")
    camera_mode: EnumProperty(
        name="Camera",
        items=[("WEAK", "Weak perspective", "No intrinsics needed: a nominal camera is used"),
               ("SOLVE", "Clip camera", "Focal length, principal point and k1-k3 from the clip's camera solve "
                                        "(solve the camera first)"),
               ("MANUAL", "Manual", "Intrinsics typed in")],
        default="WEAK", description="How the footage's camera is known")
    focal_px: FloatProperty(name="Focal (px)", default=1000.0, min=1.0,
                            description="Focal length in pixels (fx = fy)")
    cx: FloatProperty(name="cx", default=0.0,
                      description="Principal point x in pixels from the left (0 with cy 0: the image centre)")
    cy: FloatProperty(name="cy", default=0.0,
                      description="Principal point y in pixels from the top (0 with cx 0: the image centre)")
    k1: FloatProperty(name="k1", default=0.0, description="Radial distortion k1 (OpenCV model)")
    k2: FloatProperty(name="k2", default=0.0, description="Radial distortion k2 (OpenCV model)")
    k3: FloatProperty(name="k3", default=0.0, description="Radial distortion k3 (OpenCV model)")
    hands: EnumProperty(name="Hands", items=[("1", "1", "One hand"), ("2", "2", "Up to two hands")], default="2",
                        description="How many hands the engine tracks")
    side: EnumProperty(name="Key", items=[("both", "Both", "Key every tracked hand"),
                                          ("left", "Left", "Key the left hand only"),
                                          ("right", "Right", "Key the right hand only")],
                       default="both", description="Which tracked hands get a rig and keys")
    iterations: IntProperty(name="Tailor iterations", default=30, min=0, max=1000,
                            description="Optimization steps of the tailor per frame batch (0: the hand module only)")
    smoothing: FloatProperty(name="Smoothing", default=10.0, min=0.0, max=100.0,
                             description="Weight of the tailor's temporal term (joint acceleration); 0 = off")
    per_frame_shape: BoolProperty(name="Per-frame shape", default=False,
                                  description="A hand shape (beta) and size per frame instead of one identity per "
                                              "hand (special cases: the size then changes where the distance should)")
    mirrored: BoolProperty(name="Mirrored footage", default=False,
                           description="The footage is mirrored (a selfie camera): left and right are swapped")
    interpolation: EnumProperty(name="Interpolation",
                                items=[("BEZIER", "Bezier", "Smooth curves with aligned handles"),
                                       ("LINEAR", "Linear", "Straight lines between keys"),
                                       ("CONSTANT", "Constant", "Each key holds until the next")],
                                default="BEZIER", description="How the curves pass between keys")
    rotation_mode: EnumProperty(name="Rotation", items=[("QUATERNION", "Quaternion", "Four curves per bone"),
                                                        ("XYZ", "Euler XYZ", "Three angle curves per bone")],
                                default="QUATERNION", description="The bones' rotation channels")
    tolerance_deg: FloatProperty(name="Tolerance (deg)", default=0.5, min=0.0, max=10.0, precision=2,
                                 description="Key reduction: rotations stay within this many degrees of the "
                                             "capture on every frame (0: a key on every frame)")
    tolerance_mm: FloatProperty(name="Tolerance (mm)", default=0.5, min=0.0, max=20.0, precision=2,
                                description="Key reduction: locations stay within this many millimetres of the "
                                            "capture on every frame (0: a key on every frame)")
    correctives: BoolProperty(name="Pose correctives", default=True,
                              description="Drive the model's pose-corrective shape keys from the bones (MANO)")
    retailor_preview_range: BoolProperty(name="Preview range only", default=False,
                                         description="Refit only the frames inside the timeline's preview range")
    retailor_selected_bones: BoolProperty(name="Selected bones only", default=False,
                                          description="Refit only the selected bones (the others are kept)")
    retailor_iterations: IntProperty(name="Iterations", default=30, min=1, max=1000,
                                     description="Optimization steps of the refit")
    retailor_falloff: IntProperty(name="Falloff", default=10, min=0, max=1000,
                                  description="Frames an edit reaches on each side, fading out; frames farther "
                                              "away keep their keys exactly")
    export_preset: EnumProperty(name="Target", items=[("BLENDER", "Blender", "Blender's axes, meters"),
                                                      ("UNITY", "Unity", "Y up, -Z forward, meters"),
                                                      ("UNREAL", "Unreal", "Z up, X forward, centimeters")],
                                default="BLENDER", description="The application the FBX is for (axes, units)")
    # no poll function: with one, the bpy 4.2 module crashes on exit; the operator checks the choice
    retarget_character: PointerProperty(name="Character", type=bpy.types.Object,
                                        description="The character's armature that gets the captured fingers")
    retarget_preset: EnumProperty(name="Bones", items=RETARGET_PRESETS, default="AUTO",
                                  description="How the character's hand bones are found")
    retarget_with_wrist: BoolProperty(name="Wrist too", default=False,
                                      description="Also key the hand bone (off: fingers only; the body's motion "
                                                  "usually owns the wrist)")
    retarget_tolerance: FloatProperty(name="Tolerance (deg)", default=0.5, min=0.0, max=10.0, precision=2,
                                      description="Key reduction of the character's finger curves (0: every frame)")
    retarget_map: CollectionProperty(type=HandTailorBonePair, name="Mapping",
                                     description="Captured joint -> character bone, used by the 'Mapping below' "
                                                 "choice")
    retarget_map_index: IntProperty(name="Mapping row", default=0, description="The selected mapping row")
    retarget_map_name: StringProperty(name="Name", default="my_rig",
                                      description="Name to save the mapping under (a JSON file in your "
                                                  "HandTailor presets folder)")
    # runtime (drawn by the panel)
    running: BoolProperty(default=False, options={"SKIP_SAVE"}, description="An engine job is running")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR", options={"SKIP_SAVE"},
                            description="Progress of the running engine job")
    status: StringProperty(default="", options={"SKIP_SAVE"}, description="What the last HandTailor job did")
    last_result: StringProperty(name="Last result", subtype="FILE_PATH", default="",
                                description="The capture result file of the last capture or re-tailor")


def register_props():
    bpy.types.Scene.handtailor = PointerProperty(type=HandTailorSettings)


def unregister_props():
    del bpy.types.Scene.handtailor


classes = (HandTailorBonePair, HandTailorSettings)
