"""A capture's options (`CaptureOptions`, checked when made) and defaults, and the tailor settings they give.

Defaults of the clip fit (issue 15), measured side by side with scripts/experiments/clip_measure.py on the
gesture, ASL and sample clips and with scripts/make_synthetic_clip.py (ground truth): see
`engine.tailor.clip`'s docstring for the figures.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os

from engine import video
from engine.errors import InputError

log = logging.getLogger("engine.capture")

DEFAULT_ITERATIONS = 30  # with the tailor's annealed step (TailorConfig.lr_final): measured in tailor.clip (issue 15)
DEFAULT_SMOOTHING = 10.0  # the tailor's temporal_weight (joint acceleration); see `tailor_config`
ROTATION_SMOOTHING = 10.0  # rotation-acceleration weight per unit of smoothing (tailor rotation_smoothing)
DEFAULT_BATCH_SIZE = 32
# One torch thread: the networks run one crop at a time, and the second core decodes ahead (engine.prefetch).
# Measured on the shared 2-core CPU (tracker alone, ms/frame): 1 thread 40, 2 threads 54 with
# OMP_WAIT_POLICY=PASSIVE (engine/__init__.py), 930 with OpenMP's default spin-waiting.
DEFAULT_TORCH_THREADS = 1


@dataclasses.dataclass
class CaptureOptions:
    source: str
    output: str
    frame_start: int | None = None
    frame_end: int | None = None  # inclusive
    stride: int = 1
    hands: int = 1
    intrinsics: tuple[float, ...] | None = None  # fx, fy, cx, cy[, k1, k2, p1, p2, k3]
    hand_model: str | None = None
    iterations: int = DEFAULT_ITERATIONS
    smoothing: float = DEFAULT_SMOOTHING
    steady_shape: bool = False  # deprecated: one identity per track is the default (per_frame_shape turns it off)
    per_frame_shape: bool = False  # beta and hand_scale per frame instead of one identity per track
    hand_length: float | None = None  # the actor's hand length, meters (None: shape.DEFAULT_HAND_LENGTH)
    mirrored: bool = False
    overlay: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    threads: int | None = DEFAULT_TORCH_THREADS  # torch intra-op threads for the networks (None or 0: torch's default)
    backbone: str = "mediapipe"  # keypoint network: "mediapipe" | "hourglass" (engine.hand_module.tracking)
    hourglass_weights: str | None = None  # hourglass.safetensors (needed by backbone "hourglass")
    fps: float | None = None  # frame rate of footage without one (image folders); None: video.DEFAULT_FPS
    runtime: str | None = None  # network runtime (engine.hand_module.runtimes; None: the fastest for the device)
    segments: int | None = None  # frames tracked as this many concurrent segments (None: one per core, at most 2)

    def __post_init__(self):
        self.iterations = DEFAULT_ITERATIONS if self.iterations is None else int(self.iterations)
        self.smoothing = DEFAULT_SMOOTHING if self.smoothing is None else float(self.smoothing)
        self.batch_size = DEFAULT_BATCH_SIZE if self.batch_size is None else int(self.batch_size)
        self.stride = 1 if self.stride is None else int(self.stride)
        if self.hands not in (1, 2):
            raise InputError(f"--hands must be 1 or 2 (got {self.hands}).")
        if self.iterations < 0:
            raise InputError(f"iterations must be >= 0 (got {self.iterations}).")
        if not (math.isfinite(self.smoothing) and self.smoothing >= 0):
            raise InputError(f"smoothing must be a number >= 0 (got {self.smoothing}); 0 switches the temporal term off.")
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1 (got {self.batch_size}).")
        if self.stride < 1:
            raise InputError(f"stride must be >= 1 (got {self.stride}).")
        if self.threads is not None and not (type(self.threads) is int and self.threads >= 0):
            raise InputError(f"--threads must be a number of threads >= 1, or 0 for torch's default (got {self.threads}).")
        if self.steady_shape and self.per_frame_shape:
            raise InputError("per_frame_shape and steady_shape contradict each other; steady_shape is deprecated "
                             "(one identity per track is the default): leave it out.")
        if self.steady_shape:
            log.info("steady_shape is deprecated and has no effect: one identity per hand track is the default")
        if self.hand_length is not None and not (math.isfinite(float(self.hand_length)) and 0.05 <= self.hand_length <= 0.4):
            raise InputError(f"hand length must be meters in [0.05, 0.4], wrist crease to middle fingertip (got {self.hand_length}).")
        if self.fps is not None:
            self.fps = video.check_fps(self.fps)
        if self.intrinsics is not None:
            k = tuple(float(v) for v in self.intrinsics)
            if len(k) not in (4, 9) or not all(math.isfinite(v) for v in k):
                raise InputError("intrinsics must be fx,fy,cx,cy or fx,fy,cx,cy,k1,k2,p1,p2,k3 (finite numbers).")
            if k[0] <= 0 or k[1] <= 0:
                raise InputError(f"intrinsics: focal lengths must be positive (got fx={k[0]}, fy={k[1]}).")
            self.intrinsics = k
        self.backbone = "mediapipe" if self.backbone is None else str(self.backbone)
        from engine.hand_module.tracking import check_backbone

        check_backbone(self.backbone, self.hourglass_weights)  # before any footage is read
        from engine.hand_module.runtimes import check_runtime

        self.runtime = check_runtime(self.runtime, self.device)
        self.segments = default_segments() if self.segments is None else int(self.segments)
        if self.segments < 1:
            raise InputError(f"--segments must be >= 1 (got {self.segments}).")

    @classmethod
    def from_protocol(cls, args: dict) -> "CaptureOptions":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in args.items() if k in fields})

    @property
    def camera_model(self) -> str:
        return "weak_perspective" if self.intrinsics is None else "perspective"


def default_segments() -> int:
    """Concurrent tracking segments: one per core, at most 2 (see engine.hand_module.segments)."""
    return max(1, min(2, os.cpu_count() or 1))


def tailor_config(iterations: int, camera_model: str, smoothing: float):
    """The tailor's settings of a capture (and of its re-tailor): `smoothing` weighs both temporal terms; the
    identity prior is a clip's (`engine.tailor.clip.CLIP_IDENTITY`); the rest are TailorConfig's defaults (the
    annealed step lr_final included: 0.2 measured better here than the clip fit's own 0.3 before the merge,
    see engine.tailor.clip)."""
    from engine.tailor import TailorConfig
    from engine.tailor.clip import CLIP_IDENTITY

    return TailorConfig(iterations=iterations, camera_model=camera_model, temporal_weight=smoothing,
                        rotation_smoothing=ROTATION_SMOOTHING * smoothing, **CLIP_IDENTITY)


