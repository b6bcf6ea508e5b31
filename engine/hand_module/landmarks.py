"""MediaPipe hand landmark network ("hand_landmark_full", Apache-2.0) as an explicit torch module.

A MobileNetV2-like backbone (ReLU6, inverted residual blocks) on a 224x224 RGB crop in [0, 1], global
average pooling and four linear heads:

- screen landmarks: 21 x (x, y, z) with x, y in crop pixels (0..224) and z relative depth in the same
  units (MediaPipe divides by 224 and 0.4 to make it "normalized");
- hand presence (probability, the model ends in a sigmoid);
- handedness: probability of the label "Left" (`models/mediapipe/handedness.txt`), which MediaPipe defines
  for mirrored (selfie) images: on unmirrored footage "Left" is the person's right hand;
- world landmarks: 21 x 3 metres, hand-centred metric 3D in the crop's (rotated) axes.

The TFLite graph uses TensorFlow "SAME" padding, which is asymmetric at stride 2: `TFSamePad` does it
explicitly. Weights come from `models/mediapipe/hand_landmark_full.safetensors` (fp16, converted by
`models/mediapipe/convert_mediapipe.py`) and are loaded into float32 modules.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from engine.hand_module.runtimes import MODEL_DIR

LANDMARK_WEIGHTS = MODEL_DIR / "hand_landmark_full.safetensors"
INPUT_SIZE = 224

# Inverted residual blocks: (in, expanded, out, kernel, stride), in TFLite op order.
BLOCKS = (
    (16, 64, 24, 3, 2),
    (24, 144, 24, 3, 1),
    (24, 144, 40, 5, 2),
    (40, 240, 40, 5, 1),
    (40, 240, 80, 3, 2),
    (80, 480, 80, 3, 1),
    (80, 480, 80, 3, 1),
    (80, 480, 112, 5, 1),
    (112, 672, 112, 5, 1),
    (112, 672, 112, 5, 1),
    (112, 672, 192, 5, 2),
    (192, 1152, 192, 5, 1),
    (192, 1152, 192, 5, 1),
    (192, 1152, 192, 5, 1),
)


class TFSamePad(nn.Module):
    """TensorFlow "SAME" padding for a (kernel, stride) conv: extra pixel at the bottom/right when odd."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            out = -(-size // self.stride)
            total = max((out - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads) if any(pads) else x

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """The TFLite CONV_2D / DEPTHWISE_CONV_2D with SAME padding: symmetric at stride 1 (the conv pads),
    `TFSamePad` + an unpadded conv at stride 2. Index 1 of the Sequential is always the conv."""
    if stride == 1:
        return nn.Sequential(nn.Identity(), nn.Conv2d(cin, cout, kernel, 1, padding=kernel // 2, groups=groups))
    return nn.Sequential(TFSamePad(kernel, stride), nn.Conv2d(cin, cout, kernel, stride, groups=groups))


class InvertedResidual(nn.Module):
    """1x1 expand + ReLU6, kxk depthwise (stride s) + ReLU6, 1x1 project; residual when s = 1, in = out."""

    def __init__(self, cin: int, cexp: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.expand = conv(cin, cexp, 1)
        self.depthwise = conv(cexp, cexp, kernel, stride, groups=cexp)
        self.project = conv(cexp, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand(x))
        y = F.relu6(self.depthwise(y))
        y = self.project(y)
        return x + y if self.residual else y


class LandmarkOutput(NamedTuple):
    landmarks: torch.Tensor  # (B, 21, 3) crop pixels (x, y) and raw z, 224-px crop
    presence: torch.Tensor  # (B,) probability
    handedness: torch.Tensor  # (B,) probability of label "Left" (mirrored convention)
    world_landmarks: torch.Tensor  # (B, 21, 3) metres, crop axes


class HandLandmarkNet(nn.Module):
    """hand_landmark_full: (B, 3, 224, 224) RGB in [0, 1] -> `LandmarkOutput`."""

    def __init__(self):
        super().__init__()
        self.stem = conv(3, 24, 3, 2)
        self.stem_depthwise = conv(24, 24, 3, 1, groups=24)
        self.stem_project = conv(24, 16, 1)
        self.blocks = nn.ModuleList(InvertedResidual(*b) for b in BLOCKS)
        self.final_expand = conv(192, 1152, 1)
        self.final_depthwise = conv(1152, 1152, 3, 1, groups=1152)
        self.handedness = nn.Linear(1152, 1)
        self.presence = nn.Linear(1152, 1)
        self.landmarks = nn.Linear(1152, 63)
        self.world_landmarks = nn.Linear(1152, 63)

    def weight_slots(self) -> list[tuple[str, str]]:
        """(TFLite op kind, parameter prefix) of every weighted op, in the TFLite graph's op order."""
        slots = [("CONV_2D", "stem.1"), ("DEPTHWISE_CONV_2D", "stem_depthwise.1"), ("CONV_2D", "stem_project.1")]
        for i in range(len(BLOCKS)):
            slots += [
                ("CONV_2D", f"blocks.{i}.expand.1"),
                ("DEPTHWISE_CONV_2D", f"blocks.{i}.depthwise.1"),
                ("CONV_2D", f"blocks.{i}.project.1"),
            ]
        slots += [("CONV_2D", "final_expand.1"), ("DEPTHWISE_CONV_2D", "final_depthwise.1")]
        slots += [("FULLY_CONNECTED", n) for n in ("handedness", "presence", "landmarks", "world_landmarks")]
        return slots

    def forward(self, x: torch.Tensor) -> LandmarkOutput:
        """x (B, 3, 224, 224) float RGB in [0, 1] -> LandmarkOutput (see the class fields for shapes)."""
        x = F.relu6(self.stem(x))
        x = F.relu6(self.stem_depthwise(x))
        x = self.stem_project(x)
        for block in self.blocks:
            x = block(x)
        x = F.relu6(self.final_expand(x))
        x = F.relu6(self.final_depthwise(x))
        x = x.mean(dim=(2, 3))
        b = x.shape[0]
        return LandmarkOutput(
            landmarks=self.landmarks(x).reshape(b, 21, 3),
            presence=torch.sigmoid(self.presence(x))[:, 0],
            handedness=torch.sigmoid(self.handedness(x))[:, 0],
            world_landmarks=self.world_landmarks(x).reshape(b, 21, 3),
        )


def load_safetensors_float32(module: nn.Module, path: pathlib.Path) -> nn.Module:
    """Loads fp16 safetensors weights into a float32 module (strict: every parameter present)."""
    from safetensors.torch import load_file

    from engine.errors import ModelFileError

    if not path.is_file():
        raise ModelFileError(
            f"{path} is missing: the MediaPipe hand weights ship with the project "
            "(re-create them with `python models/mediapipe/convert_mediapipe.py`)"
        )
    try:
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        module.load_state_dict(state, strict=True)
    except Exception as exc:  # a truncated or foreign file
        raise ModelFileError(f"{path} does not hold the expected weights: {exc}") from exc
    return module.float().eval()


def load_landmark_net(path: pathlib.Path | None = None) -> HandLandmarkNet:
    """The shipped hand landmark network (float32, eval mode)."""
    return load_safetensors_float32(HandLandmarkNet(), path or LANDMARK_WEIGHTS)
