"""The paper's hand module network (Sec. 3.3, Sec. 4.1): stacked hourglass -> H, D -> uvd -> P -> IKNet -> mesh.

An alternative keypoint backbone to the MediaPipe port (which stays the default). Letters in shapes: B batch,
K = 21 keypoints, S input side (256), R = S / 4 the map side (64).

Pipeline (one right-hand crop; a left hand is flipped horizontally first, see `HourglassBackbone`):

    image (B, 3, S, S) -> stem (conv 7x7 /2, residuals, max-pool /2) -> F (B, C, R, R)
    -> `stacks` hourglasses, each predicting 2K maps: heatmap logits and distance maps D (intermediate
       supervision on every stack; the last stack's maps are the output)
    -> H = sigmoid(logits) normalized to sum 1 per channel, Eq. 4:  (u, v) = sum H x,  d' = sum H D
       (u, v in crop pixels, map cell i centred at (i + 0.5) * S / R; d' root-relative depth in reference-bone
       units, d'_9 = 0 ideally)
    -> shape branch (residual layers over concat(F, H, D), pooled): beta (B, 10), the metric reference bone
       length B (B,) (meters, softplus) and the scale-normalized root depth rho (B,) with
           z_root = rho * B * f_crop / S      (f_crop: the crop camera's focal length, pixels)
       so that rho is the root depth in "bone lengths at a unit focal length per crop side", independent of
       the crop's zoom (about S / L for a reference bone L crop pixels long: 2-3 for the training crops).
    -> `lift_crop_torch`: p_j = pi^-1(K_crop, (u_j, v_j), z_root + d'_j B) (Eq. 5); in bone units for training
    -> IKNet (engine.hand_module.iknet) on the root-relative, bone-normalized P -> theta (B, 16, 4)
    -> hand layer (engine.hand_model.torch_layer.HandLayer) theta, beta -> mesh and 21 keypoints, translated
       so that keypoint 9 sits at p_9 (the paper's "add the translation back").

Perspective (Eq. 5) and weak perspective (Eq. 14-15) use the same network outputs: `HourglassBackbone` maps
(u, v) back to the full frame and calls `engine.hand_module.lifting.perspective_lift` (with K and the predicted
bone length) or `weak_perspective_lift` (no K); no change of weights (Sec. 3.5).

Release facts (notes/handtailor-official.md) followed: 256 input, 64x64 maps, sigmoid heatmaps normalized by
their sum, shape branch giving bone length, root depth and 10 betas, IKNet 63 -> 16 quaternions. Differences:
D is predicted directly as d' (the release maps a sigmoid to [-1.5, 1.5]); the number of stacks and the width
are constructor arguments (`HourglassConfig`), default 2 stacks of width 256.
"""

from __future__ import annotations

import logging
import math
import pathlib
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.hand_model.constants import N_KEYPOINTS, N_SHAPE, ROOT_KEYPOINT
from engine.hand_module.lifting import normalize_joints, perspective_unproject

log = logging.getLogger(__name__)

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)


class HourglassConfig(NamedTuple):
    """Network size. The paper's: input 256, maps 64 (stride 4), width 256, 2 stacks."""

    input_size: int = 256
    channels: int = 256
    stacks: int = 2
    depth: int = 4  # down-samplings inside one hourglass (64 -> 4)
    shape_channels: int = 128

    @property
    def map_size(self) -> int:
        return self.input_size // 4


SMOKE_CONFIG = HourglassConfig(input_size=64, channels=32, stacks=1, depth=2, shape_channels=32)


