"""HandTailor inference engine: hand model layer, hand module (torch), tailor (JAX), capture pipeline.

Never imports bpy: the Blender add-on talks to this package through `engine.protocol` only.
"""

import os as _os

# torch's OpenMP threads spin while waiting by default; on a small shared CPU that made the keypoint
# networks ~5x slower (measured: 104 ms vs 330-1380 ms per crop under load). It must be set before torch
# loads, and every engine entry point imports this package first.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
