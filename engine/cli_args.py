"""Argument parsing shared by the commands (capture, batch, retailor, bench capture, the demo)."""

from __future__ import annotations

import argparse
import logging
import sys

from engine.errors import InputError


def parse_frames(text: str | None) -> tuple[int | None, int | None]:
    """'A:B' (inclusive, either side may be empty) -> (A, B)."""
    if not text:
        return None, None
    if ":" not in text:
        raise InputError(f"--frames must look like A:B (inclusive), e.g. 0:99 or 50: (got {text!r}).")
    a, b = text.split(":", 1)
    try:
        return (int(a) if a.strip() else None), (int(b) if b.strip() else None)
    except ValueError:
        raise InputError(f"--frames must look like A:B with whole numbers (got {text!r}).") from None


def parse_intrinsics(text: str | None) -> tuple[float, ...] | None:
    """'fx,fy,cx,cy[,k1,k2,p1,p2,k3]' -> the numbers (None for no text)."""
    if not text:
        return None
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--intrinsics must be comma-separated numbers fx,fy,cx,cy[,k1,k2,p1,p2,k3] (got {text!r}).") from None
    if len(vals) not in (4, 9):
        raise InputError(f"--intrinsics needs 4 or 9 numbers (got {len(vals)}).")
    return vals


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """--backbone and --hourglass-weights (engine.hand_module.BACKBONES), for every command that tracks hands."""
    from engine.hand_module import BACKBONES

    parser.add_argument("--backbone", choices=BACKBONES, default=BACKBONES[0],
                        help="keypoint network (default mediapipe; hourglass needs --hourglass-weights)")
    parser.add_argument("--hourglass-weights", metavar="FILE", default=None,
                        help="hourglass.safetensors written by `python -m engine train run` (for --backbone hourglass)")


def log_to_stderr(level: int | str = logging.INFO, fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """Logs at `level` on stderr, unless the program set up logging itself. JAX's own INFO records stay out
    at any level: its backend probing ("Unable to initialize backend 'tpu': ... libtpu.so: cannot open shared
    object file") read as an error in every capture, printed twice (JAX adds a handler of its own to its
    logger). JAX_LOGGING_LEVEL, JAX's own setting, still applies when set."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, stream=sys.stderr, format=fmt)
    logging.getLogger("jax").setLevel(logging.WARNING)


def capture_parser(prog: str) -> argparse.ArgumentParser:
    """`python -m engine capture`'s arguments (`capture_options` turns them into CaptureOptions)."""
    p = argparse.ArgumentParser(prog=prog, description="Capture hand motion from footage into a result file (.npz).")
    p.add_argument("source", help="video file (any codec OpenCV reads) or a folder of images (sorted by name)")
    p.add_argument("-o", "--output", required=True, help="result file to write (.npz)")
    add_capture_options(p)
    p.add_argument("--overlay", help="also write a video of the fitted mesh over the footage (.mp4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def add_capture_options(p) -> None:
    """The options of a capture other than its source, output, overlay and progress bar, on a parser or an
    argument group: `capture` and `batch` (which applies them to every clip) share this one definition."""
    from engine.capture import DEFAULT_BATCH_SIZE, DEFAULT_ITERATIONS, DEFAULT_SMOOTHING, DEFAULT_TORCH_THREADS

    p.add_argument("--frames", help="frame range A:B, 0-based, inclusive (default: all)")
    p.add_argument("--stride", type=int, default=1, help="use every Nth frame (default 1)")
    p.add_argument("--hands", type=int, choices=(1, 2), default=1, help="hands to capture (default 1)")
    p.add_argument("--intrinsics", help="fx,fy,cx,cy[,k1,k2,p1,p2,k3] in pixels: perspective camera (default: weak perspective)")
    p.add_argument("--hand-model", help="hand model file or MANO folder (default: the shipped open hand model)")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help=f"tailor iterations (default {DEFAULT_ITERATIONS})")
    p.add_argument("--smoothing", type=float, default=DEFAULT_SMOOTHING, help=f"temporal smoothing weight, 0 = off (default {DEFAULT_SMOOTHING})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"frames decoded and tracked per batch (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--per-frame-shape", action="store_true",
                   help="a hand shape (beta) and size per frame (default: one identity per hand track, its size "
                        "held: the distance moves)")
    p.add_argument("--hand-length", type=float, default=None, metavar="M",
                   help="the actor's hand length in meters, wrist crease to middle fingertip (default: the "
                        "population mean, 0.187; monocular footage cannot show the size)")
    p.add_argument("--steady-shape", action="store_true", help=argparse.SUPPRESS)  # deprecated: the default now
    p.add_argument("--mirrored", action="store_true", help="the footage is mirrored (selfie camera)")
    p.add_argument("--threads", type=int, default=DEFAULT_TORCH_THREADS,
                   help=f"torch threads for the networks (default {DEFAULT_TORCH_THREADS}; 0 = torch's default)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of footage that has none, e.g. a folder of images (default 24, Blender's "
                        "default scene rate); a video's own rate always wins")
    add_backbone_arguments(p)
    p.add_argument("--runtime", choices=["openvino", "litert", "torch"], default=None,
                   help="network runtime (default: openvino on CPU, torch on other devices)")
    p.add_argument("--segments", type=int, default=None,
                   help="frames tracked as this many concurrent segments (default: one per core, at most 2)")


def capture_options(args: argparse.Namespace):
    """The CaptureOptions of parsed `capture_parser` arguments."""
    from engine.capture import CaptureOptions

    start, end = parse_frames(args.frames)
    return CaptureOptions(
        source=args.source, output=args.output, frame_start=start, frame_end=end, stride=args.stride,
        hands=args.hands, intrinsics=parse_intrinsics(args.intrinsics), hand_model=args.hand_model,
        iterations=args.iterations, smoothing=args.smoothing, steady_shape=args.steady_shape,
        per_frame_shape=args.per_frame_shape, hand_length=args.hand_length,
        mirrored=args.mirrored, overlay=args.overlay, batch_size=args.batch_size,
        threads=None if args.threads == 0 else args.threads, backbone=args.backbone,
        hourglass_weights=args.hourglass_weights, fps=args.fps, runtime=args.runtime, segments=args.segments,
    )
