"""Fitting a whole clip: the tailor over a track's timeline, in overlapping windows of consecutive frames.

    a track's observed frames (positions on the clip's timeline) and the hand module's initialization
      -> `fit_timeline`: laid on the track's span of frames (unobserved frames are invalid rows, never made
         up), quaternions made sign-continuous; with one identity per track (`hold_identity`, the capture's
         default) beta and hand_scale are held and the analytic scale (Eq. 12 / 17) becomes the distance
      -> `track_distance` (identity held): that distance solved per frame at the pose a first pass fits,
         smoothed over the track when a temporal term is on (zero phase, `DEPTH_SIGMA`) and held by the fit
         that follows, which starts at that first pass's pose
      -> `fit_clip`: `tailor.fit` on windows of at most `FIT_CHUNK` frames overlapping by `FIT_OVERLAP`
         (`clip_windows`), so the temporal terms see across each seam while memory and compile size stay
         fixed; each frame is kept from exactly one window
      -> per-frame arrays on the clip's N frames, NaN where a frame has no fit

The temporal terms and defaults (`engine.capture_options`: smoothing 10 = the joint-acceleration weight,
rotation acceleration 10x that, 30 iterations with the tailor's annealed step, DEPTH_SIGMA 3, the final
pass at WARM_START_STEP 0.5 of Adam's step).
Measured (before issue 14's tailor terms: lr 0.03, E_id 0.1) on the gesture / ASL / sample clips (replayed tracker output, weak perspective; chatter = finger
rotation against the slerp midpoint of its neighbours, median / p95 deg; fit = fitted vs detected keypoints,
px; lag vs the unsmoothed fit, frames; scripts/experiments/clip_measure.py) and on the synthetic clip
(scripts/make_synthetic_clip.py, ground truth):
* the fit's own chatter came from fitting the keypoints' noise (20 iterations of constant-step Adam: 2.6 /
  14.7 deg on the gesture clip, 0.9 / 4.1 at its initialization) and joint acceleration hardly touched it
  (2.6 vs 2.7 deg without). A rotation-acceleration term (`energies.rotation_temporal_energy`, zero phase)
  does: weight 30 / 100 / 300 -> 0.68 / 0.46 / 0.36 deg median, 3.4 / 2.0 / 1.2 p95, fit 6.8 / 7.0 / 8.1 px
  (gesture, 30 it.); 100 had the better 3D on the synthetic clip (PA-MPJPE 9.7 vs 10.2 mm).
* lr decay to 0.3x: chatter 1.07 -> 0.49 deg (gesture), 0.97 -> 0.37 (ASL), fit equal; 0.1x fits worse
  (9.6 px). 30 iterations instead of 20: fit 7.8 -> 7.0 px (gesture), 6.9 -> 5.7 (ASL), 3.3 -> 2.9 (sample);
  40: 6.9 / 5.0 / 2.5 at 4/3 the tailor's time.
* re-measured with issue 14's tailor (lr 0.06 annealed, E_id 3, E_z, E_size; gesture / ASL): the tailor's
  own lr_final 0.2 against 0.3: chatter 0.51 / 1.70 vs 0.67 / 1.88 deg (gesture), 0.46 / 2.39 vs 0.64 /
  2.47 (ASL), fit 7.7 vs 7.8 px and 5.8 vs 5.9: one lr_final (0.2) for both. 40 iterations: fit 7.6 / 5.5 px;
  E_id 0.3: 7.7 / 6.0. The fit's gap to a per-frame identity (5.9 px on the gesture clip) was the held
  identity's: 7.5 px without the temporal terms.
* that gap was the distance, not the shape: hand_length 0.093 / 0.3 m (the size, hence the distance, x0.5
  / x1.6) left the fit at 7.7 px, and so did any other one identity: the weighted median of per-frame fitted
  betas 7.7, one beta fitted jointly over 64 of the track's frames 7.7. The analytic step solves the distance
  at the hand module's pose (29 px from the keypoints on the gesture clip) and Adam keeps it; with the size
  held nothing corrects it (per frame, beta and hand_scale did). The same 64 frames with the shape held:
  7.4 px, again after a second scale step at the fitted pose 4.2. `track_distance` solves it at the pose a
  first pass fits: fit 7.7 / 5.8 / 4.1 -> 4.9 / 5.6 / 4.1 px (gesture / ASL / dex), chatter 0.51 / 1.70 ->
  0.50 / 2.00 deg (gesture), lag <= 0.11 frame, at one more pass of the tailor. The pose pass without the
  temporal terms: the same on gesture and ASL, dex 4.11 px.
* post-filters instead of the term, on the same fit: a Gaussian on the quaternions (sigma 1 / 2 frames)
  0.47 / 0.13 deg median at 7.4 / 7.8 px and more joint jitter (no refit); One-Euro (min cutoff 1 Hz)
  0.37 deg at 8.5 px and up to half a frame of lag on ASL. The term in the fit keeps the better fit.
* iterations (issue 14's 3 px bar on the ASL clip: fitted vs detected keypoints, median over keypoints and
  frames; one identity per track): 30 / 60 / 100 / 200 -> 3.93 / 3.58 / 3.27 / 2.92 px at the same chatter,
  but on the synthetic clip (ground truth; seeds 0 / 1) MPJPE 9.5 / 14.4 (30) -> 8.2 / 16.7 (100) -> 8.0 /
  18.7 mm (200), PA-MPJPE up 0.1 / 0.5: past 30 the fit buys 2D with 3D, at 3-7x the tailor's time. No cheaper
  schedule got there: pose pass 100 + final 30 3.49 px, 15 + 45 3.96, lr 0.1 4.11, lr_final 0.1 3.95, the
  final pass at 1 or 0.25 of the step 4.20 / 3.97, Adam's b1 / b2 0.8 / 0.9 4.40.
* distance smoothing sigma 1 / 2 / 3 frames: joint jitter 7.8 / 5.0 / 4.2 mm/frame^2 (gesture), lag <= 0.05.
  Window overlap 4 / 8 / 16 frames: the same figures (sample clip, 10 windows).

One pad policy: a window goes to `tailor.fit` as it is, with `min_batch=FIT_CHUNK`; `fit` pads its batch to
that bucket with invalid frames that the temporal terms never couple. Every window of every clip, short
clips and a re-tailor's windows included, then runs on one compiled executable, the one a capture makes
ready while it tracks (`engine.capture`); a window of another size took another (loaded in ~0.2 s during
the fit or, the first time ever, compiled there: ~7-9 s).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from typing import Callable

import numpy as np

from engine.errors import Cancelled
from engine.hand_model.rotations import sign_continuous

log = logging.getLogger("engine.tailor.clip")

FIT_CHUNK = 64  # frames per tailor call
FIT_OVERLAP = 4  # frames shared between neighbouring windows (the temporal term sees across the seam)
# Windows of one pass are independent: they run on up to this many threads (XLA runs a call without the GIL;
# the capture's tailor stage on 2 cores: see issue 18's note).
FIT_THREADS = min(4, os.cpu_count() or 1)
# E_id in a clip (lambda_id 3, the global rotation and the shape at 0.3 absolute): a single image's default
# (`TailorConfig`, lambda_id 30) held the fingers too firmly for a clip's fit (the ASL clip's median residual
# 3.0 px at 3, 3.40 px at 10): in a clip the temporal terms and the held identity already keep what 2D
# cannot see.
CLIP_IDENTITY = dict(lambda_id=3.0, identity_global=0.1, identity_beta=0.1)
DEPTH_SIGMA = 3.0  # frames: zero-phase smoothing of the hand's distance (log depth) over the track (track_distance)
# Adam's step in the fit that starts where the pose pass ended (`track_distance`), as a fraction of the
# config's: Adam's first steps are about lr per parameter whatever the gradient, so the full step (0.06 rad)
# moved each joint off the fitted pose and spent the pass fitting it again. Measured (replayed tracker output
# and the synthetic clip, 30 iterations; `scripts/experiments/clip_measure.py`, `make_synthetic_clip.py`):
# 1 / 0.67 / 0.5 / 0.33 -> chatter median (gesture / ASL / sample clip) 0.52 / 0.43 / 0.44 -> 0.43 / 0.35 /
# 0.33 -> 0.39 / 0.30 / 0.28 -> 0.36 / 0.25 / 0.24 deg, fit residual (ASL) 4.80 -> 4.72 -> 4.70 -> 4.77 px,
# synthetic MPJPE (perspective) 12.39 -> 12.20 -> 12.13 -> 12.10 mm, its wrist-relative joint jitter 5.57 ->
# 5.58 -> 5.63 -> 5.84 mm/frame^2 (the truth moves: smaller steps start to lag it).
WARM_START_STEP = 0.5
FIT_KEYS = ("theta", "beta", "root", "hand_scale", "projection_scale", "joints_3d")


def clip_windows(n: int, chunk: int = FIT_CHUNK, overlap: int = FIT_OVERLAP) -> list[tuple[int, int, int, int]]:
    """Windows over n frames: (start, stop, keep_from, keep_to) with stop - start <= chunk.

    Neighbouring windows share at least `overlap` frames; each frame is kept from exactly one window. Beyond
    one window every window is `chunk` frames long (the last reaches back further into its neighbour): one
    batch size, hence one compiled executable (`tailor.fit` pads to a bucket), the one a capture makes ready
    while it tracks. A short last window took another bucket: its executable loaded during the fit (~0.2 s),
    or, the first time ever, compiled there (~7 s).
    """
    if n <= chunk:
        return [(0, n, 0, n)]
    out = []
    keep_from = 0
    while keep_from < n:
        start = max(0, min(keep_from - overlap, n - chunk))
        stop = min(n, start + chunk)
        keep_to = n if stop == n else stop - overlap
        out.append((start, stop, keep_from, keep_to))
        keep_from = keep_to
    return out


def smooth_series(x: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase smoothing of x (L,) over runs of consecutive valid, finite frames (never across a gap): at
    each frame a Gaussian-weighted (sigma frames) local linear fit. Inside a run that is the plain Gaussian
    average (no lag); near a run's ends the linear term keeps a hand that is moving there from being pulled
    towards the run's inside (a one-sided average would lead or trail). Invalid entries come back unchanged."""
    x = np.asarray(x, np.float64)
    out = x.copy()
    ok = np.asarray(valid, bool) & np.isfinite(x)
    if sigma <= 0 or not ok.any():
        return out
    r = int(np.ceil(3 * sigma))
    d = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (d / sigma) ** 2)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):
        seg = x[a:b]
        one = np.ones_like(seg)
        # sums over the run of w(m - n) (m - n)^p and w(m - n) (m - n)^p x[m], centred on each n
        conv = lambda v, p: np.convolve(v, (w * d**p)[::-1], mode="full")[r : r + len(seg)]  # noqa: E731
        s0, s1, s2 = conv(one, 0), conv(one, 1), conv(one, 2)
        t0, t1 = conv(seg, 0), conv(seg, 1)
        det = s0 * s2 - s1 * s1
        fit = np.where(det > 1e-9 * s0 * s0, (s2 * t0 - s1 * t1) / np.where(det > 1e-9 * s0 * s0, det, 1.0), t0 / s0)
        out[a:b] = fit
    return out


