"""The tailor's two-step fit (paper Sec. 3.4-3.5): analytic hand scale, then Adam, jitted and batched.

Parameters and their handling (decided here, once):

* Pose: optimized internally as an axis-angle *change* per joint, R_j = exp(delta_j) R0_j (delta in the
  parent's axes; for the root joint in the camera axes), starting at delta = 0. The identity term's
  ||theta - theta'||^2 (Eq. 11) is then ||delta||^2 in radians^2, the geodesic distance to the
  initialization, free of the axis-angle wrap at pi. In and out: quaternions (w, x, y, z).
* Shape beta: optimized directly (units of the model's shape space).
* Hand scale s*: solved analytically first (Eq. 12 under perspective, Eq. 17 under weak perspective) and
  held fixed during Adam (the paper's two-step scheme). Returned as `hand_scale`, about the wrist.
* Root translation: the depth is never optimized (from 2D keypoints, depth and hand_scale are one and the
  same unknown, which s* already resolves: moving the root in depth would fight s*, as the paper's
  "scale is a global constraint" warns). The authors' code keeps the whole root fixed; we also optimize its
  lateral (x, y) position at that depth (`fit_root_xy`, default on), in units of 0.1 reference bone
  (`ROOT_STEP`): the hand module places the wrist on its own detected 2D keypoint, which is as noisy as
  any other, and the weak-perspective placement (t = that keypoint) inherits the same error. Measured on
  the synthetic set (64 frames, 1-3 px noise): neutral under perspective (2D error to the true keypoints
  2.50 vs 2.51 px, PA-MPJPE 4.03 vs 4.14 mm), better under weak perspective (2.32 vs 3.04 px residual).
  With a step of one whole bone it was worse (Adam's fixed-size steps made the wrist jitter by ~3 px).
* Batches: the frames' energies are independent (without the temporal term) and Adam is elementwise, so
  one Adam over the stacked (B, ...) parameters of sum_b E_b is exactly B independent per-frame Adams
  (what `vmap` of the per-frame loop computes) in one jitted `lax.fori_loop`. With the temporal term
  (`temporal_weight > 0`) the frames of a batch are coupled and optimized jointly, in the same loop.
  For 1-4 frames XLA compiles that loop into a single kernel (`engine.SMALL_LOOP_KERNEL_BYTES`,
  `loop_is_one_kernel`); larger batches run it op by op, where each op is big enough to pay for itself.
* Locks (DESIGN.md EDITS): locked entries get zero gradients (Adam then never moves them) and are written
  back from the original inputs with `where` at the end: bit-identical. Invalid frames pass through.
* Weak perspective (Sec. 3.5, no K): Eq. 17 gives s (px per meter) with t = the detected wrist; the hand
  is then placed under a nominal pinhole camera (`engine.camera.nominal_K`: focal = the image's long side
  unless given, principal point at the centre) at depth f / projection_scale, and the Adam iterations
  finish the fit under that camera (DESIGN.md), so project_perspective(joints_3d, K) lands on the fitted
  2D positions. At that depth the pinhole E_J equals Eq. 16's to first order in the hand's depth extent;
  Eq. 16's E_J itself (`energies.joint_energy_weak_perspective`) is what Eq. 17 minimizes in closed form.
  Without `projection_scale0` the hand keeps hand_scale0 (the model's size) and all of Eq. 17's s goes to
  projection_scale; with it, hand_scale = s / projection_scale0 compensates the hand module's size.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from engine.camera import backproject_perspective, nominal_K, project_perspective
from engine.errors import InputError
from engine.hand_model import REFERENCE_BONE, HandModel
from engine.hand_model import jax_layer
from engine.tailor import energies as E
from engine.tailor.scale import S_MAX, S_MIN, perspective_scale, weak_perspective_scale

log = logging.getLogger(__name__)

__all__ = ["TailorConfig", "fit", "fit_arrays", "model_params", "CAMERA_MODELS"]

CAMERA_MODELS = ("perspective", "weak_perspective")
ROOT_STEP = 0.1  # units of the lateral root parameter, in reference-bone lengths (Adam moves ~lr per step)


class TailorConfig(NamedTuple):
    """Settings of one fit. Defaults: the authors' released optimizer and the paper's weights.

    Adam: measured with `python -m engine bench tailor` (256 synthetic frames, 1-3 px noise, 10-20 degree
    pose noise; median residual 2D error, initial 17.1 px): lr 0.03, b1 = b2 = 0.5 reaches 3.0 / 2.1 / 1.9 /
    1.7 px after 10 / 20 / 50 / 100 iterations, the paper's lr 0.003 (b1 0.9, b2 0.999) 12.2 / 8.4 / 4.7 /
    2.9 px: at the default 20 iterations the authors' setting is 4x closer, so it is the default.
    `temporal_weight`: the term is in (reference-bone lengths)^2 of joint acceleration; on a static synthetic
    hand with 3 px noise, 1e3 cut the joint acceleration by ~40% at the same reprojection error, 1e2 by ~20%,
    1e4 by ~50% but with 30% more reprojection error. Weights, lr, b1, b2,
    iterations and the camera model are traced: changing them never recompiles.
    """

    iterations: int = 20
    lr: float = 0.03  # paper text: 0.003 (with b1 = 0.9, b2 = 0.999); authors' code: 0.03, b1 = b2 = 0.5
    b1: float = 0.5
    b2: float = 0.5
    lambda_j: float = 1.0
    lambda_g: float = 100.0
    lambda_id: float = 0.1
    temporal_weight: float = 0.0  # > 0: joint-acceleration term over consecutive frames (couples the batch)
    camera_model: str = "perspective"  # or "weak_perspective"
    fit_root_xy: bool = True  # optimize the wrist's lateral position at fixed depth (see module docstring)


PAPER_ADAM = dict(lr=0.003, b1=0.9, b2=0.999)
AUTHORS_ADAM = dict(lr=0.03, b1=0.5, b2=0.5)


class _Hyper(NamedTuple):
    """Traced (non-static) settings: changing them does not recompile."""

    lr: jax.Array
    b1: jax.Array
    b2: jax.Array
    lambda_j: jax.Array
    lambda_g: jax.Array
    lambda_id: jax.Array
    temporal_weight: jax.Array


class _Params(NamedTuple):
    delta_pose: jax.Array  # (B, 16, 3) axis-angle change of each local rotation, radians
    beta: jax.Array  # (B, 10)
    delta_root: jax.Array  # (B, 2) lateral wrist shift, in reference-bone lengths


def _hyper(config: TailorConfig) -> _Hyper:
    f = np.float32  # numpy scalars: passed to the jitted core without a device round trip each
    return _Hyper(
        f(config.lr), f(config.b1), f(config.b2), f(config.lambda_j), f(config.lambda_g), f(config.lambda_id),
        f(config.temporal_weight),
    )


def _frame_terms(hp, R0, params: _Params, root_start, bone_m, hs, beta0, K, kp, conf, crop):
    """Per-frame energies and posed joints for the current parameters.

    Returns (E_J (B,), E_g (B,), E_id (B,), joints (B, K, 3) camera frame, root (B, 3)).
    """
    R = jax_layer.matmul3(jax_layer.axis_angle_to_rotmat(params.delta_pose), R0)  # elementwise: fuses
    rel = jax_layer.keypoints(hp, R, params.beta, None, None)  # (B, K, 3) wrist-relative, hand_scale 1
    shift = params.delta_root * bone_m[:, None]
    root = root_start + jnp.concatenate([shift, jnp.zeros_like(shift[:, :1])], axis=-1)
    joints = root[:, None, :] + hs[:, None, None] * rel
    e_j = E.joint_energy_perspective(joints, K, kp, conf, crop)
    e_g = E.twist_energy(rel)
    e_id = E.identity_energy(params.delta_pose, params.beta, beta0)
    return e_j, e_g, e_id, joints, root


def _axis_angle_to_quat(v):
    """(..., 3) axis-angle -> (..., 4) unit quaternions (w, x, y, z), finite with finite gradients at 0."""
    th2 = jnp.sum(v * v, axis=-1, keepdims=True)
    small = th2 < 1e-12
    th = jnp.sqrt(jnp.where(small, 1.0, th2))
    w = jnp.where(small, 1.0 - th2 / 8.0, jnp.cos(0.5 * th))
    k = jnp.where(small, 0.5 - th2 / 48.0, jnp.sin(0.5 * th) / th)
    return jnp.concatenate([w, k * v], axis=-1)


def _reprojection_px(joints, K, kp, conf):
    """(B,) confidence-weighted mean 2D distance in image pixels (0 where no confidence)."""
    uv = project_perspective(
        jnp.concatenate([joints[..., :2], jnp.maximum(joints[..., 2:], 1e-3)], axis=-1), K
    )
    d = jnp.sqrt(jnp.sum((uv - kp) ** 2, axis=-1) + 1e-20)
    return jnp.sum(conf * d, axis=-1) / jnp.maximum(jnp.sum(conf, axis=-1), 1e-12)


def _fit_impl(
    hp,
    theta0,
    beta0,
    root0,
    hand_scale0,
    projection_scale0,
    keypoints_2d,
    confidence,
    valid,
    K,
    lock_theta,
    lock_beta,
    lock_root,
    lock_hand_scale,
    hyper: _Hyper,
    iterations,
    weak,
    fit_root_xy,
):
    """The whole fit for a batch, as one traceable function (jitted packed by `_fit_packed_jit`; run eagerly it is the
    non-jitted reference). Shapes: theta0 (B,16,4), beta0 (B,10), root0 (B,3), hand_scale0 (B,),
    projection_scale0 (B,) (NaN: unknown), keypoints_2d (B,K,2), confidence (B,K), valid (B,), K (3,3),
    lock_theta (B,16), lock_beta/lock_root/lock_hand_scale (B,); iterations () int, weak () bool,
    fit_root_xy () bool. Every setting is traced: one compilation per batch size B. Returns a dict."""
    dtype = keypoints_2d.dtype
    B = theta0.shape[0]

    # -- sanitize: invalid frames and non-finite inputs never reach the math (outputs pass them through)
    ok_in = (
        jnp.all(jnp.isfinite(theta0), axis=(-2, -1))
        & jnp.all(jnp.isfinite(beta0), axis=-1)
        & jnp.all(jnp.isfinite(hand_scale0[:, None]), axis=-1)
        & (hand_scale0 > 0)
    )
    ok_root = jnp.all(jnp.isfinite(root0), axis=-1) & (root0[:, 2] > 1e-3)
    ok_in = ok_in & (ok_root | weak)
    run = valid & ok_in  # frames actually fitted
    kp_ok = jnp.all(jnp.isfinite(keypoints_2d), axis=-1)
    conf = jnp.where(kp_ok & jnp.isfinite(confidence), jnp.clip(confidence, 0.0, None), 0.0)
    conf = jnp.where(run[:, None], conf, 0.0)
    kp = jnp.where(kp_ok[..., None], keypoints_2d, 0.0)
    ident = jnp.zeros_like(theta0).at[..., 0].set(1.0)
    th0 = jnp.where(run[:, None, None], theta0, ident)
    b0 = jnp.where(run[:, None], beta0, 0.0)
    r_default = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0], dtype), root0.shape)
    r0 = jnp.where((run & ok_root)[:, None], root0, r_default)
    hs0 = jnp.where(run, hand_scale0, 1.0)

    R0 = jax_layer.quat_to_rotmat(th0)  # (B, 16, 3, 3), normalizes
    rel0 = jax_layer.keypoints(hp, R0, b0, None, None)  # (B, K, 3)
    crop = E.crop_scale(kp, conf)

    # -- step 1: analytic scale (both camera models computed, `weak` selects: one compilation for both)
    # weak perspective, Eq. 17: t = the detected wrist (else the keypoints' weighted centroid)
    wrist_seen = conf[:, 0] > 0
    centroid = jnp.sum(conf[..., None] * kp, axis=1) / jnp.maximum(jnp.sum(conf, axis=1), 1e-12)[:, None]
    t = jnp.where(wrist_seen[:, None], kp[:, 0], centroid)
    f = K[0, 0]
    ps_known = jnp.isfinite(projection_scale0) & (projection_scale0 > 0)
    ps0 = jnp.where(ps_known, projection_scale0, 1.0)
    fallback = jnp.where(ps_known, ps0 * hs0, f / r0[:, 2] * hs0)
    s_tot = weak_perspective_scale(rel0, t, kp, conf, fallback)  # px per model meter
    hs_w = jnp.where(ps_known, s_tot / ps0, hs0)
    hs_w = jnp.where(lock_hand_scale, hs0, jnp.clip(hs_w, S_MIN, S_MAX))
    ps_w = s_tot / hs_w
    root_w = backproject_perspective(t, f / ps_w, K)  # the nominal camera, depth f / s
    root_w = jnp.where(lock_root[:, None], r0, root_w)
    # perspective, Eq. 12 (+ Gauss-Newton on Eq. 8)
    s_star = perspective_scale(rel0, r0, K, kp, conf, hs0)
    hs_p = jnp.where(lock_hand_scale, hs0, s_star)

    hs = jnp.where(weak, hs_w, hs_p)
    ps = jnp.where(weak, ps_w, jnp.nan)
    root_start = jnp.where(weak, root_w, r0)

    a, b = REFERENCE_BONE
    bone_m = ROOT_STEP * hs * jnp.sqrt(jnp.sum((rel0[:, b] - rel0[:, a]) ** 2, axis=-1) + 1e-12)

    # -- step 2: Adam on E = lambda_J E_J + lambda_g E_g + lambda_id E_id (+ temporal)
    runf = run.astype(dtype)
    g_pose = (runf[:, None] * (1.0 - lock_theta.astype(dtype)))[..., None]  # (B, 16, 1)
    g_beta = (runf * (1.0 - lock_beta.astype(dtype)))[:, None]
    g_root = (runf * (1.0 - lock_root.astype(dtype)))[:, None] * fit_root_xy.astype(dtype)
    gmask = _Params(g_pose, g_beta, g_root)

    def loss(p: _Params):
        e_j, e_g, e_id, joints, _ = _frame_terms(hp, R0, p, root_start, bone_m, hs, b0, K, kp, conf, crop)
        e = E.total_energy(e_j, e_g, e_id, hyper.lambda_j, hyper.lambda_g, hyper.lambda_id)
        return jnp.sum(runf * e) + hyper.temporal_weight * E.temporal_energy(joints, run)

    opt = optax.adam(hyper.lr, b1=hyper.b1, b2=hyper.b2)
    p0 = _Params(jnp.zeros((B, 16, 3), dtype), b0, jnp.zeros((B, 2), dtype))
    state0 = opt.init(p0)
    grad_fn = jax.grad(loss)

    def step(_, carry):
        p, state = carry
        g = grad_fn(p)
        g = jax.tree_util.tree_map(lambda gi, m: jnp.where(m > 0, gi * m, 0.0), g, gmask)
        upd, state = opt.update(g, state, p)
        return optax.apply_updates(p, upd), state

    p_fin, _ = jax.lax.fori_loop(0, iterations, step, (p0, state0))

    # -- outputs: fitted values, then the originals written back where locked or not fitted
    joints_init = root_start[:, None, :] + hs[:, None, None] * rel0
    # q(delta) * q0: the same rotation as exp(delta) R0; w(q(delta)) = cos(|delta| / 2) > 0 keeps the sign
    # of the input quaternion (continuity along a clip), and no matrix -> quaternion round trip is needed
    q0n = th0 * jax.lax.rsqrt(jnp.maximum(jnp.sum(th0 * th0, axis=-1, keepdims=True), 1e-30))
    q_fit = jax_layer.quat_multiply(_axis_angle_to_quat(p_fin.delta_pose), q0n)
    q_fit = q_fit * jax.lax.rsqrt(jnp.sum(q_fit * q_fit, axis=-1, keepdims=True))
    shift = p_fin.delta_root * bone_m[:, None]
    root_fit = root_start + jnp.concatenate([shift, jnp.zeros_like(shift[:, :1])], axis=-1)

    keep_theta = lock_theta | ~run[:, None]
    theta = jnp.where(keep_theta[..., None], theta0, q_fit)
    beta = jnp.where((lock_beta | ~run)[:, None], beta0, p_fin.beta)
    root = jnp.where((lock_root | ~run)[:, None], root0, root_fit)
    hand_scale = jnp.where(lock_hand_scale | ~run, hand_scale0, hs)
    projection_scale = jnp.where(run | ~weak, ps, projection_scale0)
    R_out = jax_layer.quat_to_rotmat(theta)
    joints_3d = jax_layer.keypoints(hp, R_out, beta, root, hand_scale)
    # final energies from the returned joints (E_g is scale and translation invariant)
    e_j = E.joint_energy_perspective(joints_3d, K, kp, conf, crop)
    e_g = E.twist_energy(joints_3d)
    e_id = E.identity_energy(p_fin.delta_pose, p_fin.beta, b0)
    e_tot = E.total_energy(e_j, e_g, e_id, hyper.lambda_j, hyper.lambda_g, hyper.lambda_id)
    nan = jnp.full((B,), jnp.nan, dtype)
    energies = {
        "E_J": jnp.where(run, e_j, nan),
        "E_g": jnp.where(run, e_g, nan),
        "E_id": jnp.where(run, e_id, nan),
        "E": jnp.where(run, e_tot, nan),
        "E_J_init": jnp.where(run, E.joint_energy_perspective(joints_init, K, kp, conf, crop), nan),
        "E_g_init": jnp.where(run, E.twist_energy(rel0), nan),
        "reprojection_px": jnp.where(run, _reprojection_px(joints_3d, K, kp, conf), nan),
        "reprojection_px_init": jnp.where(run, _reprojection_px(joints_init, K, kp, conf), nan),
    }
    energies["E_t"] = E.temporal_energy(joints_3d, run)
    return {
        "theta": theta,
        "beta": beta,
        "root": root,
        "hand_scale": hand_scale,
        "projection_scale": projection_scale,
        "joints_3d": joints_3d,
        "fitted": run,
        "energies": energies,
    }


_PARAMS_CACHE: dict[int, tuple[HandModel, jax_layer.JaxHandParams]] = {}


def model_params(model: HandModel) -> jax_layer.JaxHandParams:
    """`jax_layer.prepare(model)` in float32, cached per model object (a capture calls `fit` per batch)."""
    hit = _PARAMS_CACHE.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    params = jax_layer.prepare(model, dtype=jnp.float32)
    if len(_PARAMS_CACHE) >= 4:
        _PARAMS_CACHE.pop(next(iter(_PARAMS_CACHE)))
    _PARAMS_CACHE[id(model)] = (model, params)
    return params


def _check(name, arr, shape):
    arr = np.asarray(arr)
    if arr.shape != shape:
        want = "(" + ", ".join(str(s) for s in shape) + ")"
        raise InputError(f"tailor: {name} must have shape {want}, got {arr.shape}")
    return arr


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
    out = {}
    for name, arr in inputs.items():
        if name == "K":
            out[name] = arr
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


# -- the packed call: every input in three arrays and every output in one, so a call costs one transfer each
# way (with ~30 arguments and ~16 results, dispatch and conversion cost more than the whole B = 1 fit).
_IN_FLOAT = (
    ("theta0", (16, 4)), ("beta0", (10,)), ("root0", (3,)), ("hand_scale0", ()), ("projection_scale0", ()),
    ("keypoints_2d", (21, 2)), ("confidence", (21,)),
)
_IN_BOOL = (("valid", ()), ("lock_theta", (16,)), ("lock_beta", ()), ("lock_root", ()), ("lock_hand_scale", ()))
_OUT = (
    ("theta", (16, 4)), ("beta", (10,)), ("root", (3,)), ("hand_scale", ()), ("projection_scale", ()),
    ("joints_3d", (21, 3)), ("fitted", ()),
)
_OUT_ENERGIES = ("E_J", "E_g", "E_id", "E", "E_J_init", "E_g_init", "reprojection_px", "reprojection_px_init", "E_t")


def _layout(fields):
    """[(name, shape, start, stop)] of fields laid side by side in the last axis of a (B, width) array."""
    out, at = [], 0
    for name, shape in fields:
        n = int(np.prod(shape, dtype=np.int64))
        out.append((name, shape, at, at + n))
        at += n
    return tuple(out), at


_IN_FLOAT_LAYOUT, _IN_FLOAT_WIDTH = _layout(_IN_FLOAT)
_IN_BOOL_LAYOUT, _IN_BOOL_WIDTH = _layout(_IN_BOOL)
_OUT_LAYOUT, _OUT_WIDTH = _layout(_OUT + tuple((n, ()) for n in _OUT_ENERGIES))
_HYPER_FIELDS = _Hyper._fields  # settings vector: K (9), the _Hyper fields, iterations, weak, fit_root_xy


def _pack(inputs: dict, layout, width, dtype) -> np.ndarray:
    b = inputs["theta0"].shape[0]
    out = np.empty((b, width), dtype)
    for name, _, start, stop in layout:
        out[:, start:stop] = np.asarray(inputs[name]).reshape(b, stop - start)
    return out


def _settings_vector(K, config: TailorConfig) -> np.ndarray:
    """(9 + 7 + 3,) float32: K row-major, the traced Adam/energy settings, iterations, weak, fit_root_xy."""
    K = np.asarray(K, np.float32)
    key = (K.tobytes(), tuple(config))
    hit = _SETTINGS_CACHE.get(key)
    if hit is None:
        if len(_SETTINGS_CACHE) >= 64:
            _SETTINGS_CACHE.clear()
        hit = _SETTINGS_CACHE[key] = _settings_vector_uncached(K, config)
    return hit


_SETTINGS_CACHE: dict = {}


def _settings_vector_uncached(K, config: TailorConfig) -> np.ndarray:
    hyper = _hyper(config)
    extra = (config.iterations, config.camera_model == "weak_perspective", config.fit_root_xy)
    return np.concatenate([np.asarray(K, np.float32).reshape(9), np.asarray(hyper, np.float32),
                           np.asarray(extra, np.float32)])


def _fit_packed_impl(hp, fin, bin_, settings):
    """`_fit_impl` on packed arrays: fin (B, _IN_FLOAT_WIDTH) float32, bin_ (B, _IN_BOOL_WIDTH) bool,
    settings (19,) float32 (`_settings_vector`) -> (B, _OUT_WIDTH) float32 (`_unpack_outputs`)."""
    B = fin.shape[0]
    kw = {name: fin[:, a:b].reshape((B,) + shape) for name, shape, a, b in _IN_FLOAT_LAYOUT}
    kw.update({name: bin_[:, a:b].reshape((B,) + shape) for name, shape, a, b in _IN_BOOL_LAYOUT})
    nh = len(_HYPER_FIELDS)
    hyper = _Hyper(*(settings[9 + i] for i in range(nh)))
    iterations = jnp.round(settings[9 + nh]).astype(jnp.int32)
    out = _fit_impl(
        hp, K=settings[:9].reshape(3, 3), hyper=hyper, iterations=iterations, weak=settings[10 + nh] > 0.5,
        fit_root_xy=settings[11 + nh] > 0.5, **kw,
    )
    cols = []
    for name, shape, a, b in _OUT_LAYOUT:
        if name in out:
            v = out[name]
        else:
            v = out["energies"][name]
        v = jnp.broadcast_to(v, (B,)) if v.ndim == 0 else v
        cols.append(v.astype(fin.dtype).reshape(B, b - a))
    return jnp.concatenate(cols, axis=-1)


# One compiled executable per batch size B (`fit` pads B up to a bucket): the iterations, camera model and
# every setting are traced (in `settings`), so they never recompile.
_fit_packed_jit = jax.jit(_fit_packed_impl)


def loop_is_one_kernel(params: jax_layer.JaxHandParams, frames: int) -> bool:
    """Whether XLA compiles the Adam loop for `frames` frames (padded to their bucket) into one kernel
    rather than one thunk per op and step (`engine.SMALL_LOOP_KERNEL_BYTES`). Compiles once to find out."""
    b = bucket_size(frames)
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    lowered = _fit_packed_jit.lower(
        _slim(params), spec((b, _IN_FLOAT_WIDTH), np.float32), spec((b, _IN_BOOL_WIDTH), np.bool_),
        spec(_settings_vector(np.eye(3), TailorConfig()).shape, np.float32),
    )
    # the hoisting pass marks the call it makes of the loop with this attribute
    return "xla_cpu_small_call" in lowered.compile().as_text()


def _unpack_outputs(packed: np.ndarray) -> dict:
    """(B, _OUT_WIDTH) -> the core's dict of numpy arrays (contiguous copies)."""
    b = packed.shape[0]
    out, energies = {}, {}
    for name, shape, start, stop in _OUT_LAYOUT:
        v = np.ascontiguousarray(packed[:, start:stop]).reshape((b,) + shape)
        if name == "fitted":
            out[name] = v > 0.5
        elif name == "E_t":
            energies[name] = v[0] if b else np.zeros((), packed.dtype)
        elif name in _OUT_ENERGIES:
            energies[name] = v
        else:
            out[name] = v
    out["energies"] = energies
    return out


