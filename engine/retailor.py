"""`python -m engine retailor RESULT.npz --edits EDITS.npz -o NEW.npz [--frames A:B] [--joints a,b,...]`

Re-tailor: the artist edited some keys in Blender; refit everything else around them.

1. Locked entries of the edits (lock_theta per joint, lock_beta, lock_root, lock_hand_scale per frame)
   replace the result's values, everywhere, bit for bit.
2. The tailor refits the valid frames inside --frames (footage frame numbers, inclusive; default all)
   from the 2D evidence stored in the result (keypoints_2d, confidence), starting from the merged values,
   with the locked entries held (the tailor's locks). --joints restricts the refit to the named MANO
   joints (the other joints' rotations are held too). The temporal term, the iterations and the camera
   are the capture's (stored in the result) unless --iterations is given.
3. Frames outside the refit that carry locked edits get joints_3d recomputed (the model posed by the
   merged values), so the file stays consistent. Invalid frames (no hand seen) stay invalid: there is no
   evidence to fit; edits on them are reported and ignored.

Each track is refit with the hand model it was fitted with (`track_models`): the result records its path
and sha256 per track; the model is looked for at that path, then at --hand-model (a file or a folder), then
among the shipped models, and used only when its sha256 matches. When none matches, nothing is written and
the error `hand_model_mismatch` says what was found where.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from typing import Callable

import numpy as np

from engine.errors import InputError
from engine import outputs
from engine import results as results_io

log = logging.getLogger("engine.retailor")


@dataclasses.dataclass
class RetailorOptions:
    result: str
    edits: str
    output: str
    frame_start: int | None = None
    frame_end: int | None = None
    joints: list[str] | None = None
    iterations: int | None = None
    hand_model: str | None = None

    @classmethod
    def from_protocol(cls, args: dict) -> "RetailorOptions":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in args.items() if k in fields})


def joint_mask(names: list[str] | None) -> np.ndarray:
    """(16,) bool: the MANO joints to refit (all when names is None). Raises InputError on unknown names."""
    from engine.hand_model import MANO_JOINT_NAMES

    if names is None:
        return np.ones(16, bool)
    known = list(MANO_JOINT_NAMES)
    bad = [n for n in names if n not in known]
    if bad:
        raise InputError(f"unknown joint name(s) {bad}; the MANO joints are: {', '.join(known)}.")
    if not names:
        raise InputError("--joints is empty: name at least one joint to refit, or leave the option out.")
    return np.array([n in names for n in known], bool)


def pose_joints(model, theta, beta, root, hand_scale) -> np.ndarray:
    """21 camera-frame keypoints (B, 21, 3) of the model posed by theta (B,16,4), beta, root, hand_scale."""
    import jax.numpy as jnp

    from engine.hand_model import jax_layer

    params = jax_layer.prepare(model)
    rot = jax_layer.quat_to_rotmat(jnp.asarray(theta))
    return np.asarray(jax_layer.keypoints(params, rot, jnp.asarray(beta), jnp.asarray(root), jnp.asarray(hand_scale)), np.float64)


def track_models(result: dict, hand_model: str | None = None) -> list:
    """The hand model of every track of `result` (format 2: hand_model (T,), hand_model_sha256 (T,)).

    Candidates, in order: the recorded path, `hand_model` (file or folder; the track's side picks in a
    folder), the shipped model of the track's side. The first whose sha256 equals the recorded one is used.
    A format 1 result recorded no model for a track of the other side than track 0 (empty sha256): it gets
    `hand_model` when given, else the shipped model when track 0 used the shipped model (format 1 captures
    loaded both sides from one option). Raises HandModelMismatch naming each candidate and its sha256."""
    from engine.errors import EngineError, HandModelMismatch
    from engine.hand_model import default_model_path, load_hand_model

    sides = [str(s) for s in np.asarray(result["hand_side"]).reshape(-1)]
    paths = [str(p) for p in np.asarray(result["hand_model"]).reshape(-1)]
    shas = [str(s) for s in np.asarray(result["hand_model_sha256"]).reshape(-1)]
    shipped = {side: str(default_model_path(side)) for side in ("right", "left")}
    models = []
    for t, side in enumerate(sides):
        want = shas[t]
        if not want:  # format 1, the other side: the capture's option is not recorded
            if hand_model:
                models.append(load_hand_model(hand_model, side=side))
                continue
            first = load_hand_model(shipped[sides[0]], side=sides[0])
            if shas[0] == first.sha256:
                models.append(load_hand_model(None, side=side))
                continue
            raise HandModelMismatch(
                f"hand model mismatch: this format 1 result does not record the hand model of track {t} ({side}) "
                f"and track 0 was not fitted with the shipped model; pass the hand model the capture used "
                f"(--hand-model FILE_OR_FOLDER, protocol: hand_model).")
        tried = []
        for candidate in (paths[t], hand_model, shipped[side]):
            if not candidate or candidate in (c for c, _ in tried):
                continue
            try:
                model = load_hand_model(candidate, side=side)
            except EngineError as exc:
                tried.append((candidate, f"not usable: {exc}"))
                continue
            if model.sha256 == want:
                models.append(model)
                break
            tried.append((candidate, f"{model.path} has sha256 {model.sha256[:12]}..."))
        else:
            found = "; ".join(f"{c}: {why}" for c, why in tried)
            raise HandModelMismatch(
                f"hand model mismatch: track {t} ({side}) was fitted with {paths[t] or 'an unnamed model'} "
                f"(sha256 {want[:12]}...), and no model at hand has that content ({found}). Pass the model "
                f"the capture used (--hand-model FILE_OR_FOLDER, protocol: hand_model); nothing was written.")
    return models


def run_retailor(options: RetailorOptions, progress: Callable[[int, int, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict:
    """Runs the re-tailor described in the module docstring; returns the protocol's result dict."""
    from engine import capture
    from engine.tailor import TailorConfig
    from engine.tailor.clip import fit_clip
    from engine.timing import StageTimer

    progress = progress or (lambda d, t, m="": None)
    should_stop = should_stop or (lambda: False)
    out_path = results_io.check_output_path(options.output)
    outputs.check_not_inputs({"output": str(out_path)}, {"capture result": options.result, "edits file": options.edits,
                                                        "hand model": options.hand_model})
    outputs.check_replaceable(out_path, "result")
    result = results_io.read_result(options.result)
    edits = results_io.read_edits(options.edits, result)
    models = track_models(result, options.hand_model)
    T, N = result["valid"].shape
    refit_joints = joint_mask(options.joints)
    fi = result["frame_index"]
    in_range = np.ones(N, bool)
    if options.frame_start is not None:
        in_range &= fi >= int(options.frame_start)
    if options.frame_end is not None:
        in_range &= fi <= int(options.frame_end)
    if not in_range.any():
        raise InputError(f"--frames {options.frame_start}:{options.frame_end} selects none of the result's frames "
                         f"({int(fi[0])}..{int(fi[-1])}).")
    iterations = int(options.iterations if options.iterations is not None else result.get("tailor_iterations", capture.DEFAULT_ITERATIONS))
    smoothing = float(result.get("tailor_smoothing", capture.DEFAULT_SMOOTHING))
    camera_model = str(result["camera_model"])
    K = np.asarray(result["K"], np.float64)
    config = TailorConfig(iterations=iterations, camera_model=camera_model, temporal_weight=smoothing)
    new = {k: np.array(v) for k, v in result.items() if k != outputs.OVERLAY_SHA_KEY}  # no overlay is written here
    new["hand_model"] = np.asarray([str(m.path) for m in models])
    new["hand_model_sha256"] = np.asarray([str(m.sha256) for m in models])
    locks_all = {k: np.asarray(edits[k], bool) for k in results_io.EDIT_LOCK_SHAPES}
    # 1. locked edits replace the result's values (bit for bit)
    for key, lock_key in results_io.EDIT_LOCK_FOR.items():
        lock = locks_all[lock_key]
        vals = np.array(new[key], np.float64)
        src = np.asarray(edits[key], np.float64)
        vals[lock] = src[lock]
        new[key] = vals
    any_lock = locks_all["lock_theta"].any(axis=-1) | locks_all["lock_beta"] | locks_all["lock_root"] | locks_all["lock_hand_scale"]
    ignored = int((any_lock & ~result["valid"]).sum())
    if ignored:
        log.warning("%d edited frame(s) have no hand in the footage (invalid): their edits are ignored", ignored)
    timer = StageTimer()
    sides = [str(s) for s in result["hand_side"].tolist()]
    total = int((result["valid"] & in_range).sum()) or 1
    done = 0
    for t, side in enumerate(sides):
        model = models[t]
        valid = result["valid"][t]
        refit = valid & in_range
        rows = np.flatnonzero(refit)
        refitted = np.zeros(N, bool)
        if rows.size:
            a, b = int(rows[0]), int(rows[-1]) + 1
            sl = slice(a, b)
            lock_theta = locks_all["lock_theta"][t, sl] | ~refit_joints[None, :]
            locks = {"lock_theta": lock_theta, "lock_beta": locks_all["lock_beta"][t, sl],
                     "lock_root": locks_all["lock_root"][t, sl], "lock_hand_scale": locks_all["lock_hand_scale"][t, sl]}
            arrays = dict(theta=new["theta"][t, sl], beta=new["beta"][t, sl], root=new["root"][t, sl],
                          hand_scale=new["hand_scale"][t, sl], projection_scale=np.asarray(result["projection_scale"][t, sl], np.float64),
                          keypoints_2d=np.asarray(result["keypoints_2d"][t, sl], np.float64),
                          confidence=np.asarray(result["confidence"][t, sl], np.float64), valid=refit[sl])
            base = done
            fit = fit_clip(model, arrays, K, config, locks, should_stop=should_stop, timer=timer,
                           progress=lambda d, n, base=base: progress(min(total, base + d), total, f"re-tailoring the {side} hand"))
            ok = fit["fitted"]
            idx = np.arange(a, b)[ok]
            refitted[idx] = True
            for key in ("theta", "beta", "root", "hand_scale", "joints_3d"):
                new[key][t, idx] = fit[key][ok]
            if camera_model == "weak_perspective":
                new["projection_scale"][t, idx] = fit["projection_scale"][ok]
            lost = refit[sl] & ~ok
            if lost.any():
                log.warning("%d frame(s) of the %s hand could not be refit; they keep the merged values", int(lost.sum()), side)
            done += int(refit.sum())
        # 3. edited frames outside the refit: recompute joints_3d from the merged values
        redo = valid & any_lock[t] & ~refitted
        if redo.any():
            new["joints_3d"][t, redo] = pose_joints(model, new["theta"][t, redo], new["beta"][t, redo],
                                                    new["root"][t, redo], new["hand_scale"][t, redo])
    if should_stop():
        from engine.errors import Cancelled

        raise Cancelled("re-tailor cancelled")
    for key in ("theta", "beta", "root", "hand_scale", "projection_scale", "joints_3d"):
        new[key][~result["valid"]] = np.nan
    written = results_io.write_result(out_path, new)
    progress(total, total, "done")
    log.info("wrote %s", written)
    return {"files": {"result": str(written)}}


