"""Capture and re-tailor as plain functions: engine client -> result -> rig -> keys -> camera.

The modal operators drive these step by step (the UI stays responsive); the headless entry point
(`python -m handtailor_blender`) and the tests call them synchronously. Nothing in the scene changes until a
complete result file has been read and checked, and a failure while applying it removes what was created,
so a failed capture leaves the scene as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import tempfile
import time

import bpy
import numpy as np

from . import camera, keys, rig
from .io import engine_client
from .io.engine_client import EngineClient, EngineFailure
from .io.results import ResultFileError, read_model, read_result, resolve_model_path

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CaptureSettings:
    """The engine's capture options (engine protocol `capture` args) plus the add-on's own."""

    source: str
    output: str = ""
    frame_start: int | None = None
    frame_end: int | None = None
    stride: int = 1
    hands: int = 2
    intrinsics: list | None = None
    hand_model: str | None = None
    iterations: int = 30
    smoothing: float | None = None  # None: the engine's default
    per_frame_shape: bool = False  # default: one identity (shape and size) per hand track
    mirrored: bool = False
    batch_size: int = 64
    overlay: str | None = None
    interpolation: str = "BEZIER"
    correctives: bool = True
    tolerance_deg: float = 0.5  # key reduction (0: a key on every tracked frame)
    tolerance_mm: float = 0.5
    rotation_mode: str = "QUATERNION"  # or "XYZ" (Euler)
    side: str = "both"  # which hands to key: both, left, right
    start_frame: int = 1  # scene frame of footage frame 0 (a movie clip uses its own start frame)
    fps: float | None = None  # frame rate for footage without one (image folders): the scene's (scene_fps)

    def engine_args(self) -> dict:
        args = dict(source=self.source, output=self.output, frame_start=self.frame_start,
                    frame_end=self.frame_end, stride=self.stride, hands=self.hands, intrinsics=self.intrinsics,
                    hand_model=self.hand_model, iterations=self.iterations, smoothing=self.smoothing,
                    mirrored=self.mirrored, overlay=self.overlay, batch_size=self.batch_size)
        if self.per_frame_shape:
            args["per_frame_shape"] = True
        if self.fps is not None:
            args["fps"] = float(self.fps)
        return args


def scene_fps(scene) -> float:
    """The scene's frame rate (fps / fps_base): what an image folder captured into it is timed at."""
    return float(scene.render.fps) / float(scene.render.fps_base or 1.0)


@dataclasses.dataclass
class EngineConfig:
    python: str = ""
    root: str = ""
    hang_timeout: float = 120.0
    hello_timeout: float = 60.0


def addon_dir() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent


ENGINE_HINT = "engine_root.txt"  # written into the zip by build_addon.py: the folder it was built from


def locate(config: EngineConfig) -> tuple[str, str]:
    """(interpreter, engine folder): the preferences, the environment, the add-on's own folder (a checkout),
    then the folder the installed zip was built from."""
    try:
        return engine_client.find_engine(config.python, config.root, start=addon_dir())
    except EngineFailure:
        hint = addon_dir() / ENGINE_HINT
        root = hint.read_text().strip() if hint.is_file() else ""
        explicit = config.python or config.root or any(
            os.environ.get(v) for v in (engine_client.ENV_PYTHON, engine_client.ENV_ROOT))
        if explicit or not root:
            raise
        return engine_client.find_engine("", root)


def output_dir() -> pathlib.Path:
    """Where results go: `//handtailor/` beside a saved .blend, else a temp folder."""
    if bpy.data.filepath:
        return pathlib.Path(bpy.path.abspath("//handtailor"))
    return pathlib.Path(tempfile.gettempdir()) / "handtailor"


def default_output(source: str) -> str:
    stem = pathlib.Path(source.rstrip("/\\")).stem or "capture"
    return str(output_dir() / f"{stem}_{time.strftime('%Y%m%d_%H%M%S')}.npz")


def start_engine(config: EngineConfig) -> EngineClient:
    """Launches the engine without waiting (the caller polls the hello job)."""
    python, root = locate(config)
    return EngineClient(engine_client.engine_command(python), cwd=root)


def run_job(client: EngineClient, cmd: str, args: dict, config: EngineConfig, on_progress=None,
            timeout: float | None = None) -> dict:
    """Synchronous: hello (once, protocol checked) then `cmd`; returns the result dict; EngineFailure otherwise."""
    if not client.hello:
        client.hello = engine_client.check_hello(client.request("hello", {}, hang_timeout=config.hello_timeout).wait(
            timeout=config.hello_timeout + 5))
    return client.request(cmd, args, hang_timeout=config.hang_timeout).wait(timeout=timeout, on_progress=on_progress)


# ---------------------------------------------------------------------------------------- applying


def _rig_name(side: str, t: int, sides) -> str:
    same = [i for i, s in enumerate(sides) if s == side]
    return f"HandTailor_{side}" + (f"_{same.index(t)}" if len(same) > 1 and same.index(t) else "")


def _fallback_model_dir(config: EngineConfig | None) -> str | None:
    try:
        _, root = locate(config or EngineConfig())
    except EngineFailure:
        return None
    return str(pathlib.Path(root) / "models" / "open_hand")


