"""Training data for the hourglass hand module: a Dataset over ground-truth folders and a fast synthetic generator.

Ground-truth format: `../shared/data/README.md` (`annotations_normalized.json`, one record per hand: image,
hand, K, joints_3d_m, joints_2d_px, visible). Any folder in that format works (our synthetic sets, the Cycles
set of scripts/render_synthetic_set.py, FreiHAND / RHD converted by a user).

`HandCropDataset` item (right-hand crops: a left hand's crop is flipped horizontally and its 3D joints
x-mirrored, so one network serves both sides like IKNet's mirror, see iknet.py):
    image (3, S, S) float32 in [0, 1]            heatmap (K, R, R) float32 Gaussians of peak 1 (L_kpl2D target)
    uv (K, 2) crop pixels                         K_crop (3, 3) the crop camera (after flip: K' = F A K M)
    joints_norm (K, 3) camera-frame joints / bone (the crop camera's frame, x-mirrored for left hands)
    d_norm (K,) (z_j - z_9) / bone                rho () z_9 / bone * S / f_crop (see hourglass.py)
    bone () meters                                has_3d () 1.0 where joints_3d_m and K exist, else 0.0
    visible (K,) float32                          index () record index

`generate_synthetic_set` rasterizes the shipped hand models with engine.render.render_mesh: random poses
inside the joint limits, random shapes, orientations, skin tones, lights, backgrounds and occluders, a random
pinhole K, both hands; it writes images + annotations_normalized.json in the same format ("for volume":
~10-20 images/s at 256 px on one core; the Cycles script gives realism, hundreds not thousands).
"""

from __future__ import annotations

import json
import logging
import math
import pathlib

import cv2
import numpy as np
import torch

from engine.camera import project_perspective
from engine.errors import InputError
from engine.groundtruth import ANNOTATIONS, Record, load_annotations
from engine.hand_model.constants import N_KEYPOINTS, REFERENCE_BONE, ROOT_KEYPOINT
from engine.hand_module import crops

log = logging.getLogger(__name__)

HEATMAP_SIGMA = 2.0  # map cells
SKIN_TONES_RGB = np.array([  # sRGB 0-255, light to dark
    [246, 214, 192], [236, 192, 165], [224, 172, 141], [198, 146, 110],
    [170, 120, 85], [130, 88, 60], [92, 62, 42],
], dtype=np.float64)


# ---------------------------------------------------------------------------------------------- reading
def read_annotations(folder) -> list[Record]:
    """Records of one ground-truth folder that carry 2D or 3D joints (InputError when unreadable)."""
    return [r for r in load_annotations(folder) if r.joints_3d is not None or r.joints_2d is not None]


def _gaussian_heatmaps(uv_cells: np.ndarray, size: int, sigma: float = HEATMAP_SIGMA) -> np.ndarray:
    """(K, 2) positions in map cells (cell i centred at i) -> (K, size, size) Gaussians of peak 1."""
    g = np.arange(size, dtype=np.float32)
    gx = np.exp(-((g[None, :] - uv_cells[:, :1]) ** 2) / (2 * sigma**2))  # (K, size)
    gy = np.exp(-((g[None, :] - uv_cells[:, 1:2]) ** 2) / (2 * sigma**2))
    return (gy[:, :, None] * gx[:, None, :]).astype(np.float32)