def main(argv: list[str], prog: str = "python -m engine retailor") -> int:
    from engine.cli_args import log_to_stderr, parse_frames
    from engine.progress import ProgressBar

    p = argparse.ArgumentParser(prog=prog, description="Refit a capture result with artist-edited values locked.")
    p.add_argument("result", help="capture result (.npz)")
    p.add_argument("--edits", required=True, help="edits file (.npz, DESIGN.md: values + lock_* masks)")
    p.add_argument("-o", "--output", required=True, help="new result file (.npz)")
    p.add_argument("--frames", help="refit only footage frames A:B (inclusive)")
    p.add_argument("--joints", help="refit only these MANO joints (comma-separated names, e.g. index1,index2)")
    p.add_argument("--iterations", type=int, help="tailor iterations (default: the capture's)")
    p.add_argument("--hand-model", help="where to find the hand model the capture used, when it is no longer at the "
                   "path the result records (file or folder; its sha256 must match)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    log_to_stderr()
    start, end = parse_frames(args.frames)
    joints = None if args.joints is None else [j.strip() for j in args.joints.split(",") if j.strip()]
    if args.iterations is not None and args.iterations < 0:
        raise InputError(f"--iterations must be >= 0 (got {args.iterations}).")
    options = RetailorOptions(args.result, args.edits, args.output, start, end, joints, args.iterations, args.hand_model)
    bar = ProgressBar(enabled=not args.quiet, unit="frame")
    t0 = time.perf_counter()
    try:
        out = run_retailor(options, progress=bar)
    finally:
        bar.close()
    print(f"{prog}: wrote {out['files']['result']} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
