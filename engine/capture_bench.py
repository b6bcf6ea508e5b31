"""`python -m engine bench capture [SOURCE] [--frames A:B] [--json]`: the capture pipeline against MediaPipe's
own networks, measured side by side in one run.

  * Our capture end to end (decode -> detect -> keypoints -> lift + IK -> tailor -> write; the tracker as
    `capture` makes it: `runtime`, `segments`; `segments_tracked`, how many the tracking ended with: more where
    a worker that finished first took over part of a slower one's), with the temporal term: `fps` (frames
    over the whole of run_capture, the tailor's first call and compile included; `fps_without_compile`
    without it),
    `stages_ms` (mean milliseconds per frame of each stage; decoding runs a batch ahead in a thread, so
    `decode` is the time the pipeline waited for frames; `detect` / `keypoints` split the tracker's wall
    time as its `last_timings` report it; `tailor` includes the first call's compile, also given apart as
    `tailor_first_call_s`), `peak_rss_mb` (the process's peak resident memory right after the first
    capture, before the reference and no-hand runs).
  * The fit (track 0, with the temporal term): `chatter_deg_median`, `chatter_deg_p95` (each finger rotation
    against the midpoint, slerp 0.5, of its two neighbouring frames, over valid triples, degrees:
    `metrics.rotation_chatter_deg`) and `fit_residual_px` (fitted keypoints against the detected ones: the
    median over frames of their mean distance, `metrics.reprojection_px`).
  * The same observations refit without the temporal term (the tracker's output is replayed, so only
    the fit differs): `jitter_with_temporal`, `jitter_without_temporal` = mean joint acceleration
    |J[n+1] - 2 J[n] + J[n-1]| over valid consecutive triples, in mm per frame^2, camera frame; and
    `lag_frames`, the shift (frames, sub-frame by a parabola) that best aligns the smoothed joints' motion
    with the unsmoothed ones' (positive: the smoothed motion trails; `metrics.trajectory_lag`).
  * The reference, MediaPipe's networks alone: the shipped .tflite files through LiteRT (XNNPACK, what
    MediaPipe runs) driven by the same video-mode graph logic in one sequence (palm detection when a hand
    is lost, landmarks on the ROI tracked from the previous frame), on the same frames, decoding NOT timed,
    with 1 and with 2 XNNPACK threads: `mediapipe_fps` is the faster (`mediapipe_fps_by_threads` both),
    `ratio_vs_mediapipe` = fps / mediapipe_fps (our whole capture against their keypoints alone) and
    `ratio_keypoints_vs_mediapipe` (our detect + keypoints stages against the same work).
  * A no-hand clip: the same frames with the hand and forearm painted over (written as mp4v): our capture
    end to end on it (`no_hand_fps`, decoding included; `no_hand_palm_passes_per_frame`;
    `no_hand_frames_with_a_hand` should be 0) against the reference's keypoint graph
    (`mediapipe_no_hand_fps`).
With `--repeats N` ours and the reference alternate N times (each of our runs pays the tailor's first
call again): medians, with the per-run figures (`fps_runs`, `ratio_runs`) for a noisy machine.
Libraries are imported before anything is timed, on both sides: the runtimes the trackers run on (torch,
OpenVINO, LiteRT) when the trackers are made, JAX and the tailor's modules before the first run
(`imports_s`), so that the first run measures the same work as the later ones (it alone used to pay JAX's
import, ~0.5 s of CPU). Loading the tailor's stored executable stays in every run. For the same reason the
compiled code a capture keeps on disk (`engine.caches`: the tailor's executables, the networks compiled for
OpenVINO) is made ready first, by a capture of the clip's first frames in a child process
(`caches_prepared_s`; its memory stays out of `peak_rss_mb`): where none was kept yet (the first capture
ever on a machine, or after an engine update) the first timed run alone used to compile it, ~11 s and
~280 MB more on the sample clip, which made the median the slower of the other two runs.
Defaults: the bundled sample clip, all frames, one hand, 3 repeats."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

from engine import capture, video
from engine.metrics import joint_jitter, trajectory_lag  # noqa: F401  (the bench's figures; re-exported)
from engine.hand_module.runtimes import RUNTIMES

log = logging.getLogger("engine.capture_bench")

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"
STAGE_KEYS = ("decode", "detect", "keypoints", "lift_ik", "tailor", "write")
# One run's ratio on a shared 2-core machine spread 0.79-1.25 over five alternating runs (issue 18): the
# median of three alternating runs is the figure, with each run's beside it.
DEFAULT_REPEATS = 3


class RecordingTracker:
    """Wraps a tracker and keeps its per-frame outputs (for a replay)."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.outputs: list = []

    @property
    def last_timings(self):
        return getattr(self.tracker, "last_timings", None)

    @property
    def workers(self):
        return getattr(self.tracker, "workers", 1)

    @property
    def static_images(self):
        return getattr(self.tracker, "static_images", True)

    @property
    def planar_frames(self):
        return getattr(self.tracker, "planar_frames", False)

    def process_batch(self, frames):
        out = self.tracker.process_batch(frames)
        self.outputs.extend(out)
        return out

    @property
    def track_clip(self):
        """The tracker's own `track_clip`, recording the decoded frames' hands as `process_batch` would."""
        inner = getattr(self.tracker, "track_clip", None)
        if inner is None:
            return None

        def track_clip(*args, **kwargs):
            clip = inner(*args, **kwargs)
            try:
                for records, done in clip:
                    self.outputs.extend(r.hands for r in records if r.ok)
                    yield records, done
            finally:
                clip.close()

        return track_clip

    def tracker_attr(self, name: str):
        """An attribute of the innermost tracker (through wrappers that keep theirs in `.tracker`)."""
        t = self.tracker
        while not hasattr(t, name) and hasattr(t, "tracker"):
            t = t.tracker
        return getattr(t, name, None)