def _slim(params: jax_layer.JaxHandParams) -> jax_layer.JaxHandParams:
    """Only the arrays `keypoints` reads (the full-mesh ones left out of the call: fewer arguments)."""
    hit = _SLIM_CACHE.get(id(params))
    if hit is not None and hit[0] is params:
        return hit[1]
    slim = params._replace(v_template=None, shapedirs=None, posedirs=None, weights=None)
    if len(_SLIM_CACHE) >= 4:
        _SLIM_CACHE.pop(next(iter(_SLIM_CACHE)))
    _SLIM_CACHE[id(params)] = (params, slim)
    return slim


_SLIM_CACHE: dict[int, tuple] = {}


def fit_arrays(params, inputs: dict, config: TailorConfig, *, jit: bool = True, pad: bool = True) -> dict:
    """Runs the core on prepared inputs (`prepare_inputs`), jitted (padded to `bucket_size`) or eagerly.

    Returns the core's dict of arrays for the B input frames (jitted: numpy arrays; eager: device arrays)."""
    b = inputs["theta0"].shape[0]
    if not jit:
        settings = dict(
            hyper=_hyper(config),
            iterations=np.int32(config.iterations),
            weak=np.bool_(config.camera_model == "weak_perspective"),
            fit_root_xy=np.bool_(config.fit_root_xy),
        )
        return _fit_impl(params, **inputs, **settings)
    size = bucket_size(b) if pad else b
    padded = _pad({k: v for k, v in inputs.items() if k != "K"} | {"K": inputs["K"]}, size)
    fin = _pack(padded, _IN_FLOAT_LAYOUT, _IN_FLOAT_WIDTH, np.float32)
    bin_ = _pack(padded, _IN_BOOL_LAYOUT, _IN_BOOL_WIDTH, np.bool_)
    packed = np.asarray(_fit_packed_jit(_slim(params), fin, bin_, _settings_vector(inputs["K"], config)))
    return _unpack_outputs(packed[:b])


