"""`fit`: the tailor on numpy arrays (validation, padding, one jitted call); `TailorConfig`, its settings.

`fit(model, theta0, ..., config)` checks and converts its arguments, pads the batch to `bucket_size` (a few
fixed sizes: one compiled executable each), and runs `transform.solve` jitted, or eagerly one frame at a
time with `jit=False` (the non-jitted reference the benchmark compares with: the same math, every op
dispatched on its own).

The jitted call takes every frame input in two arrays (float32 and bool, `_FRAME_FLOATS`, `_FRAME_BOOLS`)
and returns every output in one, so a call costs one transfer each way: with ~30 arguments and ~16
results, dispatch and conversion would cost more than the whole one-frame fit. The settings and K travel as
a typed `transform.Settings` already on the device (cached by content), the model's arrays likewise.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from engine.caches import LruCache
from engine.camera import nominal_K
from engine.errors import InputError
from engine.hand_model import HandModel
from engine.hand_model import jax_layer
from engine.hand_model.rotations import quat_conjugate, quat_log, quat_multiply
from engine.tailor import transform
from engine.tailor.executables import Exported
from engine.tailor.transform import Frames, Settings

__all__ = ["TailorConfig", "fit", "model_params", "bucket_size", "loop_is_one_kernel", "CAMERA_MODELS",
           "PAPER_ADAM", "AUTHORS_ADAM"]

CAMERA_MODELS = ("perspective", "weak_perspective")
PAPER_ADAM = dict(lr=0.003, b1=0.9, b2=0.999)
AUTHORS_ADAM = dict(lr=0.03, b1=0.5, b2=0.5)


class TailorConfig(NamedTuple):
    """Settings of one fit. Defaults: Adam with the authors' moments (b1 = b2 = 0.5), its step annealed from
    lr 0.06 to 0.012, the paper's weights where the measurements kept them, the project's terms where not.

    Adam: measured with `python -m engine bench tailor` (256 synthetic frames, 1-3 px noise, 10-20 degree
    pose noise; median residual 2D error, initial 17.1 px): lr 0.03, b1 = b2 = 0.5 reaches 3.0 / 2.1 / 1.9 /
    1.7 px after 10 / 20 / 50 / 100 iterations, the paper's lr 0.003 (b1 0.9, b2 0.999) 12.2 / 8.4 / 4.7 /
    2.9 px: at the default 20 iterations the authors' setting is 4x closer, so it is the default.
    `temporal_weight`: the term is in (reference-bone lengths)^2 of joint acceleration; on a static synthetic
    hand with 3 px noise, 1e3 cut the joint acceleration by ~40% at the same reprojection error, 1e2 by ~20%,
    1e4 by ~50% but with 30% more reprojection error.
    The project's terms and weights (issue 14), measured with scripts/experiments/tailor_variants.py on 100
    hands of the synthetic mismatch set (scripts/make_mismatch_set.py: hands from published anthropometry,
    not from the model; MediaPipe-like keypoints, 15.2 px mean 2D error; hand module PA-MPJPE 9.76 mm,
    wrist-aligned MPJPE 18.63 mm), PA / MPJPE mm at 20 -> 100 iterations:
    the paper's tailor (`paper()`) 8.54 / 16.00 -> 8.94 / 16.15 (more iterations, worse 3D); the defaults
    (s* as a distance, size held, E_z 200, E_id 3 with the global rotation and the shape at 0.3 in absolute
    terms, lr 0.06 annealed to 0.2 lr) 8.36 / 15.77 -> 8.14 / 15.23. Each piece against the defaults (at
    lr 0.05, E_id 10: 8.33 / 15.76 -> 8.03 / 15.07): without E_z 8.41 / 15.83 -> 8.23 / 15.26; E_z ~10x
    stronger 8.60 / 16.34 -> 8.43 / 15.41; E_id 1 / 2 / 5: 8.38 / 8.37 / 8.35 -> 8.23 / 8.17 / 8.08 (E_id 3
    because it lets the fit follow 2D more closely: the ASL clip's median residual 3.40 -> 3.0 px); b1 / b2
    0.9 / 0.99 or 0.7 / 0.9 worse at 20 (8.53-8.81); a constant step (no annealing, the other terms on,
    earlier model) rose from 20 to 100 iterations, lr_final 0.1 or 0.5 left more residual. Soft joint limits,
    the DIP ~ 2/3 PIP coupling, the size term's removal (each -0.04..+0.01 mm PA), a Cauchy 2D loss (c = 20
    or 40 crop px: +0.00..+0.04, earlier model), an in-plane orientation solve before Adam (PA equal, MPJPE
    +0.26 at 20) and a 3x or 10x larger lateral root step (equal) gained nothing, so none but the size term
    (principled, free) is in. With ground-truth 2D (200 hands) the defaults take PA 9.12 -> 6.72 -> 6.17 mm
    from the hand module to 20 and 100 iterations (the paper's tailor on the old model: 9.87 -> 8.35 -> 8.44).
    `shape_step` (Eq. P5: Adam's step on beta 3x the pose's; only where beta is free, not in a capture, which
    holds one identity per track), measured with `python -m engine eval --both --iterations 10,20,50,100`,
    PA-MPJPE mm at 20 / 100 iterations, shape_step 1 -> 3: mismatch set (200) 8.46 / 8.17 -> 8.47 / 8.18
    (tailored 2D minus the keypoints' at 20: +0.60 -> +0.47 px; weak perspective 8.74 -> 8.62, +0.45 ->
    +0.21 px); ../shared/data/gt-sample real InterHand hands 16.32 / 15.17 -> 13.16 / 14.58 (2D +0.68 ->
    +0.22 px), rendered RHD hands 12.29 / 13.33 -> 11.43 / 12.92; with ground-truth 2D RHD 11.87 -> 10.80,
    InterHand 19.80 -> 15.70, mismatch 6.72 -> 6.75. 2 and 5 measured too: 5 better on InterHand, worse
    on the mismatch set (8.54 at 20).
    `lambda_id` 30 (the global rotation and the shape kept at 0.3 in absolute terms: relative 0.01), for single
    images; a capture's clip fit keeps 3 (`engine.tailor.clip.CLIP_IDENTITY`). Measured with shape_step 3, PA-MPJPE
    / MPJPE mm at 20 / 100 iterations, lambda_id 3 -> 30 (`eval --both --iterations 10,20,50,100`): 400 rendered
    images of a second hand mesh (MakeHuman's, scripts/make_second_hand.py, then scripts/render_synthetic_set.py
    --hand-model ... --count 400 --sides right; MediaPipe's own keypoints on 300 found hands: one person's hand in
    many poses, like real footage) 12.74 / 13.53 -> 12.45 / 12.21 mm PA (MPJPE 22.4 / 23.9 -> 21.6 / 21.1; tailored
    2D minus the keypoints' +0.02 -> +0.04 px at 20; weak perspective 12.59 / 13.03 -> 12.32 / 12.05; with
    ground-truth 2D 10.40 / 11.90 -> 10.23 / 10.37: more iterations no longer cost 3D); gt-sample RHD 11.43 / 12.92
    -> 11.18 / 12.22, InterHand (2 real hands) 13.16 / 14.58 -> 13.32 / 13.55 (2D +0.22 -> +0.56 px at 20); the
    numeric mismatch set 8.47 / 8.18 -> 8.46 / 8.33 (ground-truth 2D 6.75 / 6.21 -> 6.94 / 6.72). lambda_id 100:
    12.14 / 11.93 on the rendered set, but from 100 up the mismatch set lost (shape_step 1: 8.50 / 8.66). Caveat: on
    renders MediaPipe puts the fingertips 0.5-0.8 of the distal segment short of the tip (MakeHuman's, the open
    hand's and RHD's), on InterHand's photos not (-0.15..+0.11): part of the rendered sets' gain may be resisting
    that artifact.
    `rotation_smoothing` (rad^2 of rotation acceleration) and `hold_depth` (the given distance kept): a clip's
    fit (`engine.tailor.clip`, where their capture values were measured). `redistance` (Eq. P6): measured in
    `engine.tailor.scale.redistance`; it picks one of two executables (`redistances`), and every other field is
    traced (`transform.Settings`): changing one never recompiles.
    """

    iterations: int = 20
    lr: float = 0.06  # paper text: 0.003 (with b1 = 0.9, b2 = 0.999); authors' code: 0.03, b1 = b2 = 0.5
    b1: float = 0.5
    b2: float = 0.5
    lambda_j: float = 1.0
    lambda_g: float = 100.0
    lambda_id: float = 30.0  # paper: 0.1; a capture's clip fit: 3 (`CLIP_IDENTITY`)
    temporal_weight: float = 0.0  # > 0: joint-acceleration term over consecutive frames (couples the batch)
    rotation_smoothing: float = 0.0  # > 0: rotation-acceleration term over consecutive frames (couples the batch)
    camera_model: str = "perspective"  # or "weak_perspective"
    fit_root_xy: bool = True  # optimize the wrist's lateral position at fixed depth (transform's docstring)
    identity_global: float = 0.01  # E_id's weight on the global rotation, relative (Eq. 11; paper 1)
    identity_beta: float = 0.01  # E_id's weight on the shape, relative (Eq. 11; paper 1)
    lambda_z: float = 200.0  # E_z, the fingers' depth prior (Eq. P1; paper: none)
    lambda_size: float = 1000.0  # E_size, the hand's size held (Eq. P2; paper: none)
    lr_final: float = 0.2  # Adam's last step as a fraction of lr (Eq. P4; 1: constant, the paper's)
    scale_as_distance: bool = True  # s* moves the wrist along its ray (Eq. P3) instead of scaling the hand
    hold_depth: bool = False  # keep the given depth (root0's z; weak perspective: projection_scale0)
    shape_step: float = 3.0  # Adam's step on beta as a multiple of lr (Eq. P5; 1: the paper's one step for all)
    redistance: bool = True  # the distance re-solved between Adam steps (Eq. P6; perspective, independent frames)

    @classmethod
    def paper(cls, **kw) -> "TailorConfig":
        """The paper's tailor (authors' Adam, Eq. 13's weights 1, 100, 0.1, s* as a scale, constant step, no
        project terms), for comparisons."""
        base = dict(lr=0.03, lambda_id=0.1, identity_global=1.0, identity_beta=1.0, lambda_z=0.0, lambda_size=0.0,
                    lr_final=1.0, scale_as_distance=False, shape_step=1.0, redistance=False)
        return cls(**{**base, **kw})

    def settings(self) -> Settings:
        """The traced settings (numpy scalars of the dtypes the jitted core takes)."""
        f, b = np.float32, np.bool_
        return Settings(lr=f(self.lr), b1=f(self.b1), b2=f(self.b2), lambda_j=f(self.lambda_j),
                        lambda_g=f(self.lambda_g), lambda_id=f(self.lambda_id), temporal_weight=f(self.temporal_weight),
                        rotation_weight=f(self.rotation_smoothing), iterations=np.int32(self.iterations),
                        weak_perspective=b(self.camera_model == "weak_perspective"), fit_root_xy=b(self.fit_root_xy),
                        identity_global=f(self.identity_global), identity_beta=f(self.identity_beta),
                        lambda_z=f(self.lambda_z), lambda_size=f(self.lambda_size), lr_final=f(self.lr_final),
                        scale_as_distance=b(self.scale_as_distance), hold_depth=b(self.hold_depth),
                        shape_step=f(self.shape_step))

    def redistances(self) -> bool:
        """Whether the fit needs Eq. P6 compiled in: frames fitted independently under perspective (a clip's
        temporal terms and weak perspective never use it; its executable stays without)."""
        independent = float(self.temporal_weight) <= 0 and float(self.rotation_smoothing) <= 0
        return bool(self.redistance) and independent and self.camera_model == "perspective"


# ------------------------------------------------------------------------------------------- caches


_PARAMS = LruCache(4)  # model content -> (full JaxHandParams, the tailor's slim copy)
_SETTINGS = LruCache(64)  # (K, config) -> (K, Settings) on the device


def _model_key(model: HandModel) -> tuple:
    """The model's content: its file's sha256 (+ side and loader fixes); a digest of the arrays when the
    model was built in memory (no file)."""
    if model.sha256:
        return (model.sha256, model.side, tuple(model.fixes))
    h = hashlib.sha256()
    for a in (model.v_template, model.J_regressor, model.weights, model.shapedirs, model.posedirs,
              model.tip_vertex_ids, model.parents):
        h.update(np.ascontiguousarray(a).tobytes())
    return ("arrays", h.hexdigest(), model.side)


def _params(model: HandModel) -> tuple[jax_layer.JaxHandParams, jax_layer.JaxHandParams]:
    def make():
        full = jax_layer.prepare(model, dtype=jnp.float32)
        # the tailor needs `keypoints` only: the full-mesh arrays stay out of its calls (fewer arguments)
        return full, full._replace(v_template=None, shapedirs=None, posedirs=None, weights=None)

    return _PARAMS.get(_model_key(model), make)


def model_params(model: HandModel) -> jax_layer.JaxHandParams:
    """`jax_layer.prepare(model)` in float32, cached by the model's content (a capture calls `fit` per window)."""
    return _params(model)[0]


