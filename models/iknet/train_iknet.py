"""Trains IKNet (engine/hand_module/iknet.py) on poses sampled from the hand model's joint limits.

    .venv/bin/python models/iknet/train_iknet.py                       # the shipped right-hand weights
    .venv/bin/python models/iknet/train_iknet.py --steps 200 --out /tmp/iknet.safetensors   # a quick try

Data (generated on the fly, fixed seeds): theta = a global rotation uniform over SO(3) plus 15 local
rotations whose axis-angle components are uniform within the model's joint limits (half of them pulled
towards the rest pose by a random factor); beta ~ N(0, 1); keypoints from the torch hand layer
(`engine.hand_model.torch_layer.HandLayer`), root-relative and reference-bone normalized, with Gaussian
input noise of a random level in [0, --noise] bone units per sample (lifted joints are noisy).

Loss: mean keypoint distance (reference-bone units) after posing the model with the predicted theta and the
true beta, plus --w-quat x the sign-invariant quaternion distance to the true theta (it decides what the
joints cannot: the twist of the last phalanges), plus --w-limit x a hinge on the axis-angle components outside
the joint limits. Posing uses the torch hand layer on `iknet.keypoint_model(model)` (the same keypoints as
the full mesh, 21 vertices instead of thousands).

CPU only. --threads 1 by default: on a busy 2-core machine one thread ran ~10x faster per step than two
(measured: 0.14 s vs 1.5 s per step of 256). Learning rate: 100 warm-up steps, then cosine decay over the
run's progress, i.e. the step count or the --max-minutes budget, whichever runs out first (on a slow
machine the run ends early but still anneals; the report records the steps done). Writes the weights as
fp16 safetensors and a JSON report (held-out MPJPE in mm, PA-MPJPE, joint-limit violations) beside them;
the figures in PROVENANCE.md come from that report.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import sys
import time

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.hand_model import load_hand_model  # noqa: E402
from engine.hand_model.torch_layer import HandLayer  # noqa: E402
from engine.hand_module import iknet as ik  # noqa: E402

log = logging.getLogger("train_iknet")


def palm_template(layer) -> torch.Tensor:
    """Normalized rest keypoints (beta = 0) at the palm: (6, 3)."""
    theta = torch.zeros(1, 16, 4)
    theta[..., 0] = 1.0
    _, kp, _ = layer(theta, torch.zeros(1, 10))
    return ik.normalize_joints(kp)[0, list(ik.PALM_KEYPOINTS)]


def procrustes_aligned(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-aligns pred (B, K, 3) to gt (B, K, 3) (rotation, scale, translation)."""
    mp, mg = pred.mean(1, keepdims=True), gt.mean(1, keepdims=True)
    p, g = pred - mp, gt - mg
    M = np.einsum("bki,bkj->bij", g, p)
    U, S, Vt = np.linalg.svd(M)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones_like(S)
    D[:, 2] = d
    R = U @ (D[:, :, None] * Vt)
    scale = (S * D).sum(-1) / np.maximum((p * p).sum((1, 2)), 1e-12)
    return scale[:, None, None] * np.einsum("bij,bkj->bki", R, p) + mg


def evaluate(net, layer, model, n: int, seed: int, noise: float = 0.0) -> dict:
    """Held-out figures: pose with predicted theta + true beta, compare keypoints (wrist at the origin)."""
    gen = torch.Generator().manual_seed(seed)
    theta, beta, kp = ik.sample_training_batch(layer, model, n, gen)
    x = ik.normalize_joints(kp)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=gen)
    net.eval()
    with torch.no_grad():
        q = net(x)
        _, kp_pred, _ = layer(q, beta)
    err = (kp_pred - kp).norm(dim=-1).double().numpy() * 1000.0  # mm
    gt = kp.double().numpy()
    pa = np.linalg.norm(procrustes_aligned(kp_pred.double().numpy(), gt) - gt, axis=-1) * 1000.0
    viol = ik.limit_violations(q, model.joint_limits)
    viol_01 = ik.limit_violations(q, model.joint_limits, tol=0.1)
    gt_viol = ik.limit_violations(theta, model.joint_limits, tol=1e-5)
    ang = 2 * torch.acos(torch.clamp((q * theta).sum(-1).abs(), max=1.0)).numpy() * 180 / math.pi
    return {
        "n": n,
        "seed": seed,
        "input_noise_bone_units": noise,
        "mpjpe_mm": float(err.mean()),
        "mpjpe_mm_median_per_hand": float(np.median(err.mean(1))),
        "mpjpe_mm_p95_per_hand": float(np.percentile(err.mean(1), 95)),
        "pa_mpjpe_mm": float(pa.mean()),
        "global_rotation_error_deg_mean": float(ang[:, 0].mean()),
        "local_rotation_error_deg_mean": float(ang[:, 1:].mean()),
        "limit_violation_joint_fraction": float(viol.float().mean()),
        "limit_violation_hand_fraction": float(viol.any(-1).float().mean()),
        "limit_violation_joint_fraction_tol_0.1rad": float(viol_01.float().mean()),
        "ground_truth_limit_violation_joint_fraction": float(gt_viol.float().mean()),
    }


