"""`python -m engine.demo`: capture the bundled sample clip end to end (the README's main command).

Writes, under out/demo/ (or --out):
  sample_result.npz          the capture result (DESIGN.md format)
  sample_overlay.mp4         the fitted mesh and keypoints drawn over the footage
  overlay_frame_NNNN.png     a few frames of the overlay, to look at without a video player
  sample.blend, sample.fbx   the rigged, keyed hand in Blender and as FBX (when the `bpy` module and the
                             add-on are available; skipped with a note otherwise)

Options: --frames A:B to capture part of the clip (default: all 621 frames), --no-blender.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import subprocess
import sys
import textwrap
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"

_BLENDER_SCRIPT = textwrap.dedent(
    """
    import sys, bpy
    result, source, blend, fbx = sys.argv[1:5]
    from handtailor_blender import capture, ops_export
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    try:
        clip = bpy.data.movieclips.load(source, check_existing=True)
    except RuntimeError:
        clip = None
    capture.apply_result(scene, result, clip=clip)
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    ops_export.export_fbx(fbx, ops_export.hand_rigs(scene), "BLENDER")
    """
)


def extract_frames(video_path: pathlib.Path, out_dir: pathlib.Path, count: int = 4) -> list[pathlib.Path]:
    """Saves `count` evenly spaced frames of a video as PNGs; returns their paths."""
    import cv2

    cap = cv2.VideoCapture(str(video_path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    paths = []
    for i in sorted({int(round(k * (n - 1) / max(count - 1, 1))) for k in range(count)} if n > 0 else []):
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, frame = cap.read()
        if ok:
            p = out_dir / f"overlay_frame_{i:04d}.png"
            cv2.imwrite(str(p), frame)
            paths.append(p)
    cap.release()
    return paths


def build_blend(result: pathlib.Path, source: pathlib.Path, blend: pathlib.Path, fbx: pathlib.Path) -> str | None:
    """Makes the .blend and .fbx under the bpy module in a child process; returns None or why it was skipped."""
    try:
        import importlib.util

        if importlib.util.find_spec("bpy") is None:
            return "the bpy module is not installed (./demo.sh installs it)"
    except (ImportError, ValueError):
        return "the bpy module is not importable"
    if not (REPO / "handtailor_blender" / "capture.py").is_file():
        return "the Blender add-on (handtailor_blender/) is not present"
    proc = subprocess.run(
        [sys.executable, "-c", _BLENDER_SCRIPT, str(result), str(source), str(blend), str(fbx)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0 or not blend.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return "the Blender step failed: " + " | ".join(tail)
    return None


def main(argv: list[str] | None = None, prog: str = "python -m engine.demo") -> int:
    from engine import capture

    p = argparse.ArgumentParser(prog=prog, description="Capture the bundled sample clip end to end.")
    p.add_argument("--out", default=str(REPO / "out" / "demo"), help="output folder (default: out/demo)")
    p.add_argument("--frames", help="frame range A:B (inclusive; default: the whole clip)")
    p.add_argument("--source", default=str(SAMPLE), help="footage (default: the bundled sample clip)")
    p.add_argument("--no-blender", action="store_true", help="skip the .blend / .fbx step")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, end = capture.parse_frames(args.frames)
    result = out / "sample_result.npz"
    overlay = out / "sample_overlay.mp4"
    options = capture.CaptureOptions(source=args.source, output=str(result), frame_start=start, frame_end=end,
                                      overlay=str(overlay))
    bar = capture.ProgressBar()
    t0 = time.perf_counter()
    try:
        summary = capture.run_capture(options, progress=bar)
    finally:
        bar.close()
    secs = time.perf_counter() - t0
    frames = extract_frames(overlay, out)
    lines = [
        f"captured {summary['frames']} frames in {secs:.0f} s ({summary['frames'] / secs:.2f} fps); "
        f"valid frames per hand: {dict(zip(summary['hand_side'], summary['valid_frames']))}",
        f"result:  {result}",
        f"overlay: {overlay}",
        f"frames:  {', '.join(str(f) for f in frames)}",
    ]
    if not args.no_blender:
        blend, fbx = out / "sample.blend", out / "sample.fbx"
        why = build_blend(result, pathlib.Path(args.source).absolute(), blend, fbx)
        lines.append(f"blender: {blend}, {fbx}" if why is None else f"blender: skipped ({why})")
    print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    from engine.cli import run_command

    sys.exit(run_command("engine.demo", sys.argv[1:], prog="python -m engine.demo"))
