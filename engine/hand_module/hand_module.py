"""The hand module's 3D part: keypoint observations of one track -> the tailor's initialization.

    uvd (+ world landmarks) --lifting--> 3D joints --shape--> beta --lifting (B(beta))--> 3D joints
        --IKNet--> theta --hand model (theta, beta)--> joints placed at the lifted hand

`fit_init` implements the contract in /work/coord/CONTRACTS.md (paper Sec. 3.3, 3.5). Shapes: N frames,
K = 21 keypoints.

Meaning of the outputs per camera model
---------------------------------------
The hand's size: with one identity per track (`steady_shape`, what a capture uses): beta from the track's bone ratios and
hand_scale such that the hand is `shape.DEFAULT_HAND_LENGTH` (or the given hand_length) long; the metric
reference bone is then B(beta) * hand_scale. With a shape per frame: hand_scale = 1 (the model's size at beta).
perspective (K known): the root depth is solved so that the reference bone has that metric length (Eq. 5);
  joints are meters in the camera frame; projection_scale = NaN.
weak_perspective (no K): absolute depth is unobservable. The lift gives the hand in reference-bone units and
  s in pixels per bone (Eq. 15); with the metric bone, projection_scale = s / (B(beta) hand_scale) pixels per
  meter, and the hand is placed under the nominal camera `K` (DESIGN.md) at the depth f / projection_scale
  where it has that pixel size: the size is held, the distance moves. Each keypoint is put on its pixel's ray
  at the root depth plus its lifted relative depth, so that project_perspective(joints_3d_lifted, K) gives
  back the detected 2D keypoints.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from engine.camera import backproject_perspective, focal_length
from engine.errors import InputError
from engine.hand_model.constants import N_JOINTS, N_KEYPOINTS, N_SHAPE
from engine.hand_module import lifting
from engine.hand_module import shape as shape_mod

log = logging.getLogger(__name__)

DEPTH_SOURCES = ("auto", "uvd", "hybrid", "world")
# "auto" = "hybrid" when world landmarks are given, else "uvd". Chosen by measurement (models/iknet/PROVENANCE.md):
# MediaPipe's d is much flatter than x (slope 0.04-0.54 against the true depth on ../shared/data/gt-sample),
# while the world landmarks' z is metric; on the gt-sample hands the hybrid lift had the lowest error
# (root-relative 21.8 mm vs 32.5 mm from d), and on synthetic data with a d flattened like that too
# (IKNet output PA-MPJPE 6.3 vs 10.4 mm). With a d that really had the scale of x, "uvd" would win
# (5.2 vs 6.3 mm): the choice follows the measured d.
DEFAULT_DEPTH_SOURCE = "auto"


@functools.lru_cache(maxsize=4)
def _cached_iknet(side: str):
    from engine.hand_module.iknet_numpy import load_iknet_arrays

    return load_iknet_arrays(side=side)


def pose_keypoints(model, theta: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """The model's keypoints for theta (N, 16, 4), beta (N, 10), wrist at the origin: -> (N, K, 3) meters
    (the tailor's JAX layer, `engine.tailor.posing`: the hand module runs without torch)."""
    from engine.tailor.posing import model_keypoints

    return model_keypoints(model, theta, beta)


def _lift(uv, d_norm, camera, K, bone, pair_lengths, uvd=None):
    """-> joints (N, K, 3) meters camera frame, normalized joints (N, K, 3), projection_scale (N,).

    With `uvd` (pixel depth) under perspective: `lifting.perspective_lift_pixel_depth`."""
    if camera == "perspective":
        if uvd is not None:
            joints, _ = lifting.perspective_lift_pixel_depth(uvd, K, bone)
        else:
            joints, _ = lifting.perspective_lift(uv, d_norm, K, bone)
        return joints, lifting.normalize_joints(joints), np.full(len(uv), np.nan)
    rel, s, fallback = lifting.weak_perspective_lift(uv, d_norm, pair_lengths)
    if np.any(fallback):
        log.debug("weak perspective: %d frame(s) with an edge-on reference bone used the palm fallback",
                  int(fallback.sum()))
    s_m = s / bone  # px per meter
    z_root = focal_length(K) / s_m
    # Placed under the nominal camera (DESIGN.md): the root at depth f / s, each keypoint at its lifted
    # relative depth and on its pixel's ray, so that K @ joints lands on the keypoints. IKNet and the shape
    # take these joints (normalized), not Eq. 14's parallel-projection ones: measured (synthetic, hands with
    # the same pixel size, true focal 0.5x / 1x / 2x the nominal) IKNet PA-MPJPE 6.83 / 6.32 / 7.10 mm vs
    # 7.92 / 7.04 / 6.83 mm (hybrid depth).
    z = np.maximum(z_root[:, None] + rel[..., 2] * bone[:, None], 0.1 * z_root[:, None])
    joints = np.asarray(backproject_perspective(uv, z, K))
    return joints, lifting.normalize_joints(joints), s_m


def fit_init(
    keypoints_uvd: np.ndarray,
    confidence: np.ndarray | None,
    world_landmarks: np.ndarray | None,
    camera: str,
    K: np.ndarray | None,
    model,
    steady_shape: bool = False,
    depth_source: str = DEFAULT_DEPTH_SOURCE,
    iknet=None,
    image_size: tuple[int, int] | None = None,
    pixel_depth: bool = True,
    hand_length: float | None = None,
) -> dict:
    """Lifting -> shape -> IKNet for one hand track: the tailor's initialization.

    Args:
        keypoints_uvd: (N, K, 3) u, v full-frame pixels (undistorted), d MediaPipe relative depth in pixel
            units (any origin). A frame with any non-finite value is invalid (NaN outputs).
        confidence: (N, K) in [0, 1] or None (all 1): weights for the shape fit and the placement.
        world_landmarks: (N, K, 3) metric, camera-aligned axes, or None (needed by depth_source "hybrid"/"world").
        camera: "perspective" (K required) or "weak_perspective" (K = the nominal camera, or None and
            `image_size` given: `engine.camera.nominal_K(image_size)`).
        model: HandModel of the track's side (its side picks the IKNet / mirroring).
        steady_shape: one identity for the whole track (what a capture asks for): beta and hand_scale solved
            once from all its frames (`shape.fit_track_shape`), the hand `hand_length` meters long (None:
            `shape.DEFAULT_HAND_LENGTH`); False (independent frames): beta per frame, hand_scale 1 (the
            model's size at that beta).
        depth_source: "auto" (default: "hybrid" with world landmarks, else "uvd"), "uvd" (d' from MediaPipe's
            d, `lifting.normalized_depth`), "hybrid" (2D from uvd, d' from the world landmarks' z) or "world"
            (IKNet and shape take the normalized world landmarks; 2D still places and scales the hand).
        iknet: IKNet weights for the model's side (`iknet_numpy.load_iknet_arrays`), or None (the shipped ones).
        pixel_depth: perspective with depth_source "uvd": read d as pixels at the root's depth
            (`lifting.perspective_lift_pixel_depth`, linear in the root depth) instead of the paper's d' via
            `lifting.normalized_depth` and the quadratic of `lifting.perspective_lift`.
    Returns:
        dict of float64 arrays: theta (N, 16, 4), beta (N, 10), root (N, 3) the posed model's wrist in the
        camera frame (m; the translation that best puts the posed model on the lifted joints, weighted by
        confidence, rather than the lifted wrist alone),
        hand_scale (N,), projection_scale (N,) (NaN under perspective), joints_3d_lifted (N, K, 3),
        joints_3d_model (N, K, 3) = root + (model keypoints of theta, beta with the wrist at the origin),
        K (3, 3) the camera used, valid (N,) bool.
    """
    from engine.camera import nominal_K
    from engine.hand_module.iknet_numpy import predict_theta

    uvd = np.asarray(keypoints_uvd, dtype=np.float64)
    if uvd.ndim != 3 or uvd.shape[1:] != (N_KEYPOINTS, 3):
        raise InputError(f"keypoints_uvd must have shape (N, 21, 3), got {uvd.shape}")
    n = uvd.shape[0]
    if camera not in ("perspective", "weak_perspective"):
        raise InputError(f"camera must be 'perspective' or 'weak_perspective', got {camera!r}")
    if depth_source not in DEPTH_SOURCES:
        raise InputError(f"depth_source must be one of {DEPTH_SOURCES}, got {depth_source!r}")
    if depth_source == "auto":
        depth_source = "uvd" if world_landmarks is None else "hybrid"
    if K is None:
        if camera == "perspective":
            raise InputError("the perspective camera model needs intrinsics K (or use weak_perspective)")
        if image_size is None:
            raise InputError("weak perspective needs the nominal camera K or the image size")
        K = nominal_K(image_size)
    K = np.asarray(K, dtype=np.float64)
    conf = np.ones((n, N_KEYPOINTS)) if confidence is None else np.asarray(confidence, dtype=np.float64)
    valid = np.all(np.isfinite(uvd), axis=(1, 2)) & np.all(np.isfinite(conf), axis=1)
    world = None
    if depth_source != "uvd":
        if world_landmarks is None:
            raise InputError(f"depth_source {depth_source!r} needs the world landmarks")
        world = np.asarray(world_landmarks, dtype=np.float64)
        valid &= np.all(np.isfinite(world), axis=(1, 2))

    out = {
        "theta": np.full((n, N_JOINTS, 4), np.nan),
        "beta": np.full((n, N_SHAPE), np.nan),
        "root": np.full((n, 3), np.nan),
        "hand_scale": np.full(n, np.nan),
        "projection_scale": np.full(n, np.nan),
        "joints_3d_lifted": np.full((n, N_KEYPOINTS, 3), np.nan),
        "joints_3d_model": np.full((n, N_KEYPOINTS, 3), np.nan),
        "K": K,
        "valid": valid,
    }
    if not np.any(valid):
        return out
    uvd, conf = uvd[valid], np.clip(conf[valid], 0.0, 1.0)
    uv = uvd[..., :2]
    if depth_source == "uvd":
        d_norm = lifting.normalized_depth(uvd)
    else:
        world = world[valid]
        d_norm = lifting.hybrid_normalized_depth(world)

    rest = shape_mod.rest_keypoints(model)
    beta0 = np.zeros((len(uv), N_SHAPE))
    # Pass 1 at the mean shape, then the shape from the lifted ratios, then the lift at that shape.
    bone0 = shape_mod.reference_bone_length(rest, beta0)
    pairs0 = lifting.pair_ratios(shape_mod.keypoints_at(rest, beta0), lifting.PALM_PAIRS)
    pixel_uvd = uvd if (depth_source == "uvd" and pixel_depth) else None
    joints, joints_n, _ = _lift(uv, d_norm, camera, K, bone0, pairs0, pixel_uvd)
    shape_input = lifting.normalize_joints(world) if depth_source == "world" else joints_n
    if steady_shape:
        beta_t, hand_scale = shape_mod.fit_track_shape(shape_input, rest, conf, hand_length)
        beta = np.repeat(beta_t[None], len(uv), axis=0)
    else:
        beta, hand_scale = shape_mod.fit_shape(shape_input, rest=rest, confidence=conf), 1.0
    bone = shape_mod.reference_bone_length(rest, beta) * hand_scale  # metric: the lift's depth follows the size
    pairs = lifting.pair_ratios(shape_mod.keypoints_at(rest, beta), lifting.PALM_PAIRS)
    joints, joints_n, proj_scale = _lift(uv, d_norm, camera, K, bone, pairs, pixel_uvd)

    ik_input = lifting.normalize_joints(world) if depth_source == "world" else joints_n
    if iknet is None:
        iknet = _cached_iknet(model.side)
    theta = predict_theta(iknet, ik_input)
    kp_model = hand_scale * pose_keypoints(model, theta, beta)  # wrist at the origin
    # Root: the translation that best puts the posed model on the lifted joints (confidence-weighted).
    w = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1e-9)
    root = np.einsum("nk,nkc->nc", w, joints - kp_model)

    out["theta"][valid] = theta
    out["beta"][valid] = beta
    out["root"][valid] = root
    out["hand_scale"][valid] = hand_scale
    out["projection_scale"][valid] = proj_scale
    out["joints_3d_lifted"][valid] = joints
    out["joints_3d_model"][valid] = root[:, None] + kp_model
    return out
