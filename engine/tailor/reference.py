"""The non-jitted reference: exactly the jitted tailor's math, one frame at a time, every op dispatched eagerly.

It runs `optimize._fit_impl` (the function `fit` jits) under `jax.disable_jit()`, frame by frame, so the
benchmark's ratio compares the same computation with and without compilation and batching (what the
paper's 8.02 ms per frame on an i7-8700 is closest to: JAX on CPU, one frame at a time). Also a test oracle.
"""

from __future__ import annotations

import jax
import numpy as np

from engine.hand_model import HandModel
from engine.tailor.optimize import TailorConfig, _finish, fit_arrays, model_params, prepare_inputs

__all__ = ["reference_fit"]


def reference_fit(
    model: HandModel,
    theta0,
    beta0,
    root0,
    keypoints_2d,
    confidence,
    valid,
    K,
    locks=None,
    config: TailorConfig = TailorConfig(),
    *,
    hand_scale0=None,
    projection_scale0=None,
    image_size=None,
    focal_px=None,
) -> dict:
    """`engine.tailor.fit` without jit, one frame at a time (same arguments, same result dict).

    The temporal term couples frames, so with `temporal_weight > 0` the batch is run as a whole (eagerly).
    Shapes as in `fit`: theta0 (B, 16, 4), ... -> theta (B, 16, 4), joints_3d (B, K, 3), ...
    """
    inputs, K_used, originals, lk, _ = prepare_inputs(
        theta0, beta0, root0, keypoints_2d, confidence, valid, K, locks, hand_scale0=hand_scale0,
        projection_scale0=projection_scale0, camera_model=config.camera_model, image_size=image_size,
        focal_px=focal_px,
    )
    params = model_params(model)
    b = inputs["theta0"].shape[0]
    with jax.disable_jit():
        if float(config.temporal_weight) > 0:
            outs = [fit_arrays(params, inputs, config, jit=False)]
        else:
            outs = [
                fit_arrays(params, {k: (v if k == "K" else v[i : i + 1]) for k, v in inputs.items()}, config, jit=False)
                for i in range(b)
            ]
    outs = jax.device_get(outs)

    def cat(*xs):
        return xs[0] if np.ndim(xs[0]) == 0 else np.concatenate(xs, axis=0)

    out = jax.tree_util.tree_map(cat, *outs) if len(outs) > 1 else outs[0]
    if len(outs) > 1:
        out["energies"]["E_t"] = np.zeros((), np.float32)
    return _finish(out, originals, lk, K_used, config)