# ------------------------------------------------------------------------------------------------ blocks
class Residual(nn.Module):
    """Pre-activation bottleneck residual block (Newell et al.), c_in -> c_out, optional stride 2."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        mid = max(c_out // 2, 1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), nn.Conv2d(c_in, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, stride, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, c_out, 1),
        )
        self.skip = None if (c_in == c_out and stride == 1) else nn.Conv2d(c_in, c_out, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + (x if self.skip is None else self.skip(x))


class Hourglass(nn.Module):
    """Recursive hourglass of `depth` levels, width c: (B, c, R, R) -> (B, c, R, R) (R divisible by 2^depth)."""

    def __init__(self, depth: int, c: int):
        super().__init__()
        self.up1 = Residual(c, c)
        self.low1 = Residual(c, c)
        self.low2 = Hourglass(depth - 1, c) if depth > 1 else Residual(c, c)
        self.low3 = Residual(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up1(x)
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2))))
        return up + F.interpolate(low, size=up.shape[-2:], mode="nearest")


# -------------------------------------------------------------------------------------------- soft-argmax
def normalize_heatmaps(heat: torch.Tensor) -> torch.Tensor:
    """Eq. 4's H: non-negative maps (B, K, R, R) scaled to sum 1 per channel (an all-zero map -> uniform)."""
    flat = heat.flatten(2)
    total = flat.sum(-1, keepdim=True)
    uniform = torch.full_like(flat, 1.0 / flat.shape[-1])
    return torch.where(total > 1e-12, flat / total.clamp_min(1e-12), uniform).view_as(heat)


def soft_argmax(heat: torch.Tensor, dist: torch.Tensor, stride: float) -> torch.Tensor:
    """Eq. 4: (x_j, d_j) = (sum_x H_j(x) x, sum_x H_j(x) D_j(x)).

    Args:
        heat: (B, K, R, R) non-negative heatmaps (normalized here). dist: (B, K, R, R) distance maps.
        stride: input pixels per map cell (S / R); cell i is centred at (i + 0.5) * stride.
    Returns:
        (B, K, 3) u, v in input (crop) pixels, d in D's units.
    """
    h = normalize_heatmaps(heat)
    R_h, R_w = h.shape[-2:]
    xs = (torch.arange(R_w, dtype=h.dtype, device=h.device) + 0.5) * stride
    ys = (torch.arange(R_h, dtype=h.dtype, device=h.device) + 0.5) * stride
    u = (h.sum(-2) * xs).sum(-1)
    v = (h.sum(-1) * ys).sum(-1)
    d = (h * dist).flatten(2).sum(-1)
    return torch.stack([u, v, d], dim=-1)


