"""Headless entry: the add-on's capture / re-tailor / export code under the bpy module, synchronously.

    python -m handtailor_blender capture SOURCE --blend OUT.blend [--fbx OUT.fbx] [--preset UNITY]
        [--frames A:B] [--stride N] [--hands {1,2}] [--intrinsics fx,fy,cx,cy[,k1,k2,p1,p2,k3]]
        [--hand-model PATH] [--iterations N] [--smoothing W] [--per-frame-shape] [--mirrored]
        [--interpolation LINEAR] [--result OUT.npz] [--overlay OUT.mp4]
    python -m handtailor_blender retailor IN.blend --blend OUT.blend [--rig NAME] [--frames A:B]
        [--joints a,b] [--iterations N]
    python -m handtailor_blender export IN.blend --fbx OUT.fbx [--preset BLENDER|UNITY|UNREAL]

Needs the `bpy` module (the project's venv has it) and the engine (found like the add-on finds it:
$HANDTAILOR_ENGINE_PYTHON / $HANDTAILOR_ENGINE_ROOT or the project's .venv).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

log = logging.getLogger("handtailor_blender")


def _frames(text: str | None):
    if not text:
        return None, None
    a, _, b = text.partition(":")
    return (int(a) if a else None), (int(b) if b else None)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m handtailor_blender", description="HandTailor under bpy, headless")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("capture", help="footage -> .blend (rig, keys, camera) [+ FBX]")
    c.add_argument("source")
    c.add_argument("--blend", required=True, type=pathlib.Path)
    c.add_argument("--fbx", type=pathlib.Path)
    c.add_argument("--preset", default="BLENDER", choices=["BLENDER", "UNITY", "UNREAL"])
    c.add_argument("--result", default="", help="where the engine writes the capture result (.npz)")
    c.add_argument("--overlay", default="", help="also write the engine's overlay video (.mp4) here")
    c.add_argument("--frames")
    c.add_argument("--stride", type=int, default=1)
    c.add_argument("--hands", type=int, default=2, choices=[1, 2])
    c.add_argument("--intrinsics")
    c.add_argument("--hand-model")
    c.add_argument("--iterations", type=int, default=30)
    c.add_argument("--smoothing", type=float, default=None, help="temporal smoothing weight (default: the engine's)")
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--per-frame-shape", action="store_true", help="a shape and size per frame (default: one per hand)")
    c.add_argument("--steady-shape", action="store_true", help=argparse.SUPPRESS)  # deprecated: the default now
    c.add_argument("--mirrored", action="store_true")
    c.add_argument("--interpolation", default="LINEAR", choices=["LINEAR", "BEZIER", "CONSTANT"])
    c.add_argument("--timeout", type=float, default=None, help="seconds before the capture is abandoned")
    r = sub.add_parser("retailor", help="re-tailor a .blend's edited take")
    r.add_argument("blend_in", type=pathlib.Path)
    r.add_argument("--blend", required=True, type=pathlib.Path)
    r.add_argument("--rig", default="")
    r.add_argument("--frames")
    r.add_argument("--joints")
    r.add_argument("--iterations", type=int, default=30)
    r.add_argument("--falloff", type=int, default=None, help="frames an edit reaches on each side (default: the engine's)")
    e = sub.add_parser("export", help=".blend -> FBX")
    e.add_argument("blend_in", type=pathlib.Path)
    e.add_argument("--fbx", required=True, type=pathlib.Path)
    e.add_argument("--preset", default="BLENDER", choices=["BLENDER", "UNITY", "UNREAL"])
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    import bpy

    from . import capture, ops_export
    from .io.engine_client import EngineFailure
    from .io.results import ResultFileError

    config = capture.EngineConfig()

    last = [None]

    def progress(job):
        state = (job.done, job.total, job.message)
        if job.total and state != last[0]:
            last[0] = state
            log.info("%s %d/%d %s", job.cmd, job.done, job.total, job.message)

    try:
        if args.command == "capture":
            bpy.ops.wm.read_factory_settings(use_empty=True)
            scene = bpy.context.scene
            fs, fe = _frames(args.frames)
            intr = [float(x) for x in args.intrinsics.split(",")] if args.intrinsics else None
            settings = capture.CaptureSettings(
                source=str(pathlib.Path(args.source).absolute()),
                output=str(pathlib.Path(args.result).absolute()) if args.result else "",
                frame_start=fs, frame_end=fe, stride=args.stride, hands=args.hands, intrinsics=intr,
                hand_model=args.hand_model, iterations=args.iterations, smoothing=args.smoothing,
                per_frame_shape=args.per_frame_shape, mirrored=args.mirrored, batch_size=args.batch_size,
                interpolation=args.interpolation,
                overlay=str(pathlib.Path(args.overlay).absolute()) if args.overlay else None)
            if not settings.output:
                settings.output = str(args.blend.absolute().with_suffix(".npz"))
            clip = None
            try:
                clip = bpy.data.movieclips.load(settings.source, check_existing=True)
            except RuntimeError:
                log.info("%s is not a movie Blender can show; the camera gets no background", settings.source)
            result_path, arms = capture.capture(scene, settings, config, clip=clip, on_progress=progress,
                                                timeout=args.timeout)
            log.info("captured %s -> %s", ", ".join(a.name for a in arms), result_path)
        else:
            bpy.ops.wm.open_mainfile(filepath=str(args.blend_in))
            scene = bpy.context.scene
            arms = ops_export.hand_rigs(scene)
            if args.command == "retailor":
                if args.rig:
                    arms = [a for a in arms if a.name == args.rig]
                if not arms:
                    raise ValueError(f"{args.blend_in} holds no HandTailor rig {args.rig!r}")
                fs, fe = _frames(args.frames)
                capture.retailor(scene, arms[0], config, frame_range=None if args.frames is None else (fs, fe),
                                 joints=args.joints.split(",") if args.joints else None,
                                 iterations=args.iterations, falloff=args.falloff, on_progress=progress)
        if args.command in ("capture", "retailor"):
            args.blend.parent.mkdir(parents=True, exist_ok=True)
            bpy.ops.wm.save_as_mainfile(filepath=str(args.blend.absolute()))
            log.info("saved %s", args.blend)
        if getattr(args, "fbx", None):
            args.fbx.parent.mkdir(parents=True, exist_ok=True)
            ops_export.export_fbx(str(args.fbx.absolute()), ops_export.hand_rigs(scene), args.preset)
            log.info("exported %s", args.fbx)
    except (EngineFailure, ResultFileError, ValueError, OSError) as exc:
        log.error("%s failed: %s", args.command, exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