def fit_clip(model, arrays: dict, K: np.ndarray, config, locks: dict | None = None, *,
             should_stop: Callable[[], bool] = lambda: False, progress: Callable[[int, int], None] | None = None,
             timer=None) -> dict[str, np.ndarray]:
    """`tailor.fit` over a timeline of L consecutive frames, in overlapping windows (`clip_windows`).

    arrays: theta (L,16,4), beta (L,10), root (L,3), hand_scale (L,), projection_scale (L,),
    keypoints_2d (L,21,2), confidence (L,21), valid (L,) (invalid rows may hold NaN), optionally theta_start
    (L,16,4): where Adam starts (a warm start; E_id still holds theta); locks: None or
    lock_theta (L,16), lock_beta/lock_root/lock_hand_scale (L,). config: a `TailorConfig`. progress(done, L)
    after each window; timer: an `engine.timing.StageTimer` ("tailor": the pass's wall time, one call per
    window). Windows run on up to `FIT_THREADS` threads (one pass's windows are independent). Returns float64
    theta, beta, root, hand_scale, projection_scale, joints_3d (L, ...) and fitted (L,) bool; rows not
    fitted hold the inputs (joints_3d: NaN).
    """
    from engine import tailor
    from engine.tailor.executables import enable_compilation_cache

    enable_compilation_cache()
    L = int(np.asarray(arrays["valid"]).shape[0])
    out = {k: np.array(arrays[k], np.float64) for k in FIT_KEYS if k != "joints_3d"}
    out["joints_3d"] = np.full((L, 21, 3), np.nan)
    out["fitted"] = np.zeros(L, bool)
    valid = np.asarray(arrays["valid"], bool)

    def fit_window(window):
        start, stop = window[:2]
        if should_stop():
            raise Cancelled("cancelled")
        c = {k: np.asarray(v)[start:stop] for k, v in arrays.items()}
        theta_start = c.get("theta_start")
        lk = None if locks is None else {k: np.asarray(v)[start:stop] for k, v in locks.items()}
        t0 = time.perf_counter()
        fit = tailor.fit(model, c["theta"], c["beta"], c["root"], c["keypoints_2d"], c["confidence"], c["valid"],
                         K, lk, config, hand_scale0=c["hand_scale"], projection_scale0=c["projection_scale"],
                         theta_start=theta_start, min_batch=FIT_CHUNK)
        return fit, time.perf_counter() - t0

    windows = [w for w in clip_windows(L) if valid[w[0]:w[1]].any()]
    t_pass = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max(1, min(FIT_THREADS, len(windows)))) as pool:
        fits = pool.map(fit_window, windows)  # in window order; a Cancelled in one ends the pass
        try:
            for (start, stop, keep_from, keep_to), (fit, seconds) in zip(windows, fits):
                if timer is not None:
                    timer.record_call("tailor", seconds)
                a, b = keep_from - start, keep_to - start
                fitted = np.asarray(fit["fitted"], bool)[a:b] & valid[keep_from:keep_to]
                rows = np.arange(keep_from, keep_to)[fitted]
                for key in FIT_KEYS:
                    if fit.get(key) is not None:
                        out[key][rows] = np.asarray(fit[key], np.float64)[a:b][fitted]
                out["fitted"][rows] = True
                if progress is not None:
                    progress(keep_to, L)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    if timer is not None:
        timer.add("tailor", time.perf_counter() - t_pass)
    return out


