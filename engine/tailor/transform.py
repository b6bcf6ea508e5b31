"""The tailor's two-step fit (paper Sec. 3.4-3.5) as pure JAX functions, in optax's shape.

    problem = scale_step(hand, frames, K, settings)        step 1: sanitize, analytic scale (Eq. 12 / 17)
    t = tailor(hand, settings)                             step 2: Tailor(init, update), Adam on Eq. 13
    state = run(t, problem, settings.iterations)           the runner: one lax.fori_loop of t.update
    out = outputs(hand, frames, problem, state, settings)  quaternions, joints, energies; locks written back

`solve` chains the four; `engine.tailor.api.fit` is the thin numpy API around it (validation, padding,
one jit). Every state is a NamedTuple passed in and returned, never mutated (jit-safe).

Parameters and their handling (decided here, once):

* Pose: optimized as an axis-angle *change* per joint, R_j = exp(delta_j) R0_j (delta in the parent's
  axes; for the root joint in the camera axes), starting at delta = 0. The identity term's
  ||theta - theta'||^2 (Eq. 11) is then ||delta||^2 in radians^2, the geodesic distance to the
  initialization, free of the axis-angle wrap at pi. In and out: quaternions (w, x, y, z). A warm start
  (`Frames.delta_pose_start`, e.g. an earlier pass's fit) starts Adam elsewhere while E_id still measures
  the distance to theta0.
* Shape beta: optimized directly (units of the model's shape space), with Adam's step `shape_step` times
  the pose's (Eq. P5, default 3): Adam moves every parameter by about the step size per iteration, ~0.06
  radians for a joint (a sizeable rotation) but 0.06 of a shape component whose range is +-2-3: with the
  step annealed, 20 iterations could move beta by ~0.6 at most, and the palm's proportions (which only beta
  changes) were left unfitted. A capture holds beta (one identity per track): it applies to per-frame
  shapes (single images, `eval`).
* Hand scale s*: solved analytically first (Eq. 12 under perspective, Eq. 17 under weak perspective) and
  held fixed during Adam (the paper's two-step scheme; as a distance re-solved after each step, Eq. P6
  below). With `scale_as_distance` (default) s* moves the wrist along its viewing ray (`scale.place_at_distance`, Eq. P3) and the hand keeps its metric size
  (hand_scale0: the hand module's, or a track's: one identity per track, issue 15); without it (the paper)
  s* is the returned `hand_scale`, about the wrist. Measured (scripts/experiments/tailor_variants.py, the
  synthetic mismatch set): as a scale s* inflated the hand to cover the 2D extent at a depth set by the
  model's reference bone, which alone cost ~1-2 mm of wrist-aligned MPJPE. Where the root is locked the
  paper's reading is used. With `hold_depth` (a clip's distance, `clip.track_distance`) the given
  depth is kept (root0; weak perspective: projection_scale0) and s* is not re-solved into it.
* Distance after each Adam step (`redistance`, Eq. P6, default on): under perspective, with s* as a distance
  and the frames independent, the analytic step is solved again at the pose Adam has reached (before each
  step, sharing its forward kinematics, and once after the last) and the wrist moved along its ray by it,
  wherever that lowers E_J; `TailorState.root_start` carries it. Compiled in only where it can apply
  (`with_redistance`, static: `api.TailorConfig.redistances`), so a clip's executable is as before. Held at
  step 1's value, the distance was that of the hand module's pose, and with the size held only the articulation
  and the shape's proportions could follow the 2D extent of another pose (figures: `scale.redistance`). Not under
  weak perspective (the projection scale keeps Eq. 17's value), with `hold_depth` or a locked root, nor where
  the temporal terms couple the frames (a clip's distance is smoothed over the track, `clip.track_distance`).
* Root translation: the depth is not a parameter of Adam (from 2D keypoints, depth and hand_scale are one and
  the same unknown, which s* resolves: a gradient step in depth would fight s*, as the paper's "scale is a
  global constraint" warns; Eq. P6 re-solves it in closed form instead). The authors' code keeps the whole
  root fixed; we also optimize its lateral (x, y) position at that depth (`fit_root_xy`, default on), in units
  of 0.1 reference bone (`ROOT_STEP`): the hand module places the wrist on its own detected 2D keypoint, which is as noisy as
  any other, and the weak-perspective placement (t = that keypoint) inherits the same error. Measured on
  the synthetic set (64 frames, 1-3 px noise): neutral under perspective (2D error to the true keypoints
  2.50 vs 2.51 px, PA-MPJPE 4.03 vs 4.14 mm), better under weak perspective (2.32 vs 3.04 px residual).
  With a step of one whole bone it was worse (Adam's fixed-size steps made the wrist jitter by ~3 px).
* Batches: the frames' energies are independent (without the temporal terms) and Adam is elementwise, so
  one Adam over the stacked (B, ...) parameters of sum_b E_b is exactly B independent per-frame Adams in
  one loop. With the temporal terms (`temporal_weight`, `rotation_weight` > 0: joint and rotation
  acceleration) the frames of a batch are coupled and optimized jointly, in the same loop. For 1-4 frames XLA compiles that loop into a single kernel
  (`engine.SMALL_LOOP_KERNEL_BYTES`, `api.loop_is_one_kernel`); larger batches run it op by op.
* Locks (DESIGN.md EDITS): locked entries get zero gradients (Adam then never moves them) and are written
  back from the original inputs with `where` at the end: bit-identical. Invalid frames pass through.
* Energy: Eq. 13's E_J + E_g + E_id (E_id with its own weights for the global rotation and the shape),
  plus the project's E_z (Eq. P1: each finger's depth relative to its base kept near the hand module's:
  2D cannot see it) and E_size (Eq. P2: the hand's metric size held; the distance carries s*).
* Adam's step size anneals (Eq. P4, `annealed_lr`): from lr at the first step to lr * lr_final at the
  last. With a constant step Adam (b2 = 0.5) keeps moving every parameter by ~lr per step around the
  optimum: more iterations then drift along what 2D cannot see (measured: PA-MPJPE rose from 20 to 100
  iterations even with ground-truth 2D); annealed, more iterations converge, and a clip's frames stop
  jittering by ~lr around their optimum (chatter, issue 15).
* Weak perspective (Sec. 3.5, no K): Eq. 17 gives s (px per meter) with t = the detected wrist; the hand
  is then placed under a nominal pinhole camera (`engine.camera.nominal_K`) at depth f / projection_scale
  (f: `engine.camera.focal_length`), and the Adam iterations finish the fit under that camera (DESIGN.md),
  so project_perspective(joints_3d, K) lands on the fitted 2D positions. At that depth the pinhole E_J
  equals the weak-perspective one (Eq. 16's projection, `camera.project_weak_perspective`) to first order in
  the hand's depth extent, and that one is what Eq. 17 minimizes in closed form. With `scale_as_distance`,
  or without `projection_scale0`, the hand keeps hand_scale0 (the model's size) and all of Eq. 17's s goes
  to projection_scale (the distance); otherwise hand_scale = s / projection_scale0 compensates the hand
  module's size (the paper's reading).

Shapes: B frames, K = 21 keypoints, 16 joints.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from engine.camera import backproject_perspective, focal_length, project_perspective
from engine.hand_model import REFERENCE_BONE
from engine.hand_model import jax_layer
from engine.tailor import energies as E
from engine.tailor.scale import S_MAX, S_MIN, perspective_scale, place_at_distance, redistance, weak_perspective_scale

__all__ = ["Settings", "Frames", "Params", "Problem", "TailorState", "Tailor", "tailor", "scale_step", "current", "run",
           "outputs", "solve", "energy", "annealed_lr", "shape_scaled_step", "ROOT_STEP"]

ROOT_STEP = 0.1  # units of the lateral root parameter, in reference-bone lengths (Adam moves ~lr per step)


class Settings(NamedTuple):
    """One fit's settings, all traced: changing any of them never recompiles."""

    lr: jax.Array  # () float32, Adam's learning rate (at the first step; annealed, Eq. P4)
    b1: jax.Array  # () float32
    b2: jax.Array  # () float32
    lambda_j: jax.Array  # () float32, Eq. 13's weights
    lambda_g: jax.Array  # () float32
    lambda_id: jax.Array  # () float32
    temporal_weight: jax.Array  # () float32, > 0 couples the frames (joint acceleration)
    rotation_weight: jax.Array  # () float32, > 0 couples the frames (rotation acceleration, E.rotation_temporal_energy)
    iterations: jax.Array  # () int32, Adam steps
    weak_perspective: jax.Array  # () bool: Eq. 17 and the nominal camera (else Eq. 12 under K)
    fit_root_xy: jax.Array  # () bool: also move the wrist laterally at its depth
    identity_global: jax.Array  # () float32, E_id's weight on the global rotation (relative; paper 1)
    identity_beta: jax.Array  # () float32, E_id's weight on the shape (relative; paper 1)
    lambda_z: jax.Array  # () float32, E_z's weight (Eq. P1)
    lambda_size: jax.Array  # () float32, E_size's weight (Eq. P2)
    lr_final: jax.Array  # () float32, Adam's step at the last iteration as a fraction of lr (Eq. P4; 1: constant)
    scale_as_distance: jax.Array  # () bool: s* moves the wrist along its ray (Eq. P3), else scales the hand
    hold_depth: jax.Array  # () bool: the given depth (root0's z; weak: projection_scale0) is kept, not re-solved
    shape_step: jax.Array  # () float32, Adam's step on beta as a multiple of the pose's (Eq. P5; 1: the paper's)