def _device_settings(K: np.ndarray, config: TailorConfig) -> tuple[jax.Array, Settings]:
    K32 = np.asarray(K, np.float32)
    return _SETTINGS.get((K32.tobytes(), tuple(config)), lambda: jax.device_put((K32, config.settings())))


# --------------------------------------------------------------------------------------- the jitted call

_FRAME_FLOATS = (("theta0", (16, 4)), ("beta0", (10,)), ("root0", (3,)), ("hand_scale0", ()),
                 ("projection_scale0", ()), ("keypoints_2d", (21, 2)), ("confidence", (21,)),
                 ("delta_pose_start", (16, 3)))
_FRAME_BOOLS = (("valid", ()), ("lock_theta", (16,)), ("lock_beta", ()), ("lock_root", ()), ("lock_hand_scale", ()))
_OUT_ARRAYS = (("theta", (16, 4)), ("beta", (10,)), ("root", (3,)), ("hand_scale", ()), ("projection_scale", ()),
               ("joints_3d", (21, 3)), ("fitted", ()))
_OUT_ENERGIES = ("E_J", "E_g", "E_id", "E_z", "E_size", "E", "E_J_init", "E_g_init", "reprojection_px",
                 "reprojection_px_init", "E_t")


def _layout(fields):
    """(((name, shape, start, stop), ...), width): fields side by side in the last axis of a (B, width) array."""
    out, at = [], 0
    for name, shape in fields:
        n = int(np.prod(shape, dtype=np.int64))
        out.append((name, shape, at, at + n))
        at += n
    return tuple(out), at


