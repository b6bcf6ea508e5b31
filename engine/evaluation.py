"""`python -m engine eval DIR`: the pipeline's accuracy on a ground-truth set, per stage (paper Sec. 4).

    python -m engine eval DIR [--json] [--out report.md] [--both] [--iterations 20 | 10,20,50,100]
        [--hand-model PATH] [--left {model,flip}] [--limit N] [--pck-px 10] [--oracle-2d]
        [--backbone mediapipe|hourglass [--hourglass-weights FILE]]

DIR holds images and `annotations_normalized.json` (format: `../shared/data/README.md`): one record per hand
instance with `image`, `hand`, `K` | null, `joints_3d_m` | null, `joints_2d_px` | null, `visible` | null.

Per record, the pipeline runs as the capture does, on the one image: the keypoint stage (MediaPipe port,
static images: detection on every image), the hand module's `fit_init` (lifting + IKNet + shape) and the
tailor. The camera is perspective with the record's K when it has one, weak perspective when not; `--both`
evaluates every record under both (the weak-perspective run ignores K, as the paper's "w/o K" rows).

`--backbone hourglass` swaps the keypoint network for the paper's hourglass (engine.hand_module.tracking: same
palm-detector ROIs, `--hourglass-weights` required; it lifts with the record's K under perspective, Eq. 5, and
with Eq. 14-15 under weak perspective). The report's "backbone" names the one used.

Stages reported:
- `backbone`: the keypoint network's own output: its 2D keypoints (px_error, pck_2d) and its metric,
  hand-centred world landmarks (3D metrics, root-aligned);
- `hand_module`: the hand model posed by IKNet + shape (`joints_3d_model` of fit_init), projected for px_error;
- `tailored`: the tailor's fitted joints, projected with the K it returns.

Metrics per stage (null where the set lacks that ground truth or nothing was evaluated):
`px_error` (mean px distance to the 2D ground truth; the projection of the 3D ground truth with K when the set
has no 2D), `pck_2d` (fraction within `--pck-px` px), `mpjpe_mm` (root-aligned at the wrist), `pa_mpjpe_mm`
(Procrustes: similarity transform), `pck_3d` (root-aligned, 20 mm, the paper's PCK20), `auc_20_50`, `auc_5_20`
(root-aligned PCK curves, 20 uniformly spaced thresholds with both ends included, area / range: see
engine.metrics). Where the set gives `visible`, only visible keypoints count (Procrustes uses all 21).

Extras: `evaluated`, `errors`, `tailor_gain_auc_5_20` (tailored minus hand_module AUC 5-20, paper Table 2),
`tailor_sweep` (per `--iterations` value: ms_per_hand = median wall time of one tailor call on one hand, B = 1,
after an untimed warm-up call and leaving out the first hand (JIT compilation), per-call overhead included;
and that value's AUCs / errors: paper Table 3), `failed` / `error_list` (which hands and why), `mode`, and
with --both `modes` (one such object per camera model; the top level is the perspective one).

A hand instance whose image gives no detection near it is a failure: counted in `failures`, listed in the
report, left out of the stage metrics (which are over the `n - failures` evaluated hands). A numerical error
in the hand module or the tailor on one hand is logged and counted in `errors` (that hand then has a backbone
result only); a setup problem (missing weights, unreadable image) stops the run with its error.
Left hands use the left hand model (`--left model`, default) or are mirrored into right hands and the
predictions mirrored back (`--left flip`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from engine import metrics
from engine.errors import EngineError, InputError, NoHandError, OutputError
from engine.groundtruth import Record, load_annotations

log = logging.getLogger(__name__)

STAGES = ("backbone", "hand_module", "tailored")
MODES = ("perspective", "weak_perspective")


# ------------------------------------------------------------------------------------- the pipeline
@dataclass
class Prediction:
    """One stage's output for one hand: uv (21, 2) px or None, xyz (21, 3) m or None (camera frame)."""

    uv: np.ndarray | None = None
    xyz: np.ndarray | None = None


