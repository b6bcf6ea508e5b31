"""The tailor (paper Sec. 3.4-3.5): analytic hand scale, then Adam on E = E_J + 100 E_g + 0.1 E_id, in JAX.

    from engine.tailor import TailorConfig, fit
    out = fit(model, theta0, beta0, root0, keypoints_2d, confidence, valid, K, locks, TailorConfig())

`energies` (the terms), `scale` (Eq. 12 / Eq. 17), `transform` (the fit as pure functions in optax's
shape: `tailor(hand, settings) -> Tailor(init, update)`, NamedTuple state, the runner), `api` (`fit`:
validation, padding, the jitted call; `jit=False` is the non-jitted reference), `clip` (a whole clip:
overlapping windows, depth smoothing), `synthetic` and `bench` (`python -m engine bench tailor`).
"""

from engine.tailor.api import CAMERA_MODELS, TailorConfig, fit, model_params

__all__ = ["CAMERA_MODELS", "TailorConfig", "fit", "model_params"]