class Frames(NamedTuple):
    """A batch of frames to fit, as given (NaN and invalid frames allowed: they pass through)."""

    theta0: jax.Array  # (B, 16, 4) initial local rotations, quaternions (w, x, y, z)
    beta0: jax.Array  # (B, 10)
    root0: jax.Array  # (B, 3) wrist, camera frame, meters
    hand_scale0: jax.Array  # (B,)
    projection_scale0: jax.Array  # (B,) px per meter (NaN: unknown)
    keypoints_2d: jax.Array  # (B, K, 2) pixels
    confidence: jax.Array  # (B, K)
    delta_pose_start: jax.Array  # (B, 16, 3) where Adam's pose parameter starts (zeros: at theta0)
    valid: jax.Array  # (B,) bool
    lock_theta: jax.Array  # (B, 16) bool
    lock_beta: jax.Array  # (B,) bool
    lock_root: jax.Array  # (B,) bool
    lock_hand_scale: jax.Array  # (B,) bool


class Params(NamedTuple):
    """What Adam moves."""

    delta_pose: jax.Array  # (B, 16, 3) axis-angle change of each local rotation, radians
    beta: jax.Array  # (B, 10)
    delta_root: jax.Array  # (B, 2) lateral wrist shift, in ROOT_STEP reference-bone lengths