def prepare_inputs(
    theta0, beta0, root0, keypoints_2d, confidence, valid, K, locks=None, *, hand_scale0=None,
    projection_scale0=None, camera_model="perspective", image_size=None, focal_px=None,
):
    """Validates and converts `fit`'s arguments: returns (inputs dict of float32/bool arrays, K used (3,3))."""
    if camera_model not in CAMERA_MODELS:
        raise InputError(f"tailor: camera_model must be one of {CAMERA_MODELS}, got {camera_model!r}")
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
    ps0 = np.full(B, np.nan) if projection_scale0 is None else projection_scale0
    ps0 = _check("projection_scale0", ps0, (B,))
    if K is None:
        if camera_model == "perspective":
            raise InputError("tailor: the perspective camera model needs intrinsics K; use weak_perspective without")
        if image_size is None:
            raise InputError(
                "tailor: weak perspective needs the image size (for the nominal camera) or a nominal K "
                "(engine.camera.nominal_K(image_size))"
            )
        K = nominal_K(image_size, focal_px)
    K = _check("K", K, (3, 3)).astype(np.float64)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"tailor: K must be finite with positive focal lengths, got {K.tolist()}")
    locks = dict(locks or {})
    unknown = set(locks) - {"lock_theta", "lock_beta", "lock_root", "lock_hand_scale"}
    if unknown:
        raise InputError(f"tailor: unknown lock names {sorted(unknown)}")
    lk = {
        "lock_theta": _check("lock_theta", locks.get("lock_theta", np.zeros((B, 16), bool)), (B, 16)),
        "lock_beta": _check("lock_beta", locks.get("lock_beta", np.zeros(B, bool)), (B,)),
        "lock_root": _check("lock_root", locks.get("lock_root", np.zeros(B, bool)), (B,)),
        "lock_hand_scale": _check("lock_hand_scale", locks.get("lock_hand_scale", np.zeros(B, bool)), (B,)),
    }
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731  (numpy: jit transfers them in one go)
    inputs = dict(
        theta0=f32(theta0), beta0=f32(beta0), root0=f32(root0), hand_scale0=f32(hand_scale0),
        projection_scale0=f32(ps0), keypoints_2d=f32(keypoints_2d), confidence=f32(confidence),
        valid=valid, K=f32(K),
        **{k: np.asarray(v, bool) for k, v in lk.items()},
    )
    originals = dict(theta=theta0, beta=beta0, root=root0, hand_scale=hand_scale0, projection_scale=ps0)
    return inputs, K, originals, lk, valid


