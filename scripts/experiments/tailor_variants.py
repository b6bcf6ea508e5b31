"""Prototype tailor variants side by side (issue 14): which energies make the tailor improve 3D?

    PYTHONPATH=$PWD .venv/bin/python scripts/experiments/tailor_variants.py SET_DIR [--detections FILE]
        [--limit N] [--oracle-2d] [--iterations 20,100] [--variants shipped,distance,depth,...]

Runs the hand module (`fit_init`, as `eval`) on each matched hand of a ground-truth set (perspective, the
record's K), then each variant of the tailor from the same initialization, and prints JSON: per variant and
iteration count the mean px error to the 2D ground truth, the fit residual (px to the keypoints fitted), the
wrist-aligned MPJPE, PA-MPJPE and rigid MPJPE (mm). The variants are a private re-implementation of the
tailor's Adam loop (engine.tailor.optimize) with optional terms; "shipped" calls the engine's tailor itself.
Nothing here is product code: what works moves into engine/tailor (phase B of issue 14).

Terms (weights in `VARIANTS`):
* distance: s* (Eq. 12) moves the hand along its viewing ray (root / s*) at the model's metric size instead of
  scaling it about the wrist (hand_scale stays 1);
* size: ((S(beta) - S(beta0)) / S(beta0))^2 with S the RMS distance of the rest joints from the wrist: the
  hand's size is not a per-frame unknown;
* depth: mean over keypoints of ((z_k - z_0) - (z0_k - z0_0))^2 / bone^2: wrist-relative depth kept near the
  hand module's (2D cannot see it);
* limits: squared hinge on the axis-angle components outside the model's joint limits (rad^2);
* robust: Geman-McClure on crop px instead of squared error (rho(e) = e^2 / (1 + e^2 / c^2), c = 8 crop px).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from engine import metrics  # noqa: E402
from engine.camera import project_perspective  # noqa: E402
from engine.hand_model import jax_layer  # noqa: E402
from engine.tailor import energies as E  # noqa: E402
from engine.tailor.scale import perspective_scale  # noqa: E402

VARIANTS = {
    "shipped": None,
    "mine": dict(),
    "distance": dict(distance=True),
    "distance_size": dict(distance=True, size=1e3),
    "depth": dict(depth=30.0),
    "dist_size_depth": dict(distance=True, size=1e3, depth=30.0),
    "dist_size_depth_limits": dict(distance=True, size=1e3, depth=30.0, limits=10.0),
    "dist_size_depth_robust": dict(distance=True, size=1e3, depth=30.0, robust=8.0),
    "all": dict(distance=True, size=1e3, depth=30.0, limits=10.0, robust=8.0),
    "dist_size_depth100": dict(distance=True, size=1e3, depth=100.0),
    "dist_size_depth300": dict(distance=True, size=1e3, depth=300.0),
    "dist_size_depth3k": dict(distance=True, size=1e3, depth=3e3),
    "dist_size_depth10k": dict(distance=True, size=1e3, depth=1e4),
    "dist_size_depth300_limits": dict(distance=True, size=1e3, depth=300.0, limits=10.0),
    "dist_size_depth300_robust": dict(distance=True, size=1e3, depth=300.0, robust=8.0),
}


def _limits(model):
    lim = model.joint_limits
    if lim is None:
        return None
    return jnp.asarray(lim[..., 0], jnp.float32), jnp.asarray(lim[..., 1], jnp.float32)


def make_fit(params, model, opts: dict):
    """A jitted fit for one hand: (theta0 R0 (1,16,3,3), beta0 (1,10), root0 (1,3), kp (1,21,2), conf (1,21), K,
    iterations) -> joints (1, 21, 3)."""
    lims = _limits(model)
    a, b = 0, 9

    def size_of(beta):
        J = params.J0[None] + jnp.einsum("jcs,bs->bjc", params.Jdirs, beta)
        return jnp.sqrt(jnp.mean(jnp.sum((J - J[:, :1]) ** 2, -1), -1))

    @jax.jit
    def fit(R0, beta0, root0, kp, conf, K, iterations):
        rel0 = jax_layer.keypoints(params, R0, beta0, None, None)
        s = perspective_scale(rel0, root0, K, kp, conf, jnp.ones(1))
        if opts.get("distance"):
            root, hs = root0 / s[:, None], jnp.ones(1)
        else:
            root, hs = root0, s
        crop = E.crop_scale(kp, conf)
        bone = jnp.linalg.norm(rel0[:, b] - rel0[:, a], axis=-1) * hs
        dz0 = (rel0[..., 2] - rel0[:, :1, 2]) * hs[:, None]
        size0 = size_of(beta0)
        R0_aa = jax_layer.rotmat_to_axis_angle(R0)

        def loss(p):
            dpose, beta, dxy = p
            R = jax_layer.matmul3(jax_layer.axis_angle_to_rotmat(dpose), R0)
            rel = jax_layer.keypoints(params, R, beta, None, None)
            r = root + jnp.concatenate([dxy * 0.1 * bone[:, None], jnp.zeros((1, 1))], -1)
            joints = r[:, None] + hs[:, None, None] * rel
            if opts.get("robust"):
                z = jnp.maximum(joints[..., 2:], 1e-3)
                uv = project_perspective(jnp.concatenate([joints[..., :2], z], -1), K)
                e2 = jnp.sum(((uv - kp) * crop[:, None, None]) ** 2, -1)
                c2 = opts["robust"] ** 2
                ej = jnp.sum(conf * e2 / (1 + e2 / c2) * c2 / c2, -1) / jnp.sum(conf, -1)
            else:
                ej = E.joint_energy_perspective(joints, K, kp, conf, crop)
            e = ej + 100.0 * E.twist_energy(rel) + 0.1 * E.identity_energy(dpose, beta, beta0)
            if opts.get("size"):
                e = e + opts["size"] * ((size_of(beta) - size0) / size0) ** 2
            if opts.get("depth"):
                dz = (rel[..., 2] - rel[:, :1, 2]) * hs[:, None]
                e = e + opts["depth"] * jnp.mean((dz - dz0) ** 2, -1) / bone**2
            if opts.get("limits") and lims is not None:
                aa = jax_layer.rotmat_to_axis_angle(R)[:, 1:]
                lo, hi = lims[0][1:], lims[1][1:]
                e = e + opts["limits"] * jnp.sum(jnp.maximum(aa - hi, 0) ** 2 + jnp.maximum(lo - aa, 0) ** 2, (-2, -1))
            return jnp.sum(e)

        del R0_aa
        opt = optax.adam(0.03, b1=0.5, b2=0.5)
        p0 = (jnp.zeros((1, 16, 3)), beta0, jnp.zeros((1, 2)))
        st0 = opt.init(p0)
        g = jax.grad(loss)

        def step(_, c):
            p, st = c
            u, st = opt.update(g(p), st, p)
            return optax.apply_updates(p, u), st

        (dpose, beta, dxy), _ = jax.lax.fori_loop(0, iterations, step, (p0, st0))
        R = jax_layer.matmul3(jax_layer.axis_angle_to_rotmat(dpose), R0)
        r = root + jnp.concatenate([dxy * 0.1 * bone[:, None], jnp.zeros((1, 1))], -1)
        return r[:, None] + hs[:, None, None] * jax_layer.keypoints(params, R, beta, None, None)

    return fit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--detections", type=pathlib.Path, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--oracle-2d", action="store_true")
    ap.add_argument("--iterations", default="20,100")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    from engine.evaluation import Pipeline, match_detection
    from engine.groundtruth import load_annotations
    from engine.stored_detections import DETECTIONS, load_detections

    det_path = args.detections or args.dir / DETECTIONS
    stored = load_detections(det_path)
    pipe = Pipeline(detections=stored)
    recs = load_annotations(args.dir)[: args.limit]
    its = [int(x) for x in args.iterations.split(",")]
    names = args.variants.split(",")
    fits, params = {}, {}
    acc = {(n, it): dict(px=[], res=[], mpjpe=[], pa=[], rigid=[]) for n in names for it in its}
    acc_hm = dict(px=[], res=[], mpjpe=[], pa=[], rigid=[])

    def record(dst, joints, K, kp, rec):
        uv = np.asarray(project_perspective(joints, K))
        P, G = joints[None], rec.joints_3d[None]
        dst["px"].append(np.linalg.norm(uv - rec.joints_2d, axis=1).mean())
        dst["res"].append(np.linalg.norm(uv - kp, axis=1).mean())
        dst["mpjpe"].append(1000 * metrics.mpjpe(P, G)[0])
        dst["pa"].append(1000 * metrics.pa_mpjpe(P, G)[0])
        dst["rigid"].append(1000 * metrics.joint_errors_3d(P, G, "rigid").mean())

    for rec in recs:
        e = stored[rec.image.name]
        obs, _, _ = match_detection(e["hands"], rec, e["size"][0], False)
        if obs is None or rec.K is None:
            continue
        model = pipe.models[rec.hand]
        uvd = np.asarray(obs.keypoints_uvd, np.float64).copy()
        conf = np.asarray(obs.confidence, np.float64)
        if args.oracle_2d:
            uvd[:, :2], conf = rec.joints_2d, np.ones(21)
        init = pipe.fit_init(uvd, conf, np.asarray(obs.world_landmarks, np.float64), "perspective", rec.K, model,
                             tuple(e["size"]))
        kp = uvd[:, :2]
        record(acc_hm, init["joints_3d_model"][0], rec.K, kp, rec)
        if rec.hand not in params:
            params[rec.hand] = jax_layer.prepare(model, jnp.float32)
        R0 = jax_layer.quat_to_rotmat(jnp.asarray(init["theta"], jnp.float32))
        for n in names:
            for it in its:
                if VARIANTS[n] is None:
                    out = pipe.tailor(model, init, uvd, conf, rec.K, "perspective", it, tuple(e["size"]))
                    joints = np.asarray(out["joints_3d"][0], np.float64)
                else:
                    key = (n, rec.hand)
                    if key not in fits:
                        fits[key] = make_fit(params[rec.hand], model, VARIANTS[n])
                    joints = np.asarray(fits[key](
                        R0, jnp.asarray(init["beta"], jnp.float32), jnp.asarray(init["root"], jnp.float32),
                        jnp.asarray(kp[None], jnp.float32), jnp.asarray(conf[None], jnp.float32),
                        jnp.asarray(rec.K, jnp.float32), it)[0], np.float64)
                record(acc[(n, it)], joints, rec.K, kp, rec)
    out = {"hands": len(acc_hm["pa"]), "oracle_2d": args.oracle_2d,
           "hand_module": {k: round(float(np.mean(v)), 2) for k, v in acc_hm.items()}}
    for (n, it), d in acc.items():
        out[f"{n}@{it}"] = {k: round(float(np.mean(v)), 2) for k, v in d.items()}
    print(json.dumps(out, indent=0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