class HandCropDataset(torch.utils.data.Dataset):
    """Crops around the hand (from its 2D / projected 3D joints) with targets; see the module docstring.

    Args:
        folders: one or more ground-truth folders (or record lists from `read_annotations`).
        input_size: S (the map side is S / 4). augment: random scale, rotation, shift, colour, blur, noise.
        seed: base of the per-item random generator (item i, epoch e -> default_rng([seed, e, i])).
    """

    def __init__(self, folders, input_size: int = 256, augment: bool = True, seed: int = 0):
        if isinstance(folders, (str, pathlib.Path)):
            folders = [folders]
        self.records: list[Record] = []
        for f in folders:
            self.records += read_annotations(f) if isinstance(f, (str, pathlib.Path)) else list(f)
        if not self.records:
            raise InputError(f"no usable hand records in {[str(f) for f in folders]}")
        self.input_size = int(input_size)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image = cv2.imread(str(rec.image), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"cannot read image {rec.image}")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        K, j3, j2 = rec.K, rec.joints_3d, rec.joints_2d  # j2: given, or projected from j3 by the reader
        has_3d = K is not None and j3 is not None
        if j2 is None:
            raise InputError(f"record {rec.image} has neither 2D joints nor 3D joints with K")
        vis = rec.visible.astype(np.float64)
        S = self.input_size
        lo, hi = j2.min(axis=0), j2.max(axis=0)
        centre, side = 0.5 * (lo + hi), max(float(np.max(hi - lo)), 8.0) * 1.4
        angle = 0.0
        if self.augment:
            side *= rng.uniform(0.9, 1.5)  # 1.26-2.1 x the extent: covers MediaPipe's ROI (2x)
            centre = centre + rng.uniform(-0.08, 0.08, 2) * side
            angle = rng.uniform(-math.pi / 6, math.pi / 6)
        flip = rec.hand == "left"
        A = crops.crop_matrix(crops.Roi(float(centre[0]), float(centre[1]), side, angle), S, flip)
        crop = cv2.warpAffine(image, A[:2], (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if self.augment:
            crop = _colour_augment(crop, rng)
        uv = np.concatenate([j2, np.ones((N_KEYPOINTS, 1))], axis=1) @ A.T
        uv = uv[:, :2]
        M = np.diag([-1.0, 1.0, 1.0]) if flip else np.eye(3)
        if has_3d:
            K_crop = A @ K @ M
            joints = j3 @ M  # M is its own inverse and transpose
            a, b = REFERENCE_BONE
            bone = float(np.linalg.norm(joints[b] - joints[a]))
            joints_norm = joints / bone
            d_norm = joints_norm[:, 2] - joints_norm[ROOT_KEYPOINT, 2]
            f_crop = math.sqrt(abs(np.linalg.det(K_crop[:2, :2])))
            rho = joints_norm[ROOT_KEYPOINT, 2] * S / f_crop
            uvh = joints @ K_crop.T
            uv = uvh[:, :2] / uvh[:, 2:]
        else:
            K_crop, rho, bone = A.copy(), 0.0, 0.0  # 2D only: the 3D targets are masked by has_3d
            joints_norm, d_norm = np.zeros((N_KEYPOINTS, 3)), np.zeros(N_KEYPOINTS)
        R = S // 4
        heat = _gaussian_heatmaps((uv / (S / R) - 0.5).astype(np.float32), R)
        inside = (uv >= 0).all(axis=1) & (uv < S).all(axis=1)
        return dict(
            image=torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div(255.0),
            heatmap=torch.from_numpy(heat),
            uv=torch.as_tensor(uv, dtype=torch.float32),
            K_crop=torch.as_tensor(K_crop, dtype=torch.float32),
            joints_norm=torch.as_tensor(joints_norm, dtype=torch.float32),
            d_norm=torch.as_tensor(d_norm, dtype=torch.float32),
            rho=torch.tensor(float(rho), dtype=torch.float32),
            bone=torch.tensor(bone, dtype=torch.float32),
            has_3d=torch.tensor(1.0 if has_3d else 0.0),
            visible=torch.as_tensor(vis * inside, dtype=torch.float32),
            index=torch.tensor(index),
        )


def _colour_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random per-channel gain, brightness, contrast, blur and noise: (H, W, 3) uint8 -> same."""
    x = img.astype(np.float32)
    x = x * rng.uniform(0.8, 1.2, 3) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.7, 1.3) + mean
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    x = x + rng.normal(0, rng.uniform(0, 8), x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ synthetic generator
def _rotation(axis, angle: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, np.float64)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()


def _canonical_orientation(rest_kp: np.ndarray, palm_to_camera: bool) -> np.ndarray:
    """Camera-from-model rotation: fingers up (-y), palm (or back) towards the camera."""
    d = rest_kp[9] - rest_kp[0]
    d = d / np.linalg.norm(d)
    n = np.cross(rest_kp[5] - rest_kp[0], rest_kp[17] - rest_kp[0])
    n = n - d * (n @ d)
    n = n / np.linalg.norm(n)
    src = np.stack([d, n, np.cross(d, n)], axis=1)
    up, normal = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0 if palm_to_camera else 1.0])
    dst = np.stack([up, normal, np.cross(up, normal)], axis=1)
    return dst @ src.T


def sample_hand_params(rng: np.random.Generator, model, rest_kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A plausible pose and shape: theta (16, 4) (local axis-angle inside the joint limits, global rotation
    fingers-up +- roll 90 deg, tilt up to 60 deg), beta (10,) ~ N(0, 0.8^2) clipped to +-2."""
    from scipy.spatial.transform import Rotation

    aa = np.zeros((16, 3))
    lim = model.joint_limits
    if lim is not None:
        lo = np.where(np.isfinite(lim[1:, :, 0]), lim[1:, :, 0], -0.3)
        hi = np.where(np.isfinite(lim[1:, :, 1]), lim[1:, :, 1], 0.3)
        aa[1:] = lo + (hi - lo) * rng.beta(2.0, 2.0, size=lo.shape)
        if rng.random() < 0.3:  # relaxed / open hands are common
            aa[1:] = np.clip(aa[1:] * rng.uniform(0, 1), lo, hi)
    else:
        aa[1:] = rng.normal(0.0, 0.25, size=(15, 3))
    r0 = _canonical_orientation(rest_kp, palm_to_camera=bool(rng.random() < 0.5))
    roll = _rotation([0, 0, 1], rng.uniform(-math.pi / 2, math.pi / 2))
    tilt = _rotation([rng.normal(), rng.normal(), 0.0], rng.uniform(0.0, math.radians(60)))
    rot = Rotation.from_rotvec(aa).as_quat()  # x, y, z, w
    theta = np.concatenate([rot[:, 3:], rot[:, :3]], axis=1)
    x, y, z, w = Rotation.from_matrix(roll @ tilt @ r0).as_quat()
    theta[0] = [w, x, y, z]
    beta = np.clip(rng.normal(0.0, 0.8, 10), -2.0, 2.0)
    return theta, beta


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random cluttered background (H, W, 3) uint8: gradient + blurred noise + random shapes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * math.pi)
    t = (np.cos(a) * xx + np.sin(a) * yy)[..., None]
    img = c0 * (1 - t) + c1 * t
    noise = cv2.resize(rng.uniform(-60, 60, (int(rng.integers(2, 16)),) * 2 + (3,)).astype(np.float32),
                       (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 8))):
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        p = rng.uniform(0, size, 2).astype(int)
        if rng.random() < 0.5:
            q = rng.uniform(0, size, 2).astype(int)
            cv2.rectangle(img, tuple(p), tuple(q), colour, -1 if rng.random() < 0.7 else int(rng.integers(1, 6)))
        else:
            cv2.circle(img, tuple(p), int(rng.uniform(3, size / 4)), colour, -1)
    return img