class Problem(NamedTuple):
    """Step 1's outcome: the sanitized evidence and the analytic scale, fixed during the Adam steps."""

    K: jax.Array  # (3, 3)
    keypoints_2d: jax.Array  # (B, K, 2), zeros where not finite
    confidence: jax.Array  # (B, K), zero where not usable or the frame is not fitted
    crop: jax.Array  # (B,) crop pixels per image pixel (E_J's unit)
    fitted: jax.Array  # (B,) bool: the frames fitted
    R0: jax.Array  # (B, 16, 3, 3) initial local rotations
    quat0: jax.Array  # (B, 16, 4) the same, unit quaternions
    beta0: jax.Array  # (B, 10) initial shape (zeros where not fitted)
    rel0: jax.Array  # (B, K, 3) initial keypoints relative to the wrist, hand_scale 1
    root_start: jax.Array  # (B, 3) the wrist after step 1
    hand_scale: jax.Array  # (B,) the hand's scale during the fit (hand_scale0, or s* in the paper's reading)
    projection_scale: jax.Array  # (B,) weak-perspective s (NaN under perspective)
    bone: jax.Array  # (B,) reference bone of rel0, meters (E_z's unit)
    size0: jax.Array  # (B,) the hand's size at beta0, meters (E_size's target)
    root_unit: jax.Array  # (B,) meters per unit of Params.delta_root
    distance_free: jax.Array  # (B,) bool: frames whose distance is re-solved after each Adam step (Eq. P6)
    delta_pose_start: jax.Array  # (B, 16, 3) Adam's first pose parameter (0 where locked, not fitted or not finite)
    grad_mask: Params  # 1 where a parameter is free, 0 where locked or not fitted


