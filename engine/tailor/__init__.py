"""The tailor (paper Sec. 3.4-3.5): analytic hand scale, then Adam on E = E_J + 100 E_g + 3 E_id + 200 E_z +
1000 E_size, in JAX.

    from engine.tailor import TailorConfig, fit
    out = fit(model, theta0, beta0, root0, keypoints_2d, confidence, valid, K, locks, TailorConfig())

`energies` (the terms), `scale` (Eq. 12 / Eq. 17), `transform` (the fit as pure functions in optax's
shape: `tailor(hand, settings) -> Tailor(init, update)`, NamedTuple state, the runner), `api` (`fit`:
validation, padding, the jitted call; `jit=False` is the non-jitted reference), `clip` (a whole clip:
overlapping windows, one identity, the distance smoothed), `local` (a re-tailor's edit carried to its
neighbours within a falloff window), `synthetic` and `bench` (`python -m engine bench tailor`).

The paper's equations, each in exactly one function (its docstring starts with "Eq. N:"; checked by
tests/test_equations.py), the hand module's included:

| Eq. | what | function |
|---|---|---|
| 4 | soft-argmax: 2D keypoint and depth from heatmap H and depth map D | engine.hand_module.hourglass.soft_argmax |
| 5 | perspective lifting: pi^-1(K, (u, v)) at depth z_root + d' B | engine.hand_module.lifting.perspective_unproject |
| 6 | the keypoint network's loss | engine.hand_module.training.loss_theta |
| 7 | the hand module's loss | engine.hand_module.training.loss_full |
| 9 | E_J, 2D reprojection energy (pinhole) | engine.tailor.energies.joint_energy_perspective |
| 10 | E_g, twist energy (coplanarity, bend consistency) | engine.tailor.energies.twist_energy |
| 11 | E_id, identity energy | engine.tailor.energies.identity_energy |
| 12 | s*, the analytic hand scale under perspective | engine.tailor.scale.perspective_scale |
| 13 | E = lambda_J E_J + lambda_g E_g + lambda_id E_id | engine.tailor.energies.total_energy |
| 14 | weak-perspective lifting Pi^-1(K', [u, v, d']) | engine.hand_module.lifting.weak_perspective_lift |
| 15 | s from the reference bone (pixels per bone unit) | engine.hand_module.lifting.bone_scale |
| 16 | weak-perspective projection Pi(M s) + t | engine.camera.project_weak_perspective |
| 17 | s, the analytic projection scale under weak perspective | engine.tailor.scale.weak_perspective_scale |

The project's own terms (issue 14: the tailor must improve 3D, not trade it for 2D), numbered P1..P6, each
with its weight in `TailorConfig` and measured in `TailorConfig`'s docstring:

| Eq. | what | function |
|---|---|---|
| P1 | E_z, each finger's depth relative to its base kept near the hand module's (2D cannot see it) | engine.tailor.energies.depth_prior_energy |
| P2 | E_size, the hand's metric size held (a person's, not a per-frame unknown) | engine.tailor.energies.size_energy |
| P3 | s* as a distance: the wrist moved along its ray, the hand kept at its size | engine.tailor.scale.place_at_distance |
| P4 | Adam's annealed step size, lr -> lr * lr_final over the iterations | engine.tailor.transform.annealed_lr |
| P5 | Adam's step on the shape beta, `shape_step` times the pose's | engine.tailor.transform.shape_scaled_step |
| P6 | the distance re-solved after each Adam step at the fitted pose (where it lowers E_J) | engine.tailor.scale.redistance |
"""

from engine.tailor.api import CAMERA_MODELS, TailorConfig, fit, model_params

__all__ = ["CAMERA_MODELS", "TailorConfig", "fit", "model_params"]
