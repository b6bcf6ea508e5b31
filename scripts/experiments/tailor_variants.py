"""Prototype tailor variants side by side (issue 14): which energies make the tailor improve 3D?

    PYTHONPATH=$PWD .venv/bin/python scripts/experiments/tailor_variants.py SET_DIR [--detections FILE]
        [--limit N] [--oracle-2d] [--iterations 10,20,50,100] [--variants shipped,distance,...]
        [--hand-model DIR] [--json OUT]

Runs the hand module (`fit_init`, as `eval`) on each matched hand of a ground-truth set (perspective, the
record's K), then each variant of the tailor from the same initialization, and prints a table: per variant
and iteration count the mean px error to the 2D ground truth, the fit residual (px to the keypoints fitted),
the wrist-aligned MPJPE, PA-MPJPE and rigid MPJPE (mm); `--json` adds per-keypoint errors. The variants are
a private re-implementation of the tailor's Adam loop with optional terms; "shipped" calls the engine's
tailor itself (`engine.tailor.fit` with its defaults). Nothing here is product code: what measured well
moved into engine/tailor (issue 14: s* as a distance, E_size, E_z in "finger" mode, E_id per part, the
annealed step); "ENG*" variants re-implement those defaults (the prototype's E_z averages over all 21
keypoints, the engine's over the 15 finger keypoints: prototype 280 = engine 200), the figures quoted in
engine.tailor.api.TailorConfig come from here.

Terms (weights in `VARIANTS`; E_J in 256-px-crop px^2 as the engine's):
* distance: s* (Eq. 12) moves the hand along its viewing ray (root / s*) at the model's metric size instead of
  scaling it about the wrist (hand_scale stays 1): the same image, no inflated hand;
* size: ((S(beta) - S(beta0)) / S(beta0))^2 with S the RMS distance of the rest joints from the wrist: the
  hand's size is not a per-frame unknown;
* depth: mean over keypoints of ((z_k - z_b) - (z0_k - z0_b))^2 / bone^2 with b the wrist ("wrist" mode) or
  the keypoint's finger base ("finger" mode, `depth_mode`): depth kept near the hand module's (2D cannot see
  it); a Gaussian prior with sd sigma_z against E_J's sd sigma_2D has the weight ~(sigma_2D / (sigma_z /
  bone))^2;
* identity / identity_global / identity_beta: E_id's weights on the finger joints, the global rotation and
  the shape (absolute; the paper: 0.1 on all);
* anneal: Adam's step decays geometrically to anneal * lr at the last iteration; gsolve: an in-plane rotation
  about the root's ray and a lateral shift, from a 2D Procrustes fit, before Adam; root_step: the lateral
  root parameter's unit (reference bones);
* limits: squared hinge on the axis-angle components outside the model's joint limits (rad^2);
* coupling: sum over the four fingers of (flex_DIP - 2/3 flex_PIP)^2 (rad^2, flexion = the axis-angle
  component about the flexion axis);
* robust: Cauchy on crop px, rho(e) = c^2 log(1 + e^2 / c^2) (~e^2 below c), c in crop px;
* lr / b1 / b2: Adam's settings (default the authors' 0.03, 0.5, 0.5).
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

BASE = dict(distance=True, size=1e3)
VARIANTS = {
    "shipped": None,
    "mine": dict(),
    "distance": dict(distance=True),
    "dist_size": dict(BASE),
    "depth1k": dict(BASE, depth=1e3),
    "depth3k": dict(BASE, depth=3e3),
    "depth10k": dict(BASE, depth=1e4),
    "depth30k": dict(BASE, depth=3e4),
    "depth3k_lim": dict(BASE, depth=3e3, limits=10.0),
    "depth3k_coup": dict(BASE, depth=3e3, coupling=1.0),
    "depth3k_rob20": dict(BASE, depth=3e3, robust=20.0),
    "depth3k_rob40": dict(BASE, depth=3e3, robust=40.0),
    "depth3k_id1": dict(BASE, depth=3e3, identity=1.0),
    "depth3k_lr01": dict(BASE, depth=3e3, lr=0.01),
    "depth3k_paper": dict(BASE, depth=3e3, lr=0.003, b1=0.9, b2=0.999),
    "depth3k_adam9": dict(BASE, depth=3e3, lr=0.03, b1=0.9, b2=0.999),
}
for _w in (0.3, 1.0, 3.0, 10.0):
    for _d in (0.0, 1e3, 3e3):
        VARIANTS[f"id{_w:g}_d{_d:g}"] = dict(BASE, identity=_w, depth=_d)
for _g in (0.1, 1.0):
    for _d in (1e3, 3e3, 1e4):
        VARIANTS[f"fin{_d:g}_g{_g:g}"] = dict(BASE, identity=10.0, identity_global=_g, depth=_d, depth_mode="finger")
    VARIANTS[f"wr1000_g{_g:g}"] = dict(BASE, identity=10.0, identity_global=_g, depth=1e3)
for _a in (0.1, 0.03, 0.01):
    VARIANTS[f"ds_an{_a:g}"] = dict(BASE, anneal=_a)
    VARIANTS[f"id10d1k_an{_a:g}"] = dict(BASE, identity=10.0, depth=1e3, anneal=_a)
    VARIANTS[f"fin1k_an{_a:g}"] = dict(BASE, identity=10.0, identity_global=1.0, depth=1e3, depth_mode="finger",
                                        anneal=_a)
    VARIANTS[f"id1d1k_an{_a:g}"] = dict(BASE, identity=1.0, depth=1e3, anneal=_a)
for _i in (3.0, 10.0, 30.0):
    for _b in (0.3, 1.0, 3.0):
        VARIANTS[f"g_i{_i:g}_b{_b:g}"] = dict(BASE, identity=_i, identity_beta=_b, identity_global=1.0, depth=1e3,
                                             depth_mode="finger", anneal=0.1)
# phase B candidates: s* as distance, size held, finger depth prior, identity 10 (global 1, beta 1), annealed Adam
CAND = dict(BASE, identity=10.0, identity_global=1.0, identity_beta=1.0, depth=1e3, depth_mode="finger", anneal=0.1)
VARIANTS.update({
    "B": CAND,
    "B_lr05": dict(CAND, lr=0.05),
    "B_lr08": dict(CAND, lr=0.08),
    "B_an02": dict(CAND, anneal=0.2),
    "B_lr05_an02": dict(CAND, lr=0.05, anneal=0.2),
    "B_wrist": dict(CAND, depth_mode="wrist"),
    "B_d3k": dict(CAND, depth=3e3),
    "B_d300": dict(CAND, depth=300.0),
    "B_id3": dict(CAND, identity=3.0),
    "B_id30": dict(CAND, identity=30.0),
    "B_nosize": dict(CAND, size=0.0),
    "B_lim": dict(CAND, limits=10.0),
    "B_coup": dict(CAND, coupling=3.0),
})
ENG = dict(BASE, identity=10.0, identity_global=1.0, identity_beta=1.0, depth=280.0, depth_mode="finger", anneal=0.2,
           lr=0.05)  # the engine's defaults (depth 200 over 15 keypoints = 280 over 21)
VARIANTS.update({
    "ENG": ENG,
    "ENG_gs": dict(ENG, gsolve=True),
    "ENG_d0": dict(ENG, depth=0.0),
    "ENG_id3": dict(ENG, identity=3.0),
    "ENG_gs_lr03": dict(ENG, gsolve=True, lr=0.03),
})
for _i in (1.0, 2.0, 3.0, 5.0):  # the engine's lambda_id with its relative global / shape weights 0.1
    VARIANTS[f"ENG_lid{_i:g}"] = dict(ENG, identity=_i, identity_global=0.1 * _i, identity_beta=0.1 * _i)
VARIANTS["ENG_lid3_lr06"] = dict(VARIANTS["ENG_lid3"], lr=0.06)
VARIANTS.update({"ENG_rs03": dict(ENG, root_step=0.3), "ENG_rs1": dict(ENG, root_step=1.0),
                 "ENG_g100": dict(ENG, identity_global=0.1), "ENG_beta01": dict(ENG, identity_beta=0.1)})
for _b1, _b2 in ((0.9, 0.999), (0.9, 0.99), (0.7, 0.9)):
    for _lr in (0.03, 0.05, 0.08):
        VARIANTS[f"ENG_b{_b1:g}_{_b2:g}_lr{_lr:g}"] = dict(ENG, b1=_b1, b2=_b2, lr=_lr)
# flexion: the axis-angle z component for the right model (rest frame), -z for the left (x-mirror)
# each keypoint's finger base (palm keypoints are their own base: no depth prior on them in "finger" mode)
FINGER_BASE = (0, 1, 1, 1, 1, 5, 5, 5, 5, 9, 9, 9, 9, 13, 13, 13, 13, 17, 17, 17, 17)
PIP_DIP = ((2, 3), (5, 6), (8, 9), (11, 12))  # MANO joint ids: index, middle, pinky, ring (PIP, DIP)


def make_fit(opts: dict, side_sign: float):
    """A jitted fit for one hand: (params, lim_lo, lim_hi, R0 (1,16,3,3), beta0 (1,10), root0 (1,3),
    kp (1,21,2), conf (1,21), K, iterations) -> joints (1, 21, 3)."""
    a, b = 0, 9
    lr, b1, b2 = opts.get("lr", 0.03), opts.get("b1", 0.5), opts.get("b2", 0.5)
    w_id = opts.get("identity", 0.1)
    w_beta = opts.get("identity_beta", w_id)
    w_glob = opts.get("identity_global", w_id)
    jw = jnp.asarray([w_glob] + [w_id] * 15)[None, :, None]
    finger_mode = opts.get("depth_mode", "wrist") == "finger"
    base_kp = jnp.asarray(FINGER_BASE)

    def size_of(params, beta):
        J = params.J0[None] + jnp.einsum("jcs,bs->bjc", params.Jdirs, beta)
        return jnp.sqrt(jnp.mean(jnp.sum((J - J[:, :1]) ** 2, -1), -1))

    @jax.jit
    def fit(params, lo, hi, R0, beta0, root0, kp, conf, K, iterations):
        rel0 = jax_layer.keypoints(params, R0, beta0, None, None)
        s = perspective_scale(rel0, root0, K, kp, conf, jnp.ones(1))
        if opts.get("distance"):
            root, hs = root0 / s[:, None], jnp.ones(1)
        else:
            root, hs = root0, s
        if opts.get("gsolve"):  # in-plane rotation about the root's ray + lateral shift, 2D Procrustes
            w = conf[..., None]
            uv0 = project_perspective(root[:, None] + hs[:, None, None] * rel0, K)
            cm = jnp.sum(w * uv0, 1) / jnp.sum(w, 1)
            ck = jnp.sum(w * kp, 1) / jnp.sum(w, 1)
            pa, pb = uv0 - cm[:, None], kp - ck[:, None]
            cross = jnp.sum(w[..., 0] * (pa[..., 0] * pb[..., 1] - pa[..., 1] * pb[..., 0]), -1)
            dot = jnp.sum(w[..., 0] * jnp.sum(pa * pb, -1), -1)
            phi = jnp.arctan2(cross, dot)
            ray = root / jnp.linalg.norm(root, axis=-1, keepdims=True)
            Rr = jax_layer.axis_angle_to_rotmat((ray * phi[:, None])[:, None])[:, 0]
            R0 = R0.at[:, 0].set(jnp.einsum("bij,bjk->bik", Rr, R0[:, 0]))
            rel0 = jax_layer.keypoints(params, R0, beta0, None, None)
            uv1 = project_perspective(root[:, None] + hs[:, None, None] * rel0, K)
            d_uv = ck - jnp.sum(w * uv1, 1) / jnp.sum(w, 1)
            root = root + jnp.concatenate([d_uv / K[0, 0] * root[:, 2:], jnp.zeros((1, 1))], -1)
        crop = E.crop_scale(kp, conf)
        bone = jnp.linalg.norm(rel0[:, b] - rel0[:, a], axis=-1) * hs
        def rel_depth(x):
            if finger_mode:  # each finger joint relative to its finger's base (palm keypoints: 0)
                return (x[..., 2] - x[:, base_kp, 2]) * hs[:, None]
            return (x[..., 2] - x[:, :1, 2]) * hs[:, None]

        dz0 = rel_depth(rel0)
        size0 = size_of(params, beta0)

        def loss(p):
            dpose, beta, dxy = p
            R = jax_layer.matmul3(jax_layer.axis_angle_to_rotmat(dpose), R0)
            rel = jax_layer.keypoints(params, R, beta, None, None)
            r = root + jnp.concatenate([dxy * opts.get('root_step', 0.1) * bone[:, None], jnp.zeros((1, 1))], -1)
            joints = r[:, None] + hs[:, None, None] * rel
            if opts.get("robust"):
                z = jnp.maximum(joints[..., 2:], 1e-3)
                uv = project_perspective(jnp.concatenate([joints[..., :2], z], -1), K)
                e2 = jnp.sum(((uv - kp) * crop[:, None, None]) ** 2, -1)
                c2 = opts["robust"] ** 2
                ej = jnp.sum(conf * c2 * jnp.log1p(e2 / c2), -1) / jnp.sum(conf, -1)
            else:
                ej = E.joint_energy_perspective(joints, K, kp, conf, crop)
            e = ej + 100.0 * E.twist_energy(rel) + jnp.sum(jw * dpose**2, axis=(-2, -1)) \
                + w_beta * jnp.sum((beta - beta0) ** 2, axis=-1)
            if opts.get("size"):
                e = e + opts["size"] * ((size_of(params, beta) - size0) / size0) ** 2
            if opts.get("depth"):
                e = e + opts["depth"] * jnp.mean((rel_depth(rel) - dz0) ** 2, -1) / bone**2
            if opts.get("limits") or opts.get("coupling"):
                aa = jax_layer.rotmat_to_axis_angle(R)
                if opts.get("limits"):
                    x = aa[:, 1:]
                    e = e + opts["limits"] * jnp.sum(jnp.maximum(x - hi[1:], 0) ** 2 + jnp.maximum(lo[1:] - x, 0) ** 2,
                                                     (-2, -1))
                if opts.get("coupling"):
                    flex = side_sign * aa[..., 2]
                    e = e + opts["coupling"] * sum((flex[:, d] - 2.0 / 3.0 * flex[:, p]) ** 2 for p, d in PIP_DIP)
            return jnp.sum(e)

        if opts.get("anneal"):  # exponential decay from lr to anneal * lr over the run's iterations
            ratio = jnp.log(opts["anneal"]) / jnp.maximum(iterations - 1, 1).astype(jnp.float32)
            opt = optax.adam(lambda count: lr * jnp.exp(ratio * count), b1=b1, b2=b2)
        else:
            opt = optax.adam(lr, b1=b1, b2=b2)
        p0 = (jnp.zeros((1, 16, 3)), beta0, jnp.zeros((1, 2)))
        st0 = opt.init(p0)
        g = jax.grad(loss)

        def step(_, c):
            p, st = c
            u, st = opt.update(g(p), st, p)
            return optax.apply_updates(p, u), st

        (dpose, beta, dxy), _ = jax.lax.fori_loop(0, iterations, step, (p0, st0))
        R = jax_layer.matmul3(jax_layer.axis_angle_to_rotmat(dpose), R0)
        r = root + jnp.concatenate([dxy * opts.get('root_step', 0.1) * bone[:, None], jnp.zeros((1, 1))], -1)
        return r[:, None] + hs[:, None, None] * jax_layer.keypoints(params, R, beta, None, None)

    return fit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--detections", type=pathlib.Path, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--oracle-2d", action="store_true")
    ap.add_argument("--iterations", default="10,20,50,100")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--hand-model", default=None, help="hand model folder (default: the shipped open hand)")
    ap.add_argument("--json", type=pathlib.Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    from engine.evaluation import Pipeline, match_detection
    from engine.groundtruth import load_annotations
    from engine.stored_detections import DETECTIONS, load_detections

    det_path = args.detections or args.dir / DETECTIONS
    stored = load_detections(det_path)
    pipe = Pipeline(hand_model_path=args.hand_model, detections=stored)
    recs = load_annotations(args.dir)[: args.limit]
    its = [int(x) for x in args.iterations.split(",")]
    names = args.variants.split(",")
    fits, params, lims = {}, {}, {}
    keys = ("px", "res", "mpjpe", "pa", "rigid", "px_k", "res_k")
    acc = {(n, it): {k: [] for k in keys} for n in names for it in its}
    acc_hm = {k: [] for k in keys}

    def record(dst, joints, K, kp, rec):
        uv = np.asarray(project_perspective(joints, K))
        P, G = joints[None], rec.joints_3d[None]
        dst["px"].append(np.linalg.norm(uv - rec.joints_2d, axis=1).mean())
        dst["res"].append(np.linalg.norm(uv - kp, axis=1).mean())
        dst["mpjpe"].append(1000 * metrics.mpjpe(P, G)[0])
        dst["pa"].append(1000 * metrics.pa_mpjpe(P, G)[0])
        dst["rigid"].append(1000 * metrics.joint_errors_3d(P, G, "rigid").mean())
        dst["px_k"].append(np.linalg.norm(uv - rec.joints_2d, axis=1))
        dst["res_k"].append(np.linalg.norm(uv - kp, axis=1))

    kp_px, kp_k = [], []
    for rec in recs:
        e = stored[rec.image.name]
        obs, _, _ = match_detection(e["hands"], rec, e["size"][0], False)
        if obs is None or rec.K is None:
            continue
        model = pipe.models[rec.hand]
        uvd = np.asarray(obs.keypoints_uvd, np.float64).copy()
        conf = np.asarray(obs.confidence, np.float64)
        kp_k.append(np.linalg.norm(uvd[:, :2] - rec.joints_2d, axis=1))
        kp_px.append(kp_k[-1].mean())
        if args.oracle_2d:
            uvd[:, :2], conf = rec.joints_2d, np.ones(21)
        init = pipe.fit_init(uvd, conf, np.asarray(obs.world_landmarks, np.float64), "perspective", rec.K, model,
                             tuple(e["size"]))
        kp = uvd[:, :2]
        record(acc_hm, init["joints_3d_model"][0], rec.K, kp, rec)
        if rec.hand not in params:
            params[rec.hand] = jax_layer.prepare(model, jnp.float32)
            lim = np.asarray(model.joint_limits, np.float32)
            lims[rec.hand] = (jnp.asarray(lim[..., 0]), jnp.asarray(lim[..., 1]))
        R0 = jax_layer.quat_to_rotmat(jnp.asarray(init["theta"], jnp.float32))
        for n in names:
            for it in its:
                if VARIANTS[n] is None:
                    out = pipe.tailor(model, init, uvd, conf, rec.K, "perspective", it, tuple(e["size"]))
                    joints = np.asarray(out["joints_3d"][0], np.float64)
                else:
                    key = (n, rec.hand)
                    if key not in fits:
                        fits[key] = make_fit(VARIANTS[n], 1.0 if rec.hand == "right" else -1.0)
                    joints = np.asarray(fits[key](
                        params[rec.hand], *lims[rec.hand], R0, jnp.asarray(init["beta"], jnp.float32),
                        jnp.asarray(init["root"], jnp.float32), jnp.asarray(kp[None], jnp.float32),
                        jnp.asarray(conf[None], jnp.float32), jnp.asarray(rec.K, jnp.float32), it)[0], np.float64)
                record(acc[(n, it)], joints, rec.K, kp, rec)
    def mean(d):
        return {k: (np.round(np.mean(v, 0), 2).tolist() if k.endswith("_k") else round(float(np.mean(v)), 2))
                for k, v in d.items()}

    out = {"hands": len(acc_hm["pa"]), "oracle_2d": args.oracle_2d, "keypoints_px": round(float(np.mean(kp_px)), 2),
           "keypoints_px_k": np.round(np.mean(kp_k, 0), 2).tolist(), "hand_module": mean(acc_hm)}
    for (n, it), d in acc.items():
        out[f"{n}@{it}"] = mean(d)
    print(f"hands {out['hands']} oracle {args.oracle_2d} keypoints px {out['keypoints_px']}")
    print(f"{'variant':28s} {'px':>6s} {'res':>6s} {'MPJPE':>6s} {'PA':>6s} {'rigid':>6s}")
    for k, v in out.items():
        if isinstance(v, dict):
            print(f"{k:28s} {v['px']:6.2f} {v['res']:6.2f} {v['mpjpe']:6.2f} {v['pa']:6.2f} {v['rigid']:6.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
