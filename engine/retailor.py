"""`python -m engine retailor RESULT.npz --edits EDITS.npz -o NEW.npz [--frames A:B] [--joints a,b,...] [--falloff N]`

Re-tailor: the artist edited some keys in Blender; the edit is kept and the take around it follows, locally.

1. Locked entries of the edits (lock_theta per joint, lock_beta, lock_root, lock_hand_scale per frame)
   replace the result's values, everywhere, bit for bit. They are hard constraints of everything below.
2. A change is a locked value that differs from the take (locks carried over from an earlier re-tailor are
   constraints, not changes). No change: the take is written back as it is (deterministic: no drift).
3. Around the changed frames (pose: theta per joint, root), within `--falloff` frames (default
   `engine.tailor.local.DEFAULT_FALLOFF`), the change is carried to the neighbours with a raised-cosine
   weight (1 where it was made, 0 beyond the window: `engine.tailor.local`), then the tailor refits that
   window from the 2D evidence stored in the result (keypoints_2d, confidence), starting from there, with
   the locked entries, the edited joints (they follow their edit), the frames around the window, the
   track's identity and its distance held, and the
   capture's temporal terms and iterations (unless --iterations); the refit's own change is faded by the
   same weight. Frames beyond the window are not touched (bit for bit). --frames (footage frame numbers,
   inclusive) and --joints (MANO joint names) limit what may change: nothing outside them moves.
4. The identity (beta, hand_scale) is one per track in a default capture: a changed beta or hand_scale
   applies to every valid frame of the track (the root follows along its viewing ray, so the hand keeps its
   place in the image); in a per-frame-shape capture it is local like the pose.
5. joints_3d is recomputed wherever a value changed, so the file stays consistent. Invalid frames (no hand
   seen) stay invalid: there is no evidence to fit; edits on them are reported and ignored.

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
    falloff: int | None = None  # frames an edit reaches on each side (None: engine.tailor.local.DEFAULT_FALLOFF)

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
    from engine.timing import StageTimer

    progress = progress or (lambda d, t, m="": None)
    should_stop = should_stop or (lambda: False)
    out_path = results_io.check_output_path(options.output)
    outputs.check_not_inputs({"output": str(out_path)}, {"capture result": options.result, "edits file": options.edits,
                                                        "hand model": options.hand_model})
    outputs.check_replaceable(out_path, "result")
    falloff = check_falloff(options.falloff)
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
    config = capture.tailor_config(iterations, str(result["camera_model"]), smoothing)._replace(hold_depth=True)
    new = {k: np.array(v) for k, v in result.items() if k != outputs.OVERLAY_SHA_KEY}  # no overlay is written here
    new["hand_model"] = np.asarray([str(m.path) for m in models])
    new["hand_model_sha256"] = np.asarray([str(m.sha256) for m in models])
    locks_all = {k: np.asarray(edits[k], bool) for k in results_io.EDIT_LOCK_SHAPES}
    ignored = int(((locks_all["lock_theta"].any(-1) | locks_all["lock_beta"] | locks_all["lock_root"]
                    | locks_all["lock_hand_scale"]) & ~result["valid"]).sum())
    if ignored:
        log.warning("%d edited frame(s) have no hand in the footage (invalid): their edits are ignored", ignored)
    timer = StageTimer()
    sides = [str(s) for s in result["hand_side"].tolist()]
    for t, side in enumerate(sides):
        _retailor_track(new, result, edits, locks_all, t, models[t], config, falloff, in_range, refit_joints, timer,
                        should_stop, lambda d, n, side=side, t=t: progress(t * N + d, T * N, f"re-tailoring the {side} hand"))
    if should_stop():
        from engine.errors import Cancelled

        raise Cancelled("re-tailor cancelled")
    written = results_io.write_result(out_path, new)
    progress(T * N, T * N, "done")
    log.info("wrote %s", written)
    return {"files": {"result": str(written)}}


def check_falloff(falloff) -> int:
    """The falloff window in frames (None: the default), an int >= 0; InputError otherwise."""
    from engine.tailor.local import DEFAULT_FALLOFF

    if falloff is None:
        return DEFAULT_FALLOFF
    if isinstance(falloff, bool) or not isinstance(falloff, (int, np.integer)) or falloff < 0:
        raise InputError(f"--falloff must be a whole number of frames >= 0 (got {falloff!r}).")
    return int(falloff)


def _changed(edit, take, lock, valid):
    """Locked entries on valid frames whose value differs from the take's (NaN-safe): (N, ...) masks."""
    differs = ~(np.asarray(edit, np.float64) == np.asarray(take, np.float64))
    if differs.ndim > lock.ndim:
        differs = differs.any(axis=tuple(range(lock.ndim, differs.ndim)))
    return lock & differs & valid.reshape(valid.shape + (1,) * (lock.ndim - 1))