# --------------------------------------------------------------------------------------------- the network
class HourglassNet(nn.Module):
    """Keypoint network + shape branch: image (B, 3, S, S) -> dict of maps, uvd, beta, bone, rho.

    Outputs (`forward`):
        heat_logits: list over stacks of (B, K, R, R); dist: list of (B, K, R, R) (intermediate supervision)
        heat: (B, K, R, R) sigmoid of the last stack (the L_kpl2D target is a Gaussian of peak 1)
        uvd: (B, K, 3) crop pixels and d' (Eq. 4, last stack)
        beta: (B, 10); bone: (B,) meters (> 0); rho: (B,) scale-normalized root depth (module docstring)
    """

    def __init__(self, config: HourglassConfig = HourglassConfig()):
        super().__init__()
        self.config = config
        c, k = config.channels, N_KEYPOINTS
        c0 = max(c // 4, 8)
        self.stem = nn.Sequential(
            nn.Conv2d(3, c0 * 2, 7, 2, 3, bias=False), nn.BatchNorm2d(c0 * 2), nn.ReLU(inplace=True),
            Residual(c0 * 2, c0 * 4 if c0 * 4 <= c else c), nn.MaxPool2d(2),
            Residual(c0 * 4 if c0 * 4 <= c else c, c), Residual(c, c),
        )
        self.hourglasses = nn.ModuleList(Hourglass(config.depth, c) for _ in range(config.stacks))
        self.features = nn.ModuleList(
            nn.Sequential(Residual(c, c), nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            for _ in range(config.stacks)
        )
        self.heads = nn.ModuleList(nn.Conv2d(c, 2 * k, 1) for _ in range(config.stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(config.stacks - 1))
        self.merge_maps = nn.ModuleList(nn.Conv2d(2 * k, c, 1) for _ in range(config.stacks - 1))
        sc = config.shape_channels
        self.shape_branch = nn.Sequential(
            nn.Conv2d(c + 2 * k, sc, 1),
            Residual(sc, sc, stride=2), Residual(sc, sc, stride=2), Residual(sc, sc, stride=2),
            nn.BatchNorm2d(sc), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.shape_head = nn.Linear(sc, N_SHAPE + 2)
        with torch.no_grad():  # start at beta = 0, bone ~ 9 cm, rho ~ 2.5 (a hand filling the crop)
            self.shape_head.weight.mul_(0.01)
            self.shape_head.bias.zero_()
            self.shape_head.bias[N_SHAPE] = math.log(math.expm1(0.09 / 0.05))
            self.shape_head.bias[N_SHAPE + 1] = math.log(math.expm1(2.5))
        for head in self.heads:  # low initial heatmaps, zero depth
            nn.init.normal_(head.weight, std=1e-3)
            nn.init.constant_(head.bias[:k], -2.5)
            nn.init.zeros_(head.bias[k:])
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1))

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float in [0, 1] -> the network's input normalization."""
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> dict:
        """images (B, 3, S, S) RGB float in [0, 1] -> outputs (class docstring)."""
        k = N_KEYPOINTS
        x = self.stem(self.normalize_input(images))
        logits, dists = [], []
        feat = x
        for i in range(self.config.stacks):
            feat = self.features[i](self.hourglasses[i](x))
            maps = self.heads[i](feat)
            logits.append(maps[:, :k])
            dists.append(maps[:, k:])
            if i < self.config.stacks - 1:
                x = x + self.merge_features[i](feat) + self.merge_maps[i](maps)
        heat = torch.sigmoid(logits[-1])
        stride = self.config.input_size / heat.shape[-1]
        uvd = soft_argmax(heat, dists[-1], stride)
        pooled = self.shape_branch(torch.cat([feat, heat, dists[-1]], dim=1))
        shape = self.shape_head(pooled)
        beta = shape[:, :N_SHAPE]
        bone = 0.05 * F.softplus(shape[:, N_SHAPE])
        rho = F.softplus(shape[:, N_SHAPE + 1]) + 1e-3
        return dict(heat_logits=logits, dist=dists, heat=heat, uvd=uvd, beta=beta, bone=bone, rho=rho)


# ------------------------------------------------------------------------------------------------ lifting
def crop_focal(K_crop: torch.Tensor) -> torch.Tensor:
    """Focal length (pixels) of crop intrinsics (B, 3, 3) (possibly rotated / flipped): sqrt|det K[:2,:2]|."""
    return torch.sqrt(torch.abs(torch.linalg.det(K_crop[:, :2, :2])))


def lift_crop_torch(uvd: torch.Tensor, rho: torch.Tensor, K_crop: torch.Tensor, input_size: int) -> torch.Tensor:
    """The crop's joints in reference-bone units, differentiable: Eq. 5 (`lifting.perspective_unproject`)
    with B = 1 and the root depth z_root / B = rho f / S.

    Args:
        uvd: (B, K, 3) crop pixels and d' (d'_9 is subtracted). rho: (B,) scale-normalized root depth.
        K_crop: (B, 3, 3) general 3x3 crop camera (rotation / flip allowed). input_size: S.
    Returns:
        (B, K, 3) camera-frame joints divided by the reference bone length (multiply by B for meters).
    """
    z_root = rho * crop_focal(K_crop) / input_size  # (B,) in bone units
    ones = torch.ones_like(uvd[..., :1])
    rays = torch.einsum("bij,bkj->bki", torch.linalg.inv(K_crop), torch.cat([uvd[..., :2], ones], dim=-1))
    rays = rays / rays[..., 2:3]
    return perspective_unproject(rays, z_root, uvd[..., 2], torch.ones_like(z_root))


# IKNet's input convention, under the name training.py uses
root_relative_normalized = normalize_joints


class HandModuleNet(nn.Module):
    """HourglassNet + IKNet + hand layer end to end (training and inference on right-hand crops).

    forward(images (B, 3, S, S), K_crop (B, 3, 3)) -> the HourglassNet outputs plus
        joints_norm (B, K, 3): Eq. 5 joints in bone units, camera frame of the crop
        theta (B, 16, 4): IKNet on normalize_joints(joints_norm)
        mano_keypoints (B, K, 3): the hand layer's keypoints (theta, beta), meters, keypoint 9 at
            joints_norm[:, 9] * bone (the predicted root, meters), camera frame
        vertices (B, V, 3) when `with_mesh` (meters, same translation)
    """

    def __init__(self, net: HourglassNet, iknet: nn.Module, layer: nn.Module):
        super().__init__()
        self.net = net
        self.iknet = iknet
        self.layer = layer

    def forward(self, images: torch.Tensor, K_crop: torch.Tensor, with_mesh: bool = False) -> dict:
        out = self.net(images)
        joints_norm = lift_crop_torch(out["uvd"], out["rho"], K_crop, self.net.config.input_size)
        theta = self.iknet(normalize_joints(joints_norm))
        verts, kp, _ = self.layer(theta, out["beta"])
        root = joints_norm[:, ROOT_KEYPOINT] * out["bone"][:, None]
        shift = (root - kp[:, ROOT_KEYPOINT].to(root.dtype))[:, None]
        out.update(joints_norm=joints_norm, theta=theta, mano_keypoints=kp.to(root.dtype) + shift)
        if with_mesh:
            out["vertices"] = verts.to(root.dtype) + shift
        return out


# ---------------------------------------------------------------------------------------- inference API
def save_weights(path, net: HourglassNet, extra: dict | None = None) -> None:
    """Writes a HourglassNet's weights + its config to a .safetensors file (config in the metadata)."""
    import json

    from safetensors.torch import save_file

    meta = {"config": json.dumps(net.config._asdict())}
    if extra:
        meta.update({k: json.dumps(v) for k, v in extra.items()})
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path), metadata=meta)