def load_rig_model(path: str, side: str, config: EngineConfig | None = None):
    """read_model, with MANO .pkl files converted once by the engine into a cached .npz."""
    if not path.endswith(".pkl"):
        return read_model(path, side)
    import hashlib

    src = pathlib.Path(path)
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{side}".encode()).hexdigest()[:16]
    cached = output_dir() / "models" / f"{src.stem}_{side}_{key}.npz"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        python, root = locate(config or EngineConfig())
        engine_client.convert_model(python, root, str(src), side, str(cached))
    return read_model(cached, side)


def _reusable(arm, model, beta) -> bool:
    """An existing rig can take a new take when it is a HandTailor rig of the same model and identity."""
    if arm is None or arm.type != "ARMATURE" or arm.get("ht_model") != model.path:
        return False
    have = rig.identity_beta(arm)
    if (have is None) != (beta is None):
        return False
    return beta is None or bool(np.allclose(have, beta, rtol=0, atol=1e-6))


def _free_name(name: str) -> str:
    k = 2
    out = name
    while bpy.data.objects.get(out) is not None:
        out = f"{name}_{k}"
        k += 1
    return out


def apply_result(scene, result_path: str, *, clip=None, interpolation: str = "LINEAR", correctives: bool = True,
                 config: EngineConfig | None = None, hand_model: str | None = None, tolerance_deg: float = 0.0,
                 tolerance_mm: float = 0.0, rotation_mode: str = "QUATERNION", side: str = "both",
                 start_frame: int = 1) -> list:
    """Rig + keys + camera for a capture result; returns the armature objects (one per keyed track).

    A track whose shape (beta) is constant gets an identity rig (shape in the rest skeleton), else the
    per-frame shape rig. `side` keys only that side's tracks. All-or-nothing: the result and the models are
    read and checked before the scene is touched, and a failure while building removes everything this call
    created."""
    if side not in ("both", "left", "right"):
        raise ValueError(f"side {side!r} is not one of both, left, right")
    if rotation_mode not in keys.ROTATION_MODES:
        raise ValueError(f"rotation mode {rotation_mode!r} is not one of {keys.ROTATION_MODES}")
    result = read_result(result_path)
    fallback = _fallback_model_dir(config)
    models = [load_rig_model(resolve_model_path(result.hand_model[t], side, hand_model, fallback,
                                                sha256=result.hand_model_sha256[t]), side, config)
              for t, side in enumerate(result.hand_side)]
    if not result.valid.any():
        raise ResultFileError(f"{result_path}: no frame holds a hand; nothing to key")
    tracks = [t for t, s in enumerate(result.hand_side) if side in ("both", s) and result.valid[t].any()]
    if not tracks:
        raise ResultFileError(f"{result_path}: no {side} hand was tracked (tracks: "
                              f"{', '.join(result.hand_side) or 'none'}); choose another side")
    before = {kind: set(getattr(bpy.data, kind)) for kind in ("objects", "actions", "armatures", "meshes",
                                                                "cameras", "shape_keys")}
    try:
        cam = camera.ensure_camera(scene, result.K, result.image_size, clip)
        offset = keys.frame_offset_for(clip, start_frame)
        camera.set_scene_timing(scene, result.fps, offset + int(result.frame_index[0]),
                                offset + int(result.frame_index[-1]))
        to_world = camera.opencv_to_world_matrix(np.array(cam.matrix_world))
        arms = []
        for t in tracks:
            model = models[t]
            ok = result.valid[t]
            beta = rig.track_identity(result.beta[t][ok], result.hand_scale[t][ok])
            name = _rig_name(result.hand_side[t], t, result.hand_side)
            arm = bpy.data.objects.get(name)
            if not _reusable(arm, model, beta):
                arm, mesh = rig.build_rig(model, _free_name(name), scene.collection, correctives=correctives,
                                          beta=beta, rotation_mode=rotation_mode)
            else:
                mesh = rig.find_mesh(arm)
                rig.set_rotation_mode(arm, rotation_mode)
            keys.key_take(arm, mesh, model, result, t, frame_offset=offset, interpolation=interpolation,
                          to_world=to_world, tolerance_deg=tolerance_deg, tolerance_mm=tolerance_mm)
            arm["ht_track"] = t
            arms.append(arm)
        scene.frame_set(scene.frame_start)
        return arms
    except BaseException:
        for kind, old in before.items():
            coll = getattr(bpy.data, kind)
            for block in list(coll):
                if block not in old and kind != "shape_keys":
                    coll.remove(block)
        raise


def capture(scene, settings: CaptureSettings, config: EngineConfig, *, clip=None, on_progress=None,
            timeout: float | None = None) -> tuple[str, list]:
    """Synchronous capture (headless path): engine -> result file -> rig/keys/camera."""
    if not settings.output:
        settings.output = default_output(settings.source)
    if settings.fps is None:
        settings.fps = scene_fps(scene)
    pathlib.Path(settings.output).parent.mkdir(parents=True, exist_ok=True)
    client = start_engine(config)
    try:
        res = run_job(client, "capture", settings.engine_args(), config, on_progress=on_progress, timeout=timeout)
    finally:
        client.close()
    result_path = (res.get("files") or {}).get("result") or settings.output
    arms = apply_result(scene, result_path, clip=clip, interpolation=settings.interpolation,
                        correctives=settings.correctives, config=config, hand_model=settings.hand_model,
                        tolerance_deg=settings.tolerance_deg, tolerance_mm=settings.tolerance_mm,
                        rotation_mode=settings.rotation_mode, side=settings.side, start_frame=settings.start_frame)
    return result_path, arms