class ReplayTracker:
    """Returns recorded per-frame outputs in order (no networks)."""

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.i = 0

    def process_batch(self, frames):
        out = self.outputs[self.i : self.i + len(frames)]
        self.i += len(frames)
        return out


# ------------------------------------------------------------------------------------------ reference


def mediapipe_tracker(max_hands: int, mirrored: bool = False, threads: int = 1):
    """MediaPipe's own networks (the .tflite files through LiteRT/XNNPACK, `threads` threads) driven by our
    video-mode graph logic in one sequence (`HandTracker(runtime="litert", workers=1)`): the reference."""
    from engine.hand_module.tracking import HandTracker

    return HandTracker(max_hands=max_hands, mirrored=mirrored, runtime="litert", threads=threads, workers=1)


def time_tracker(tracker, info, options: capture.CaptureOptions) -> tuple[float, int]:
    """Seconds spent in tracker.process_batch over the selected frames (decoding not counted), frames."""
    spent, n = 0.0, 0
    for batch in video.iter_batches(info, options.batch_size, options.frame_start, options.frame_end, options.stride):
        frames = [f.image for f in batch if f.ok]
        t0 = time.perf_counter()
        tracker.process_batch(frames)
        spent += time.perf_counter() - t0
        n += len(frames)
    return spent, n


def reference_fps(info, options: capture.CaptureOptions, threads: tuple[int, ...],
                  cpu_ms: dict | None = None) -> dict[int, float]:
    """The reference's fps on the selected frames, per LiteRT thread count (`cpu_ms` receives the process
    CPU milliseconds per frame, decoding included, as "mediapipe_tN")."""
    out = {}
    for th in threads:
        c0 = time.process_time()
        spent, n = time_tracker(mediapipe_tracker(options.hands, options.mirrored, th), info, options)
        out[th] = n / spent if spent > 0 else float("nan")
        if cpu_ms is not None:
            cpu_ms.setdefault(f"mediapipe_t{th}", []).append(1000 * (time.process_time() - c0) / max(n, 1))
    return out


# ---------------------------------------------------------------------------------------- no-hand clip


