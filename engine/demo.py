"""`python -m engine.demo`: capture the bundled sample clip end to end (the README's main command).

Writes, under out/demo/ (or --out):
  sample_result.npz          the capture result (DESIGN.md format)
  sample_overlay.mp4         the fitted mesh and keypoints drawn over the footage
  overlay_frame_NNNN.png     a few frames of the overlay, to look at without a video player
  sample.blend, sample.fbx   the rigged, keyed hand in Blender and as FBX (when the `bpy` module and the
                             add-on are available; skipped with a note otherwise)

Options: --frames A:B to capture part of the clip (default: all 621 frames), --no-blender.
A rerun replaces these files (the engine itself never replaces an overlay video it cannot tell is the
overlay of the result beside it: the demo clears its own two outputs first, so that outputs of an older
version never block it).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import subprocess
import sys
import time

from engine.cli_args import log_to_stderr
from engine.errors import EngineError

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"


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


def blender_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bpy") is not None


def capture_in_blender(source: str, frames: str | None, out: pathlib.Path) -> dict[str, pathlib.Path]:
    """The product path: the add-on's headless entry drives the engine over its protocol, rigs and keys the
    hand under bpy, and writes the .blend, the .fbx, the result and the overlay video."""
    paths = {"result": out / "sample_result.npz", "overlay": out / "sample_overlay.mp4",
             "blend": out / "sample.blend", "fbx": out / "sample.fbx"}
    cmd = [sys.executable, "-m", "handtailor_blender", "capture", source, "--blend", str(paths["blend"]),
           "--fbx", str(paths["fbx"]), "--result", str(paths["result"]), "--overlay", str(paths["overlay"])]
    if frames:
        cmd += ["--frames", frames]
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        raise EngineError(f"the Blender capture failed (exit {proc.returncode}); its log is above", code="internal")
    return paths


def capture_engine_only(source: str, frames: str | None, out: pathlib.Path) -> dict[str, pathlib.Path]:
    """Engine only (no bpy): the result and the overlay video."""
    from engine import capture
    from engine.cli_args import parse_frames
    from engine.progress import ProgressBar

    paths = {"result": out / "sample_result.npz", "overlay": out / "sample_overlay.mp4"}
    start, end = parse_frames(frames)
    options = capture.CaptureOptions(source=source, output=str(paths["result"]), frame_start=start,
                                      frame_end=end, overlay=str(paths["overlay"]))
    bar = ProgressBar(unit="frame")
    try:
        capture.run_capture(options, progress=bar)
    finally:
        bar.close()
    return paths


def main(argv: list[str] | None = None, prog: str = "python -m engine.demo") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Capture the bundled sample clip end to end.")
    p.add_argument("--out", default=str(REPO / "out" / "demo"), help="output folder (default: out/demo)")
    p.add_argument("--frames", help="frame range A:B (inclusive; default: the whole clip)")
    p.add_argument("--source", default=str(SAMPLE), help="footage (default: the bundled sample clip)")
    p.add_argument("--no-blender", action="store_true", help="engine only: no .blend / .fbx")
    args = p.parse_args(argv)
    log_to_stderr()
    out = pathlib.Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    for own in ("sample_result.npz", "sample_overlay.mp4"):  # this demo's outputs, written again below
        (out / own).unlink(missing_ok=True)
    source = str(pathlib.Path(args.source).absolute())
    t0 = time.perf_counter()
    if args.no_blender or not blender_available():
        if not args.no_blender:
            logging.getLogger("engine.demo").warning("the bpy module is not installed: engine only (./demo.sh installs it)")
        paths = capture_engine_only(source, args.frames, out)
    else:
        paths = capture_in_blender(source, args.frames, out)
    secs = time.perf_counter() - t0
    frames = extract_frames(paths["overlay"], out)
    lines = [f"done in {secs:.0f} s; wrote:"] + [f"  {k:<8} {v}" for k, v in paths.items()]
    lines.append(f"  frames   {', '.join(str(f) for f in frames)}")
    print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    from engine.cli import run_command

    sys.exit(run_command("engine.demo", sys.argv[1:], prog="python -m engine.demo"))