@dataclass
class HandResult:
    record: Record
    mode: str
    failed: bool = False  # no hand found: counted in `failures`
    reason: str = ""
    error: str = ""  # a pipeline error after the keypoint stage (later stages missing): counted in `errors`
    stages: dict = field(default_factory=dict)  # stage name -> Prediction ("tailored@N" for sweeps)
    tailor_ms: dict = field(default_factory=dict)  # iterations -> ms for this hand


def _project(xyz: np.ndarray, K: np.ndarray) -> np.ndarray:
    from engine.camera import project_perspective

    return np.asarray(project_perspective(np.asarray(xyz, np.float64), np.asarray(K, np.float64)))


class Pipeline:
    """The capture pipeline's parts, run on single images (models loaded once)."""

    def __init__(self, hand_model_path: str | None = None, left: str = "model", oracle_2d: bool = False,
                 backbone: str = "mediapipe", hourglass_weights: str | None = None):
        from engine.hand_model import load_hand_model
        from engine.hand_module.tracking import check_backbone

        check_backbone(backbone, hourglass_weights)  # before any image is read
        self.backbone, self.hourglass_weights = backbone, hourglass_weights

        self.left, self.oracle_2d = left, oracle_2d
        self.models = {"right": load_hand_model(hand_model_path, side="right")}
        if left == "model":
            self.models["left"] = load_hand_model(hand_model_path, side="left")
        self._tracker = None
        self._detections: dict = {}

    # -- keypoints
    def detect(self, image_path: pathlib.Path, flip: bool, K: np.ndarray | None = None) -> list:
        """All hands the keypoint stage finds in one image (static: a fresh detection, no tracking state).

        K (3, 3) of the (possibly flipped) image: the hourglass backbone's Eq. 5 lifting; MediaPipe ignores it.
        """
        if self.backbone == "mediapipe":
            K = None
        key = (str(image_path), flip, None if K is None else np.asarray(K, np.float64).tobytes())
        if key not in self._detections:
            import cv2

            bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"cannot read image {image_path}")
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            if flip:
                rgb = np.ascontiguousarray(rgb[:, ::-1])
            self._detections[key] = (self._run_tracker(rgb, K), rgb.shape[1], rgb.shape[0])
            if len(self._detections) > 8:  # records of one image are consecutive in practice
                self._detections.pop(next(iter(self._detections)))
        return self._detections[key]

    def _run_tracker(self, rgb: np.ndarray, K: np.ndarray | None = None) -> list:
        from engine.hand_module.tracking import HandTracker

        if self._tracker is None:  # MediaPipe's static-image mode: palm detection on every image
            self._tracker = HandTracker(max_hands=2, static_images=True, backbone=self.backbone,
                                        hourglass_weights=self.hourglass_weights)
        self._tracker.reset()
        if K is None:
            return list(self._tracker.process_batch([rgb])[0])
        return list(self._tracker.process_batch([rgb], K=K)[0])

    # -- one hand
    def run(self, rec: Record, mode: str, iterations: list[int]) -> HandResult:
        """Runs every stage for one ground-truth hand under one camera mode."""
        res = HandResult(rec, mode)
        flip = rec.hand == "left" and self.left == "flip"
        side = "right" if flip else rec.hand
        K = None
        if mode == "perspective":
            K = rec.K.copy()
            if flip:
                K = flip_K(K, image_width(rec.image))
        dets, width, height = self.detect(rec.image, flip, K)
        obs = match_detection(dets, rec, width, flip)
        if obs is None:
            res.failed, res.reason = True, f"no hand detected near the {rec.hand} hand ({len(dets)} found)"
            return res
        kp_uvd = np.asarray(obs.keypoints_uvd, np.float64)
        conf = np.asarray(obs.confidence, np.float64)
        world = np.asarray(obs.world_landmarks, np.float64)

        def unflip(uv, xyz):
            return unflip_prediction(uv, xyz, width) if flip else (uv, xyz)

        uv_b, world_b = unflip(kp_uvd[:, :2].copy(), world.copy())
        res.stages["backbone"] = Prediction(uv_b, world_b)
        if self.oracle_2d and rec.joints_2d is not None:  # diagnostic: perfect 2D into the later stages
            gt = rec.joints_2d.copy()
            if flip:
                gt[:, 0] = width - 1 - gt[:, 0]
            kp_uvd = kp_uvd.copy()
            kp_uvd[:, :2] = gt
            conf = np.ones_like(conf)

        try:
            self._fit_stages(res, kp_uvd, conf, world, mode, K, self.models[side], (width, height), iterations, unflip)
        except EngineError as exc:
            if isinstance(exc, NoHandError):
                res.failed, res.reason = True, str(exc)
            else:
                raise  # setup problems (a missing weights file, bad input) stop the run
        except Exception as exc:  # one hand's numerical failure must not lose the rest: counted, logged
            log.exception("%s (%s hand, %s): pipeline error", rec.image.name, rec.hand, mode)
            res.error = f"{type(exc).__name__}: {exc}"
        return res

    def _fit_stages(self, res, kp_uvd, conf, world, mode, K, model, image_size, iterations, unflip) -> None:
        width, height = image_size
        init = self.fit_init(kp_uvd, conf, world, mode, K, model, (width, height))
        if not bool(np.asarray(init.get("valid", [True]))[0]):
            res.error = "the hand module returned no initialization (invalid keypoints)"
            return
        K_init = np.asarray(init["K"], np.float64)
        xyz = np.asarray(init["joints_3d_model"][0], np.float64)
        res.stages["hand_module"] = Prediction(*unflip(_project(xyz, K_init), xyz))

        for k, it in enumerate(iterations):
            if k == 0:  # untimed warm-up call: the first call after the hand module runs cold (caches, threads)
                self.tailor(model, init, kp_uvd, conf, K, mode, it, (width, height))
            t0 = time.perf_counter()
            out = self.tailor(model, init, kp_uvd, conf, K, mode, it, (width, height))
            res.tailor_ms[it] = 1000.0 * (time.perf_counter() - t0)
            xyz = np.asarray(out["joints_3d"][0], np.float64)
            uv = _project(xyz, np.asarray(out["K"], np.float64))
            res.stages[f"tailored@{it}"] = Prediction(*unflip(uv, xyz))

    @staticmethod
    def fit_init(kp_uvd, conf, world, mode, K, model, image_size) -> dict:
        """The hand module on one hand: (21, 3) uvd, (21,) confidence, (21, 3) world -> fit_init's dict (N = 1)."""
        from engine.hand_module.hand_module import fit_init

        return fit_init(kp_uvd[None], conf[None], world[None], camera=mode, K=K, model=model, steady_shape=False,
                        image_size=image_size)

    @staticmethod
    def tailor(model, init, kp_uvd, conf, K, mode, iterations, image_size) -> dict:
        """The tailor from the hand module's initialization (K None: weak perspective, nominal camera)."""
        from engine.tailor import TailorConfig, fit

        cfg = TailorConfig(iterations=int(iterations), camera_model=mode)
        return fit(model, init["theta"], init["beta"], init["root"], kp_uvd[None, :, :2], conf[None],
                   np.ones(1, bool), K if mode == "perspective" else init["K"], None, cfg,
                   hand_scale0=init["hand_scale"], projection_scale0=init["projection_scale"], image_size=image_size)


