"""Headless entry: the add-on's capture / re-tailor / export code under the bpy module, synchronously.

    python -m handtailor_blender capture SOURCE --blend OUT.blend [--fbx OUT.fbx] [--preset UNITY]
        [--frames A:B] [--start-frame 1] [--stride N] [--hands {1,2}] [--side both|left|right]
        [--intrinsics fx,fy,cx,cy[,k1,k2,p1,p2,k3]] [--hand-model PATH] [--iterations N] [--smoothing W]
        [--per-frame-shape] [--mirrored] [--interpolation BEZIER] [--rotation-mode QUATERNION|XYZ]
        [--tolerance-deg 0.5] [--tolerance-mm 0.5] [--result OUT.npz] [--overlay OUT.mp4]
    python -m handtailor_blender retailor IN.blend --blend OUT.blend [--rig NAME] [--frames A:B]
        [--joints a,b] [--iterations N] [--falloff F]
    python -m handtailor_blender export IN.blend --fbx OUT.fbx [--preset BLENDER|UNITY|UNREAL]
    python -m handtailor_blender retarget TAKE.blend --character CHAR.blend [--armature NAME]
        [--preset auto|rigify|mixamo|ue4|ue5|arp|vrm] [--mapping MAP.json] [--fingers-only|--with-wrist]
        [--tolerance-deg 0.5] --out OUT.blend [--fbx OUT.fbx] [--json]

--frames counts footage frames from 0; footage frame 0 lands on scene frame --start-frame (1: Blender's
timeline). The retarget writes OUT.blend = the character's file with keys on its own action; with --json
it prints {"preset", "mapped", "unmapped", "frames", "keys_before", "keys_after", "max_error_deg"}.

Needs the `bpy` module (the project's venv has it) and the engine (found like the add-on finds it:
$HANDTAILOR_ENGINE_PYTHON / $HANDTAILOR_ENGINE_ROOT or the project's .venv).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
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
    c.add_argument("--frames", help="footage frames A:B, counted from 0, inclusive")
    c.add_argument("--start-frame", type=int, default=1, help="scene frame of footage frame 0")
    c.add_argument("--stride", type=int, default=1)
    c.add_argument("--hands", type=int, default=2, choices=[1, 2])
    c.add_argument("--side", default="both", choices=["both", "left", "right"], help="which hands to key")
    c.add_argument("--intrinsics")
    c.add_argument("--hand-model")
    c.add_argument("--iterations", type=int, default=30)
    c.add_argument("--smoothing", type=float, default=None, help="temporal smoothing weight (default: the engine's)")
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--per-frame-shape", action="store_true", help="a shape and size per frame (default: one per hand)")
    c.add_argument("--steady-shape", action="store_true", help=argparse.SUPPRESS)  # deprecated: the default now
    c.add_argument("--mirrored", action="store_true")
    c.add_argument("--interpolation", default="BEZIER", choices=["BEZIER", "LINEAR", "CONSTANT"])
    c.add_argument("--rotation-mode", default="QUATERNION", choices=["QUATERNION", "XYZ"])
    c.add_argument("--tolerance-deg", type=float, default=0.5, help="key reduction: rotations (0: every frame)")
    c.add_argument("--tolerance-mm", type=float, default=0.5, help="key reduction: locations (0: every frame)")
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
    t = sub.add_parser("retarget", help="a take's hands onto a character's rig -> the character's .blend")
    t.add_argument("take", type=pathlib.Path)
    t.add_argument("--character", required=True, type=pathlib.Path)
    t.add_argument("--armature", default="", help="the character's armature (default: its only armature)")
    t.add_argument("--preset", default="auto", choices=["auto", "rigify", "mixamo", "ue4", "ue5", "arp", "vrm"])
    t.add_argument("--mapping", type=pathlib.Path, help="a bone mapping saved from the panel (replaces --preset)")
    w = t.add_mutually_exclusive_group()
    w.add_argument("--fingers-only", action="store_true", help="key the fingers only (the default)")
    w.add_argument("--with-wrist", action="store_true", help="also key the hand bone")
    t.add_argument("--tolerance-deg", type=float, default=0.5)
    t.add_argument("--interpolation", default="BEZIER", choices=["BEZIER", "LINEAR", "CONSTANT"])
    t.add_argument("--out", required=True, type=pathlib.Path)
    t.add_argument("--fbx", type=pathlib.Path)
    t.add_argument("--json", action="store_true", help="print the retarget report as JSON")
    return p


def _retarget(args) -> dict:
    import bpy

    from . import ops_export, retarget_scene

    for src in (args.take, args.character):
        if args.out.absolute() == src.absolute():
            raise ValueError(f"--out {args.out} would overwrite {src}: write to a new file")
    bpy.ops.wm.open_mainfile(filepath=str(args.take))
    rigs = [o for o in bpy.context.scene.objects if retarget_scene.is_hand_rig(o)
            and o.animation_data and o.animation_data.action]
    if not rigs:
        raise ValueError(f"{args.take} holds no HandTailor rig with a take")
    motions = [retarget_scene.read_take(a) for a in rigs]
    bpy.ops.wm.open_mainfile(filepath=str(args.character))
    chars = retarget_scene.characters(bpy.context.scene)
    if args.armature:
        chars = [o for o in chars if o.name == args.armature]
    if len(chars) != 1:
        have = ", ".join(o.name for o in retarget_scene.characters(bpy.context.scene)) or "none"
        raise ValueError(f"{args.character}: {'no armature ' + repr(args.armature) if args.armature else 'choose the armature with --armature'} (armatures: {have})")
    report = retarget_scene.retarget_takes(motions, chars[0], preset=args.preset,
                                           mapping_file=str(args.mapping) if args.mapping else None,
                                           with_wrist=args.with_wrist, tolerance_deg=args.tolerance_deg,
                                           interpolation=args.interpolation)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(args.out.absolute()))
    log.info("saved %s", args.out)
    if args.fbx:
        args.fbx.parent.mkdir(parents=True, exist_ok=True)
        ops_export.export_fbx(str(args.fbx.absolute()), chars, "BLENDER")
        log.info("exported %s", args.fbx)
    return report.as_dict()


def _log_keys(arms) -> None:
    for arm in arms:
        act = arm.animation_data.action
        log.info("%s: keys %d -> %d (largest error %.3f deg, %.3f mm)", act.name, act.get("ht_keys_before", 0),
                 act.get("ht_keys_after", 0), act.get("ht_max_error_deg", 0.0), act.get("ht_max_error_mm", 0.0))


@contextlib.contextmanager
def _stdout_to_stderr():
    """Blender and its exporters print to stdout; while they run it goes to stderr, so that stdout carries
    only this command's own output (the --json report)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    import bpy

    from . import capture, ops_export, retailor, takes
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
        if args.command == "retarget":
            with _stdout_to_stderr():
                report = _retarget(args)
            if args.json:
                print(json.dumps(report))
            return 0
        if args.command == "capture":
            bpy.ops.wm.read_factory_settings(use_empty=True)
            scene = bpy.context.scene
            fs, fe = _frames(args.frames)
            intr = [float(x) for x in args.intrinsics.split(",")] if args.intrinsics else None
            settings = capture.CaptureSettings(
                source=str(pathlib.Path(args.source).absolute()),
                output=str(pathlib.Path(args.result).absolute()) if args.result else "",
                frame_start=fs, frame_end=fe, stride=args.stride, hands=args.hands, intrinsics=intr,
                side=args.side, start_frame=args.start_frame, rotation_mode=args.rotation_mode,
                tolerance_deg=args.tolerance_deg, tolerance_mm=args.tolerance_mm,
                hand_model=args.hand_model, iterations=args.iterations, smoothing=args.smoothing,
                per_frame_shape=args.per_frame_shape, mirrored=args.mirrored, batch_size=args.batch_size,
                interpolation=args.interpolation,
                overlay=str(pathlib.Path(args.overlay).absolute()) if args.overlay else None)
            if not settings.output:
                settings.output = str(args.blend.absolute().with_suffix(".npz"))
            log.info("Blender %s: capturing %s (the footage as the camera's background, then the engine)",
                     bpy.app.version_string, settings.source)
            clip = None
            try:
                clip = bpy.data.movieclips.load(settings.source, check_existing=True)
                clip.frame_start = args.start_frame  # the background movie lands where the keys do
            except RuntimeError:
                log.info("%s is not a movie Blender can show; the camera gets no background", settings.source)
            result_path, arms = capture.capture(scene, settings, config, clip=clip, on_progress=progress,
                                                timeout=args.timeout)
            log.info("captured %s -> %s", ", ".join(a.name for a in arms), result_path)
            _log_keys(arms)
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
                _log_keys(retailor.retailor(scene, arms[0], config,
                                            frame_range=None if args.frames is None else (fs, fe),
                                            joints=args.joints.split(",") if args.joints else None,
                                            iterations=args.iterations, falloff=args.falloff,
                                            on_progress=progress))
        if args.command in ("capture", "retailor"):
            args.blend.parent.mkdir(parents=True, exist_ok=True)
            takes.rebase_paths(str(args.blend.absolute()))  # sidecars beside the .blend: stored relative
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