class TailorState(NamedTuple):
    params: Params
    adam: optax.OptState
    root_start: jax.Array  # (B, 3) the wrist before its lateral shift: step 1's, then where Eq. P6 moved it


class Tailor(NamedTuple):
    """optax-style pair of pure functions: init(problem) -> state, update(state, problem) -> state."""

    init: Callable[[Problem], TailorState]
    update: Callable[[TailorState, Problem], TailorState]


def scale_step(hand: jax_layer.JaxHandParams, frames: Frames, K, settings: Settings) -> Problem:
    """Step 1: sanitizes the frames and solves the hand scale in closed form (Eq. 12 or Eq. 17).

    Both camera models are computed and `settings.weak_perspective` selects (one compilation for both)."""
    f = frames
    weak = settings.weak_perspective
    dtype = f.keypoints_2d.dtype
    # invalid frames and non-finite inputs never reach the math (outputs pass them through)
    ok_in = (jnp.all(jnp.isfinite(f.theta0), axis=(-2, -1)) & jnp.all(jnp.isfinite(f.beta0), axis=-1)
             & jnp.isfinite(f.hand_scale0) & (f.hand_scale0 > 0))
    ok_root = jnp.all(jnp.isfinite(f.root0), axis=-1) & (f.root0[:, 2] > 1e-3)
    run_ = f.valid & ok_in & (ok_root | weak)
    kp_ok = jnp.all(jnp.isfinite(f.keypoints_2d), axis=-1)
    conf = jnp.where(kp_ok & jnp.isfinite(f.confidence), jnp.clip(f.confidence, 0.0, None), 0.0)
    conf = jnp.where(run_[:, None], conf, 0.0)
    kp = jnp.where(kp_ok[..., None], f.keypoints_2d, 0.0)
    ident = jnp.zeros_like(f.theta0).at[..., 0].set(1.0)
    th0 = jnp.where(run_[:, None, None], f.theta0, ident)
    b0 = jnp.where(run_[:, None], f.beta0, 0.0)
    r_default = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0], dtype), f.root0.shape)
    r0 = jnp.where((run_ & ok_root)[:, None], f.root0, r_default)
    hs0 = jnp.where(run_, f.hand_scale0, 1.0)

    R0 = jax_layer.quat_to_rotmat(th0)  # (B, 16, 3, 3), normalizes
    rel0 = jax_layer.keypoints(hand, R0, b0, None, None)  # (B, K, 3)
    crop = E.crop_scale(kp, conf)

    # weak perspective, Eq. 17: t = the detected wrist (else the keypoints' weighted centroid)
    centroid = jnp.sum(conf[..., None] * kp, axis=1) / jnp.maximum(jnp.sum(conf, axis=1), 1e-12)[:, None]
    t = jnp.where((conf[:, 0] > 0)[:, None], kp[:, 0], centroid)
    focal = focal_length(K)
    ps_known = jnp.isfinite(f.projection_scale0) & (f.projection_scale0 > 0)
    ps0 = jnp.where(ps_known, f.projection_scale0, 1.0)
    fallback = jnp.where(ps_known, ps0 * hs0, focal / r0[:, 2] * hs0)
    s_tot = weak_perspective_scale(rel0, t, kp, conf, fallback)  # px per model meter
    hold = settings.hold_depth
    dist = settings.scale_as_distance & ~hold  # a held depth cannot take s*
    hs_w = jnp.where(ps_known & ~dist, s_tot / ps0, hs0)
    hs_w = jnp.where(f.lock_hand_scale | dist, hs0, jnp.clip(hs_w, S_MIN, S_MAX))
    ps_w = jnp.where(hold & ps_known, ps0, s_tot / hs_w)
    keep_root = f.lock_root | (hold & ps_known & ok_root)  # a held depth: the given root, at f / ps0
    root_w = jnp.where(keep_root[:, None], r0, backproject_perspective(t, focal / ps_w, K))  # depth f / s
    # perspective, Eq. 12 (+ Gauss-Newton on Eq. 8): s* as a distance (Eq. P3) where the root may move
    s_p = perspective_scale(rel0, r0, K, kp, conf, hs0)
    move = dist & ~f.lock_root
    hs_p = jnp.where(f.lock_hand_scale | move, hs0, s_p)
    root_p = jnp.where(move[:, None], place_at_distance(r0, s_p / hs0), r0)

    hs = jnp.where(weak, hs_w, hs_p)
    a, b = REFERENCE_BONE
    bone = jnp.sqrt(jnp.sum((rel0[:, b] - rel0[:, a]) ** 2, axis=-1) + 1e-12)
    runf = run_.astype(dtype)
    grad_mask = Params(
        (runf[:, None] * (1.0 - f.lock_theta.astype(dtype)))[..., None],
        (runf * (1.0 - f.lock_beta.astype(dtype)))[:, None],
        (runf * (1.0 - f.lock_root.astype(dtype)))[:, None] * settings.fit_root_xy.astype(dtype),
    )
    return Problem(
        K=K, keypoints_2d=kp, confidence=conf, crop=crop, fitted=run_, R0=R0,
        quat0=th0 * jax.lax.rsqrt(jnp.maximum(jnp.sum(th0 * th0, axis=-1, keepdims=True), 1e-30)),
        beta0=b0, rel0=rel0, root_start=jnp.where(weak, root_w, root_p), hand_scale=hs,
        projection_scale=jnp.where(weak, ps_w, jnp.nan), bone=bone, size0=E.hand_size(hand.J0, hand.Jdirs, b0),
        root_unit=ROOT_STEP * hs * bone, grad_mask=grad_mask,
        # per frame, so not where the temporal terms couple the frames: a clip's distance is smoothed over the
        # track (`clip.track_distance`), which each frame's own re-solve would undo
        distance_free=run_ & move & ~weak & (settings.temporal_weight <= 0) & (settings.rotation_weight <= 0),
        delta_pose_start=jnp.where((grad_mask.delta_pose > 0) & jnp.isfinite(f.delta_pose_start), f.delta_pose_start,
                                   0.0),
    )


