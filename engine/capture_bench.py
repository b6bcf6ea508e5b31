"""`python -m engine bench capture [SOURCE] [--frames A:B] [--json]`: the capture pipeline, measured.

One run, side by side on the same frames:
  * our capture end to end (decode -> detect -> keypoints -> lift + IK -> tailor -> write), with the
    temporal term: `fps`, `stages_ms` (mean milliseconds per frame of each stage; decoding runs a batch
    ahead in a thread, so `decode` is the time the pipeline waited for frames; `tailor` includes the first
    call's XLA compile, also given apart as `tailor_first_call_s`), `peak_rss_mb`;
  * the same observations refit without the temporal term (the tracker's output is replayed, so only
    the fit differs): `jitter_with_temporal`, `jitter_without_temporal` = mean joint acceleration
    |J[n+1] - 2 J[n] + J[n-1]| over valid consecutive triples, in mm per frame^2, camera frame; and
    `lag_frames`, the shift (frames, sub-frame by a parabola) that best aligns the smoothed joint
    trajectories with the unsmoothed ones (positive: the smoothed motion trails);
  * MediaPipe's own networks (the reference .tflite files in models/mediapipe/ through ai-edge-litert,
    XNNPACK) driven through the same video-mode graph logic (palm detection when a hand is lost, landmarks
    on the ROI tracked from the previous frame) on the same frames: `mediapipe_fps`, and
    `ratio_vs_mediapipe` = fps / mediapipe_fps (end to end against the keypoint graph alone) and
    `ratio_keypoints_vs_mediapipe` (our detect + keypoints stages against the same work in TFLite).
Defaults: the bundled sample clip, all frames, one hand.
"""

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
from engine.tailor.clip import FIT_CHUNK

log = logging.getLogger("engine.capture_bench")

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"
MEDIAPIPE_DIR = REPO / "models" / "mediapipe"
STAGE_KEYS = ("decode", "detect", "keypoints", "lift_ik", "tailor", "write")


class RecordingTracker:
    """Wraps a tracker and keeps its per-frame outputs (for a replay)."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.outputs: list = []

    @property
    def last_timings(self):
        return getattr(self.tracker, "last_timings", None)

    def process_batch(self, frames):
        out = self.tracker.process_batch(frames)
        self.outputs.extend(out)
        return out


class ReplayTracker:
    """Returns recorded per-frame outputs in order (no networks)."""

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.i = 0

    def process_batch(self, frames):
        out = self.outputs[self.i : self.i + len(frames)]
        self.i += len(frames)
        return out


def joint_jitter(joints: np.ndarray, valid: np.ndarray) -> float:
    """Mean |J[n+1] - 2 J[n] + J[n-1]| (same units as joints) over keypoints and valid triples.

    joints (N, K, 3), valid (N,). NaN when there is no valid triple.
    """
    if joints.shape[0] < 3:
        return float("nan")
    acc = np.linalg.norm(joints[2:] - 2 * joints[1:-1] + joints[:-2], axis=-1)  # (N-2, K)
    ok = valid[2:] & valid[1:-1] & valid[:-2]
    return float(acc[ok].mean()) if ok.any() else float("nan")


def trajectory_lag(smoothed: np.ndarray, raw: np.ndarray, valid: np.ndarray, max_shift: int = 5) -> float:
    """Shift k (frames) minimizing mean |smoothed[n] - raw[n - k]|^2; sub-frame by a parabola through the
    best integer shift and its neighbours. smoothed, raw (N, K, 3); valid (N,)."""
    errs = []
    n = smoothed.shape[0]
    shifts = list(range(-max_shift, max_shift + 1))
    for k in shifts:
        a = slice(max(0, k), n + min(0, k))
        b = slice(max(0, -k), n - max(0, k))
        ok = valid[a] & valid[b]
        errs.append(np.mean(np.sum((smoothed[a][ok] - raw[b][ok]) ** 2, axis=-1)) if ok.sum() > 3 else np.inf)
    errs = np.asarray(errs)
    if not np.isfinite(errs).any():
        return float("nan")
    i = int(np.argmin(errs))
    if 0 < i < len(errs) - 1 and np.all(np.isfinite(errs[i - 1 : i + 2])):
        den = errs[i - 1] - 2 * errs[i] + errs[i + 1]
        frac = 0.5 * (errs[i - 1] - errs[i + 1]) / den if den > 0 else 0.0
        return float(shifts[i] + frac)
    return float(shifts[i])


# ------------------------------------------------------------------------------------- MediaPipe (TFLite)


class _TfliteNet:
    def __init__(self, path: pathlib.Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]["index"]
        self.outs = {d["name"]: d["index"] for d in self.interp.get_output_details()}

    def to(self, *args, **kwargs):  # the tracker moves its nets to a device / memory format
        return self

    def run(self, x) -> list[dict[str, np.ndarray]]:
        xs = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy(), dtype=np.float32)
        res = []
        for i in range(xs.shape[0]):
            self.interp.set_tensor(self.inp, xs[i : i + 1])
            self.interp.invoke()
            res.append({k: self.interp.get_tensor(v)[0].copy() for k, v in self.outs.items()})
        return res


class TfliteLandmarkNet(_TfliteNet):
    """hand_landmark_full.tflite behind the torch net's interface (LandmarkOutput)."""

    def __call__(self, x):
        import torch

        from engine.hand_module.landmarks import LandmarkOutput

        r = self.run(x)
        t = lambda a: torch.from_numpy(np.stack(a).astype(np.float32))  # noqa: E731
        return LandmarkOutput(t([o["Identity"].reshape(21, 3) for o in r]), t([o["Identity_1"].reshape(-1)[0] for o in r]),
                              t([o["Identity_2"].reshape(-1)[0] for o in r]), t([o["Identity_3"].reshape(21, 3) for o in r]))