def load_weights(path, device: str = "cpu") -> HourglassNet:
    """Reads `save_weights`'s file -> HourglassNet in eval mode. Raises ModelFileError when unreadable."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    from engine.errors import ModelFileError

    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"hourglass weights not found at {path}: no trained weights ship yet; train some with "
            "`python -m engine train run DATA -o RUN_DIR` (a GPU is advised) and pass RUN_DIR/hourglass.safetensors"
        )
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        config = HourglassConfig(**json.loads(meta["config"]))
        net = HourglassNet(config)
        net.load_state_dict(load_file(str(path)))
    except Exception as exc:  # broken file, wrong keys or shapes
        raise ModelFileError(f"cannot read hourglass weights {path}: {exc}") from exc
    return net.eval().to(device)


def crop_transform(keypoints_2d: np.ndarray, size: int, pad: float = 1.4) -> np.ndarray:
    """Square axis-aligned crop around 2D keypoints: (K, 2) px -> A (3, 3) full-frame px -> crop px."""
    lo, hi = np.nanmin(keypoints_2d, axis=0), np.nanmax(keypoints_2d, axis=0)
    centre = 0.5 * (lo + hi)
    side = max(float(np.max(hi - lo)) * pad, 16.0)
    r = size / side
    return np.array([[r, 0.0, size / 2 - r * centre[0]], [0.0, r, size / 2 - r * centre[1]], [0.0, 0.0, 1.0]])


def uvd_pixels(uv: np.ndarray, d_norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, v, d') -> the keypoint stage's (u, v, d) with d in pixels: d = d' s, s from Eq. 15 (guarded).

    Args: uv (..., K, 2) full-frame px; d_norm (..., K) root-relative depth in reference-bone units.
    Returns: uvd (..., K, 3), s (...) px per bone. Where Eq. 15 applies (no palm fallback),
    `lifting.normalized_depth(uvd)` gives d' back exactly: the reference bone's (u, v, d) length is
    sqrt(du^2 + dv^2 + s^2 dd'^2) = s. So `hand_module.fit_init` with depth source "uvd" sees the network's d'.
    """
    from engine.hand_module import lifting

    uv = np.asarray(uv, np.float64)
    d_norm = np.asarray(d_norm, np.float64)
    s, _ = lifting.bone_scale(uv, d_norm)
    d = (d_norm - d_norm[..., ROOT_KEYPOINT, None]) * s[..., None]
    return np.concatenate([uv, d[..., None]], axis=-1), s