def _relative(hand, problem: Problem, delta_pose, beta):
    """(B, K, 3) keypoints relative to the wrist at hand_scale 1: the forward kinematics of the fitted pose."""
    R = jax_layer.matmul3(jax_layer.axis_angle_to_rotmat(delta_pose), problem.R0)  # elementwise: fuses
    return jax_layer.keypoints(hand, R, beta, None, None)


def _placed(problem: Problem, params: Params, rel):
    """Camera-frame keypoints (B, K, 3) and root (B, 3) of the relative keypoints `rel`."""
    shift = params.delta_root * problem.root_unit[:, None]
    root = problem.root_start + jnp.concatenate([shift, jnp.zeros_like(shift[:, :1])], axis=-1)
    return root[:, None, :] + problem.hand_scale[:, None, None] * rel, root


def _posed(hand, problem: Problem, params: Params):
    """Keypoints relative to the wrist (B, K, 3), camera-frame keypoints (B, K, 3) and root (B, 3)."""
    rel = _relative(hand, problem, params.delta_pose, params.beta)
    return (rel, *_placed(problem, params, rel))


def _terms(hand, settings: Settings, problem: Problem, params: Params, rel, joints):
    """Per-frame energies of the current parameters: E_J, E_g, E_id, E_z, E_size and E, each (B,)."""
    e_j = E.joint_energy_perspective(joints, problem.K, problem.keypoints_2d, problem.confidence, problem.crop)
    e_g = E.twist_energy(rel)
    e_id = E.identity_energy(params.delta_pose, params.beta, problem.beta0, settings.identity_global,
                             settings.identity_beta)
    e_z = E.depth_prior_energy(rel, problem.rel0, problem.bone)
    e_size = E.size_energy(params.beta, problem.size0, hand.J0, hand.Jdirs)
    e = E.total_energy(e_j, e_g, e_id, settings.lambda_j, settings.lambda_g, settings.lambda_id, e_z, e_size,
                       settings.lambda_z, settings.lambda_size)
    return dict(E_J=e_j, E_g=e_g, E_id=e_id, E_z=e_z, E_size=e_size, E=e)


