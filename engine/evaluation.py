"""`python -m engine eval DIR`: the pipeline's accuracy on a ground-truth set, per stage (paper Sec. 4).

    python -m engine eval DIR [--json] [--out report.md] [--both] [--iterations 20 | 10,20,50,100]
        [--hand-model PATH] [--left {model,flip}] [--limit N] [--pck-px 10] [--oracle-2d]
        [--backbone mediapipe|hourglass [--hourglass-weights FILE]] [--fit-3d] [--per-hand FILE.jsonl]
        [--detections FILE] [--save-detections FILE]

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

Diagnostics per stage (issue 14): `mpjpe_rigid_mm` (rotation + translation alignment, no scale: what is left
once global orientation and position are forgiven, but not size), `px_error_median` (median over the visible
keypoints of all hands), `fit_residual_px` (hand_module / tailored: mean px distance of the stage's projected
keypoints to the 2D keypoints it was fitted to, the detections or with --oracle-2d the ground truth: how well
the fitted hand can follow them at all). `--fit-3d` adds the stages `model_floor` (the hand model fitted
directly to the 3D ground truth: pose, shape, scale, translation; engine.model_floor) and `model_floor_beta0`
(the same at beta = 0): how close the model can get at all; under perspective also `model_floor_tailored`
(the tailor started at the floor, as if the hand module were exact, on the `tailored` stage's 2D keypoints;
per swept iteration count `tailor_sweep`'s `floor_tailored_*`): where its PA-MPJPE rises above the floor's,
the keypoints and the model's joints disagree, and near the truth more iterations bend 3D on that set.
`--per-hand FILE.jsonl` writes one JSON line per hand and camera model with every stage's figures
(engine.evaluation_report.hand_row).

Matching (which detection is the annotated hand): a detection counts only when it is the annotated hand: its
side (MediaPipe's handedness, for unmirrored images) is the record's `hand`, and the box of its keypoints
overlaps the box of the ground-truth 2D keypoints (visible ones where at least 5 are) with IoU >=
`MATCH_MIN_IOU`; of several, the best overlap. A frame where only another hand is found is a failure (reason
"wrong hand ..."), never a detection. Without 2D ground truth (no 2D, no 3D + K) only the side is checked.

Keypoint-level input (no image network): `--detections FILE` (by default `DIR/detections.json` when the set
has one, e.g. `scripts/make_mismatch_set.py`'s synthetic sets) gives each image's keypoint-stage outputs
(`save_detections` format: per image its size and hands with side, presence, keypoints_uvd (21x3 px),
confidence (21) and world_landmarks (21x3 m)); the hand module and the tailor then run exactly as on images.
`--save-detections FILE` stores the keypoint stage's outputs of a run in that format (re-evaluate without the
networks). Under `--left flip` stored detections are mirrored (u -> W-1-u, world x -> -x, side swapped).

Pixels follow DESIGN.md: pixel centres at integers, a horizontal flip maps u to W-1-u (the keypoint stage
converts MediaPipe's normalized x to u = x*W - 0.5).

A hand instance whose image gives no detection of it is a failure: counted in `failures`, listed in the
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
import pathlib
import time
from dataclasses import dataclass, field
import numpy as np

from engine.cli_args import log_to_stderr
from engine.errors import EngineError, InputError, NoHandError, OutputError
from engine.evaluation_report import STAGES, hand_row, markdown_report, stage_metrics, summarize
from engine.groundtruth import Record, load_annotations
from engine.hand_module.palm_detections import box_iou
from engine.stored_detections import DETECTIONS, detection_json, load_detections, mirror_detection, save_detections

log = logging.getLogger(__name__)

__all__ = ["evaluate", "main", "Pipeline", "match_detection", "flip_K", "unflip_prediction", "stage_metrics",
           "summarize", "markdown_report", "STAGES", "MODES", "load_detections", "save_detections"]

MODES = ("perspective", "weak_perspective")
MATCH_MIN_IOU = 0.3  # a detection's keypoint box must overlap the annotated hand's this much (IoU)


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
    failed: bool = False  # no hand found, or only other hands: counted in `failures`
    reason: str = ""
    error: str = ""  # a pipeline error after the keypoint stage (later stages missing): counted in `errors`
    stages: dict = field(default_factory=dict)  # stage name -> Prediction ("tailored@N" for sweeps)
    tailor_ms: dict = field(default_factory=dict)  # iterations -> ms for this hand
    fitted_to: np.ndarray | None = None  # (21, 2) px: the 2D keypoints the hand module and tailor were given
    fitted_conf: np.ndarray | None = None  # (21,) their weights
    match: dict | None = None  # how the detection was matched (iou, side)
    floor_init: dict | None = None  # --fit-3d, perspective: the model floor as a tailor initialization (N = 1)


def _project(xyz: np.ndarray, K: np.ndarray) -> np.ndarray:
    from engine.camera import project_perspective

    return np.asarray(project_perspective(np.asarray(xyz, np.float64), np.asarray(K, np.float64)))


class Pipeline:
    """The capture pipeline's parts, run on single images (models loaded once)."""

    def __init__(self, hand_model_path: str | None = None, left: str = "model", oracle_2d: bool = False,
                 backbone: str = "mediapipe", hourglass_weights: str | None = None, fit_3d: bool = False,
                 detections: dict | None = None):
        from engine.hand_model import load_hand_model
        from engine.hand_module.tracking import check_backbone

        if detections is None:
            check_backbone(backbone, hourglass_weights)  # before any image is read
        self.backbone, self.hourglass_weights = ("stored" if detections is not None else backbone), hourglass_weights
        self.left, self.oracle_2d, self.fit_3d = left, oracle_2d, fit_3d
        self.stored = detections  # image name -> {"size": (W, H), "hands": [...], "hands_flipped": [...]?}
        self.saved: dict = {}  # what `--save-detections` writes
        self.models = {"right": load_hand_model(hand_model_path, side="right")}
        if left == "model":
            self.models["left"] = load_hand_model(hand_model_path, side="left")
        self._tracker = None
        self._detections: dict = {}
        self._floor_params: dict = {}

    # -- keypoints
    def detect(self, image_path: pathlib.Path, flip: bool, K: np.ndarray | None = None) -> tuple:
        """All hands the keypoint stage finds in one image (static: a fresh detection, no tracking state):
        (detections, width, height). K (3, 3) of the (possibly flipped) image: the hourglass backbone's Eq. 5
        lifting; MediaPipe ignores it."""
        if self.stored is not None:
            return self._stored(image_path, flip)
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
            dets = self._run_tracker(rgb, K)
            self._detections[key] = (dets, rgb.shape[1], rgb.shape[0])
            entry = self.saved.setdefault(image_path.name, {"size": [rgb.shape[1], rgb.shape[0]]})
            entry["hands_flipped" if flip else "hands"] = [detection_json(d) for d in dets]
            if len(self._detections) > 8:  # records of one image are consecutive in practice
                self._detections.pop(next(iter(self._detections)))
        return self._detections[key]

    def _stored(self, image_path: pathlib.Path, flip: bool) -> tuple:
        entry = self.stored.get(image_path.name)
        if entry is None:
            raise InputError(f"the detections file has no entry for image {image_path.name}")
        width, height = entry["size"]
        if flip and "hands_flipped" in entry:
            return entry["hands_flipped"], width, height
        if flip:
            return [mirror_detection(d, width) for d in entry["hands"]], width, height
        return entry["hands"], width, height

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
        dets, width, height = self.detect(rec.image, flip, None)
        if mode == "perspective":
            K = rec.K.copy()
            if flip:
                K = flip_K(K, width)
            if self.backbone == "hourglass":
                dets, width, height = self.detect(rec.image, flip, K)
        obs, res.match, why = match_detection(dets, rec, width, flip)
        if obs is None:
            res.failed, res.reason = True, why
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
        res.fitted_to, res.fitted_conf = unflip(kp_uvd[:, :2].copy(), None)[0], conf.copy()
        if self.fit_3d and rec.joints_3d is not None:
            self._floor(res, rec, flip, mode)
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

    def _floor(self, res: HandResult, rec: Record, flip: bool, mode: str) -> None:
        """The model fitted to the 3D ground truth (`--fit-3d`), projected with the record's K for px; under
        perspective also `res.floor_init`, the tailor's start for `model_floor_tailored` (the tailor's frame)."""
        from engine.hand_model import jax_layer
        from engine.model_floor import fit_joints_3d

        side = "right" if flip else rec.hand
        model = self.models[side]
        if side not in self._floor_params:
            import jax.numpy as jnp

            self._floor_params[side] = jax_layer.prepare(model, jnp.float32)
        mirror = np.array([-1.0, 1.0, 1.0]) if flip else np.ones(3)
        for name, free in (("model_floor", True), ("model_floor_beta0", False)):
            fit = fit_joints_3d(model, rec.joints_3d * mirror, free_beta=free, params=self._floor_params[side])
            xyz = fit["joints_3d"] * mirror
            res.stages[name] = Prediction(_project(xyz, rec.K) if rec.K is not None else None, xyz)
            if free and mode == "perspective":
                res.floor_init = dict(theta=fit["theta"][None], beta=fit["beta"][None], root=fit["root"][None],
                                      hand_scale=np.array([fit["scale"]]), projection_scale=np.full(1, np.nan))

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
        if res.floor_init is not None:  # the same tailor on the same 2D, started at the model floor
            for it in iterations:
                out = self.tailor(model, res.floor_init, kp_uvd, conf, K, mode, it, (width, height))
                xyz = np.asarray(out["joints_3d"][0], np.float64)
                res.stages[f"model_floor_tailored@{it}"] = Prediction(*unflip(_project(xyz, K), xyz))

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