def write_no_hand_clip(info, keypoints_2d: np.ndarray, frames: tuple[int | None, int | None], path: str) -> int:
    """The selected frames with the tracked hand and its forearm painted over (the frame's median colour)
    -> an mp4v video at `path`; returns its frame count. keypoints_2d (N, 21, 2) px per selected frame
    (NaN where no hand was found)."""
    import cv2

    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), info.fps or 30.0, (info.width, info.height))
    n = 0
    try:
        for f, kp in zip((f for f in video.iter_frames(info, frames[0], frames[1]) if f.ok), keypoints_2d):
            bgr = cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR)
            if np.isfinite(kp).all():
                c = kp.mean(0)
                wrist, forearm = kp[0], kp[0] - kp[9]  # wrist -> away from the middle finger
                side = np.array([-forearm[1], forearm[0]])
                arm = [wrist + k * forearm + s * side for k in (0, 8) for s in (-0.7, 0.7)]
                pts = np.concatenate([c + 1.6 * (kp - c), arm]).astype(np.float32)
                colour = [int(v) for v in np.median(bgr.reshape(-1, 3), axis=0)]
                cv2.fillConvexPoly(bgr, cv2.convexHull(pts).astype(np.int32), colour)
            writer.write(bgr)
            n += 1
    finally:
        writer.release()
    return n


def no_hand_figures(info, keypoints_2d: np.ndarray, opts: capture.CaptureOptions, tmp: str, threads: tuple[int, ...]) -> dict:
    """Our capture (end to end, decoding included) and the reference on the no-hand clip."""
    from engine.errors import NoHandError

    path = os.path.join(tmp, "no_hand.mp4")
    n = write_no_hand_clip(info, keypoints_2d, (opts.frame_start, opts.frame_end), path)
    nh_opts = capture.CaptureOptions(**{**opts.__dict__, "source": path, "output": os.path.join(tmp, "no_hand.npz"),
                                        "frame_start": None, "frame_end": None})
    tracker = capture.make_tracker(nh_opts)
    palm = getattr(getattr(tracker, "tracker", tracker), "palm", None)
    passes0 = getattr(palm, "passes", 0)
    found = 0
    t0 = time.perf_counter()
    try:
        found = sum(capture.run_capture(nh_opts, tracker=tracker)["valid_frames"])
    except NoHandError:
        pass
    secs = time.perf_counter() - t0
    nh_info = video.probe(path)
    ref = reference_fps(nh_info, capture.CaptureOptions(**{**nh_opts.__dict__}), threads)
    best = max(ref, key=lambda k: ref[k])
    out = {"no_hand_frames": n, "no_hand_fps": n / secs if secs > 0 else float("nan"),
           "no_hand_frames_with_a_hand": found,
           "mediapipe_no_hand_fps": ref[best], "mediapipe_no_hand_threads": best,
           "ratio_no_hand_vs_mediapipe": (n / secs) / ref[best] if secs > 0 else float("nan")}
    if palm is not None and hasattr(palm, "passes"):
        out["no_hand_palm_passes_per_frame"] = (palm.passes - passes0) / max(n, 1)
    return out


# ---------------------------------------------------------------------------------------------- bench