_FLOAT_LAYOUT, _FLOAT_WIDTH = _layout(_FRAME_FLOATS)
_BOOL_LAYOUT, _BOOL_WIDTH = _layout(_FRAME_BOOLS)
_OUT_LAYOUT, _OUT_WIDTH = _layout(_OUT_ARRAYS + tuple((n, ()) for n in _OUT_ENERGIES))


def _pack(inputs: dict, layout, width, dtype) -> np.ndarray:
    b = inputs["theta0"].shape[0]
    out = np.empty((b, width), dtype)
    for name, _, start, stop in layout:
        out[:, start:stop] = np.asarray(inputs[name]).reshape(b, stop - start)
    return out


def _solve_packed(hand, floats, bools, K, settings: Settings, with_redistance: bool = False):
    """`transform.solve` on packed frames: floats (B, _FLOAT_WIDTH), bools (B, _BOOL_WIDTH) -> (B, _OUT_WIDTH)."""
    B = floats.shape[0]
    cols = {name: floats[:, a:b].reshape((B,) + shape) for name, shape, a, b in _FLOAT_LAYOUT}
    cols.update({name: bools[:, a:b].reshape((B,) + shape) for name, shape, a, b in _BOOL_LAYOUT})
    out = transform.solve(hand, Frames(**cols), K, settings, with_redistance)
    flat = dict(out, **out["energies"])
    packed = []
    for name, _, a, b in _OUT_LAYOUT:
        v = flat[name].astype(floats.dtype)
        packed.append((jnp.broadcast_to(v, (B,)) if v.ndim == 0 else v).reshape(B, b - a))
    return jnp.concatenate(packed, axis=-1)


