"""`python -m engine model info|render`: inspect a hand model file and look at it.

    python -m engine model info [PATH] [--side right|left] [--json]
    python -m engine model render [PATH] [--side right|left] --pose flat|fist|random [--seed N]
                                  [--beta b1,b2,...] --out FILE.png [--size 512] [--view back|palm]

PATH: a hand model .npz, an official MANO .pkl, or a folder holding MANO_RIGHT.pkl / MANO_LEFT.pkl or
open_hand_{right,left}.npz; default: the shipped open model. `info` imports numpy only (no torch, no jax).
A refused or broken file exits with status 2 and the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys

import numpy as np

from engine.errors import InputError, OutputError
from engine.hand_model.constants import (
    FINGER_NAMES,
    JOINT_TO_KEYPOINT,
    MANO_PARENTS,
    N_JOINTS,
    N_KEYPOINTS,
    N_SHAPE,
)
from engine.hand_model.loading import HandModel, load_hand_model
from engine.hand_model.rest import keypoints_at, rest_keypoints

log = logging.getLogger(__name__)

# Finger joints (MANO ids, base to tip) per finger, thumb..pinky.
_FINGER_JOINTS = {"thumb": (13, 14, 15), "index": (1, 2, 3), "middle": (4, 5, 6), "ring": (10, 11, 12), "pinky": (7, 8, 9)}
# Fist flexion per joint level (radians) for fingers and the thumb, before clipping to the joint limits.
_FIST_FLEX = {"finger": (1.45, 1.75, 1.2), "thumb": (0.6, 0.7, 1.0)}


# ------------------------------------------------------------------------------------------------
# Facts about a model (numpy only)


def hand_length(model: HandModel, beta: np.ndarray | None = None) -> float:
    """Wrist joint to middle fingertip keypoint (meters) in the flat pose for shape beta (None: zeros)."""
    kp = keypoints_at(rest_keypoints(model), beta)
    return float(np.linalg.norm(kp[12] - kp[0]))


def is_watertight(faces: np.ndarray) -> bool:
    """Every edge is shared by exactly two faces that traverse it in opposite directions."""
    faces = np.asarray(faces, dtype=np.int64)
    if faces.size == 0:
        return False
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F, 2) directed
    if np.any(edges[:, 0] == edges[:, 1]):
        return False
    n = int(faces.max()) + 1
    code = edges[:, 0] * n + edges[:, 1]
    reverse = edges[:, 1] * n + edges[:, 0]
    if np.unique(code).size != code.size:  # a directed edge used twice: non-manifold or flipped face
        return False
    return bool(np.all(np.isin(reverse, code)))


def model_info(model: HandModel) -> dict:
    """JSON-ready facts about a model (see `python -m engine model info --json`)."""
    beta = np.zeros(N_SHAPE)
    beta_plus, beta_minus = beta.copy(), beta.copy()
    beta_plus[0], beta_minus[0] = 2.0, -2.0
    length = hand_length(model)
    info = {
        "name": model.name,
        "side": model.side,
        "path": model.path,
        "format": model.format,
        "n_vertices": model.n_vertices,
        "n_faces": model.n_faces,
        "n_joints": N_JOINTS,
        "n_keypoints": N_KEYPOINTS,
        "n_shape": int(model.shapedirs.shape[2]),
        "hand_length_m": round(length, 6),
        "hand_length_m_beta1_plus2": round(hand_length(model, beta_plus), 6),
        "hand_length_m_beta1_minus2": round(hand_length(model, beta_minus), 6),
        "watertight": is_watertight(model.faces),
        "has_pose_correctives": model.has_pose_correctives,
        "has_joint_limits": model.has_joint_limits,
        "tip_vertex_ids": [int(i) for i in model.tip_vertex_ids],
        "fixes": list(model.fixes),
        "sha256": model.sha256,
    }
    return info


def _summary(info: dict) -> str:
    plus = info["hand_length_m_beta1_plus2"] / info["hand_length_m"] - 1.0
    minus = info["hand_length_m_beta1_minus2"] / info["hand_length_m"] - 1.0
    lines = [
        f"{info['name']} ({info['side']} hand, {info['format']})",
        f"  file         {info['path']}",
        f"  mesh         {info['n_vertices']} vertices, {info['n_faces']} faces, "
        f"{'watertight' if info['watertight'] else 'NOT watertight'}",
        f"  skeleton     {info['n_joints']} joints, {info['n_keypoints']} keypoints (tips: vertices "
        f"{', '.join(str(i) for i in info['tip_vertex_ids'])})",
        f"  shape        {info['n_shape']} directions; hand length {info['hand_length_m'] * 100:.1f} cm "
        f"(beta1 +2: {plus:+.1%}, -2: {minus:+.1%})",
        f"  pose correctives {'yes' if info['has_pose_correctives'] else 'no (zeros)'}, joint limits "
        f"{'yes' if info['has_joint_limits'] else 'no'}",
        f"  sha256       {info['sha256']}",
    ]
    lines += [f"  fix applied  {fix}" for fix in info["fixes"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Poses for pictures


def palm_direction(model: HandModel) -> np.ndarray:
    """Unit vector (3,) pointing out of the palm in the rest pose (from the index/pinky MCPs and the wrist)."""
    joints = model.rest_joints()
    n = np.cross(joints[1] - joints[0], joints[7] - joints[0])
    n = n / np.linalg.norm(n)
    return n if model.side == "right" else -n


def flexion_axes(model: HandModel) -> np.ndarray:
    """(16, 3) unit axes about which a positive rotation curls each finger joint towards the palm
    (bone direction x palm direction); row 0 is zero."""
    joints = model.rest_joints()
    kp = keypoints_at(rest_keypoints(model))
    palm = palm_direction(model)
    axes = np.zeros((N_JOINTS, 3))
    for j in range(1, N_JOINTS):
        children = np.flatnonzero(MANO_PARENTS == j)
        if children.size:
            child = joints[children[0]]
        else:  # last joint of a finger: towards its tip keypoint
            child = kp[JOINT_TO_KEYPOINT[j] + 1]
        bone = child - joints[j]
        if j in _FINGER_JOINTS["thumb"]:
            # The thumb folds across the palm, towards the middle of the index and middle fingers.
            target = 0.5 * (joints[2] + joints[5]) + 0.02 * palm
            axis = np.cross(bone, target - joints[j])
        else:
            axis = np.cross(bone, palm)
        axes[j] = axis / np.linalg.norm(axis)
    return axes


def pose_axis_angle(model: HandModel, kind: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Local rotations (16, 3) axis-angle for "flat", "fist" or "random" (wrist: identity).

    fist: every finger joint flexed (clipped to the model's joint limits when it has them).
    random: uniform inside the joint limits (without limits: flexion in [-0.2, 1.4] rad, small spread).
    """
    aa = np.zeros((N_JOINTS, 3))
    if kind == "flat":
        return aa
    axes = flexion_axes(model)
    limits = model.joint_limits
    if kind == "fist":
        for finger in FINGER_NAMES:
            levels = _FIST_FLEX["thumb" if finger == "thumb" else "finger"]
            for level, j in enumerate(_FINGER_JOINTS[finger]):
                aa[j] = axes[j] * levels[level]
        if limits is not None:
            aa[1:] = np.clip(aa[1:], limits[1:, :, 0], limits[1:, :, 1])
        return aa
    if kind == "random":
        rng = rng or np.random.default_rng()
        if limits is not None:
            aa[1:] = rng.uniform(limits[1:, :, 0], limits[1:, :, 1])
        else:
            flex = rng.uniform(-0.2, 1.4, size=(N_JOINTS, 1))
            aa[1:] = (axes * flex + rng.normal(scale=0.08, size=(N_JOINTS, 3)))[1:]
        return aa
    raise InputError(f"unknown pose {kind!r}: use flat, fist or random")