def _box(uv: np.ndarray) -> np.ndarray:
    """(K, 2) -> (4,) x0, y0, x1, y1."""
    return np.concatenate([uv.min(0), uv.max(0)])


def match_detection(dets: list, rec: Record, width: int, flip: bool):
    """The detection that IS the annotated hand, or None: -> (detection | None, match info dict, reason).

    A detection counts when its side is the record's (the mirrored side under `flip`; a detection without a
    side passes this check) and, where the record has 2D ground truth, the box of its keypoints overlaps the
    ground-truth hand's box (of the visible keypoints where at least 5 are) with IoU >= MATCH_MIN_IOU; the best
    overlap wins. Anything else found in the image is another hand: a failure, not a match.
    """
    side = "right" if flip else rec.hand
    if not dets:
        return None, None, f"no hand detected (the annotated {rec.hand} hand is missed)"
    same = [d for d in dets if getattr(d, "side", None) in (side, None)]
    gt = rec.joints_2d
    if gt is None:
        if not same:
            return None, dict(iou=None, side=dets[0].side), (
                f"wrong hand: {len(dets)} hand(s) found, none is a {rec.hand} hand")
        best = max(same, key=lambda d: float(getattr(d, "presence", 0.0)))
        return best, dict(iou=None, side=getattr(best, "side", None)), ""
    gt = gt.copy()
    if flip:
        gt[:, 0] = width - 1 - gt[:, 0]
    vis = rec.visible if rec.visible is not None and rec.visible.sum() >= 5 else np.ones(len(gt), bool)
    gt_box = _box(gt[vis])
    ious = [box_iou(_box(np.asarray(d.keypoints_uvd)[:, :2]), gt_box) for d in dets]
    cand = [(i, ious[i]) for i in range(len(dets)) if dets[i] in same or getattr(dets[i], "side", None) is None]
    cand = [(i, iou) for i, iou in cand if iou >= MATCH_MIN_IOU]
    if cand:
        i, iou = max(cand, key=lambda t: t[1])
        return dets[i], dict(iou=round(iou, 3), side=getattr(dets[i], "side", None)), ""
    k = int(np.argmax(ious))
    info = dict(iou=round(ious[k], 3), side=getattr(dets[k], "side", None))
    return None, info, (f"wrong hand: {len(dets)} hand(s) found, none is the annotated {rec.hand} hand "
                        f"(best box overlap {ious[k]:.2f}, {getattr(dets[k], 'side', None)} hand)")


