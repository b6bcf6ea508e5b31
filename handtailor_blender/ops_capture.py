"""Capture: runs the engine as a child process from a modal operator (progress, Esc cancels).

`_EngineModal` is the shared machinery (also used by re-tailor): `prepare` -> (cmd, args), the engine job
polled from a window timer, `finish` applies the result. `execute` (EXEC_DEFAULT, headless) runs the same
steps synchronously.
"""

from __future__ import annotations

import pathlib

import bpy

from . import capture
from .io.engine_client import PROTOCOL_VERSION, EngineFailure
from .io.results import ResultFileError
from .preferences import engine_config, hand_model_path


class _EngineModal:
    _running = False
    cmd = ""

    def prepare(self, context) -> dict:
        raise NotImplementedError

    def finish(self, context, result: dict) -> str:
        raise NotImplementedError

    # -- shared
    def _fail(self, context, message: str):
        ht = context.scene.handtailor
        ht.status = message[:500]
        self.report({"ERROR"}, message)
        return {"CANCELLED"}

    def execute(self, context):
        if _EngineModal._running:
            return self._fail(context, "HandTailor: another engine job is running")
        config = engine_config(context)
        ht = context.scene.handtailor
        try:
            args = self.prepare(context)
            client = capture.start_engine(config)
            try:
                res = capture.run_job(client, self.cmd, args, config)
            finally:
                client.close()
            message = self.finish(context, res)
        except (EngineFailure, ResultFileError, ValueError, OSError) as exc:
            return self._fail(context, f"HandTailor {self.cmd} failed: {exc}")
        ht.status = message
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def invoke(self, context, event):
        if _EngineModal._running:
            return self._fail(context, "HandTailor: another engine job is running")
        self.config = engine_config(context)
        try:
            self.args = self.prepare(context)
            self.client = capture.start_engine(self.config)
        except (EngineFailure, ResultFileError, ValueError, OSError) as exc:
            return self._fail(context, f"HandTailor {self.cmd} failed: {exc}")
        self.job = self.client.request("hello", {}, hang_timeout=self.config.hello_timeout)
        self.phase = "hello"
        _EngineModal._running = True
        ht = context.scene.handtailor
        ht.running, ht.progress, ht.status = True, 0.0, "Starting the engine..."
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, 1000)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _cleanup(self, context, kill=False):
        wm = context.window_manager
        if getattr(self, "_timer", None) is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        ht = context.scene.handtailor
        ht.running = False
        _EngineModal._running = False
        if kill:
            self.client.kill()
        else:
            self.client.close(timeout=2.0)
        for area in context.screen.areas if context.screen else ():
            area.tag_redraw()

    def modal(self, context, event):
        ht = context.scene.handtailor
        if event.type == "ESC":
            self.job.cancel(grace=1.0)
            self._cleanup(context, kill=True)
            ht.status = f"{self.cmd} cancelled; the scene is unchanged"
            self.report({"WARNING"}, ht.status)
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            res = self.job.poll()
            if res is not None and self.phase == "hello":
                if res.get("protocol") != PROTOCOL_VERSION:
                    raise EngineFailure("protocol_error", f"the engine speaks protocol {res.get('protocol')}, "
                                                          f"the add-on {PROTOCOL_VERSION}")
                self.client.hello = res
                self.job = self.client.request(self.cmd, self.args, hang_timeout=self.config.hang_timeout)
                self.phase = "work"
                res = None
            if res is not None:
                self._cleanup(context)
                message = self.finish(context, res)
                ht.status = message
                self.report({"INFO"}, message)
                return {"FINISHED"}
        except (EngineFailure, ResultFileError, ValueError, OSError) as exc:
            self._cleanup(context, kill=True)
            return self._fail(context, f"HandTailor {self.cmd} failed: {exc}")
        ht.progress = self.job.fraction
        text = f"HandTailor {self.cmd}: {self.job.message or 'working'} ({self.job.done}/{self.job.total})"
        ht.status = text
        context.window_manager.progress_update(int(1000 * self.job.fraction))
        if context.workspace is not None:
            context.workspace.status_text_set(text + "  -  Esc cancels")
        for area in context.screen.areas if context.screen else ():
            if area.type in ("CLIP_EDITOR", "VIEW_3D"):
                area.tag_redraw()
        return {"PASS_THROUGH"}


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
    settings = capture.CaptureSettings(
        source=source, output=capture.default_output(source),
        frame_start=ht.frame_start if ht.use_frame_range else None,
        frame_end=ht.frame_end if ht.use_frame_range else None,
        stride=ht.stride, hands=int(ht.hands), intrinsics=intrinsics, hand_model=hand_model_path(context),
        iterations=ht.iterations, smoothing=ht.smoothing, steady_shape=ht.steady_shape, mirrored=ht.mirrored,
        interpolation=ht.interpolation, correctives=ht.correctives, fps=capture.scene_fps(context.scene))
    return settings, clip


class HANDTAILOR_OT_capture(_EngineModal, bpy.types.Operator):
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
            except RuntimeError:
                clip = None  # an image folder: no background clip
        arms = capture.apply_result(context.scene, path, clip=clip, interpolation=self.settings.interpolation,
                                    correctives=self.settings.correctives, config=self.config
                                    if hasattr(self, "config") else engine_config(context),
                                    hand_model=self.settings.hand_model)
        context.scene.handtailor.last_result = path
        return f"Captured {len(arms)} hand(s): " + ", ".join(a.name for a in arms)


classes = (HANDTAILOR_OT_capture,)
