"""Hand module: detector and keypoint networks (MediaPipe hand models ported to torch), tracking,
lifting, IKNet and shape.

Submodules are imported on demand; this package import stays light (no torch, no OpenCV).
"""

BACKBONES = ("mediapipe", "hourglass")  # the keypoint networks (engine.hand_module.tracking)