def _occlude(img: np.ndarray, uv: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws 1-2 random opaque shapes over part of the hand (around random keypoints)."""
    out = img.copy()
    extent = float(np.max(uv.max(0) - uv.min(0)))
    for _ in range(int(rng.integers(1, 3))):
        c = uv[int(rng.integers(N_KEYPOINTS))] + rng.normal(0, 0.1 * extent, 2)
        axes = (int(rng.uniform(0.08, 0.25) * extent), int(rng.uniform(0.05, 0.2) * extent))
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        cv2.ellipse(out, (int(c[0]), int(c[1])), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return out


class SyntheticHandRenderer:
    """Rasterizes random hands (engine.render.render_mesh) with exact ground truth for one image size."""

    def __init__(self, size: int = 256, hand_model_path=None):
        from engine.hand_model import load_hand_model
        from engine.hand_model.rest import rest_keypoints
        from engine.hand_model.torch_layer import HandLayer

        self.size = int(size)
        self.models, self.layers, self.rest = {}, {}, {}
        for side in ("right", "left"):
            model = load_hand_model(hand_model_path, side=side)
            self.models[side] = model
            self.layers[side] = HandLayer(model, dtype=torch.float64).eval()
            self.rest[side] = rest_keypoints(model).k0

    def render(self, rng: np.random.Generator, side: str) -> dict:
        """One image: dict(image (S, S, 3) uint8 RGB, K (3, 3), joints_3d (21, 3) m, joints_2d (21, 2) px,
        visible (21,) bool (inside the image), theta (16, 4), beta (10,))."""
        from engine.render import render_mesh

        S = self.size
        model, layer = self.models[side], self.layers[side]
        for _attempt in range(20):
            theta, beta = sample_hand_params(rng, model, self.rest[side])
            with torch.no_grad():
                v, kp, _ = layer(torch.as_tensor(theta[None]), torch.as_tensor(beta[None]))
            v, kp = v[0].numpy(), kp[0].numpy()
            focal = rng.uniform(0.8, 1.6) * S
            K = np.array([[focal, 0.0, S / 2], [0.0, focal, S / 2], [0.0, 0.0, 1.0]])
            extent = float(np.linalg.norm(kp.max(0)[:2] - kp.min(0)[:2]))
            depth = max(0.12, focal * extent / (rng.uniform(0.4, 0.8) * S))
            target = K[:2, 2] + rng.uniform(-0.15, 0.15, 2) * S
            centre = kp.mean(0)
            want = np.array([(target[0] - K[0, 2]) * depth / focal, (target[1] - K[1, 2]) * depth / focal, depth])
            shift = want - centre
            v, kp = v + shift, kp + shift
            v_near = float(v[:, 2].min())
            if v_near < 0.05:  # keep every vertex in front of the camera
                v, kp = v + [0, 0, 0.05 - v_near], kp + [0, 0, 0.05 - v_near]
            uv = project_perspective(kp, K)
            if v_near >= 0.05 and uv.min() >= 0.02 * S and uv.max() <= 0.98 * S:
                break  # else redraw (after 20 draws the last one is kept: `visible` marks what left the image)
        img = _background(rng, S)
        vpx = np.concatenate([project_perspective(v, K), v[:, 2:]], axis=1)
        skin = SKIN_TONES_RGB[int(rng.integers(len(SKIN_TONES_RGB)))] * rng.uniform(0.85, 1.1, 3)
        light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.3, 1.5)])
        img = render_mesh(img, vpx, np.asarray(model.faces), color=tuple(np.clip(skin, 0, 255)),
                          vertices_3d=v, light_dir=light, ambient=rng.uniform(0.25, 0.6))
        if rng.random() < 0.35:
            img = _occlude(img, uv, rng)
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2))
        img = np.clip(img.astype(np.float32) + rng.normal(0, rng.uniform(0, 6), img.shape), 0, 255).astype(np.uint8)
        visible = (uv >= 0).all(1) & (uv < S).all(1)
        return dict(image=img, K=K, joints_3d=kp, joints_2d=uv, visible=visible, theta=theta, beta=beta)


def generate_synthetic_set(out_dir, count: int, size: int = 256, seed: int = 0, sides: str = "both",
                           hand_model_path=None, progress=None) -> int:
    """Writes `count` rasterized hands to out_dir in the ground-truth format; returns the record count.

    Deterministic per image (default_rng([seed, i])); images already present are kept (resumable), and the
    annotations are rewritten at the end. Side: "both" alternates right (even i) and left (odd i).
    progress: optional callable(done, total).
    """
    out = pathlib.Path(out_dir)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    renderer = SyntheticHandRenderer(size, hand_model_path)
    for i in range(count):
        side = sides if sides in ("right", "left") else ("right" if i % 2 == 0 else "left")
        name = f"{i:06d}_{side}.png"
        label = out / "labels" / f"{i:06d}.json"
        if not ((out / name).is_file() and label.is_file()):
            r = renderer.render(np.random.default_rng([seed, i]), side)
            cv2.imwrite(str(out / name), cv2.cvtColor(r["image"], cv2.COLOR_RGB2BGR))
            rec = dict(image=name, hand=side, K=r["K"].tolist(), joints_3d_m=r["joints_3d"].tolist(),
                       joints_2d_px=r["joints_2d"].tolist(), visible=[bool(b) for b in r["visible"]],
                       theta=r["theta"].tolist(), beta=r["beta"].tolist())
            label.write_text(json.dumps(rec))
        if progress is not None:
            progress(i + 1, count)
    records = [json.loads(p.read_text()) for p in sorted((out / "labels").glob("*.json"))[:count]]
    (out / ANNOTATIONS).write_text(json.dumps(records))
    return len(records)