def save(net, path: pathlib.Path, dtype=torch.float16) -> None:
    from safetensors.torch import save_file

    state = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        state[k] = v.detach().to(dtype).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "arch": "IKNet 63-256-512-1024-1024-512-256-64 BN"})
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", default="right", choices=["right", "left"])
    p.add_argument("--hand-model", default=None, help="model file (default: the shipped open model)")
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512, 512])
    p.add_argument("--steps", type=int, default=3500)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--w-quat", type=float, default=0.1)
    p.add_argument("--w-limit", type=float, default=1.0, help="weight of the joint-limit hinge (radians)")
    p.add_argument("--noise", type=float, default=0.1, help="max input noise, reference-bone units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="1 is fastest on a busy 2-core machine")
    p.add_argument("--max-minutes", type=float, default=13.0,
                   help="time budget: the schedule follows whichever of steps / time runs out first")
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--out", type=pathlib.Path, default=REPO / "models" / "iknet" / "iknet_right.safetensors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = load_hand_model(args.hand_model, side=args.side)
    layer = HandLayer(ik.keypoint_model(model))  # the same keypoints as the full mesh, 21 vertices
    net = ik.IKNet(hidden=tuple(args.hidden), palm_template=palm_template(layer))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    limits = torch.as_tensor(np.array(model.joint_limits), dtype=torch.float32)
    t0 = time.perf_counter()
    step = 0
    budget_s = args.max_minutes * 60.0
    for step in range(1, args.steps + 1):
        # Warm-up then cosine decay over the run's progress: the step count, or the time budget if that
        # binds first (a busy machine), so the learning rate always anneals to ~0 by the end.
        progress = max((step - 1) / args.steps, (time.perf_counter() - t0) / budget_s)
        if progress >= 1.0:
            log.warning("time budget of %.1f min reached at step %d of %d", args.max_minutes, step, args.steps)
            step -= 1
            break
        warm = min(1.0, step / 100.0)
        for group in opt.param_groups:
            group["lr"] = args.lr * warm * 0.5 * (1.0 + math.cos(math.pi * progress))
        net.train()
        theta, beta, kp = ik.sample_training_batch(layer, model, args.batch, gen)
        bone = (kp[:, 9] - kp[:, 0]).norm(dim=-1)
        x = ik.normalize_joints(kp)
        sigma = args.noise * torch.rand(args.batch, 1, 1, generator=gen)
        x = x + sigma * torch.randn(x.shape, generator=gen)
        q = net(x)
        _, kp_pred, _ = layer(q, beta)
        loss_j = ((kp_pred - kp).norm(dim=-1) / bone[:, None]).mean()
        loss_q = ik.quaternion_distance(q, theta).mean()
        loss_lim = ik.limit_excess(q, limits).sum(-1).mean()
        loss = loss_j + args.w_quat * loss_q + args.w_limit * loss_lim
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == 1:
            el = time.perf_counter() - t0
            log.info("step %d/%d loss_j %.4f (~%.1f mm) loss_q %.4f loss_lim %.4f  %.0f s", step, args.steps,
                     loss_j.item(), loss_j.item() * 90, loss_q.item(), loss_lim.item(), el)
    train_s = time.perf_counter() - t0
    save(net, args.out)
    shipped = ik.load_iknet(args.out, side="right")  # fp16 -> fp32 round trip: the figures are the shipped net's
    report = {
        "side": args.side,
        "hand_model": model.name,
        "hand_model_sha256": model.sha256,
        "args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "steps_done": step,
        "train_seconds": round(train_s, 1),
        "torch": torch.__version__,
        "heldout_clean": evaluate(shipped, layer, model, args.eval_n, seed=10_000 + args.seed),
        "heldout_noise_0.02": evaluate(shipped, layer, model, args.eval_n, seed=10_000 + args.seed, noise=0.02),
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("%s", json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
