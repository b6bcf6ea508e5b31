"""Per-crop timings of the torch port of MediaPipe's hand networks, with the TFLite reference
(ai-edge-litert, XNNPACK) measured in the same run. Prints one JSON document (ms per crop, median of
repeats). torch and TFLite both get 2 threads.

    .venv/bin/python scripts/bench_mediapipe_port.py [--repeats 20] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

from engine.hand_module.blazepalm import load_palm_net
from engine.hand_module.landmarks import MODEL_DIR, load_landmark_net


def median_ms(fn, repeats: int, per: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * float(np.median(times)) / per, 3)


def bench_torch(net, size: int, batch: int, channels_last: bool, repeats: int) -> float:
    x = torch.rand(batch, 3, size, size)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        net = net.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        return median_ms(lambda: net(x), repeats, batch)


def bench_tflite(name: str, size: int, repeats: int, threads: int) -> float | None:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    interp = Interpreter(model_path=str(MODEL_DIR / name), num_threads=threads)
    interp.allocate_tensors()
    idx = interp.get_input_details()[0]["index"]
    x = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)

    def run():
        interp.set_tensor(idx, x)
        interp.invoke()

    return median_ms(run, repeats, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch and TFLite threads (default 2)")
    args = parser.parse_args()
    threads = args.threads
    torch.set_num_threads(threads)
    result = {"unit": "ms per crop", "threads": threads, "torch": torch.__version__, "cpu": platform.processor()
              or platform.machine(), "batch": args.batch,
              "load_average_1min_before": round(os.getloadavg()[0], 2),
              "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    for key, net, size, tfl in (("hand_landmark", load_landmark_net(), 224, "hand_landmark_full.tflite"),
                                ("palm_detection", load_palm_net(), 192, "palm_detection_full.tflite")):
        result[key] = {
            "torch_bs1": bench_torch(net, size, 1, False, args.repeats),
            "torch_bs1_channels_last": bench_torch(net, size, 1, True, args.repeats),
            f"torch_bs{args.batch}_channels_last": bench_torch(net, size, args.batch, True, max(3, args.repeats // 4)),
            "tflite_xnnpack_bs1": bench_tflite(tfl, size, args.repeats, threads),
        }
    result["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
