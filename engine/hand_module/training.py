"""`python -m engine train`: the hourglass hand module's training pipeline (paper Sec. 3.3, Sec. 4.1).

    python -m engine train synth OUT_DIR --count 20000 [--size 256] [--seed 0] [--sides both]
    python -m engine train run DATA_DIR [DATA_DIR ...] -o RUN_DIR [--epochs 100,50,100] [--steps N]
        [--batch-size 32] [--device auto|cpu|cuda] [--smoke] [--resume] [--workers 2] [--val DIR]
    python -m engine train eval RUN_DIR/hourglass.safetensors DATA_DIR [...]   (held-out figures, JSON)

Three stages (Sec. 4.1), Adam throughout:
  1. keypoints  (100 epochs, lr 3e-4): the hourglass + shape branch with L_theta (Eq. 6)
         L_theta = 100 L_kpl2D + 1 L_kpl3D + 0.1 L_d
     L_kpl2D: pixel-wise MSE of every stack's sigmoid heatmaps against Gaussians of peak 1;
     L_kpl3D: MSE of the Eq. 5 joints in reference-bone units (camera frame of the crop) against the truth,
              plus the distance maps' MSE against d' weighted by the true heatmaps (D's direct supervision);
     L_d:     MSE of the scale-normalized root depth rho, plus (bone / bone_true - 1)^2 for the shape branch's
              reference-bone output (the bone length has no term of its own in the paper).
  2. iknet      (50 epochs' worth of steps, lr 3e-4): IKNet alone with L_ik on poses sampled inside the
     joint limits (as models/iknet/train_iknet.py: sign-invariant quaternion distance + joint MSE), starting
     from the shipped IKNet weights unless --iknet-init scratch.
  3. end2end    (100 epochs, lr 3e-5): everything with Eq. 7
         L = 1 L_theta + 1 L_beta + 0.1 L_mano,   L_beta = |beta|^2,
     L_mano: MSE of the hand layer's keypoints (translated to the predicted root) against the truth, in
     reference-bone units.
Records without 3D (2D only) contribute to L_kpl2D only.

RUN_DIR holds: checkpoint.pt (latest, for --resume), log.jsonl (one JSON object per logged step and per stage
end), args.json, and at the end hourglass.safetensors (engine.hand_module.hourglass.load_weights) and
iknet.safetensors (engine.hand_module.iknet.load_iknet). A progress bar goes to stderr.
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

from engine.errors import InputError

log = logging.getLogger(__name__)

STAGES = ("keypoints", "iknet", "end2end")
PAPER_EPOCHS = (100, 50, 100)
LR = 3e-4
LR_END2END = 3e-5
# Eq. 6: lambda_kpl2D, lambda_kpl3D, lambda_d; Eq. 7: lambda_theta, lambda_beta, lambda_mano (Sec. 4.1).
LAMBDA_EQ6 = (100.0, 1.0, 0.1)
LAMBDA_EQ7 = (1.0, 1.0, 0.1)


# --------------------------------------------------------------------------------------------------- losses
def loss_theta(out: dict, batch: dict) -> tuple[torch.Tensor, dict]:
    """Eq. 6: L_theta on a batch, out from HourglassNet / HandModuleNet (needs joints_norm), batch from HandCropDataset.

    Returns (scalar L_theta, dict of the terms as floats)."""
    from engine.hand_module.hourglass import lift_crop_torch

    heat_t = batch["heatmap"]
    l2d = sum(torch.mean((torch.sigmoid(lg) - heat_t) ** 2) for lg in out["heat_logits"]) / len(out["heat_logits"])
    has3d = batch["has_3d"]
    n3d = has3d.sum().clamp_min(1.0)
    joints = out.get("joints_norm")
    if joints is None:
        joints = lift_crop_torch(out["uvd"], out["rho"], batch["K_crop"], heat_t.shape[-1] * 4)
    err3d = ((joints - batch["joints_norm"]) ** 2).mean(dim=(1, 2))
    w = heat_t / heat_t.flatten(2).sum(-1).clamp_min(1e-6)[..., None, None]
    dmap = sum(((d - batch["d_norm"][..., None, None]) ** 2 * w).flatten(1).sum(-1) / w.shape[1] for d in out["dist"])
    dmap = dmap / len(out["dist"])
    l3d = ((err3d + dmap) * has3d).sum() / n3d
    bone_t = batch["bone"].clamp_min(1e-6)
    ld = (((out["rho"] - batch["rho"]) ** 2 + (out["bone"] / bone_t - 1.0) ** 2) * has3d).sum() / n3d
    a, b, c = LAMBDA_EQ6
    total = a * l2d + b * l3d + c * ld
    return total, dict(l_kpl2d=l2d.item(), l_kpl3d=l3d.item(), l_d=ld.item())


def loss_full(out: dict, batch: dict) -> tuple[torch.Tensor, dict]:
    """Eq. 7: L = 1 L_theta + 1 L_beta + 0.1 L_mano (out from HandModuleNet)."""
    lt, terms = loss_theta(out, batch)
    lbeta = (out["beta"] ** 2).sum(-1).mean()
    has3d = batch["has_3d"]
    bone_t = batch["bone"].clamp_min(1e-6)[:, None, None]
    err = ((out["mano_keypoints"] / bone_t - batch["joints_norm"]) ** 2).mean(dim=(1, 2))
    lmano = (err * has3d).sum() / has3d.sum().clamp_min(1.0)
    a, b, c = LAMBDA_EQ7
    total = a * lt + b * lbeta + c * lmano
    terms.update(l_theta=lt.item(), l_beta=lbeta.item(), l_mano=lmano.item())
    return total, terms


def loss_ik(iknet, layer, model, n: int, generator: torch.Generator, device) -> tuple[torch.Tensor, dict]:
    """L_ik on sampled poses: quaternion distance + MSE of the posed, normalized keypoints."""
    from engine.hand_module.iknet import normalize_joints, quaternion_distance, sample_poses

    theta = sample_poses(model.joint_limits, n, generator).to(device)
    beta = torch.randn(n, 10, generator=generator).to(device)
    with torch.no_grad():
        _, kp, _ = layer(theta, beta)
    x = normalize_joints(kp.float())
    q = iknet(x)
    lq = quaternion_distance(q, theta.float()).mean()
    _, kp_pred, _ = layer(q, beta)
    lj = ((normalize_joints(kp_pred.float()) - x) ** 2).mean()
    return lq + lj, dict(l_quat=lq.item(), l_joints=lj.item())


# ----------------------------------------------------------------------------------------------- progress
class Progress:
    """A one-line progress bar on stderr (a log line every `every` steps when stderr is not a terminal)."""

    def __init__(self, total: int, label: str, every: int = 50):
        self.total, self.label, self.every = max(total, 1), label, every
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()

    def update(self, done: int, loss: float | None = None) -> None:
        if not self.tty and done % self.every and done != self.total:
            return
        frac = done / self.total
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        shown = "" if loss is None else f" loss {loss:.4g}"
        line = f"{self.label:>9} [{bar}] {done}/{self.total}{shown} {rate:.1f} it/s eta {eta:.0f}s"
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        if self.tty and done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# ---------------------------------------------------------------------------------------------- training
def _batches(n: int, batch_size: int, seed: int, stage: int, epoch: int) -> list[list[int]]:
    perm = np.random.default_rng([seed, stage, epoch]).permutation(n)
    nb = max(n // batch_size, 1)
    return [perm[i * batch_size : (i + 1) * batch_size].tolist() for i in range(nb)]


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def load_checkpoint(path: pathlib.Path, device) -> dict:
    """A training checkpoint (see save_checkpoint in `train`), loaded as weights only: tensors, numbers,
    strings and containers, never an arbitrary pickled object, so a crafted file cannot run code.
    Raises InputError naming the file."""
    import pickle

    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # torch's message opens with advice to load without weights_only (which would run the file): keep the reason
        why = next((line for line in lines if "unsupported" in line.lower()),
                   lines[0] if lines and "weights_only" not in lines[0] else type(exc).__name__)
        raise InputError(f"--resume: refusing to load {path}: it is not a plain training checkpoint ({why}); "
                         "nothing from it was run. Start the run without --resume or in a new folder.") from None
    missing = [k for k in ("config", "net", "iknet", "state", "optimizer") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise InputError(f"--resume: refusing to load {path}: it lacks {', '.join(missing)}; nothing from it was run. "
                         "Start the run without --resume or in a new folder.")
    return ckpt


def train(data_dirs, run_dir, *, epochs=PAPER_EPOCHS, max_steps=None, batch_size=32, device="auto", smoke=False,
          resume=False, workers=0, seed=0, iknet_init="shipped", log_every=10, checkpoint_every=500,
          stages=STAGES, hand_model=None, val_dirs=None) -> dict:
    """Runs the three-stage schedule; returns dict(losses={stage: [loss per step]}, files={...}).

    Args:
        data_dirs: ground-truth folders. run_dir: output folder. epochs: per stage (keypoints, iknet, end2end);
        an IKNet "epoch" is one pass of len(dataset) sampled poses. max_steps: cap on the steps of each stage.
        smoke: the tiny SMOKE_CONFIG network at 64 px (CPU minutes) instead of the paper's.
        resume: continue from run_dir/checkpoint.pt. stages: which of STAGES to run.
        val_dirs: ground-truth folders evaluated (`evaluate`, first 500 records) at each stage end, logged.
    """
    from engine.hand_model import load_hand_model
    from engine.hand_model.torch_layer import HandLayer
    from engine.hand_module import hourglass as hg
    from engine.hand_module.datasets import HandCropDataset
    from engine.hand_module.iknet import IKNet, keypoint_model, load_iknet

    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    config = hg.SMOKE_CONFIG if smoke else hg.HourglassConfig()
    dataset = HandCropDataset(list(data_dirs), input_size=config.input_size, augment=True, seed=seed)
    model = load_hand_model(hand_model, side="right")
    kmodel = keypoint_model(model)
    layer = HandLayer(kmodel).to(device)
    net = hg.HourglassNet(config).to(device)
    if iknet_init == "shipped" and hand_model is None:
        iknet = load_iknet(side="right")
        if not isinstance(iknet, IKNet):
            iknet = IKNet()
    else:
        from engine.hand_module.iknet import PALM_KEYPOINTS

        with torch.no_grad():
            _, rest, _ = layer(torch.tensor([[[1.0, 0, 0, 0]] * 16]), torch.zeros(1, 10))
        palm = hg.root_relative_normalized(rest.float())[0, list(PALM_KEYPOINTS)]
        iknet = IKNet(hidden=(512, 512, 512), palm_template=palm)
    iknet = iknet.to(device).train()
    full = hg.HandModuleNet(net, iknet, layer).to(device)

    state = dict(stage=0, step=0, global_step=0)
    ckpt_path = run_dir / "checkpoint.pt"
    opt_state = None
    if resume:
        if not ckpt_path.is_file():
            raise InputError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = load_checkpoint(ckpt_path, device)
        if ckpt["config"] != config._asdict():
            raise InputError(f"--resume: {ckpt_path} is for network {ckpt['config']}, not {config._asdict()}")
        net.load_state_dict(ckpt["net"])
        iknet.load_state_dict(ckpt["iknet"])
        state = ckpt["state"]
        opt_state = ckpt["optimizer"]
        log.info("resuming at stage %s step %d", STAGES[state["stage"]], state["step"])
    (run_dir / "args.json").write_text(json.dumps(dict(
        data=[str(d) for d in data_dirs], epochs=list(epochs), max_steps=max_steps, batch_size=batch_size,
        device=device, smoke=smoke, seed=seed, iknet_init=iknet_init, config=config._asdict(),
        lambdas_eq6=LAMBDA_EQ6, lambdas_eq7=LAMBDA_EQ7, records=len(dataset)), indent=1))
    log_file = open(run_dir / "log.jsonl", "a")
    losses: dict[str, list[float]] = {s: [] for s in STAGES}
    gen = torch.Generator().manual_seed(seed)
    n_batches = max(len(dataset) // batch_size, 1)

    def save_checkpoint(opt):
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(dict(net=net.state_dict(), iknet=iknet.state_dict(), optimizer=opt.state_dict(), state=state,
                        config=config._asdict()), tmp)
        tmp.replace(ckpt_path)

    try:
        for si, stage in enumerate(STAGES):
            if si < state["stage"] or stage not in stages:
                continue
            total = epochs[si] * n_batches
            if max_steps is not None:
                total = min(total, max_steps)
            params = {"keypoints": net.parameters(), "iknet": iknet.parameters(), "end2end": full.parameters()}[stage]
            opt = torch.optim.Adam(params, lr=LR_END2END if stage == "end2end" else LR)
            if opt_state is not None and state["stage"] == si and state["step"] > 0:
                opt.load_state_dict(opt_state)
            opt_state = None
            net.train(stage != "iknet")
            iknet.train(stage != "keypoints")
            bar = Progress(total, stage)
            step = state["step"] if state["stage"] == si else 0
            loader_iter = None
            epoch = step // n_batches
            while step < total:
                t0 = time.monotonic()
                if stage == "iknet":
                    loss, terms = loss_ik(iknet, layer, kmodel, batch_size, gen, device)
                else:
                    if loader_iter is None:
                        dataset.epoch = epoch
                        batches = _batches(len(dataset), batch_size, seed, si, epoch)[step % n_batches :]
                        loader_iter = iter(torch.utils.data.DataLoader(dataset, batch_sampler=batches,
                                                                       num_workers=workers))
                    try:
                        batch = _to(next(loader_iter), device)
                    except StopIteration:
                        loader_iter, epoch = None, epoch + 1
                        continue
                    if stage == "keypoints":
                        loss, terms = loss_theta(net(batch["image"]), batch)
                    else:
                        loss, terms = loss_full(full(batch["image"], batch["K_crop"]), batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(opt.param_groups[0]["params"], 10.0)
                opt.step()
                step += 1
                state.update(stage=si, step=step, global_step=state["global_step"] + 1)
                value = loss.item()
                if not math.isfinite(value):
                    raise InputError(f"training diverged at stage {stage} step {step} (loss {value})")
                losses[stage].append(value)
                bar.update(step, value)
                if step % log_every == 0 or step == total:
                    log_file.write(json.dumps(dict(stage=stage, step=step, global_step=state["global_step"],
                                                   epoch=epoch, loss=value, lr=opt.param_groups[0]["lr"],
                                                   seconds=round(time.monotonic() - t0, 4), **terms)) + "\n")
                    log_file.flush()
                if step % checkpoint_every == 0:
                    save_checkpoint(opt)
            state.update(stage=si + 1, step=0)
            save_checkpoint(opt)
            done = losses[stage]
            val = evaluate(net, val_dirs, device=device, limit=500) if val_dirs else None
            if val:
                log.info("%s: held-out %s", stage, val)
            log_file.write(json.dumps(dict(stage=stage, event="stage_end", steps=total,
                                           first_loss=done[0] if done else None,
                                           last_loss=done[-1] if done else None, val=val)) + "\n")
            log_file.flush()
    finally:
        log_file.close()
    from safetensors.torch import save_file

    hg.save_weights(run_dir / "hourglass.safetensors", net, extra=dict(records=len(dataset), smoke=smoke))
    save_file({k: v.detach().cpu().float().contiguous() for k, v in iknet.state_dict().items()
               if not k.endswith("num_batches_tracked")}, str(run_dir / "iknet.safetensors"))
    return dict(losses=losses, files=dict(hourglass=str(run_dir / "hourglass.safetensors"),
                                          iknet=str(run_dir / "iknet.safetensors"), log=str(run_dir / "log.jsonl")))


# ------------------------------------------------------------------------------------------------ evaluate
@torch.no_grad()
def evaluate(weights, data_dirs, *, batch_size: int = 16, device: str = "cpu", limit: int | None = None) -> dict:
    """Held-out figures of a HourglassNet on ground-truth folders (crops from the true 2D joints, no augment).

    Returns dict(records, px_2d: mean 2D keypoint error in crop pixels (input_size scale), px_2d_full: the same
    in the images' own pixels, mpjpe_rr_mm: mean root-relative 3D error of the Eq. 5 joints with the predicted
    bone length (records with 3D), root_rel_err: mean |z_root / z_root_true - 1| of rho, bone_rel_err).
    """
    from engine.hand_module import hourglass as hg
    from engine.hand_module.datasets import HandCropDataset

    net = weights if isinstance(weights, torch.nn.Module) else hg.load_weights(weights, device)
    net.eval()
    S = net.config.input_size
    ds = HandCropDataset(list(data_dirs), input_size=S, augment=False)
    idx = list(range(len(ds) if limit is None else min(limit, len(ds))))
    px, px_full, mpjpe, root_err, bone_err = [], [], [], [], []
    for i in range(0, len(idx), batch_size):
        batch = _to(torch.utils.data.default_collate([ds[j] for j in idx[i : i + batch_size]]), device)
        out = net(batch["image"])
        err = (out["uvd"][..., :2] - batch["uv"]).norm(dim=-1).mean(-1)
        px += err.tolist()
        f_ratio = hg.crop_focal(batch["K_crop"])  # crop px per image px = f_crop / f when 3D exists
        m3 = batch["has_3d"] > 0
        if m3.any():
            joints = hg.lift_crop_torch(out["uvd"], out["rho"], batch["K_crop"], S) * out["bone"][:, None, None]
            truth = batch["joints_norm"] * batch["bone"][:, None, None]
            rr = (joints - joints[:, 9:10]) - (truth - truth[:, 9:10])
            mpjpe += (rr.norm(dim=-1).mean(-1)[m3] * 1000).tolist()
            root_err += (out["rho"] / batch["rho"] - 1).abs()[m3].tolist()
            bone_err += (out["bone"] / batch["bone"] - 1).abs()[m3].tolist()
            K_full = torch.tensor([ds.records[j].K[0, 0] for j in idx[i : i + batch_size]], device=device)
            px_full += (err[m3] * K_full[m3] / f_ratio[m3]).tolist()

    def mean(v):
        return float(np.mean(v)) if v else None

    return dict(records=len(idx), px_2d=mean(px), px_2d_full=mean(px_full), mpjpe_rr_mm=mean(mpjpe),
                root_rel_err=mean(root_err), bone_rel_err=mean(bone_err))


# --------------------------------------------------------------------------------------------------- CLI
def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train the hourglass hand module (paper Sec. 3.3).")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="rasterize a synthetic ground-truth set (fast, for volume)")
    s.add_argument("out", type=pathlib.Path)
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sides", choices=("both", "right", "left"), default="both")
    s.add_argument("--hand-model", default=None)
    r = sub.add_parser("run", help="train on ground-truth folders")
    r.add_argument("data", nargs="+", type=pathlib.Path)
    r.add_argument("-o", "--output", type=pathlib.Path, required=True, help="run folder")
    r.add_argument("--epochs", default=",".join(map(str, PAPER_EPOCHS)), help="keypoints,iknet,end2end")
    r.add_argument("--steps", type=int, default=None, help="cap on each stage's steps")
    r.add_argument("--stages", default=",".join(STAGES))
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--smoke", action="store_true", help="tiny 64-px network (CPU smoke test)")
    r.add_argument("--resume", action="store_true")
    r.add_argument("--iknet-init", choices=("shipped", "scratch"), default="shipped")
    r.add_argument("--checkpoint-every", type=int, default=500)
    r.add_argument("--val", type=pathlib.Path, nargs="*", default=None, help="held-out folders (stage ends)")
    e = sub.add_parser("eval", help="held-out figures of trained weights on ground-truth folders")
    e.add_argument("weights", type=pathlib.Path, help="hourglass.safetensors")
    e.add_argument("data", nargs="+", type=pathlib.Path)
    e.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    e.add_argument("--limit", type=int, default=None)
    return p


def main(argv: list[str], prog: str = "python -m engine train") -> int:
    args = _parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "synth":
        from engine.hand_module.datasets import generate_synthetic_set

        bar = Progress(args.count, "synth")
        n = generate_synthetic_set(args.out, args.count, args.size, args.seed, args.sides, args.hand_model,
                                   progress=lambda done, total: bar.update(done))
        log.info("wrote %d records to %s", n, args.out)
        return 0
    if args.cmd == "eval":
        print(json.dumps(evaluate(args.weights, args.data, device=args.device, limit=args.limit), indent=1))
        return 0
    try:
        epochs = tuple(int(e) for e in args.epochs.split(","))
    except ValueError as exc:
        raise InputError(f"--epochs must be three integers like 100,50,100, got {args.epochs!r}") from exc
    if len(epochs) != 3:
        raise InputError(f"--epochs must be three integers like 100,50,100, got {args.epochs!r}")
    stages = tuple(s for s in args.stages.split(",") if s)
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise InputError(f"unknown stage(s) {bad}: choose from {', '.join(STAGES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available to torch here")
    result = train(args.data, args.output, epochs=epochs, max_steps=args.steps, batch_size=args.batch_size,
                   device=args.device, smoke=args.smoke, resume=args.resume, workers=args.workers, seed=args.seed,
                   iknet_init=args.iknet_init, checkpoint_every=args.checkpoint_every, stages=stages,
                   val_dirs=args.val)
    for stage, values in result["losses"].items():
        if values:
            log.info("%s: loss %.4g -> %.4g over %d steps", stage, values[0], values[-1], len(values))
    log.info("weights: %s, %s", result["files"]["hourglass"], result["files"]["iknet"])
    return 0