def _retailor_track(new, result, edits, locks_all, t, model, config, falloff, in_range, refit_joints, timer,
                    should_stop, progress) -> None:
    """One track of `run_retailor` (the module docstring's steps 1-5), written into `new` in place."""
    from engine.tailor import local

    valid = np.asarray(result["valid"][t], bool)
    take = {k: np.asarray(result[k][t], np.float64) for k in ("theta", "beta", "root", "hand_scale", "projection_scale")}
    edit = {k: np.asarray(edits[k][t], np.float64) for k in results_io.EDIT_VALUE_KEYS}
    lk = {k: locks_all[k][t] & valid.reshape((-1,) + (1,) * (locks_all[k][t].ndim - 1)) for k in locks_all}
    vals = {k: take[k].copy() for k in take}
    for key, lock_key in results_io.EDIT_LOCK_FOR.items():  # 1. locked values, bit for bit
        vals[key][lk[lock_key]] = edit[key][lk[lock_key]]
    changed = {key: _changed(edit[key], take[key], lk[lock_key], valid) for key, lock_key in results_io.EDIT_LOCK_FOR.items()}
    rows = np.flatnonzero(valid)
    one_identity = rows.size > 0 and bool(np.all(take["beta"][rows] == take["beta"][rows[0]])
                                          and np.all(take["hand_scale"][rows] == take["hand_scale"][rows[0]]))
    identity_moved = False
    if one_identity and (changed["beta"].any() or changed["hand_scale"].any()):  # 4. one identity per track
        identity_moved = True
        _move_identity(vals, take, edit, changed, lk, valid, model)
    # 3. local changes: pose (and a per-frame identity), inside --frames and --joints
    theta_ch = changed["theta"] & refit_joints[None, :]
    frame_ch = theta_ch.any(-1) | changed["root"]
    if not one_identity:
        frame_ch |= changed["beta"] | changed["hand_scale"]
    w = local.falloff_weights(frame_ch, falloff) * (in_range & valid)
    win = w > 0
    if win.any():
        for j in np.flatnonzero(theta_ch.any(0)):
            prop = local.propagate_rotations(take["theta"][:, j], edit["theta"][:, j], theta_ch[:, j], falloff)
            vals["theta"][win, j] = prop[win]
        adds = ("root",) if one_identity else ("root", "beta", "hand_scale")
        for key in adds:
            if changed[key].any():
                vals[key][win] = local.propagate_additive(take[key], edit[key], changed[key], falloff)[win]
        carried = theta_ch.any(0)  # the edited joints follow their edit (propagated); the refit explains the rest
        _refit_window(vals, result, t, lk, w, model, config, refit_joints & ~carried, one_identity, timer, should_stop,
                      progress)
    for key, lock_key in results_io.EDIT_LOCK_FOR.items():  # the locked values stay exact whatever happened around
        vals[key][lk[lock_key]] = edit[key][lk[lock_key]]
    moved = valid & ~(np.all(vals["theta"] == take["theta"], axis=(1, 2)) & np.all(vals["root"] == take["root"], axis=1)
                      & np.all(vals["beta"] == take["beta"], axis=1) & (vals["hand_scale"] == take["hand_scale"]))
    if identity_moved:
        moved |= valid
    for key in ("theta", "beta", "root", "hand_scale", "projection_scale"):
        new[key][t] = np.where(moved.reshape((-1,) + (1,) * (vals[key].ndim - 1)), vals[key], result[key][t])
    if moved.any():  # 5. the file stays consistent
        from engine.tailor.posing import model_keypoints

        new["joints_3d"][t, moved] = model_keypoints(model, vals["theta"][moved], vals["beta"][moved],
                                                     vals["root"][moved], vals["hand_scale"][moved])


def _move_identity(vals, take, edit, changed, lk, valid, model) -> None:
    """A changed beta / hand_scale of a one-identity track: the new identity on every valid frame (locked
    values stay theirs); unlocked roots move along their rays so the hand keeps its place in the image."""
    from engine.hand_module import shape as shape_mod

    rows = np.flatnonzero(valid)
    beta = edit["beta"][np.flatnonzero(changed["beta"])[0]] if changed["beta"].any() else take["beta"][rows[0]]
    hs = edit["hand_scale"][np.flatnonzero(changed["hand_scale"])[0]] if changed["hand_scale"].any() else take["hand_scale"][rows[0]]
    vals["beta"][rows] = np.where(lk["lock_beta"][rows, None], vals["beta"][rows], beta)
    vals["hand_scale"][rows] = np.where(lk["lock_hand_scale"][rows], vals["hand_scale"][rows], hs)
    rest = shape_mod.rest_keypoints(model)
    old_len = take["hand_scale"][rows] * shape_mod.hand_length(rest, take["beta"][rows])
    new_len = vals["hand_scale"][rows] * shape_mod.hand_length(rest, vals["beta"][rows])
    free = ~lk["lock_root"][rows]
    vals["root"][rows[free]] = vals["root"][rows[free]] * (new_len / old_len)[free, None]
    vals["projection_scale"][rows[free]] = vals["projection_scale"][rows[free]] * (old_len / new_len)[free]