def image_width(path: pathlib.Path) -> int:
    """An image's width in pixels (header only where OpenCV allows; InputError when unreadable)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"cannot read image {path}")
    return int(img.shape[1])


def flip_K(K: np.ndarray, width: int) -> np.ndarray:
    """The intrinsics of the horizontally mirrored image: (3, 3) -> (3, 3) (cx -> width - 1 - cx)."""
    K = np.array(K, np.float64)
    K[0, 2] = width - 1 - K[0, 2]
    K[0, 1] = -K[0, 1]
    return K


def unflip_prediction(uv, xyz, width: int):
    """Mirrors a prediction made on the flipped image back: uv (21, 2) u -> width - 1 - u; xyz (21, 3) x -> -x."""
    if uv is not None:
        uv = np.array(uv, np.float64)
        uv[:, 0] = width - 1 - uv[:, 0]
    if xyz is not None:
        xyz = np.array(xyz, np.float64)
        xyz[:, 0] = -xyz[:, 0]
    return uv, xyz


def match_detection(dets: list, rec: Record, width: int, flip: bool):
    """The detection that belongs to a ground-truth hand, or None.

    With 2D ground truth: the detection whose keypoints are nearest (mean px distance) to it, accepted when
    that distance is below the ground-truth hand's bounding-box diagonal. Without: the detection of the
    same side (MediaPipe's handedness), else the most confident one.
    """
    if not dets:
        return None
    gt = rec.joints_2d
    if gt is not None:
        if flip:
            gt = gt.copy()
            gt[:, 0] = width - 1 - gt[:, 0]
        diag = float(np.linalg.norm(gt.max(0) - gt.min(0)))
        dists = [float(np.linalg.norm(np.asarray(d.keypoints_uvd)[:, :2] - gt, axis=1).mean()) for d in dets]
        best = int(np.argmin(dists))
        return dets[best] if dists[best] < max(diag, 1.0) else None
    side = "right" if flip else rec.hand
    same = [d for d in dets if getattr(d, "side", None) == side]
    pool = same or dets
    return max(pool, key=lambda d: float(getattr(d, "presence", 0.0)))


# ------------------------------------------------------------------------------------------ metrics
def stage_metrics(results: list[HandResult], stage: str, pck_px: float) -> dict:
    """Aggregates one stage over the evaluated hands (see the module docstring for each field)."""
    uv_p, uv_g, m2 = [], [], []
    x_p, x_g, m3 = [], [], []
    for r in results:
        if r.failed or stage not in r.stages:
            continue
        p = r.stages[stage]
        rec = r.record
        if p.uv is not None and rec.joints_2d is not None and np.isfinite(p.uv).all():
            uv_p.append(p.uv), uv_g.append(rec.joints_2d), m2.append(rec.visible)
        if p.xyz is not None and rec.joints_3d is not None and np.isfinite(p.xyz).all():
            x_p.append(p.xyz), x_g.append(rec.joints_3d), m3.append(rec.visible)
    out = dict(px_error=None, pck_2d=None, mpjpe_mm=None, pa_mpjpe_mm=None, pck_3d=None, auc_20_50=None,
               auc_5_20=None, n_2d=len(uv_p), n_3d=len(x_p))
    if uv_p:
        e2 = metrics.joint_errors_2d(np.stack(uv_p), np.stack(uv_g))
        m = np.stack(m2)
        out["px_error"] = _num(metrics.masked_mean(e2, m))
        out["pck_2d"] = _num(metrics.pck(e2, pck_px, m))
    if x_p:
        P, G, m = np.stack(x_p), np.stack(x_g), np.stack(m3)
        er = metrics.joint_errors_3d(P, G, "root")
        ea = metrics.joint_errors_3d(P, G, "procrustes")
        out["mpjpe_mm"] = _num(1000 * metrics.masked_mean(er, m))
        out["pa_mpjpe_mm"] = _num(1000 * metrics.masked_mean(ea, m))
        out["pck_3d"] = _num(metrics.pck(er, 0.020, m))
        out["auc_20_50"] = _num(metrics.auc(er, 0.020, 0.050, m))
        out["auc_5_20"] = _num(metrics.auc(er, 0.005, 0.020, m))
    return out


def _num(x: float, nd: int = 4):
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def summarize(results: list[HandResult], iterations: list[int], pck_px: float) -> dict:
    """The JSON object of one camera mode: n, failures, stages (+ the tailor sweep when several iterations)."""
    n = len(results)
    failures = sum(r.failed for r in results)
    main_it = iterations[-1] if len(iterations) == 1 else (20 if 20 in iterations else iterations[0])
    for r in results:
        if f"tailored@{main_it}" in r.stages:
            r.stages["tailored"] = r.stages[f"tailored@{main_it}"]
    stages = {s: stage_metrics(results, s, pck_px) for s in STAGES}
    ok = [r for r in results if not r.failed]
    errors = [dict(image=r.record.image.name, hand=r.record.hand, error=r.error) for r in results if r.error]
    out = dict(n=n, failures=failures, stages=stages, evaluated=len(ok), errors=len(errors), tailor_iterations=main_it)
    sweep = []
    for it in iterations:
        ms = [r.tailor_ms[it] for r in ok if it in r.tailor_ms]
        m = stage_metrics(results, f"tailored@{it}", pck_px)
        sweep.append(dict(iterations=it, ms_per_hand=_num(float(np.median(ms[1:] or ms)), 2) if ms else None,
                          auc_20_50=m["auc_20_50"], auc_5_20=m["auc_5_20"], mpjpe_mm=m["mpjpe_mm"],
                          pa_mpjpe_mm=m["pa_mpjpe_mm"], px_error=m["px_error"]))
    out["tailor_sweep"] = sweep
    a, b = stages["tailored"]["auc_5_20"], stages["hand_module"]["auc_5_20"]
    out["tailor_gain_auc_5_20"] = None if a is None or b is None else round(a - b, 4)
    out["failed"] = [dict(image=r.record.image.name, hand=r.record.hand, reason=r.reason) for r in results if r.failed]
    out["error_list"] = errors
    return out


# ------------------------------------------------------------------------------------------- report
def markdown_report(folder: pathlib.Path, report: dict, pck_px: float) -> str:
    """The human-readable report (`--out`)."""
    lines = [f"# Evaluation of {folder}", "", f"Keypoint backbone: {report.get('backbone', 'mediapipe')}.", ""]
    modes = report.get("modes") or {report.get("mode", "auto"): report}
    for mode, rep in modes.items():
        lines += [f"## Camera: {mode}", "",
                  f"{rep['n']} hands, {rep['failures']} failures (no hand detected), {rep['evaluated']} evaluated, "
                  f"{rep['errors']} pipeline errors; "
                  f"tailor {rep['tailor_iterations']} iterations.", "",
                  "| stage | px error | PCK2D@%gpx | MPJPE mm | PA-MPJPE mm | PCK3D@20mm | AUC 20-50 | AUC 5-20 |" % pck_px,
                  "|---|---|---|---|---|---|---|---|"]
        for s in STAGES:
            m = rep["stages"][s]
            cells = [m[k] for k in ("px_error", "pck_2d", "mpjpe_mm", "pa_mpjpe_mm", "pck_3d", "auc_20_50", "auc_5_20")]
            lines.append(f"| {s} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
        lines += ["", f"Tailor gain (AUC 5-20 after - before): {rep['tailor_gain_auc_5_20']}", ""]
        if len(rep["tailor_sweep"]) > 1:
            lines += ["| iterations | ms / hand | AUC 20-50 | AUC 5-20 | MPJPE mm | px error |", "|---|---|---|---|---|---|"]
            for row in rep["tailor_sweep"]:
                lines.append("| {} | {} | {} | {} | {} | {} |".format(*(
                    "-" if row[k] is None else row[k]
                    for k in ("iterations", "ms_per_hand", "auc_20_50", "auc_5_20", "mpjpe_mm", "px_error"))))
            lines.append("")
        if rep["failed"]:
            lines += ["Failures:", ""] + [f"- {f['image']} ({f['hand']}): {f['reason']}" for f in rep["failed"]] + [""]
        if rep["error_list"]:
            lines += ["Pipeline errors (backbone evaluated, later stages missing):", ""]
            lines += [f"- {e['image']} ({e['hand']}): {e['error']}" for e in rep["error_list"]] + [""]
    lines += ["Metrics: 3D errors root-aligned at the wrist (backbone: MediaPipe's hand-centred world landmarks); "
              "PA = similarity Procrustes; AUC over 20 uniformly spaced thresholds (ends included), trapezoidal "
              "area / range; PCK per keypoint then averaged (Zimmermann & Brox). Visible keypoints only where the set "
              "has visibility.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main
def evaluate(folder: pathlib.Path, both: bool = False, iterations=(20,), hand_model: str | None = None,
             left: str = "model", limit: int | None = None, pck_px: float = 10.0, pipeline=None,
             oracle_2d: bool = False, backbone: str = "mediapipe", hourglass_weights: str | None = None) -> dict:
    """Runs the evaluation; returns the report dict (what `--json` prints)."""
    records = load_annotations(folder)
    if limit:
        records = records[:limit]
    if not records:
        raise InputError(f"{folder}/annotations_normalized.json holds no records")
    iterations = sorted({int(i) for i in iterations})
    pipe = pipeline or Pipeline(hand_model, left, oracle_2d, backbone, hourglass_weights)
    runs: dict[str, list[HandResult]] = {}
    for i, rec in enumerate(records):
        modes = (["perspective"] if rec.K is not None else []) + ["weak_perspective"] if both else \
            ["perspective" if rec.K is not None else "weak_perspective"]
        for mode in modes:
            key = mode if both else "auto"
            res = pipe.run(rec, mode, iterations)
            runs.setdefault(key, []).append(res)
        log.info("%d/%d hands", i + 1, len(records))
    if both:
        per = {m: summarize(runs[m], iterations, pck_px) for m in MODES if m in runs}
        primary = dict(per.get("perspective", per["weak_perspective"]))
        primary["mode"] = "perspective" if "perspective" in per else "weak_perspective"
        primary["modes"] = per
        primary["backbone"] = getattr(pipe, "backbone", backbone)
        return primary
    rep = summarize(runs["auto"], iterations, pck_px)
    rep["mode"] = "perspective where K is given, weak perspective otherwise"
    rep["backbone"] = getattr(pipe, "backbone", backbone)
    return rep


def main(argv: list[str], prog: str = "python -m engine eval") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="Per-stage metrics of the pipeline on a ground-truth set "
                                 "(a folder with annotations_normalized.json).")
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    ap.add_argument("--out", type=pathlib.Path, help="write a markdown report here")
    ap.add_argument("--both", action="store_true", help="perspective (where K is given) and weak perspective")
    ap.add_argument("--iterations", default="20",
                    help="tailor iterations, or a comma list (e.g. 10,20,50,100) for the iterations/time/AUC sweep; "
                         "the `tailored` stage uses 20 when listed, else the first")
    ap.add_argument("--hand-model", default=None, help="hand model file or folder (default: the shipped open model)")
    ap.add_argument("--left", choices=["model", "flip"], default="model",
                    help="left hands: the left hand model, or mirror the image and use the right model")
    ap.add_argument("--limit", type=int, default=None, help="only the first N records")
    ap.add_argument("--oracle-2d", action="store_true",
                    help="diagnostic: give the hand module and the tailor the ground-truth 2D keypoints instead of "
                         "the backbone's (depth and world landmarks stay the network's): the tailor's ceiling")
    ap.add_argument("--pck-px", type=float, default=10.0, help="2D PCK threshold in px (default 10)")
    from engine.cli_args import add_backbone_arguments

    add_backbone_arguments(ap)
    args = ap.parse_args(argv)
    try:
        iterations = [int(x) for x in str(args.iterations).split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--iterations takes integers separated by commas, not {args.iterations!r}") from None
    if not iterations or min(iterations) < 0:
        raise InputError("--iterations needs at least one non-negative integer")
    if not args.dir.is_dir():
        raise InputError(f"{args.dir} is not a folder")
    from engine.hand_module.tracking import check_backbone

    check_backbone(args.backbone, args.hourglass_weights)  # fail before any work
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
        logging.getLogger("jax").setLevel(logging.WARNING)  # no backend-probing chatter in the log
    report = evaluate(args.dir, args.both, iterations, args.hand_model, args.left, args.limit, args.pck_px,
                      oracle_2d=args.oracle_2d, backbone=args.backbone, hourglass_weights=args.hourglass_weights)
    report["oracle_2d"] = bool(args.oracle_2d)
    if args.out:
        try:
            args.out.write_text(markdown_report(args.dir, report, args.pck_px))
        except OSError as exc:
            raise OutputError(f"cannot write the report to {args.out}: {exc}") from exc
    if args.json:
        print(json.dumps(report))
    elif not args.out:
        print(markdown_report(args.dir, report, args.pck_px))
    return 0