def _view_rotation(model: HandModel, view: str = "back") -> np.ndarray:
    """Rotation (3, 3) model -> view (OpenCV camera: x right, y down, z forward): a 3/4 view of the back
    (or the palm) of the hand turned 35 degrees towards the thumb and tilted 25 degrees, fingers up."""
    kp = keypoints_at(rest_keypoints(model))
    up = kp[9] - kp[0]
    up = up / np.linalg.norm(up)
    back = -palm_direction(model)  # out of the side of the hand that faces the camera
    if view == "palm":
        back = -back
    right = np.cross(up, back)  # completes a right-handed (right, up, back) frame
    # Camera looks at the back of the hand: forward = -back; image up = finger direction.
    base = np.stack([right, -up, -back])  # rows: camera x, y (down), z (forward) in model coordinates
    towards_thumb = (model.side == "right") == (view == "back")
    yaw = np.radians(-35.0 if towards_thumb else 35.0)
    pitch = np.radians(-25.0)
    r_yaw = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    r_pitch = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    return r_pitch @ r_yaw @ base


def render_pose_image(
    model: HandModel, theta_axis_angle: np.ndarray, beta: np.ndarray, size: int = 512, view: str = "back"
) -> np.ndarray:
    """Picture (size, size, 3) uint8 RGB of the posed model: shaded mesh from a 3/4 view plus skeleton."""
    import torch

    from engine.hand_model.torch_layer import HandLayer, axis_angle_to_quat
    from engine.render import draw_skeleton, render_mesh

    layer = HandLayer(model, dtype=torch.float64)
    with torch.no_grad():
        quat = axis_angle_to_quat(torch.as_tensor(theta_axis_angle, dtype=torch.float64)[None])
        verts, kps, _ = layer(quat, torch.as_tensor(beta, dtype=torch.float64)[None])
    verts, kps = verts[0].numpy(), kps[0].numpy()
    rot = _view_rotation(model, view)
    v_view, k_view = verts @ rot.T, kps @ rot.T
    lo, hi = v_view[:, :2].min(axis=0), v_view[:, :2].max(axis=0)
    scale = 0.84 * size / float(np.max(hi - lo))
    center = 0.5 * (lo + hi)

    def to_px(p):
        out = np.empty_like(p)
        out[:, :2] = (p[:, :2] - center) * scale + size / 2.0
        out[:, 2] = p[:, 2] * scale
        return out

    image = np.full((size, size, 3), 236, dtype=np.uint8)
    image[:] = np.linspace(250, 205, size, dtype=np.float64)[:, None, None].astype(np.uint8)
    image = render_mesh(image, to_px(v_view), model.faces, color=(222, 178, 150), alpha=1.0)
    image = draw_skeleton(image, to_px(k_view)[:, :2], thickness=max(1, size // 256), radius=max(2, size // 160))
    return image


# ------------------------------------------------------------------------------------------------
# CLI


def _parse_beta(text: str | None) -> np.ndarray:
    beta = np.zeros(N_SHAPE)
    if not text:
        return beta
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InputError(f"--beta expects comma-separated numbers like 1.5,-0.5, got {text!r}") from exc
    if len(values) > N_SHAPE:
        raise InputError(f"--beta takes at most {N_SHAPE} values, got {len(values)}")
    beta[: len(values)] = values
    return beta


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Inspect and render hand model files.")
    sub = parser.add_subparsers(dest="action", required=True)
    info = sub.add_parser("info", help="facts about a model file (JSON with --json)")
    render = sub.add_parser("render", help="draw the posed hand to a PNG")
    for p in (info, render):
        p.add_argument("path", nargs="?", default=None,
                       help="model .npz / MANO .pkl / folder (default: the shipped open hand)")
        p.add_argument("--side", choices=("right", "left"), default=None,
                       help="which hand when PATH is a folder or omitted (default: right)")
        p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    render.add_argument("--pose", choices=("flat", "fist", "random"), default="flat")
    render.add_argument("--seed", type=int, default=0, help="seed for --pose random (default 0)")
    render.add_argument("--beta", default=None, help="shape, comma-separated (up to 10 values; rest 0)")
    render.add_argument("--out", "-o", required=True, help="output PNG file")
    render.add_argument("--size", type=int, default=512, help="image size in pixels (default 512)")
    render.add_argument("--view", choices=("back", "palm"), default="back",
                        help="3/4 view of the back (default) or of the palm")
    return parser


def main(argv: list[str], prog: str = "python -m engine model") -> int:
    args = _parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    model = load_hand_model(args.path, side=args.side)
    if args.action == "info":
        info = model_info(model)
        print(json.dumps(info) if args.json else _summary(info))
        return 0

    if not 64 <= args.size <= 8192:
        raise InputError(f"--size must be between 64 and 8192 pixels, got {args.size}")
    beta = _parse_beta(args.beta)
    theta = pose_axis_angle(model, args.pose, np.random.default_rng(args.seed))
    image = render_pose_image(model, theta, beta, size=args.size, view=args.view)
    out = pathlib.Path(args.out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out must name a .png file, got {out}")
    import cv2

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        ok = cv2.imwrite(str(out), image[:, :, ::-1])
    except (OSError, cv2.error) as exc:
        raise OutputError(f"cannot write {out}: {exc}") from exc
    if not ok:
        raise OutputError(f"cannot write {out}: check that the folder exists and is writable")
    log.info("wrote %s", out)
    return 0