# One compiled executable per batch size B (`fit` pads B up to a bucket): every setting is traced, but for Eq.
# P6, compiled only into the independent frames' fit (`TailorConfig.redistances`: it made the loop's compile 2-6
# s longer, which a capture's clip would pay for nothing). `fit` calls them through their lowerings kept on disk
# (`executables.Exported`: no tracing on a run's first call).
_solve_jit = jax.jit(_solve_packed)
_solve_exported = Exported(_solve_packed, "tailor-solve")
_solve_exported_p6 = Exported(functools.partial(_solve_packed, with_redistance=True), "tailor-solve_p6")


def _unpack_outputs(packed: np.ndarray) -> dict:
    """(B, _OUT_WIDTH) -> solve's dict of numpy arrays (contiguous copies)."""
    b = packed.shape[0]
    out, energies = {}, {}
    for name, shape, start, stop in _OUT_LAYOUT:
        v = np.ascontiguousarray(packed[:, start:stop]).reshape((b,) + shape)
        if name == "fitted":
            out[name] = v != 0
        elif name == "E_t":
            energies[name] = v[0] if b else np.zeros((), packed.dtype)
        elif name in _OUT_ENERGIES:
            energies[name] = v
        else:
            out[name] = v
    out["energies"] = energies
    return out


def bucket_size(b: int) -> int:
    """The padded batch size for b frames: 1, 2, 4, ..., 256, then multiples of 256 (few compilations)."""
    if b <= 256:
        return 1 << max(0, (int(b) - 1).bit_length())
    return -(-int(b) // 256) * 256


def _pad(inputs: dict, size: int) -> dict:
    """Pads every (B, ...) input to `size` frames with invalid, harmless frames (K is shared, not padded)."""
    b = inputs["theta0"].shape[0]
    if size == b:
        return inputs
    out = {"K": inputs["K"]}
    for name, arr in inputs.items():
        if name == "K":
            continue
        fill = np.zeros((size - b,) + arr.shape[1:], arr.dtype)
        if name == "theta0":
            fill[..., 0] = 1.0
        elif name == "root0":
            fill[..., 2] = 1.0
        elif name == "hand_scale0":
            fill += 1.0
        out[name] = np.concatenate([np.asarray(arr), fill], axis=0)
    return out


def loop_is_one_kernel(params: jax_layer.JaxHandParams, frames: int) -> bool:
    """Whether XLA compiles the Adam loop for `frames` frames (padded to their bucket) into one kernel
    rather than one thunk per op and step (`engine.SMALL_LOOP_KERNEL_BYTES`). Compiles once to find out."""
    b = bucket_size(frames)
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    slim = params._replace(v_template=None, shapedirs=None, posedirs=None, weights=None)
    settings = jax.tree_util.tree_map(lambda x: spec(np.shape(x), np.asarray(x).dtype), TailorConfig().settings())
    lowered = _solve_jit.lower(slim, spec((b, _FLOAT_WIDTH), np.float32), spec((b, _BOOL_WIDTH), np.bool_),
                               spec((3, 3), np.float32), settings)
    # the hoisting pass marks the call it makes of the loop with this attribute
    return "xla_cpu_small_call" in lowered.compile().as_text()


def _run(model: HandModel, inputs: dict, config: TailorConfig, min_batch: int = 1) -> dict:
    """The jitted core on prepared inputs (padded to the bucket of >= min_batch frames): solve's numpy dict."""
    b = inputs["theta0"].shape[0]
    padded = _pad(inputs, bucket_size(max(b, int(min_batch))))
    floats = _pack(padded, _FLOAT_LAYOUT, _FLOAT_WIDTH, np.float32)
    bools = _pack(padded, _BOOL_LAYOUT, _BOOL_WIDTH, np.bool_)
    K, settings = _device_settings(inputs["K"], config)
    solve = _solve_exported_p6 if config.redistances() else _solve_exported
    return _unpack_outputs(np.asarray(solve(_params(model)[1], floats, bools, K, settings))[:b])


def _run_eager(model: HandModel, inputs: dict, config: TailorConfig) -> dict:
    """The same math not jitted, one frame at a time (the whole batch with the temporal term, which couples
    the frames): every op dispatched eagerly."""
    hand = _params(model)[1]
    settings = jax.tree_util.tree_map(jnp.asarray, config.settings())
    names = [n for n, _ in _FRAME_FLOATS + _FRAME_BOOLS]
    b = inputs["theta0"].shape[0]
    pieces = [slice(0, b)] if float(config.temporal_weight) > 0 or float(config.rotation_smoothing) > 0 else [slice(i, i + 1) for i in range(b)]
    with jax.disable_jit():
        outs = [transform.solve(hand, Frames(**{n: jnp.asarray(inputs[n][sl]) for n in names}),
                                jnp.asarray(inputs["K"]), settings, config.redistances()) for sl in pieces]
    outs = jax.device_get(outs)
    if len(outs) == 1:
        return outs[0]
    out = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0) if np.ndim(xs[0]) else xs[0], *outs)
    out["energies"]["E_t"] = np.zeros((), np.float32)  # frames fitted apart: no temporal coupling
    return out