def _refit_window(vals, result, t, lk, w, model, config, refit_joints, one_identity, timer, should_stop, progress):
    """The tailor on the frames where w > 0 (plus two held frames each side for the temporal terms), from
    `vals`, with the locks, the joints outside --joints, the identity and the distance held; the refit's
    change is faded by w and written into `vals`."""
    from engine.tailor import local
    from engine.tailor.clip import fit_clip

    N = w.shape[0]
    win = w > 0
    idx = np.flatnonzero(win)
    a, b = max(0, int(idx[0]) - 2), min(N, int(idx[-1]) + 3)
    sl = slice(a, b)
    hold = ~win[sl]  # context frames: fully held
    valid = np.asarray(result["valid"][t], bool)[sl]
    locks = {"lock_theta": lk["lock_theta"][sl] | ~refit_joints[None, :] | hold[:, None],
             "lock_beta": lk["lock_beta"][sl] | hold | one_identity, "lock_root": lk["lock_root"][sl] | hold,
             "lock_hand_scale": lk["lock_hand_scale"][sl] | hold | one_identity}
    arrays = dict(theta=vals["theta"][sl], beta=vals["beta"][sl], root=vals["root"][sl], hand_scale=vals["hand_scale"][sl],
                  projection_scale=vals["projection_scale"][sl],
                  keypoints_2d=np.asarray(result["keypoints_2d"][t, sl], np.float64),
                  confidence=np.asarray(result["confidence"][t, sl], np.float64), valid=valid)
    fit = fit_clip(model, arrays, np.asarray(result["K"], np.float64), config, locks, should_stop=should_stop,
                   timer=timer, progress=lambda d, n: progress(a + d, n))
    ok = fit["fitted"] & win[sl]
    if (valid & win[sl] & ~fit["fitted"]).any():
        log.warning("%d frame(s) of track %d could not be refit; they keep the edit carried to them",
                    int((valid & win[sl] & ~fit["fitted"]).sum()), t)
    rows = np.arange(a, b)[ok]
    ww = w[rows]
    held = {k: v[ok] for k, v in locks.items()}  # held entries keep their values exactly (no round trip)
    faded = local.fade_rotations(vals["theta"][rows], fit["theta"][ok], ww)
    vals["theta"][rows] = np.where(held["lock_theta"][..., None], vals["theta"][rows], faded)
    for key, lock_key in (("root", "lock_root"), ("beta", "lock_beta"), ("hand_scale", "lock_hand_scale")):
        faded = local.fade_additive(vals[key][rows], fit[key][ok], ww)
        vals[key][rows] = np.where(held[lock_key].reshape((-1,) + (1,) * (faded.ndim - 1)), vals[key][rows], faded)
    if str(result["camera_model"]) == "weak_perspective":
        faded = local.fade_additive(vals["projection_scale"][rows], fit["projection_scale"][ok], ww)
        vals["projection_scale"][rows] = np.where(held["lock_root"], vals["projection_scale"][rows], faded)


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
    p.add_argument("--falloff", type=int, help="frames an edit reaches on each side, fading out (default "
                   f"{__import__('engine.tailor.local', fromlist=['x']).DEFAULT_FALLOFF}); frames beyond are not touched")
    p.add_argument("--hand-model", help="where to find the hand model the capture used, when it is no longer at the "
                   "path the result records (file or folder; its sha256 must match)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    log_to_stderr()
    start, end = parse_frames(args.frames)
    joints = None if args.joints is None else [j.strip() for j in args.joints.split(",") if j.strip()]
    if args.iterations is not None and args.iterations < 0:
        raise InputError(f"--iterations must be >= 0 (got {args.iterations}).")
    options = RetailorOptions(args.result, args.edits, args.output, start, end, joints, args.iterations, args.hand_model,
                              args.falloff)
    bar = ProgressBar(enabled=not args.quiet, unit="frame")
    t0 = time.perf_counter()
    try:
        out = run_retailor(options, progress=bar)
    finally:
        bar.close()
    print(f"{prog}: wrote {out['files']['result']} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