def energy(hand, settings: Settings, problem: Problem, params: Params):
    """The objective Adam minimizes: sum over fitted frames of E (Eq. 13 with P1, P2; + the temporal term).
    () scalar."""
    return _energy_at(hand, settings, problem, params, _relative(hand, problem, params.delta_pose, params.beta))


def _energy_at(hand, settings: Settings, problem: Problem, params: Params, rel):
    """`energy` with the relative keypoints given (their forward kinematics done by the caller)."""
    joints, _ = _placed(problem, params, rel)
    # only computed when weighted (a batch of independent frames does not pay for it)
    e_rot = jax.lax.cond(settings.rotation_weight > 0,
                         lambda p: E.rotation_temporal_energy(_fitted_quats(problem, p), problem.fitted),
                         lambda p: jnp.zeros((), joints.dtype), params)
    e = _terms(hand, settings, problem, params, rel, joints)["E"]
    runf = problem.fitted.astype(joints.dtype)
    return (jnp.sum(runf * e) + settings.temporal_weight * E.temporal_energy(joints, problem.fitted)
            + settings.rotation_weight * e_rot)


def _fitted_quats(problem: Problem, params: Params):
    """(B, 16, 4) the fitted local rotations q(delta) * q0, unit; w(q(delta)) = cos(|delta| / 2) > 0 keeps the
    sign of the input quaternion (continuity along a clip), no matrix -> quaternion round trip."""
    q = jax_layer.quat_multiply(jax_layer.axis_angle_to_quat(params.delta_pose), problem.quat0)
    return q * jax.lax.rsqrt(jnp.sum(q * q, axis=-1, keepdims=True))


def annealed_lr(settings: Settings):
    """Eq. P4: Adam's step size at update `count` (0-based): lr * lr_final ** (count / (iterations - 1)).

    From lr at the first step to lr * lr_final at the last, geometrically; lr_final = 1 is the paper's
    constant step. Adam (b2 = 0.5) moves each parameter by about the step size whatever its gradient, so a
    constant step never settles: the fit keeps wandering along what 2D cannot see. Annealed, the last steps
    are small and more iterations converge instead of drifting.

    Args:
      settings: `Settings` (lr, lr_final, iterations; traced).
    Returns:
      a function count (() int) -> () step size (optax's schedule).
    """
    n = jnp.maximum(settings.iterations - 1, 1).astype(jnp.float32)
    log_ratio = jnp.log(jnp.maximum(settings.lr_final, 1e-12))
    return lambda count: settings.lr * jnp.exp(log_ratio * jnp.minimum(count, n) / n)


