"""MediaPipe palm detector ("palm_detection_full", Apache-2.0) as an explicit torch module (its anchors, box
decoding and non-maximum suppression: `palm_detections`).

Input: (B, 3, 192, 192) RGB in [0, 1], the frame letterboxed (zero border) to a square. Outputs:
2016 anchors x 18 regressors (box centre x, y, width, height, then 7 palm keypoints x, y; 192-px units,
relative to the anchor centre) and 2016 score logits. Keypoint 0 is the wrist centre, 2 the middle-finger
MCP (their direction gives the hand's rotation).

BlazePalm: 5x5/2 stem + PReLU; BlazeBlocks (5x5 depthwise + 1x1 conv + residual, PReLU after the add;
stride 2 blocks max-pool the residual and zero-pad its channels); stages at 96, 48, 24, 12, 6 px; a small
feature pyramid (bilinear x2 upsample with half-pixel centres, 1x1 conv + PReLU, add) with heads at
12x12 (6 anchors per cell) and 24x24 (2 anchors per cell), 24x24 first in the output order.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from engine.hand_module.landmarks import MODEL_DIR, TFSamePad, load_safetensors_float32

PALM_WEIGHTS = MODEL_DIR / "palm_detection_full.safetensors"


class BlazeBlock(nn.Module):
    """PReLU(x' + conv1x1(dw5x5(x))), x' = x, or max-pooled and channel-padded x at stride 2."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.pad = TFSamePad(5, stride) if stride == 2 else nn.Identity()  # stride 1: symmetric, in the conv
        self.depthwise = nn.Conv2d(cin, cin, 5, stride, padding=2 if stride == 1 else 0, groups=cin)
        self.pointwise = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout)
        self.stride, self.channel_pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(self.pad(x)))
        if self.stride == 2:
            x = F.max_pool2d(x, 2, 2)
        if self.channel_pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.channel_pad))
        return self.act(x + y)


def stage(cin: int, cout: int, n: int, downsample: bool) -> nn.Sequential:
    """One stride-2 block (cin -> cout) when downsampling, then n stride-1 blocks at cout."""
    first = [BlazeBlock(cin, cout, 2)] if downsample else []
    return nn.Sequential(*first, *(BlazeBlock(cout, cout) for _ in range(n)))


class Upsample(nn.Module):
    """Bilinear x2 (half-pixel centres) + 1x1 conv + PReLU: the pyramid's top-down path."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.act(self.conv(x))


class PalmOutput(NamedTuple):
    regressors: torch.Tensor  # (B, 2016, 18) 192-px units relative to the anchor
    logits: torch.Tensor  # (B, 2016)


class BlazePalm(nn.Module):
    """palm_detection_full: (B, 3, 192, 192) RGB in [0, 1] -> `PalmOutput`."""

    def __init__(self):
        super().__init__()
        self.stem_pad = TFSamePad(5, 2)
        self.stem = nn.Conv2d(3, 32, 5, 2)
        self.stem_act = nn.PReLU(32)
        self.stage96 = stage(32, 32, 4, downsample=False)
        self.stage48 = stage(32, 64, 4, downsample=True)
        self.stage24 = stage(64, 128, 4, downsample=True)
        self.stage12 = stage(128, 256, 4, downsample=True)
        self.stage6 = stage(256, 256, 4, downsample=True)
        self.up12 = Upsample(256, 256)
        self.fpn12 = stage(256, 256, 2, downsample=False)
        self.cls12 = nn.Conv2d(256, 6, 1)
        self.reg12 = nn.Conv2d(256, 6 * 18, 1)
        self.up24 = Upsample(256, 128)
        self.fpn24 = stage(128, 128, 2, downsample=False)
        self.cls24 = nn.Conv2d(128, 2, 1)
        self.reg24 = nn.Conv2d(128, 2 * 18, 1)

    def weight_slots(self) -> list[tuple[str, str]]:
        """(TFLite op kind, parameter prefix) of every weighted op, in the TFLite graph's op order."""
        slots = [("CONV_2D", "stem"), ("PRELU", "stem_act")]

        def blocks(name: str, seq: nn.Sequential) -> list[tuple[str, str]]:
            out = []
            for i in range(len(seq)):
                p = f"{name}.{i}"
                out += [("DEPTHWISE_CONV_2D", f"{p}.depthwise"), ("CONV_2D", f"{p}.pointwise"), ("PRELU", f"{p}.act")]
            return out

        for name in ("stage96", "stage48", "stage24", "stage12", "stage6"):
            slots += blocks(name, getattr(self, name))
        slots += [("CONV_2D", "up12.conv"), ("PRELU", "up12.act")] + blocks("fpn12", self.fpn12)
        slots += [("CONV_2D", "cls12"), ("CONV_2D", "reg12"), ("CONV_2D", "up24.conv"), ("PRELU", "up24.act")]
        slots += blocks("fpn24", self.fpn24) + [("CONV_2D", "cls24"), ("CONV_2D", "reg24")]
        return slots

    def forward(self, x: torch.Tensor) -> PalmOutput:
        """x (B, 3, 192, 192) float RGB in [0, 1] -> PalmOutput (regressors (B, 2016, 18), logits (B, 2016))."""
        b = x.shape[0]
        x = self.stem_act(self.stem(self.stem_pad(x)))
        x = self.stage96(x)
        x = self.stage48(x)
        x24 = self.stage24(x)
        x12 = self.stage12(x24)
        x6 = self.stage6(x12)
        x12 = self.fpn12(x12 + self.up12(x6))
        x24 = self.fpn24(x24 + self.up24(x12))

        def flat(t: torch.Tensor, n: int) -> torch.Tensor:  # channels-last flattening, as TFLite's RESHAPE
            return t.permute(0, 2, 3, 1).reshape(b, -1, n)

        logits = torch.cat([flat(self.cls24(x24), 1), flat(self.cls12(x12), 1)], dim=1)[..., 0]
        regressors = torch.cat([flat(self.reg24(x24), 18), flat(self.reg12(x12), 18)], dim=1)
        return PalmOutput(regressors=regressors, logits=logits)


def load_palm_net(path: pathlib.Path | None = None) -> BlazePalm:
    """The shipped palm detector (float32, eval mode)."""
    return load_safetensors_float32(BlazePalm(), path or PALM_WEIGHTS)