def track_distance(model, arrays: dict, K: np.ndarray, config, locks: dict, sigma: float = DEPTH_SIGMA, *,
                   should_stop: Callable[[], bool] = lambda: False, timer=None) -> tuple[dict, object]:
    """The hand's distance over a track with its identity held: solved per frame at the fitted pose, smoothed
    (zero phase), then held by the fit.

    With the size held, the analytic step (Eq. 12 / 17) reads each frame's distance from its 2D extent, and
    the tailor keeps it through Adam (Adam never moves the depth, and Eq. P6, which re-solves it after each step,
    is off where temporal terms couple the frames). Solved at the hand module's pose (on the
    gesture clip 29 px from the keypoints after that step) it is the distance of a hand in the wrong pose,
    and with the size held nothing can correct it (a shape per frame did: its beta and hand_scale absorbed
    the wrong distance). So: a pose pass (the same fit, each frame at the distance of its initial pose), the
    analytic step again at the pose it fitted (0 iterations), log-depth smoothed over runs
    of valid frames (`smooth_series`, sigma frames: no lag; 0: none), and the arrays returned with that
    depth (perspective: root moved along its ray; weak perspective: projection_scale) and the config that
    holds it (`hold_depth`), its Adam step scaled by `WARM_START_STEP`. The fit that follows starts at the
    pose this pass fitted (`theta_start`: a warm start) and E_id still holds the hand module's pose: at the
    same 30 iterations (and the full step) the fitted keypoints came
    closer to the detected ones (median over keypoints and frames, px: ASL 4.80 -> 4.10, gesture 3.68 -> 3.45,
    sample clip 3.57 -> 2.99), chatter and joint jitter the same, and on the synthetic clip (4 seeds;
    perspective / weak perspective) MPJPE 12.47 / 11.60 -> 12.39 / 11.52 mm, PA-MPJPE 4.98 / 5.11 -> 4.92 /
    5.19. Fewer iterations from the warm start (20 or 15) cost that clip 6-13% more joint jitter.

    arrays: `fit_clip`'s arrays (L frames); locks: beta and hand_scale locked. Returns (arrays, config).
    """
    free = config._replace(hold_depth=False)
    pose = fit_clip(model, arrays, K, free, locks, should_stop=should_stop, timer=timer)
    posed = dict(arrays, theta=np.where(pose["fitted"][:, None, None], pose["theta"], arrays["theta"]))
    first = fit_clip(model, posed, K, free._replace(iterations=0), locks, timer=timer)
    ok = first["fitted"]
    out = dict(arrays, theta_start=posed["theta"])  # the fit that follows starts at that pose
    root = np.where(ok[:, None], first["root"], arrays["root"])  # weak perspective: at depth f / projection_scale
    z = np.exp(smooth_series(np.log(root[:, 2]), ok, sigma))
    out["root"] = np.where(ok[:, None], root * (z / root[:, 2])[:, None], arrays["root"])  # along the ray
    if config.camera_model == "weak_perspective":
        out["projection_scale"] = np.where(ok, first["projection_scale"] * root[:, 2] / z, arrays["projection_scale"])
    return out, config._replace(hold_depth=True, lr=float(config.lr) * WARM_START_STEP)