# ------------------------------------------------------------------------------------------------ fit


def _check(name, arr, shape):
    arr = np.asarray(arr)
    if arr.shape != shape:
        raise InputError(f"tailor: {name} must have shape ({', '.join(str(s) for s in shape)}), got {arr.shape}")
    return arr


def _prepare(theta0, beta0, root0, keypoints_2d, confidence, valid, K, locks, hand_scale0, projection_scale0,
             config: TailorConfig, image_size, focal_px, theta_start=None):
    """Validates and converts `fit`'s arguments: (inputs of float32/bool arrays, K used (3,3), originals, locks)."""
    if config.camera_model not in CAMERA_MODELS:
        raise InputError(f"tailor: camera_model must be one of {CAMERA_MODELS}, got {config.camera_model!r}")
    if int(config.iterations) < 0:
        raise InputError(f"tailor: iterations must be >= 0, got {config.iterations}")
    if not all(math.isfinite(float(v)) for v in (config.lr, config.b1, config.b2)):
        raise InputError("tailor: lr, b1 and b2 must be finite numbers")
    if not (math.isfinite(float(config.lr_final)) and float(config.lr_final) > 0):
        raise InputError(f"tailor: lr_final must be a positive fraction of lr, got {config.lr_final}")
    if not (math.isfinite(float(config.shape_step)) and float(config.shape_step) >= 0):
        raise InputError(f"tailor: shape_step must be a multiple of lr >= 0, got {config.shape_step}")
    theta0 = np.asarray(theta0)
    if theta0.ndim != 3 or theta0.shape[1:] != (16, 4):
        raise InputError(f"tailor: theta0 must have shape (B, 16, 4) quaternions (w, x, y, z), got {theta0.shape}")
    B = theta0.shape[0]
    beta0 = _check("beta0", beta0, (B, 10))
    root0 = _check("root0", root0, (B, 3))
    keypoints_2d = _check("keypoints_2d", keypoints_2d, (B, 21, 2))
    confidence = _check("confidence", np.ones((B, 21)) if confidence is None else confidence, (B, 21))
    valid = _check("valid", np.ones(B, bool) if valid is None else valid, (B,)).astype(bool)
    hand_scale0 = _check("hand_scale0", np.ones(B) if hand_scale0 is None else hand_scale0, (B,))
    ps0 = _check("projection_scale0", np.full(B, np.nan) if projection_scale0 is None else projection_scale0, (B,))
    if K is None:
        if config.camera_model == "perspective":
            raise InputError("tailor: the perspective camera model needs intrinsics K; use weak_perspective without")
        if image_size is None:
            raise InputError("tailor: weak perspective needs the image size (for the nominal camera) or a nominal K "
                             "(engine.camera.nominal_K(image_size))")
        K = nominal_K(image_size, focal_px)
    K = _check("K", K, (3, 3)).astype(np.float64)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"tailor: K must be finite with positive focal lengths, got {K.tolist()}")
    locks = dict(locks or {})
    unknown = set(locks) - {"lock_theta", "lock_beta", "lock_root", "lock_hand_scale"}
    if unknown:
        raise InputError(f"tailor: unknown lock names {sorted(unknown)}")
    lk = {name: _check(name, locks.get(name, np.zeros(shape, bool)), shape)
          for name, shape in (("lock_theta", (B, 16)), ("lock_beta", (B,)), ("lock_root", (B,)), ("lock_hand_scale", (B,)))}
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731  (numpy: jit transfers them in one go)
    start = (np.zeros((B, 16, 3)) if theta_start is None
             else start_delta(theta0, _check("theta_start", theta_start, (B, 16, 4))))
    inputs = dict(theta0=f32(theta0), delta_pose_start=f32(start), beta0=f32(beta0), root0=f32(root0),
                  hand_scale0=f32(hand_scale0), projection_scale0=f32(ps0), keypoints_2d=f32(keypoints_2d), confidence=f32(confidence),
                  valid=valid, K=f32(K), **{k: np.asarray(v, bool) for k, v in lk.items()})
    originals = dict(theta=theta0, beta=beta0, root=root0, hand_scale=hand_scale0, projection_scale=ps0)
    return inputs, K, originals, lk