def shape_scaled_step(step: Params, settings: Settings) -> Params:
    """Eq. P5: Adam's update with its shape part multiplied by `settings.shape_step` (the pose and root parts
    as they are).

    Adam moves each parameter by about the step size whatever its units; beta's components span +-2-3, a
    joint's rotation a fraction of a radian, so one step size leaves the shape behind (module docstring).

    Args:
      step: `Params` of updates, delta_pose (B, 16, 3), beta (B, 10), delta_root (B, 2).
      settings: `Settings` (shape_step; traced).
    Returns:
      `Params` of the same shapes.
    """
    return step._replace(beta=step.beta * settings.shape_step)


def tailor(hand: jax_layer.JaxHandParams, settings: Settings, with_redistance: bool = True) -> Tailor:
    """Step 2's optimizer: Adam (optax) with the annealed step on `energy`, locked and unfitted entries frozen
    by a gradient mask; `with_redistance` (static: compiled in or not): Eq. P6 where `Problem.distance_free`,
    at the pose each step starts from (the last one's end: the distance follows every step)."""
    opt = optax.adam(annealed_lr(settings), b1=settings.b1, b2=settings.b2)
    grad = jax.grad(lambda params, problem: energy(hand, settings, problem, params))
    # with Eq. P6, the gradient in two parts so that the distance's solve shares its forward kinematics
    grad_at = jax.grad(lambda rel, params, problem: _energy_at(hand, settings, problem, params, rel), argnums=(0, 1))

    def init(problem: Problem) -> TailorState:
        params = Params(problem.delta_pose_start, problem.beta0,
                        jnp.zeros(problem.beta0.shape[:1] + (2,), problem.beta0.dtype))
        return TailorState(params, opt.init(params), problem.root_start)

    def update(state: TailorState, problem: Problem) -> TailorState:
        p = state.params
        if with_redistance:  # Eq. P6 at the pose the last step reached, then this step's gradient at that distance
            rel, kinematics_vjp = jax.vjp(lambda pose, beta: _relative(hand, problem, pose, beta), p.delta_pose, p.beta)
            root_start = _redistanced(current(problem, state), p, rel, problem.distance_free)
            g_rel, g = grad_at(rel, p, problem._replace(root_start=root_start))
            g_pose, g_beta = kinematics_vjp(g_rel)
            g = g._replace(delta_pose=g.delta_pose + g_pose, beta=g.beta + g_beta)
        else:
            root_start = state.root_start
            g = grad(p, current(problem, state))
        g = jax.tree_util.tree_map(lambda gi, m: jnp.where(m > 0, gi * m, 0.0), g, problem.grad_mask)
        step, adam = opt.update(g, state.adam, p)
        return TailorState(optax.apply_updates(p, shape_scaled_step(step, settings)), adam, root_start)

    return Tailor(init, update)


def current(problem: Problem, state: TailorState) -> Problem:
    """The problem with the wrist where the fit has it now (Eq. P6 moves it along its ray between steps)."""
    return problem._replace(root_start=state.root_start)


def _redistanced(problem: Problem, params: Params, rel, free):
    """(B, 3) root_start after Eq. P6 where `free`, at the relative keypoints `rel` of `params` (the lateral
    shift kept as it is)."""
    _, root = _placed(problem, params, rel)
    moved = redistance(rel, root, problem.hand_scale, problem.K, problem.keypoints_2d, problem.confidence,
                       problem.crop, free)
    return problem.root_start + (moved - root)


def run(t: Tailor, problem: Problem, iterations) -> TailorState:
    """The runner: t.init, then `iterations` (traced) t.update steps in one lax.fori_loop."""
    return jax.lax.fori_loop(0, iterations, lambda _, state: t.update(state, problem), t.init(problem))