def fit(
    model: HandModel,
    theta0,
    beta0,
    root0,
    keypoints_2d,
    confidence,
    valid,
    K,
    locks=None,
    config: TailorConfig = TailorConfig(),
    *,
    hand_scale0=None,
    projection_scale0=None,
    image_size=None,
    focal_px=None,
) -> dict:
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
    Returns:
      dict with theta (B, 16, 4), beta (B, 10), root (B, 3), hand_scale (B,), projection_scale (B,) (NaN
      under perspective), joints_3d (B, K, 3) camera frame (the model posed by the returned values),
      K (3, 3) the camera used, fitted (B,) bool, energies: dict of (B,) float arrays (E_J, E_g, E_id, E and
      their initial values, reprojection_px; E_t () with the temporal term). numpy arrays; values keep
      the inputs' dtype where it is wider than float32 (locked entries are the inputs, bit for bit).
    """
    inputs, K_used, originals, lk, valid_np = prepare_inputs(
        theta0, beta0, root0, keypoints_2d, confidence, valid, K, locks, hand_scale0=hand_scale0,
        projection_scale0=projection_scale0, camera_model=config.camera_model, image_size=image_size,
        focal_px=focal_px,
    )
    if int(config.iterations) < 0:
        raise InputError(f"tailor: iterations must be >= 0, got {config.iterations}")
    if not all(math.isfinite(float(v)) for v in (config.lr, config.b1, config.b2)):
        raise InputError("tailor: lr, b1 and b2 must be finite numbers")
    if inputs["theta0"].shape[0] == 0:
        out = _empty_outputs(inputs)
    else:
        out = fit_arrays(model_params(model), inputs, config)
    return _finish(out, originals, lk, K_used, config)


def _empty_outputs(inputs) -> dict:
    """The core's outputs for B = 0 frames (nothing to fit, nothing to compile)."""
    z = lambda *shape: np.zeros((0,) + shape, np.float32)  # noqa: E731
    names = ("E_J", "E_g", "E_id", "E", "E_J_init", "E_g_init", "reprojection_px", "reprojection_px_init")
    energies = {n: z() for n in names}
    energies["E_t"] = np.zeros((), np.float32)
    return dict(theta=z(16, 4), beta=z(10), root=z(3), hand_scale=z(), projection_scale=z(), joints_3d=z(21, 3),
                fitted=np.zeros(0, bool), energies=energies)


def _finish(out, originals, lk, K_used, config):
    """numpy outputs; kept entries copied from the caller's original arrays (exact in any dtype)."""
    fitted = np.asarray(out["fitted"])
    keep_theta = lk["lock_theta"].astype(bool) | ~fitted[:, None]
    res = {}

    def merge(name, keep):
        orig = np.asarray(originals[name])
        new = np.asarray(out[name])
        dt = np.result_type(orig.dtype, np.float32) if orig.dtype.kind == "f" else np.float32
        if not keep.any():  # nothing kept (the common case): the fitted values as they are
            return new.astype(dt)
        return np.where(keep, orig.astype(dt, copy=False), new.astype(dt))

    res["theta"] = merge("theta", keep_theta[..., None])
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