class TflitePalmNet(_TfliteNet):
    """palm_detection_full.tflite behind the torch net's interface (PalmOutput)."""

    def __call__(self, x):
        import torch

        from engine.hand_module.blazepalm import PalmOutput

        r = self.run(x)
        return PalmOutput(torch.from_numpy(np.stack([o["Identity"] for o in r]).astype(np.float32)),
                          torch.from_numpy(np.stack([o["Identity_1"][:, 0] for o in r]).astype(np.float32)))


def mediapipe_tracker(max_hands: int, mirrored: bool, threads: int = 2):
    """Our HandTracker (MediaPipe's video-mode graph logic) running MediaPipe's TFLite networks."""
    from engine.hand_module.tracking import HandTracker

    tracker = HandTracker(max_hands=max_hands, mirrored=mirrored)
    tracker.landmark_net = TfliteLandmarkNet(MEDIAPIPE_DIR / "hand_landmark_full.tflite", threads)
    tracker.palm.net = TflitePalmNet(MEDIAPIPE_DIR / "palm_detection_full.tflite", threads)
    return tracker


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


# ---------------------------------------------------------------------------------------------- bench


def run_bench(source: str, frames: tuple[int | None, int | None], hands: int = 1, batch_size: int = 32,
              iterations: int = capture.DEFAULT_ITERATIONS, smoothing: float = capture.DEFAULT_SMOOTHING,
              mediapipe: bool = True, keep: str | None = None, threads: int | None = capture.DEFAULT_TORCH_THREADS) -> dict:
    """Runs the measurements of the module docstring; returns the figures (JSON-ready)."""
    tmp = tempfile.mkdtemp(prefix="handtailor-bench-")
    out_with = keep or os.path.join(tmp, "with_temporal.npz")
    out_without = os.path.join(tmp, "without_temporal.npz")
    opts = capture.CaptureOptions(source=source, output=out_with, frame_start=frames[0], frame_end=frames[1],
                                  hands=hands, batch_size=batch_size, iterations=iterations, smoothing=smoothing,
                                  threads=threads)
    info = video.probe(source)
    recorder = RecordingTracker(capture.make_tracker(opts))
    stats: dict = {}
    capture.run_capture(opts, tracker=recorder, stats=stats)
    n = stats["frames"]
    secs = stats["seconds_total"]
    stages = stats["stages_s"]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    # the same observations, refit without the temporal term
    stats2: dict = {}
    opts2 = capture.CaptureOptions(**{**opts.__dict__, "output": out_without})
    capture.run_capture(opts2, tracker=ReplayTracker(recorder.outputs), stats=stats2, temporal=False)
    r1, r2 = stats["result"], stats2["result"]
    t = 0
    v = r1["valid"][t] & r2["valid"][t]
    j1, j2 = r1["joints_3d"][t] * 1000.0, r2["joints_3d"][t] * 1000.0
    kp = r1["keypoints_2d"][t]
    det_valid = np.isfinite(kp).all(axis=(1, 2))
    report = {
        "source": str(source),
        "frames": n,
        "image_size": list(stats["image_size"]),
        "hands": hands,
        "valid_frames": stats["valid_frames"],
        "fps": n / secs if secs > 0 else float("nan"),
        "seconds_total": secs,
        "stages_ms": {k: 1000.0 * stages.get(k, 0.0) / max(n, 1) for k in STAGE_KEYS},
        "peak_rss_mb": peak_rss_mb,
        "jitter_with_temporal": joint_jitter(j1, v),
        "jitter_without_temporal": joint_jitter(j2, v),
        "jitter_units": "mm/frame^2 (mean joint acceleration, camera frame)",
        "jitter_2d_detected_px": joint_jitter(np.concatenate([kp, np.zeros(kp.shape[:-1] + (1,))], -1), det_valid),
        "lag_frames": trajectory_lag(j1, j2, v),
        "smoothing": smoothing,
        "iterations": iterations,
        "threads": {"torch": _torch_threads(), "omp": os.environ.get("OMP_NUM_THREADS")},
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }
    calls = stats.get("calls_s", {}).get("tailor", [])
    if len(calls) > 1:
        # the first tailor call includes the XLA compile (cached on disk after the first run ever)
        steady = float(np.median(calls[1:]))
        report["tailor_first_call_s"] = calls[0]
        report["tailor_steady_ms_per_frame"] = 1000.0 * steady / FIT_CHUNK
        report["fps_without_compile"] = n / max(secs - calls[0] + steady, 1e-9)
    keypoint_s = stages.get("detect", 0.0) + stages.get("keypoints", 0.0)
    report["keypoints_fps"] = n / keypoint_s if keypoint_s > 0 else float("nan")
    shutil.rmtree(tmp, ignore_errors=True)
    if mediapipe:
        try:
            mp_s, mp_n = time_tracker(mediapipe_tracker(hands, False, threads=opts.threads or 2), info, opts)
            report["mediapipe_fps"] = mp_n / mp_s if mp_s > 0 else float("nan")
            report["ratio_vs_mediapipe"] = report["fps"] / report["mediapipe_fps"]
            report["ratio_keypoints_vs_mediapipe"] = report["keypoints_fps"] / report["mediapipe_fps"]
            report["mediapipe_backend"] = f"ai-edge-litert (XNNPACK, {opts.threads or 2} thread(s)), models/mediapipe/*.tflite"
        except ImportError as exc:
            report["mediapipe_fps"] = None
            report["ratio_vs_mediapipe"] = None
            report["mediapipe_error"] = f"ai-edge-litert is not installed ({exc}); install the test extra"
    return report


def _torch_threads():
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


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
                   help="torch threads, and TFLite threads for the MediaPipe run (0: torch's default / 2)")
    p.add_argument("--no-mediapipe", action="store_true", help="skip the TFLite reference run")
    p.add_argument("--keep", help="also keep the (temporal) capture result at this path")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = p.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    report = run_bench(args.source, parse_frames(args.frames), args.hands, args.batch_size, args.iterations,
                       args.smoothing, not args.no_mediapipe, args.keep, args.threads or None)
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        for k, v in report.items():
            print(f"{k:>28}: {v}")
    return 0