def _reprojection_px(joints, K, kp, conf):
    """(B,) confidence-weighted mean 2D distance in image pixels (0 where no confidence)."""
    uv = project_perspective(jnp.concatenate([joints[..., :2], jnp.maximum(joints[..., 2:], 1e-3)], axis=-1), K)
    d = jnp.sqrt(jnp.sum((uv - kp) ** 2, axis=-1) + 1e-20)
    return jnp.sum(conf * d, axis=-1) / jnp.maximum(jnp.sum(conf, axis=-1), 1e-12)


def outputs(hand, frames: Frames, problem: Problem, state: TailorState, settings: Settings,
            with_redistance: bool = True) -> dict:
    """The fit's results: the fitted values, with the originals written back where locked or not fitted;
    `with_redistance`: Eq. P6 once more, at the final pose (after any step: step 1 solved the initial pose's).

    Returns theta (B,16,4), beta (B,10), root (B,3), hand_scale (B,), projection_scale (B,), joints_3d
    (B,K,3), fitted (B,) and energies {E_J, E_g, E_id, E_z, E_size, E, E_J_init, E_g_init, reprojection_px,
    reprojection_px_init: (B,) (NaN where not fitted), E_t: ()}."""
    f, p, run_ = frames, state.params, problem.fitted
    dtype = f.keypoints_2d.dtype
    q_fit = _fitted_quats(problem, p)
    fitted = current(problem, state)
    rel_fit = _relative(hand, fitted, p.delta_pose, p.beta)
    if with_redistance:
        free = problem.distance_free & (settings.iterations > 0)
        fitted = fitted._replace(root_start=_redistanced(fitted, p, rel_fit, free))
    _, root_fit = _placed(fitted, p, rel_fit)  # (the joints are recomputed below from the returned values)
    theta = jnp.where((f.lock_theta | ~run_[:, None])[..., None], f.theta0, q_fit)
    beta = jnp.where((f.lock_beta | ~run_)[:, None], f.beta0, p.beta)
    root = jnp.where((f.lock_root | ~run_)[:, None], f.root0, root_fit)
    hand_scale = jnp.where(f.lock_hand_scale | ~run_, f.hand_scale0, problem.hand_scale)
    projection_scale = jnp.where(run_ | ~settings.weak_perspective, problem.projection_scale, f.projection_scale0)
    joints_3d = jax_layer.keypoints(hand, jax_layer.quat_to_rotmat(theta), beta, root, hand_scale)
    joints_init = problem.root_start[:, None, :] + problem.hand_scale[:, None, None] * problem.rel0
    K, kp, conf, crop = problem.K, problem.keypoints_2d, problem.confidence, problem.crop
    # final energies: E_J from the returned joints, the rest from the fitted parameters (the same hand)
    nan = jnp.full(run_.shape, jnp.nan, dtype)
    energies = {
        **_terms(hand, settings, problem, p, rel_fit, joints_3d),
        "E_J_init": E.joint_energy_perspective(joints_init, K, kp, conf, crop),
        "E_g_init": E.twist_energy(problem.rel0),
        "reprojection_px": _reprojection_px(joints_3d, K, kp, conf),
        "reprojection_px_init": _reprojection_px(joints_init, K, kp, conf),
    }
    energies = {k: jnp.where(run_, v, nan) for k, v in energies.items()}
    energies["E_t"] = E.temporal_energy(joints_3d, run_)
    return {"theta": theta, "beta": beta, "root": root, "hand_scale": hand_scale,
            "projection_scale": projection_scale, "joints_3d": joints_3d, "fitted": run_, "energies": energies}


def solve(hand: jax_layer.JaxHandParams, frames: Frames, K, settings: Settings, with_redistance: bool = True) -> dict:
    """The whole fit of a batch: scale_step, run(tailor(...)), outputs. Traceable (jitted by `api`;
    `with_redistance` static: Eq. P6 compiled in or not)."""
    problem = scale_step(hand, frames, K, settings)
    state = run(tailor(hand, settings, with_redistance), problem, settings.iterations)
    return outputs(hand, frames, problem, state, settings, with_redistance)