def start_delta(theta0, theta_start) -> np.ndarray:
    """The tailor's pose parameter at theta_start: delta with exp(delta) R(theta0) = R(theta_start), in the
    parent's axes (`transform`'s module docstring). (B, 16, 4), (B, 16, 4) quaternions (any norm, either
    sign) -> (B, 16, 3) radians; 0 where either is not finite (that joint starts at theta0) and where they are
    equal (exactly: the product's rounding would leave ~1e-17)."""
    unit = lambda q: q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-300)  # noqa: E731
    q0 = np.asarray(theta0, np.float64)
    qs = np.asarray(theta_start, np.float64)
    ok = np.all(np.isfinite(q0), axis=-1) & np.all(np.isfinite(qs), axis=-1) & (np.abs(q0).sum(-1) > 0)
    ok &= (np.abs(qs).sum(-1) > 0) & ~np.all(q0 == qs, axis=-1)
    ident = np.array([1.0, 0.0, 0.0, 0.0])
    q0 = unit(np.where(ok[..., None], q0, ident))
    qs = unit(np.where(ok[..., None], qs, ident))
    return np.where(ok[..., None], quat_log(quat_multiply(qs, quat_conjugate(q0))), 0.0)


def fit(model: HandModel, theta0, beta0, root0, keypoints_2d, confidence, valid, K, locks=None,
        config: TailorConfig = TailorConfig(), *, hand_scale0=None, projection_scale0=None, image_size=None,
        focal_px=None, jit: bool = True, theta_start=None, min_batch: int = 1) -> dict:
    """Tailors a batch of frames of one hand: analytic scale, then `config.iterations` Adam steps.

    Args:
      model: the hand model (`engine.hand_model.load_hand_model`).
      theta0: (B, 16, 4) initial local joint rotations, quaternions (w, x, y, z), MANO joint order.
      beta0: (B, 10) initial shape.
      root0: (B, 3) initial wrist position, camera frame, meters (perspective: its depth is kept; weak
        perspective: used only where `lock_root` holds).
      keypoints_2d: (B, K, 2) detected keypoints, image pixels (undistorted).
      confidence: (B, K) per-keypoint confidence, weights of E_J (None: all ones).
      valid: (B,) bool, frames to fit; the others pass through unchanged (None: all).
      K: (3, 3) intrinsics (perspective), or under weak perspective the nominal camera to finish under
        (None: `nominal_K(image_size, focal_px)`).
      locks: None or a dict with any of lock_theta (B, 16), lock_beta (B,), lock_root (B,),
        lock_hand_scale (B,) bools: locked values come back bit-identical.
      config: `TailorConfig` (camera_model, iterations, Adam settings, energy weights, temporal weight).
      hand_scale0: (B,) initial hand scale (None: 1); the value kept where lock_hand_scale holds.
      projection_scale0: (B,) weak-perspective s of the hand module (Eq. 15, px per meter; None or NaN:
        unknown). Weak perspective: when known, Eq. 17's s is split as hand_scale = s / projection_scale0
        (the hand module's size is compensated, like s* under perspective); when unknown, hand_scale
        stays hand_scale0 and projection_scale = s / hand_scale0.
      image_size: (width, height), needed under weak perspective when K is None. Under weak perspective a
        locked root stays where it is (its depth then need not be f / projection_scale).
      focal_px: nominal focal length for weak perspective (None: the image's long side).
      jit: False runs the same math eagerly, one frame at a time (the benchmark's reference).
      theta_start: None, or (B, 16, 4) quaternions where Adam starts (a warm start, e.g. an earlier pass's
        fit) while E_id still holds the pose near theta0; joints not finite there start at theta0.
      min_batch: the batch is padded (with invalid frames, which nothing couples) to the bucket of at least
        this many frames: callers whose batches vary in size (a clip's windows) then share one executable.
    Returns:
      dict with theta (B, 16, 4), beta (B, 10), root (B, 3), hand_scale (B,), projection_scale (B,) (NaN
      under perspective), joints_3d (B, K, 3) camera frame (the model posed by the returned values),
      K (3, 3) the camera used, fitted (B,) bool, energies: dict of (B,) float arrays (E_J, E_g, E_id, E and
      their initial values, reprojection_px; E_t () with the temporal term). numpy arrays; values keep
      the inputs' dtype where it is wider than float32 (locked entries are the inputs, bit for bit).
    """
    inputs, K_used, originals, lk = _prepare(theta0, beta0, root0, keypoints_2d, confidence, valid, K, locks,
                                             hand_scale0, projection_scale0, config, image_size, focal_px,
                                             theta_start)
    if inputs["theta0"].shape[0] == 0:
        out = _empty_outputs()
    else:
        out = _run(model, inputs, config, min_batch) if jit else _run_eager(model, inputs, config)
    return _finish(out, originals, lk, K_used, config)