def run_bench(source: str, frames: tuple[int | None, int | None], hands: int = 1, batch_size: int = 32,
              iterations: int = capture.DEFAULT_ITERATIONS, smoothing: float = capture.DEFAULT_SMOOTHING,
              mediapipe: bool = True, keep: str | None = None, threads: int | None = capture.DEFAULT_TORCH_THREADS,
              runtime: str | None = None, segments: int | None = None, repeats: int = DEFAULT_REPEATS,
              mediapipe_threads: tuple[int, ...] = (1, 2), no_hand: bool = True) -> dict:
    """Runs the measurements of the module docstring; returns the figures (JSON-ready)."""
    tmp = tempfile.mkdtemp(prefix="handtailor-bench-")
    try:
        return _run_bench(tmp, source, frames, hands, batch_size, iterations, smoothing, mediapipe, keep, threads,
                          runtime, segments, max(1, int(repeats)), tuple(mediapipe_threads), no_hand)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_bench(tmp, source, frames, hands, batch_size, iterations, smoothing, mediapipe, keep, threads, runtime,
               segments, repeats, mp_threads, no_hand) -> dict:
    out_with = keep or os.path.join(tmp, "with_temporal.npz")
    opts = capture.CaptureOptions(source=source, output=out_with, frame_start=frames[0], frame_end=frames[1],
                                  hands=hands, batch_size=batch_size, iterations=iterations, smoothing=smoothing,
                                  threads=threads, runtime=runtime, segments=segments)
    info = video.probe(source)
    caches_prepared_s = prepare_caches(opts, tmp)
    imports_s = _import_fit_libraries()
    runs, ref_runs, cpu_ms = [], {th: [] for th in mp_threads}, {"ours": []}
    for r in range(repeats):  # ours, then the reference, alternating: load drifts hit both alike
        if r:
            _clear_jax_caches()  # every run of ours pays the tailor's first call, as a user's capture does
        recorder = RecordingTracker(capture.make_tracker(opts))
        stats: dict = {}
        c0 = time.process_time()
        capture.run_capture(opts, tracker=recorder, stats=stats)
        cpu_ms["ours"].append(1000 * (time.process_time() - c0) / stats["frames"])
        if not r:  # the capture's own footprint: before the reference and the no-hand runs add theirs
            peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        runs.append((stats, recorder))
        if mediapipe and _litert_available():
            for th, fps in reference_fps(info, opts, mp_threads, cpu_ms).items():
                ref_runs[th].append(fps)
    fps_runs = [s["frames"] / s["seconds_total"] for s, _ in runs]
    stats, recorder = runs[int(np.argsort(fps_runs)[len(fps_runs) // 2])]  # the median run's details
    report = _capture_figures(stats, recorder, opts, tmp, hands, iterations, smoothing)
    report["fps"] = float(np.median(fps_runs))
    if repeats > 1:
        report["fps_runs"] = fps_runs
    # CPU time per frame (all threads; the reference's includes its decoding, which is not timed in its
    # fps): steadier than wall time on a shared machine
    report["cpu_ms_per_frame"] = {k: float(np.median(v)) for k, v in cpu_ms.items() if v}
    report["runtime"] = recorder.tracker_attr("runtime")
    report["segments"] = recorder.tracker_attr("workers")
    # segments the median run tracked: more than `segments` where a worker took over part of a slower one's
    report["segments_tracked"] = recorder.tracker_attr("last_segments")
    if mediapipe and not _litert_available():
        report.update(mediapipe_fps=None, ratio_vs_mediapipe=None,
                      mediapipe_error="ai-edge-litert is not installed: install the test extra (scripts/setup_env.sh test)")
    elif mediapipe:
        by_threads = {th: float(np.median(v)) for th, v in ref_runs.items()}
        best = max(by_threads, key=lambda k: by_threads[k])
        report["mediapipe_fps"] = by_threads[best]
        report["mediapipe_fps_by_threads"] = {str(k): v for k, v in by_threads.items()}
        if repeats > 1:
            report["mediapipe_fps_runs"] = {str(k): v for k, v in ref_runs.items()}
            report["ratio_runs"] = [f / max(ref_runs[th][i] for th in mp_threads) for i, f in enumerate(fps_runs)]
        report["ratio_vs_mediapipe"] = report["fps"] / report["mediapipe_fps"]
        report["ratio_keypoints_vs_mediapipe"] = report["keypoints_fps"] / report["mediapipe_fps"]
        report["mediapipe_backend"] = (
            f"MediaPipe's hand_landmark_full / palm_detection_full .tflite (models/mediapipe) through ai-edge-litert "
            f"(XNNPACK), driven by engine.hand_module.tracking's video-mode graph logic in one sequence (runtime "
            f"litert, workers 1) on the same decoded frames, decoding not timed; mediapipe_fps is the faster of "
            f"{', '.join(map(str, mp_threads))} XNNPACK thread(s) ({best} here)")
        if no_hand:
            kp = stats["result"]["keypoints_2d"][0]
            report.update(no_hand_figures(info, kp, opts, tmp, mp_threads))
    report["peak_rss_mb"] = peak_rss_mb
    report["imports_s"] = imports_s
    report["caches_prepared_s"] = caches_prepared_s
    report["load_average_after"] = list(os.getloadavg())
    return report


def _capture_figures(stats, recorder, opts, tmp, hands, iterations, smoothing) -> dict:
    """The figures of one capture run, with the replay without the temporal term."""
    n = stats["frames"]
    secs = stats["seconds_total"]
    stages = stats["stages_s"]
    stats2: dict = {}
    opts2 = capture.CaptureOptions(**{**opts.__dict__, "output": os.path.join(tmp, "without_temporal.npz")})
    capture.run_capture(opts2, tracker=ReplayTracker(recorder.outputs), stats=stats2, temporal=False)
    r1, r2 = stats["result"], stats2["result"]
    t = 0
    v = r1["valid"][t] & r2["valid"][t]
    j1, j2 = r1["joints_3d"][t] * 1000.0, r2["joints_3d"][t] * 1000.0
    kp = r1["keypoints_2d"][t]
    det_valid = np.isfinite(kp).all(axis=(1, 2))
    report = {
        "source": str(opts.source),
        "frames": n,
        "image_size": list(stats["image_size"]),
        "hands": hands,
        "valid_frames": stats["valid_frames"],
        "fps": n / secs if secs > 0 else float("nan"),
        "seconds_total": secs,
        "stages_ms": {k: 1000.0 * stages.get(k, 0.0) / max(n, 1) for k in STAGE_KEYS},
        "jitter_with_temporal": joint_jitter(j1, v),
        "jitter_without_temporal": joint_jitter(j2, v),
        "jitter_units": "mm/frame^2 (mean joint acceleration, camera frame)",
        "jitter_2d_detected_px": joint_jitter(np.concatenate([kp, np.zeros(kp.shape[:-1] + (1,))], -1), det_valid),
        "lag_frames": trajectory_lag(j1, j2, v),
        **_clip_figures(r1, t),
        "smoothing": smoothing,
        "iterations": iterations,
        "threads": {"torch": _torch_threads(), "omp": os.environ.get("OMP_NUM_THREADS")},
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }
    calls = stats.get("calls_s", {}).get("tailor", [])
    if len(calls) > 1:
        # the first tailor call includes loading its executable (traced and compiled only on the first run ever:
        # engine.tailor.executables keeps both on disk)
        from engine.tailor.clip import FIT_CHUNK  # here: JAX loads when the capture needs it, as outside the bench

        steady = float(np.median(calls[1:]))
        report["tailor_first_call_s"] = calls[0]
        report["tailor_steady_ms_per_frame"] = 1000.0 * steady / FIT_CHUNK
        report["fps_without_compile"] = n / max(secs - calls[0] + steady, 1e-9)
    keypoint_s = stages.get("detect", 0.0) + stages.get("keypoints", 0.0)
    report["keypoints_fps"] = n / keypoint_s if keypoint_s > 0 else float("nan")
    return report


def _clip_figures(result: dict, t: int) -> dict:
    """Chatter (finger rotations against the slerp midpoint of their neighbours, degrees) and the fit to the
    keypoints (median over frames of the mean fitted-vs-detected distance, px) of track t of a capture."""
    from engine import metrics

    v = result["valid"][t]
    ch = metrics.rotation_chatter_deg(result["theta"][t], v)
    px = metrics.reprojection_px(result["joints_3d"][t], result["K"], result["keypoints_2d"][t], result["confidence"][t], v)
    nan = float("nan")
    return {"chatter_deg_median": float(np.median(ch)) if ch.size else nan,
            "chatter_deg_p95": float(np.percentile(ch, 95)) if ch.size else nan,
            "fit_residual_px": float(np.nanmedian(px)) if np.isfinite(px).any() else nan}


def _litert_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("ai_edge_litert.interpreter") is not None
    except ModuleNotFoundError:
        return False


def _import_fit_libraries() -> float:
    """Imports JAX (with its CPU backend) and the tailor's modules, as a capture's fit first does; returns the
    seconds it took (0 where they were already imported, or JAX is missing: the capture reports that)."""
    t0 = time.perf_counter()
    try:
        import jax

        jax.devices()
        from engine import tailor  # noqa: F401
        from engine.tailor import clip  # noqa: F401
    except ImportError:
        pass
    return time.perf_counter() - t0


# frames the preparing capture tracks: enough for every concurrent segment to start (`segments.split`)
PREPARE_FRAMES = 32


def prepare_caches(opts: capture.CaptureOptions, tmp: str) -> float:
    """Runs a capture of the first PREPARE_FRAMES selected frames with `opts` in a spawned child process, so
    that what a capture compiles once and keeps on disk (`engine.caches`) is there before anything is timed;
    returns the seconds it took. A failure only leaves that work to the first timed run (logged)."""
    import multiprocessing

    start = opts.frame_start or 0
    end = start + PREPARE_FRAMES * max(1, opts.stride) - 1
    short = capture.CaptureOptions(**{**opts.__dict__, "output": os.path.join(tmp, "prepare.npz"), "overlay": None,
                                      "frame_end": end if opts.frame_end is None else min(end, opts.frame_end)})
    t0 = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=_prepare_child, args=(short,), name="bench-prepare")
    child.start()
    child.join()
    if child.exitcode != 0:
        log.warning("preparing the compiled code failed (exit %s): the first timed run compiles it", child.exitcode)
    return time.perf_counter() - t0


def _prepare_child(opts: capture.CaptureOptions) -> None:
    from engine.errors import NoHandError

    try:
        capture.run_capture(opts)
    except NoHandError:  # the fit's code was still made ready beside the tracking (`capture._warm_tailor`)
        pass


def _clear_jax_caches() -> None:
    try:
        from engine.tailor.executables import clear_caches
    except ImportError:
        return
    clear_caches()


def _torch_threads():
    """torch's intra-op threads, or None where the capture never loaded torch (OpenVINO and LiteRT tracking)."""
    torch = sys.modules.get("torch")
    return None if torch is None else torch.get_num_threads()


def main(argv: list[str], prog: str = "python -m engine bench capture") -> int:
    from engine.cli_args import parse_frames

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("source", nargs="?", default=str(SAMPLE), help="footage (default: the bundled sample clip)")
    p.add_argument("--frames", help="frame range A:B (inclusive; default all)")
    p.add_argument("--hands", type=int, choices=(1, 2), default=1)
    p.add_argument("--batch-size", type=int, default=capture.DEFAULT_BATCH_SIZE)
    p.add_argument("--iterations", type=int, default=capture.DEFAULT_ITERATIONS)
    p.add_argument("--smoothing", type=float, default=capture.DEFAULT_SMOOTHING)
    p.add_argument("--threads", type=int, default=capture.DEFAULT_TORCH_THREADS,
                   help="torch threads (0: torch's default)")
    p.add_argument("--runtime", choices=RUNTIMES, default=None, help="our network runtime (default: capture's)")
    p.add_argument("--segments", type=int, default=None, help="our concurrent tracking segments (default: capture's)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help=f"alternate ours and the reference N times: medians (default {DEFAULT_REPEATS})")
    p.add_argument("--no-mediapipe", action="store_true", help="skip the reference (and the no-hand clip)")
    p.add_argument("--no-hand-clip", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the no-hand clip (default on)")
    p.add_argument("--keep", help="also keep the (temporal) capture result at this path")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = p.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    report = run_bench(args.source, parse_frames(args.frames), args.hands, args.batch_size, args.iterations,
                       args.smoothing, not args.no_mediapipe, args.keep, args.threads or None, args.runtime,
                       args.segments, args.repeats, no_hand=args.no_hand_clip)
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        for k, v in report.items():
            print(f"{k:>28}: {v}")
    return 0
