"""HandTailor inference engine: hand model layer, hand module (torch modules; OpenVINO / numpy inference), tailor (JAX),
capture pipeline.

Never imports bpy: the Blender add-on talks to this package through `engine.protocol` only.
"""

import os as _os

# torch's OpenMP threads spin while waiting by default; on a small shared CPU that made the keypoint
# networks ~5x slower (measured: 104 ms vs 330-1380 ms per crop under load). It must be set before torch
# loads, and every engine entry point imports this package first.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# XLA:CPU runs each op of a while loop as its own thunk, every iteration; a loop whose buffers are small
# enough it compiles into one kernel instead (its small-while-loop hoisting). The tailor's Adam loop is
# ~135 tiny ops a step, so for a few frames the one-kernel loop halves the step (13 -> 6.5 us at B = 1;
# one frame's fit 0.62 -> 0.43 ms). The threshold (bytes the loop touches) admits the loop up to B = 4
# frames (measured 0.6-0.8 MB; B = 8 about 1.3 MB): larger loops get parallel-split ops, which that
# kernel path cannot run (with no limit, LLVM aborts the process at B = 16: ParallelForkJoin unresolved).
# Measured with the pinned jax/jaxlib 0.7.1; tests/test_tailor_loop_kernel.py checks both sides. XLA reads
# its flags when JAX first starts a backend, so this must precede any JAX computation; a user's own backend
# options are left alone.
SMALL_LOOP_KERNEL_BYTES = 1_000_000
SMALL_LOOP_KERNEL_FLAG_SET = "xla_backend_extra_options" not in _os.environ.get("XLA_FLAGS", "")
if SMALL_LOOP_KERNEL_FLAG_SET:
    _os.environ["XLA_FLAGS"] = (
        _os.environ.get("XLA_FLAGS", "")
        + f" --xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold={SMALL_LOOP_KERNEL_BYTES}"
    ).strip()

__version__ = "0.1.0"