# --------------------------------------------------------------------------------------------- main
def evaluate(folder: pathlib.Path, both: bool = False, iterations=(20,), hand_model: str | None = None,
             left: str = "model", limit: int | None = None, pck_px: float = 10.0, pipeline=None,
             oracle_2d: bool = False, backbone: str = "mediapipe", hourglass_weights: str | None = None,
             fit_3d: bool = False, detections: pathlib.Path | None = None, per_hand: list | None = None) -> dict:
    """Runs the evaluation; returns the report dict (what `--json` prints). `per_hand`: a list that receives
    one row per hand and camera mode (`hand_row`)."""
    records = load_annotations(folder)
    if limit:
        records = records[:limit]
    if not records:
        raise InputError(f"{folder}/annotations_normalized.json holds no records")
    iterations = sorted({int(i) for i in iterations})
    if pipeline is None:
        stored = load_detections(detections) if detections is not None else None
        if stored is not None:
            log.info("keypoint-stage outputs from %s (no image network)", detections)
        pipeline = Pipeline(hand_model, left, oracle_2d, backbone, hourglass_weights, fit_3d, stored)
    pipe = pipeline
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
        rep = primary
    else:
        rep = summarize(runs["auto"], iterations, pck_px)
        rep["mode"] = "perspective where K is given, weak perspective otherwise"
        rep["backbone"] = getattr(pipe, "backbone", backbone)
    if per_hand is not None:
        per_hand.extend(hand_row(r) for rs in runs.values() for r in rs)
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
    ap.add_argument("--fit-3d", action="store_true",
                    help="diagnostic: also fit the hand model directly to the 3D ground truth (pose, shape, scale, "
                         "translation) and report that floor as the stages model_floor / model_floor_beta0; under "
                         "perspective also model_floor_tailored, the tailor started at that floor on the same 2D")
    ap.add_argument("--per-hand", type=pathlib.Path, metavar="FILE.jsonl",
                    help="write each hand's figures (every stage, every swept iteration count) as JSON lines")
    ap.add_argument("--detections", type=pathlib.Path, metavar="FILE",
                    help=f"keypoint-stage outputs to use instead of running the image network (default: "
                         f"DIR/{DETECTIONS} when the set has one)")
    ap.add_argument("--save-detections", type=pathlib.Path, metavar="FILE",
                    help="store the keypoint stage's outputs of this run (for --detections)")
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
    detections = args.detections
    if detections is None and (args.dir / DETECTIONS).is_file():
        detections = args.dir / DETECTIONS
    if detections is not None and not pathlib.Path(detections).is_file():
        raise InputError(f"--detections: {detections} is not a file")
    if detections is not None and args.save_detections:
        raise InputError("--save-detections stores the image network's outputs; it makes no sense with --detections")
    from engine.hand_module.tracking import check_backbone

    if detections is None:
        check_backbone(args.backbone, args.hourglass_weights)  # fail before any work
    log_to_stderr(fmt="%(name)s: %(message)s")
    rows: list = []
    pipe = None
    if detections is None:
        pipe = Pipeline(args.hand_model, args.left, args.oracle_2d, args.backbone, args.hourglass_weights, args.fit_3d)
    report = evaluate(args.dir, args.both, iterations, args.hand_model, args.left, args.limit, args.pck_px,
                      pipeline=pipe, oracle_2d=args.oracle_2d, backbone=args.backbone,
                      hourglass_weights=args.hourglass_weights, fit_3d=args.fit_3d, detections=detections,
                      per_hand=rows)
    report["oracle_2d"] = bool(args.oracle_2d)
    if args.save_detections and pipe is not None:
        save_detections(args.save_detections, pipe.saved)
    if args.per_hand:
        try:
            args.per_hand.write_text("".join(json.dumps(r) + "\n" for r in rows))
        except OSError as exc:
            raise OutputError(f"cannot write the per-hand figures to {args.per_hand}: {exc}") from exc
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
