"""Capture: runs the engine as a child process from a modal operator (progress, Esc cancels), through the
shared `engine_modal.EngineModal`.
"""

from __future__ import annotations

import pathlib

import bpy

from . import capture, keys
from .engine_modal import EngineModal
from .preferences import engine_config, hand_model_path


def capture_settings(context) -> tuple[capture.CaptureSettings, object]:
    """The engine's capture options from Scene.handtailor; (settings, movie clip or None)."""
    ht = context.scene.handtailor
    clip = None
    if ht.source_mode == "CLIP":
        clip = ht.clip
        if clip is None:
            raise ValueError("choose a movie clip (or switch the source to File)")
        source = bpy.path.abspath(clip.filepath)
    else:
        if not ht.filepath:
            raise ValueError("choose a footage file or image folder")
        source = bpy.path.abspath(ht.filepath)
    if not pathlib.Path(source).exists():
        raise ValueError(f"the footage {source} does not exist")
    intrinsics = None
    if ht.camera_mode == "SOLVE":
        if clip is None:
            raise ValueError("'Clip camera' needs a movie clip as the source")
        if not clip.tracking.reconstruction.is_valid:
            # an unsolved clip still reports Blender's default lens (24 mm): never use it silently
            raise ValueError(f"the clip {clip.name} has no camera solve: solve the camera in the Movie Clip "
                             "Editor (Track > Solve Camera Motion), or choose 'Manual' and type the focal length, "
                             "or 'Weak perspective'")
        cam = clip.tracking.camera
        w, h = clip.size
        f = cam.focal_length_pixels
        px, py = cam.principal_point_pixels
        k = (cam.k1, cam.k2, cam.k3) if cam.distortion_model == "POLYNOMIAL" else (0.0, 0.0, 0.0)
        # Blender's tracking pixel space has its origin at the bottom-left; OpenCV's at the top-left
        intrinsics = [f, f * cam.pixel_aspect, px, h - py, k[0], k[1], 0.0, 0.0, k[2]]
    elif ht.camera_mode == "MANUAL":
        cx, cy = ht.cx, ht.cy
        if cx == 0 and cy == 0 and clip is not None:
            cx, cy = clip.size[0] / 2, clip.size[1] / 2
        if cx == 0 and cy == 0:
            raise ValueError("set the principal point (cx, cy) in pixels")
        intrinsics = [ht.focal_px, ht.focal_px, cx, cy, ht.k1, ht.k2, 0.0, 0.0, ht.k3]
    offset = keys.frame_offset_for(clip, ht.start_frame)  # timeline frame of footage frame 0
    frame_start = frame_end = None
    if ht.use_frame_range:
        frame_start, frame_end = ht.frame_start - offset, ht.frame_end - offset
        if frame_start < 0 or frame_end < frame_start:
            raise ValueError(f"the frame range {ht.frame_start}-{ht.frame_end} is outside the footage, which starts "
                             f"at timeline frame {offset}")
    settings = capture.CaptureSettings(
        source=source, output=capture.default_output(source), frame_start=frame_start, frame_end=frame_end,
        stride=ht.stride, hands=int(ht.hands), intrinsics=intrinsics, hand_model=hand_model_path(context),
        iterations=ht.iterations, smoothing=ht.smoothing, per_frame_shape=ht.per_frame_shape, mirrored=ht.mirrored,
        interpolation=ht.interpolation, correctives=ht.correctives, tolerance_deg=ht.tolerance_deg,
        tolerance_mm=ht.tolerance_mm, rotation_mode=ht.rotation_mode, side=ht.side, start_frame=ht.start_frame,
        fps=capture.scene_fps(context.scene))
    return settings, clip


class HANDTAILOR_OT_capture(EngineModal, bpy.types.Operator):
    """Capture the hands in the footage: rig, keys and a camera matching the footage"""

    bl_idname = "handtailor.capture"
    bl_label = "Capture"
    bl_options = {"REGISTER", "UNDO"}
    cmd = "capture"

    def prepare(self, context) -> dict:
        self.settings, self.clip = capture_settings(context)
        pathlib.Path(self.settings.output).parent.mkdir(parents=True, exist_ok=True)
        return self.settings.engine_args()

    def finish(self, context, result: dict) -> str:
        path = (result.get("files") or {}).get("result") or self.settings.output
        clip = self.clip
        if clip is None:
            try:
                clip = bpy.data.movieclips.load(self.settings.source, check_existing=True)
                clip.frame_start = self.settings.start_frame  # the background lands where the keys do
            except RuntimeError:
                clip = None  # an image folder: no background clip
        st = self.settings
        arms = capture.apply_result(context.scene, path, clip=clip, interpolation=st.interpolation,
                                    correctives=st.correctives, config=self.config
                                    if hasattr(self, "config") else engine_config(context),
                                    hand_model=st.hand_model, tolerance_deg=st.tolerance_deg,
                                    tolerance_mm=st.tolerance_mm, rotation_mode=st.rotation_mode, side=st.side,
                                    start_frame=st.start_frame)
        context.scene.handtailor.last_result = path
        counts = [(a.animation_data.action.get("ht_keys_before", 0), a.animation_data.action.get("ht_keys_after", 0))
                  for a in arms]
        return (f"Captured {len(arms)} hand(s): " + ", ".join(a.name for a in arms)
                + f"; keys {sum(c[0] for c in counts)} -> {sum(c[1] for c in counts)}")


classes = (HANDTAILOR_OT_capture,)
