"""`python -m engine capture`: footage in, capture result (.npz, DESIGN.md) out.

    footage -> engine.tracks: the tracker streamed over the clip, its tracks assigned to result tracks
      -> per track: hand_module.fit_init (lifting + IKNet + shape) on its observed frames
      -> engine.tailor.clip.fit_timeline: the tailor over the track's timeline, in overlapping windows
      -> result file, written atomically (`engine.results`); optional overlay video (`engine.overlay`)

Memory stays flat in the clip length: frames are decoded, tracked and dropped batch by batch; only the
per-frame keypoints (a few hundred bytes a frame) are kept for the fit. The overlay decodes the footage a
second time.

`run_capture(options, progress=..., should_stop=...)` is what the engine server runs in a job process;
`main(argv, prog)` is the CLI with a progress bar on stderr. Outputs never replace an input or a foreign
file (engine.outputs) and are published together when the job has finished: a cancel, Ctrl-C or SIGTERM
at any point leaves nothing new, and an earlier result as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
import threading
import time
from typing import Callable

import numpy as np

from engine import outputs
from engine import results as results_io
from engine import tracks as tracks_mod
from engine import video
from engine.errors import Cancelled, InputError, NoHandError
from engine.timing import StageTimer

from engine.capture_options import (  # noqa: F401  (re-exported: the options and defaults of a capture)
    DEFAULT_BATCH_SIZE, DEFAULT_ITERATIONS, DEFAULT_SMOOTHING, DEFAULT_TORCH_THREADS, CaptureOptions,
    default_segments, tailor_config)

log = logging.getLogger("engine.capture")

ProgressFn = Callable[[int, int, str], None]
StopFn = Callable[[], bool]

def camera_from_options(options: CaptureOptions, image_size: tuple[int, int]):
    """(camera_model, K (3,3), distortion (5,)) for the options and the upright image size."""
    from engine import camera

    if options.intrinsics is None:
        return "weak_perspective", camera.nominal_K(image_size), np.zeros(5)
    k = options.intrinsics
    dist = np.asarray(k[4:9], np.float64) if len(k) == 9 else np.zeros(5)
    return "perspective", camera.intrinsics_matrix(*k[:4]), dist


def check_hand_model(options: CaptureOptions):
    """Loads a hand model before any footage is processed, so a bad --hand-model fails fast.

    Either side will do (a MANO folder may hold only one); returns the model, raises the right side's
    ModelFileError when neither loads."""
    from engine.errors import ModelFileError
    from engine.hand_model import load_hand_model

    try:
        return load_hand_model(options.hand_model, side="right")
    except ModelFileError as first:
        try:
            return load_hand_model(options.hand_model, side="left")
        except ModelFileError:
            raise first from None


def make_tracker(options: CaptureOptions):
    from engine import camera
    from engine.hand_module.tracking import HandTracker

    if options.threads and (options.runtime == "torch" or options.backbone == "hourglass"):
        import torch  # only these track with torch: OpenVINO and LiteRT, and the hand module after them, never load it

        torch.set_num_threads(int(options.threads))
    # the hourglass lifts with K (Eq. 5); MediaPipe ignores it
    K = None if options.intrinsics is None else camera.intrinsics_matrix(*options.intrinsics[:4])
    return HandTracker(max_hands=options.hands, mirrored=options.mirrored, device=options.device,
                       backbone=options.backbone, hourglass_weights=options.hourglass_weights, K=K,
                       runtime=options.runtime, workers=options.segments)


def fit_init(arrays: dict, model, camera_model: str, K: np.ndarray, steady_shape: bool,
             hand_length: float | None = None) -> dict:
    """The hand module's initialization for one track's observed frames (lifting + IKNet + shape)."""
    from engine.hand_module import hand_module

    return hand_module.fit_init(
        arrays["keypoints_uvd"], arrays["confidence"], arrays["world_landmarks"],
        camera=camera_model, K=K, model=model, steady_shape=steady_shape, hand_length=hand_length,
    )


def _warm_tailor(model, K, options: CaptureOptions, camera_model: str, expected: int, temporal: bool) -> None:
    """Makes ready the executables the fit will use (loaded from disk, or traced and compiled the first time
    ever: `engine.tailor.executables`): the hand module's posing (`engine.tailor.posing`, one frame) and the
    clip fit's (one fit of placeholder frames in a window's batch size). Runs beside the tracking; any error
    is the real fit's to report.

    At the lowest CPU priority (Linux: this thread's nice 19), once JAX's backend exists (its thread pools,
    which the fit then uses, take the priority of the thread that makes them): loading the executable (0.13-
    0.18 s of CPU without the GIL) then takes a core only where tracking leaves one idle (its first frames,
    the last segment's tail) instead of slowing both segments (measured, paired captures of the sample clip:
    median 2.7% faster). The first capture after an engine update, which compiles (~7 s of CPU), does most of
    that after tracking instead of beside it."""
    import jax

    from engine import tailor
    from engine.tailor.clip import FIT_CHUNK
    from engine.tailor.posing import model_keypoints

    b = min(FIT_CHUNK, max(1, expected))
    theta = np.zeros((b, 16, 4))
    theta[..., 0] = 1.0
    config = tailor_config(options.iterations, camera_model, float(options.smoothing) if temporal else 0.0)
    try:
        jax.devices()
        if sys.platform.startswith("linux"):  # elsewhere setpriority(PRIO_PROCESS, id) names a process, not a thread
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        model_keypoints(model, theta[:1], np.zeros((1, 10)))  # fit_init's (0.1 s to load)
        tailor.fit(model, theta, np.zeros((b, 10)), np.tile([0.0, 0.0, 0.5], (b, 1)), np.zeros((b, 21, 2)),
                   np.ones((b, 21)), np.ones(b, bool), K, None, config, hand_scale0=np.ones(b),
                   projection_scale0=np.ones(b), min_batch=FIT_CHUNK)  # fit_clip's batch
    except Exception as exc:  # noqa: BLE001 - an optimization only
        log.debug("tailor warm-up failed: %s", exc)


def fit_track(track, n_frames: int, model, options: CaptureOptions, K, dist, timer: StageTimer,
              progress: Callable[[int, int, str], None], should_stop: StopFn, temporal: bool = True) -> dict:
    """One result track: the hand module's initialization, then the tailor over the clip's timeline."""
    from engine.tailor.clip import fit_timeline

    arrays = tracks_mod.track_arrays(track, K, dist)
    with timer.time("lift_ik"):
        init = fit_init(arrays, model, options.camera_model, K, not options.per_frame_shape, options.hand_length)
    config = tailor_config(options.iterations, options.camera_model, float(options.smoothing) if temporal else 0.0)
    return fit_timeline(model, track.positions, n_frames, init, arrays["keypoints_uvd"][..., :2], arrays["confidence"],
                        K, config, name=f"{track.side} hand", hold_identity=not options.per_frame_shape,
                        should_stop=should_stop, timer=timer,
                        progress=lambda d, t: progress(d, t, f"fitting the {track.side} hand: frame {d}/{t}"))


def run_capture(options: CaptureOptions, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                tracker=None, stats: dict | None = None, temporal: bool = True) -> dict:
    """Captures `options.source` into `options.output`; returns the protocol's capture result dict.

    progress(done, total, message) is called as work proceeds; should_stop() is polled between batches
    (True raises Cancelled). `tracker` overrides the HandTracker (tests); `stats` receives stage timings
    and counts (benchmark). Raises EngineError subclasses for everything a user can fix.
    """
    from engine.hand_model import load_hand_model

    progress = progress or (lambda done, total, message="": None)
    should_stop = should_stop or (lambda: False)
    timer = StageTimer()
    t_start = time.perf_counter()
    out_path, overlay_path = outputs.check_capture_paths(options)
    with timer.time("decode"):
        info = video.probe(options.source, fps=options.fps)
    camera_model, K, dist = camera_from_options(options, (info.width, info.height))
    expected = video.expected_frames(info, options.frame_start, options.frame_end, options.stride)
    log.info("capturing %s: %dx%d, %.3g fps, %d frames selected, camera %s", info.source, info.width, info.height,
             info.fps, expected, camera_model)
    model = check_hand_model(options)
    # the tailor's executable loads (or compiles, the first time ever) while the hands are tracked
    warming = threading.Thread(target=_warm_tailor, args=(model, K, options, camera_model, expected, temporal),
                               name="tailor-warm-up", daemon=True)
    warming.start()
    phases = 2 + (1 if overlay_path else 0)
    try:
        tracker = make_tracker(options) if tracker is None else tracker
        obs = tracks_mod.collect_observations(
            info, tracker, batch_size=options.batch_size, frame_start=options.frame_start, frame_end=options.frame_end,
            stride=options.stride, progress=lambda d, t, m: progress(d, max(expected, 1) * phases, m),
            should_stop=should_stop, timer=timer, expected=expected)
    finally:
        warming.join()  # never left running into the fit, an error's report or the interpreter's exit
    N = obs.n_frames
    total = N * phases
    tracks = tracks_mod.assign_tracks(obs, options.hands)
    if not tracks:
        if not obs.decoded.any():
            raise InputError(f"none of the {N} frames of {info.source!r} could be decoded; the footage is damaged. Re-export it.")
        raise NoHandError(f"no hand found in {N} frames of {info.source!r}. Check that a hand is clearly visible "
                          "(not tiny, not cut off, lit), or choose another frame range.")
    models = {side: load_hand_model(options.hand_model, side=side) for side in sorted({t.side for t in tracks})}
    fits = []
    for i, track in enumerate(tracks):
        base = N + (N * i) // len(tracks)
        fits.append(fit_track(track, N, models[track.side], options, K, dist, timer,
                              lambda d, t, m, base=base: progress(base + (N * d) // max(t * len(tracks), 1), total, m),
                              should_stop, temporal=temporal))
    from engine import __version__

    result = {
        "format_version": np.asarray(results_io.FORMAT_VERSION), "engine_version": np.asarray(__version__),
        "source": np.asarray(str(pathlib.Path(info.source).absolute())), "image_size": np.asarray([info.width, info.height]),
        "fps": np.asarray(info.fps), "frame_index": obs.frame_index, "frame_decoded": obs.decoded,
        "camera_model": np.asarray(camera_model), "K": np.asarray(K, np.float64), "distortion": np.asarray(dist, np.float64),
        "hand_model": np.asarray([str(models[t.side].path) for t in tracks]),
        "hand_model_sha256": np.asarray([str(models[t.side].sha256) for t in tracks]),
        "hand_side": np.asarray([t.side for t in tracks]), "tailor_iterations": np.asarray(options.iterations),
        "tailor_smoothing": np.asarray(options.smoothing if temporal else 0.0),
        "steady_shape": np.asarray(not options.per_frame_shape), "per_frame_shape": np.asarray(bool(options.per_frame_shape)),
    }
    for key in ("valid", "theta", "beta", "root", "hand_scale", "projection_scale", "keypoints_2d", "confidence", "joints_3d"):
        result[key] = np.stack([f[key] for f in fits])
    written, overlay_written = _write_outputs(result, models, info, out_path, overlay_path, options, timer,
                                              lambda d, t, m: progress(2 * N + d, total, m), should_stop)
    progress(total, total, "done")
    valid_frames = [int(v.sum()) for v in result["valid"]]
    if stats is not None:
        stats.update(frames=N, valid_frames=valid_frames, seconds_total=time.perf_counter() - t_start,
                     stages_s=dict(timer.seconds), calls_s={k: list(v) for k, v in timer.calls.items()},
                     result=result, image_size=(info.width, info.height))
    log.info("wrote %s (%d frames, valid per track: %s)", written, N, valid_frames)
    return {"files": {"result": str(written), "overlay": str(overlay_written) if overlay_written else None},
            "frames": N, "valid_frames": valid_frames, "hand_side": [t.side for t in tracks],
            "corrupt_frames": sorted(int(i) for i in obs.errors)}


def _write_outputs(result: dict, models: dict, info, out_path, overlay_path, options: CaptureOptions, timer,
                   progress: ProgressFn, should_stop: StopFn):
    """Overlay (if asked) then result into temp files, published together at the end; the result records the
    overlay's sha256 (a later run may replace that overlay). Returns (result path, overlay path or None)."""
    staged = outputs.Staged()
    try:
        if overlay_path:
            from engine import overlay

            with timer.time("overlay"):
                temp = overlay.write_overlay(overlay_path, result, models, info=info, batch_size=options.batch_size,
                                             should_stop=should_stop, progress=progress, publish=False)
            staged.add(temp, overlay_path)
            result[outputs.OVERLAY_SHA_KEY] = np.asarray(outputs.file_sha256(temp))
        with timer.time("write"):
            staged.add(results_io.write_result(out_path, result, publish=False), out_path)
        if should_stop():
            raise Cancelled("capture cancelled")
        staged.publish()
    except BaseException:
        staged.discard()
        raise
    return out_path, overlay_path


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str], prog: str = "python -m engine capture") -> int:
    from engine.cli_args import capture_options, capture_parser, log_to_stderr
    from engine.progress import ProgressBar

    args = capture_parser(prog).parse_args(argv)
    log_to_stderr()
    options = capture_options(args)
    bar = ProgressBar(enabled=not args.quiet, unit="frame")
    try:
        out = run_capture(options, progress=bar)
    finally:
        bar.close()
    print(f"{prog}: wrote {out['files']['result']} ({out['frames']} frames; valid per track: {out['valid_frames']})", file=sys.stderr)
    if out["files"]["overlay"]:
        print(f"{prog}: overlay video {out['files']['overlay']}", file=sys.stderr)
    if out["corrupt_frames"]:
        print(f"{prog}: {len(out['corrupt_frames'])} frame(s) could not be decoded and are marked invalid: "
              f"{out['corrupt_frames'][:20]}", file=sys.stderr)
    return 0