class HourglassBackbone:
    """Per-image keypoint stage with the hourglass network, the same per-hand outputs as the MediaPipe stage.

    `predict(image, keypoints_2d=None, side="right", K=None, roi=None)` crops a square around the given 2D
    keypoints (a previous frame's keypoints or a box's corners; axis-aligned, side 1.4 x their extent) or
    around a MediaPipe ROI (`crops.Roi`, e.g. the tracker's ROI from the palm detector or the last frame;
    rotated, its size times ROI_ZOOM to match the training crops), flips left hands to right, runs the network
    and returns a dict with
        keypoints_uvd (21, 3) float32: u, v full-frame px, d = d' s in pixels like the MediaPipe stage
            (s from Eq. 15; see `uvd_pixels`)
        d_norm (21,): d' (root-relative, reference-bone units), confidence (21,): the heatmaps' peak values
        beta (10,), bone_length (m), joints_3d (21, 3): Eq. 5 with K (meters, camera frame, via
        lifting.perspective_lift with the predicted bone length) or Eq. 14-15 without K (bone units, root-
        relative, via lifting.weak_perspective_lift), scale (weak perspective s, px per bone) or None,
        root_depth_network (m, with K): the shape branch's own d_root (Eq. 5's; joints_3d uses the root depth
            that makes the lifted reference bone bone_length long instead, lifting.solve_root_depth)
    Both camera models come from the same network outputs (Sec. 3.5).
    """

    ROI_ZOOM = 0.8  # MediaPipe's landmark ROI is 2x the hand's extent; training crops are 1.3-2.1x

    def __init__(self, weights, device: str = "cpu"):
        self.net = load_weights(weights, device) if not isinstance(weights, HourglassNet) else weights.eval()
        self.device = device

    @torch.inference_mode()
    def predict(self, image: np.ndarray, keypoints_2d: np.ndarray | None = None, side: str = "right", K=None,
                roi=None) -> dict:
        import cv2

        from engine.hand_module import crops, lifting

        S = self.net.config.input_size
        if roi is not None:
            roi = crops.Roi(roi[0], roi[1], roi[2] * self.ROI_ZOOM, roi[3])
            A = crops.crop_matrix(roi, S).astype(np.float64)
        elif keypoints_2d is not None:
            A = crop_transform(np.asarray(keypoints_2d, np.float64), S)
        else:
            raise ValueError("predict needs keypoints_2d or roi")
        if side == "left":
            A = np.array([[-1.0, 0.0, S], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ A
        crop = cv2.warpPerspective(image, A, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x = torch.from_numpy(np.ascontiguousarray(crop)).float().div(255.0).permute(2, 0, 1)[None].to(self.device)
        out = self.net(x)
        uvd = out["uvd"][0].double().cpu().numpy()
        conf = out["heat"][0].flatten(1).amax(-1).double().cpu().numpy()
        Ainv = np.linalg.inv(A)
        uv = np.concatenate([uvd[:, :2], np.ones((N_KEYPOINTS, 1))], axis=1) @ Ainv.T
        uv = uv[:, :2] / uv[:, 2:]
        d_norm = uvd[:, 2] - uvd[ROOT_KEYPOINT, 2]
        bone = float(out["bone"][0])
        wp, s, _ = lifting.weak_perspective_lift(uv, d_norm)
        uvd_px, _ = uvd_pixels(uv, d_norm)
        root_net = None
        if K is not None:
            joints, _ = lifting.perspective_lift(uv, d_norm, np.asarray(K, np.float64), bone)
            f_crop = math.sqrt(abs(np.linalg.det((A @ np.asarray(K, np.float64))[:2, :2])))
            root_net = float(out["rho"][0]) * bone * f_crop / S
            scale = None
        else:
            joints, scale = wp, float(s)
        return dict(
            keypoints_uvd=uvd_px.astype(np.float32),
            d_norm=d_norm, confidence=conf.astype(np.float32), beta=out["beta"][0].double().cpu().numpy(),
            bone_length=bone, joints_3d=joints, scale=scale, root_depth_network=root_net,
        )
