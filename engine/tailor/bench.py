"""`python -m engine bench tailor [--json]`: the tailor's speed and convergence, measured in one run.

Synthetic frames with ground truth (`engine.tailor.synthetic`) under a known pinhole camera. Reports:

* single_ms_per_frame: one frame (B = 1) through `fit` (numpy in, numpy out), after warm-up; median.
* batched_ms_per_frame: B = --batch-size (256) frames per call, divided by B; median.
* loop_one_kernel: whether XLA compiled the Adam loop into one kernel (`engine.SMALL_LOOP_KERNEL_BYTES`) for
  the single frame and for the batch.
* reference_single_ms_per_frame: the same math not jitted (`fit(..., jit=False)`), one frame.
* iterations_table: for 10/20/50/100 iterations, the paper's tailor with both Adam settings (`TailorConfig.paper`:
  the paper's lr 0.003 and the authors' lr 0.03, b1 = b2 = 0.5) and the default one (the project's terms and
  annealed Adam): ms/frame single and batched, and the residual errors (median over the batch of the mean 2D
  distance to the detected keypoints, and to the ground-truth 2D; PA-MPJPE in mm), like the paper's Table 3.
  Iterations and weights are traced: the table needs no recompilation. (The synthetic hands here come from
  the model itself, with small noise: the accuracy that matters is measured by `engine eval` on real and
  mismatched hands, see engine.tailor.api.TailorConfig.)
Targets (not tests): <= 1 ms single, <= 0.25 ms/frame batched (paper: 8.02 ms on an i7-8700).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time

import numpy as np

log = logging.getLogger(__name__)

ITERATIONS = (10, 20, 50, 100)


def _median_ms(fn, repeats: int, min_seconds: float = 0.0) -> float:
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < 10 * repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def run(batch_size: int = 256, repeats: int = 30, reference_frames: int = 1, seed: int = 0) -> dict:
    """Measures everything; returns the JSON-able dict."""
    import jax

    from engine.camera import project_perspective
    from engine.metrics import pa_mpjpe
    from engine.hand_model import load_hand_model
    from engine.tailor.api import AUTHORS_ADAM, PAPER_ADAM, TailorConfig, fit, loop_is_one_kernel, model_params
    from engine.tailor.synthetic import make_case

    model = load_hand_model()
    params = model_params(model)
    case = make_case(model, params, batch_size, seed=seed)
    default = TailorConfig()

    def call(b, config, jit=True):
        sl = slice(0, b)
        return fit(model, case["theta0"][sl], case["beta0"][sl], case["root0"][sl], case["keypoints_2d"][sl],
                   case["confidence"][sl], None, case["K"], None, config, jit=jit)

    t = time.perf_counter()
    call(1, default)
    compile_single_s = time.perf_counter() - t
    t = time.perf_counter()
    call(batch_size, default)
    compile_batched_s = time.perf_counter() - t
    log.info("compiled in %.1f s (B=1) and %.1f s (B=%d)", compile_single_s, compile_batched_s, batch_size)

    single = _median_ms(lambda: call(1, default), repeats, min_seconds=1.0)
    batched = _median_ms(lambda: call(batch_size, default), max(3, repeats // 6)) / batch_size

    nref = max(0, min(reference_frames, batch_size))
    reference = None
    if nref:
        t = time.perf_counter()
        call(nref, default, jit=False)
        reference = (time.perf_counter() - t) * 1e3 / nref
    log.info("single %.3f ms, batched %.4f ms/frame, reference %s ms/frame", single, batched, reference)

    table = []
    for name, base in (("paper", TailorConfig.paper(**PAPER_ADAM)), ("authors", TailorConfig.paper(**AUTHORS_ADAM)),
                       ("default", default)):
        adam = {"lr": base.lr, "b1": base.b1, "b2": base.b2}
        for iters in ITERATIONS:
            config = base._replace(iterations=iters)
            out = call(batch_size, config)
            uv = project_perspective(out["joints_3d"], out["K"])
            to_gt = np.linalg.norm(uv - case["gt_2d"], axis=-1).mean(-1)
            row = {
                "adam": name,
                **adam,
                "iterations": iters,
                "single_ms_per_frame": _median_ms(lambda: call(1, config), max(5, repeats // 3)),
                "batched_ms_per_frame": _median_ms(lambda: call(batch_size, config), 3) / batch_size,
                "residual_2d_px": float(np.median(out["energies"]["reprojection_px"])),
                "residual_2d_to_gt_px": float(np.median(to_gt)),
                "pa_mpjpe_mm": float(np.median(pa_mpjpe(out["joints_3d"], case["gt_joints"])) * 1e3),
            }
            table.append(row)
            log.info("%s", row)
    init = call(batch_size, default._replace(iterations=0, fit_root_xy=False))
    init_uv = project_perspective(init["joints_3d"], init["K"])
    return {
        "single_ms_per_frame": single,
        "batched_ms_per_frame": batched,
        "batch_size": batch_size,
        "reference_single_ms_per_frame": reference,
        "reference_to_single_ratio": None if reference is None else reference / single,
        "reference_frames": nref,
        "iterations": default.iterations,
        "default_adam": {"lr": default.lr, "b1": default.b1, "b2": default.b2, "lr_final": default.lr_final},
        "compile_s": {"single": compile_single_s, "batched": compile_batched_s},
        "initial_residual_2d_px": float(np.median(init["energies"]["reprojection_px"])),
        "initial_residual_2d_to_gt_px": float(np.median(np.linalg.norm(init_uv - case["gt_2d"], axis=-1).mean(-1))),
        "initial_pa_mpjpe_mm": float(np.median(pa_mpjpe(init["joints_3d"], case["gt_joints"])) * 1e3),
        "iterations_table": table,
        "targets": {"single_ms_per_frame": 1.0, "batched_ms_per_frame": 0.25},
        # whether XLA ran the Adam loop as one kernel (engine.SMALL_LOOP_KERNEL_BYTES) for these figures
        "loop_one_kernel": {"single": loop_is_one_kernel(params, 1), "batched": loop_is_one_kernel(params, batch_size)},
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
        },
    }


def main(argv: list[str], prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: a readable summary)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls for the single-frame figure")
    parser.add_argument("--reference-frames", type=int, default=1,
                        help="frames run through the non-jitted reference (about a minute each; 0 skips it)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1:
        from engine.errors import InputError

        raise InputError("--batch-size and --repeats must be >= 1")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    result = run(args.batch_size, args.repeats, args.reference_frames, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        ref = result["reference_single_ms_per_frame"]
        ref_text = "skipped" if ref is None else f"{ref:.1f} ms/frame (x{result['reference_to_single_ratio']:.0f})"
        print(f"single frame: {result['single_ms_per_frame']:.3f} ms   batched (B={args.batch_size}): "
              f"{result['batched_ms_per_frame']:.4f} ms/frame   reference: {ref_text}")
        kernel = {k: "yes" if v else "no" for k, v in result["loop_one_kernel"].items()}
        print(f"Adam loop as one XLA kernel: single {kernel['single']}, batched {kernel['batched']}")
        print(f"initial residual: {result['initial_residual_2d_px']:.2f} px")
        print("adam     iters  single ms  batched ms/frame  residual px  to-GT px  PA-MPJPE mm")
        for r in result["iterations_table"]:
            print(f"{r['adam']:<8} {r['iterations']:>5}  {r['single_ms_per_frame']:9.3f}"
                  f"  {r['batched_ms_per_frame']:16.4f}  {r['residual_2d_px']:11.2f}"
                  f"  {r['residual_2d_to_gt_px']:8.2f}  {r['pa_mpjpe_mm']:11.2f}")
    return 0