def fit_timeline(model, positions: np.ndarray, n_frames: int, init: dict, keypoints_2d: np.ndarray,
                 confidence: np.ndarray, K: np.ndarray, config, *, name: str = "hand", hold_identity: bool = False,
                 should_stop: Callable[[], bool] = lambda: False, progress: Callable[[int, int], None] | None = None,
                 timer=None) -> dict[str, np.ndarray]:
    """Fits one track over the clip's timeline of n_frames; returns per-frame arrays (NaN where invalid).

    positions (M,) increasing frame positions with an observation; init: the hand module's theta (M,16,4),
    beta (M,10), root (M,3), hand_scale (M,), projection_scale (M,) (optional: ones / NaN);
    keypoints_2d (M,21,2), confidence (M,21) the evidence. `hold_identity` (one identity per track, the
    capture's default): beta and hand_scale are locked at init's (the track's) and s* is read as the distance
    (`TailorConfig.scale_as_distance`), solved at a first pass's fitted pose and smoothed over the track
    when a temporal term is on (`track_distance`). Without it (a shape per frame) and with a temporal term,
    the depth the tailor keeps (weak perspective: f / projection_scale; perspective: the lifted root's z) is
    smoothed first (zero phase, no lag) and the per-frame size goes to hand_scale (s* as a scale: as a
    distance it would undo the smoothing). Returns theta, beta, root, hand_scale, projection_scale, joints_3d (n_frames, ...),
    keypoints_2d, confidence and valid.
    """
    pos = np.asarray(positions, np.int64)
    M = len(pos)
    first = int(pos[0])
    L = int(pos[-1]) - first + 1
    rel = pos - first
    valid_line = np.zeros(L, bool)
    valid_line[rel] = True

    def line(a, fill=np.nan):
        a = np.asarray(a, np.float64)
        out = np.full((L,) + a.shape[1:], fill, np.float64)
        out[rel] = a
        return out

    arrays = dict(theta=line(init["theta"]), beta=line(init["beta"]), root=line(init["root"]),
                  hand_scale=line(init.get("hand_scale", np.ones(M))),
                  projection_scale=line(init.get("projection_scale", np.full(M, np.nan))),
                  keypoints_2d=line(keypoints_2d), confidence=line(confidence, 0.0), valid=valid_line)
    arrays["theta"] = sign_continuous(arrays["theta"])  # the temporal terms compare neighbouring quaternions
    locks = None
    if hold_identity:  # one identity per track: the tailor keeps beta and the size; s* becomes the distance
        locks = {"lock_theta": np.zeros((L, 16), bool), "lock_beta": np.ones(L, bool), "lock_root": np.zeros(L, bool),
                 "lock_hand_scale": np.ones(L, bool)}
        config = config._replace(scale_as_distance=True)
    smooth = (float(config.temporal_weight) > 0 or float(config.rotation_smoothing) > 0) and DEPTH_SIGMA > 0
    if hold_identity:
        arrays, config = track_distance(model, arrays, K, config, locks, DEPTH_SIGMA if smooth else 0.0,
                                        should_stop=should_stop, timer=timer)
    elif smooth:  # a shape per frame: the smoothed depth stays, the per-frame size goes to hand_scale
        config = config._replace(scale_as_distance=False)
        if config.camera_model == "weak_perspective":
            arrays["projection_scale"] = np.exp(smooth_series(np.log(arrays["projection_scale"]), valid_line, DEPTH_SIGMA))
        else:
            arrays["root"][:, 2] = np.exp(smooth_series(np.log(arrays["root"][:, 2]), valid_line, DEPTH_SIGMA))
    fit = fit_clip(model, arrays, K, config, locks, should_stop=should_stop, progress=progress, timer=timer)
    out = {k: np.full((n_frames,) + fit[k].shape[1:], np.nan) for k in FIT_KEYS}
    out["keypoints_2d"] = np.full((n_frames, 21, 2), np.nan)
    out["confidence"] = np.zeros((n_frames, 21))
    out["valid"] = np.zeros(n_frames, bool)
    fitted = fit["fitted"] & valid_line
    tl = np.flatnonzero(fitted) + first  # positions on the clip's timeline
    for key in FIT_KEYS:
        if key != "projection_scale" or config.camera_model == "weak_perspective":
            out[key][tl] = fit[key][fitted]
    out["valid"][tl] = True
    out["keypoints_2d"][pos] = keypoints_2d
    out["confidence"][pos] = confidence
    bad = out["valid"] & ~(np.isfinite(out["theta"]).all(axis=(1, 2)) & np.isfinite(out["joints_3d"]).all(axis=(1, 2)))
    if bad.any():
        log.warning("%d frame(s) of the %s have no finite fit: marked invalid", int(bad.sum()), name)
    lost = valid_line.sum() - out["valid"].sum()
    if lost > 0:
        log.warning("%d observed frame(s) of the %s could not be fitted: marked invalid", int(lost), name)
    out["valid"] &= ~bad
    for key in FIT_KEYS:
        out[key][~out["valid"]] = np.nan
    return out