def _empty_outputs() -> dict:
    """solve's outputs for B = 0 frames (nothing to fit, nothing to compile)."""
    z = lambda *shape: np.zeros((0,) + shape, np.float32)  # noqa: E731
    energies = {n: z() for n in _OUT_ENERGIES}
    energies["E_t"] = np.zeros((), np.float32)
    return dict(theta=z(16, 4), beta=z(10), root=z(3), hand_scale=z(), projection_scale=z(), joints_3d=z(21, 3),
                fitted=np.zeros(0, bool), energies=energies)


def _finish(out, originals, lk, K_used, config):
    """numpy outputs; kept entries copied from the caller's original arrays (exact in any dtype)."""
    fitted = np.asarray(out["fitted"])
    res = {}

    def merge(name, keep):
        orig = np.asarray(originals[name])
        new = np.asarray(out[name])
        dt = np.result_type(orig.dtype, np.float32) if orig.dtype.kind == "f" else np.float32
        if not keep.any():  # nothing kept (the common case): the fitted values as they are
            return new.astype(dt)
        return np.where(keep, orig.astype(dt, copy=False), new.astype(dt))

    res["theta"] = merge("theta", (lk["lock_theta"].astype(bool) | ~fitted[:, None])[..., None])
    res["beta"] = merge("beta", (lk["lock_beta"].astype(bool) | ~fitted)[:, None])
    res["root"] = merge("root", (lk["lock_root"].astype(bool) | ~fitted)[:, None])
    res["hand_scale"] = merge("hand_scale", lk["lock_hand_scale"].astype(bool) | ~fitted)
    if config.camera_model == "weak_perspective":
        res["projection_scale"] = merge("projection_scale", ~fitted)
    else:
        res["projection_scale"] = np.full(fitted.shape, np.nan, np.float32)
    res["joints_3d"] = np.asarray(out["joints_3d"])
    res["K"] = np.asarray(K_used)
    res["fitted"] = fitted
    res["energies"] = {k: np.asarray(v) for k, v in out["energies"].items()}
    return res
