"""Candidate inference paths for MediaPipe's two hand networks on CPU, side by side in one run: ms per crop
and keypoint parity against the torch port (the reference implementation) on the parity photos.

    .venv/bin/python scripts/bench_mediapipe_port.py [--rounds 5] [--threads 1,2] [--no-compile]

Candidates (each on the same inputs; ms per crop = median over `rounds` interleaved rounds, so load drifts hit
all alike; `cpu_ms` is the process CPU time per crop, steadier than wall time on a shared machine):
- torch: the port, batch 1 and batch 8, channels_last; torch.compile (inductor) at batch 1;
- openvino: the shipped .tflite files through OpenVINO's CPU plugin at f32 (the engine's default runtime),
  and the same at the f16 / bf16 precision hints (faster on CPUs with AVX512-FP16 / AMX, if parity held);
- onnxruntime: the torch modules exported to ONNX (into a temporary folder; nothing is shipped);
- litert: the .tflite files through LiteRT / XNNPACK, what MediaPipe runs (the capture bench's reference).
Parity: the largest landmark difference to the torch port in 224-px crop units (`landmarks_px`), world
landmarks in mm, and the palm regressors in 192-px units, on MediaPipe's own crops of the parity photos
(tests/data/mediapipe_goldens). A candidate passes at landmarks_px <= 0.1.
Packages a candidate needs but that are missing (onnxruntime: the `candidates` extra) are reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import engine  # noqa: E402,F401 - first: it sets OMP_WAIT_POLICY before torch loads
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.hand_module import crops, runtimes  # noqa: E402
from engine.hand_module.blazepalm import load_palm_net  # noqa: E402
from engine.hand_module.landmarks import load_landmark_net  # noqa: E402

GOLDENS = REPO / "tests" / "data" / "mediapipe_goldens" / "static_images.json"
PARITY_PX = 0.1


def parity_inputs() -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's crops (B, 224, 224, 3) and letterboxed photos (P, 192, 192, 3) of the parity photos, uint8."""
    import cv2

    golden = json.loads(GOLDENS.read_text())
    lm, palm = [], []
    for im in golden["images"]:
        rgb = cv2.cvtColor(cv2.imread(str(REPO / im["image"])), cv2.COLOR_BGR2RGB)
        palm.append(crops.warp(rgb, crops.letterbox_roi(rgb.shape[1], rgb.shape[0]), 192, border="constant"))
        for h in im["hands"]:
            cx, cy, size, _, angle = h["roi_px"]
            lm.append(crops.warp(rgb, crops.Roi(cx, cy, size, angle), 224))
    return np.stack(lm), np.stack(palm)


def torch_fn(net, batch: int, compiled: bool = False):
    """uint8 NHWC images -> list of numpy outputs, `batch` crops per forward."""
    net = net.to(memory_format=torch.channels_last)
    run = torch.compile(net) if compiled else net

    def fn(x: np.ndarray):
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                t = torch.from_numpy(x[i : i + batch]).permute(0, 3, 1, 2).float().div_(255.0)
                outs.append([o.numpy() for o in run(t.contiguous(memory_format=torch.channels_last))])
        return [np.concatenate(p) for p in zip(*outs)]

    return fn


def openvino_fn(name: str, threads: int, precision: str):
    ov = runtimes.import_openvino()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(runtimes.MODEL_DIR / name)), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False})
    req = compiled.create_infer_request()

    def fn(x: np.ndarray):
        outs = []
        for img in x:
            req.infer({0: img[None].astype(np.float32) / np.float32(255.0)})
            outs.append([req.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))])
        return [np.concatenate(p) for p in zip(*outs)]

    return fn


def onnxruntime_fn(net, size: int, threads: int, folder: str):
    import onnxruntime as ort

    path = os.path.join(folder, f"{type(net).__name__}.onnx")
    if not os.path.exists(path):
        torch.onnx.export(net.to(memory_format=torch.contiguous_format), (torch.rand(1, 3, size, size),), path,
                          dynamo=False, input_names=["image"], dynamic_axes={"image": {0: "batch"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"image": np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32) / 255.0})


def litert_fn(name: str, threads: int):
    nets = runtimes.LiteRtNetworks(threads)
    return lambda x: list(nets.landmarks(x) if name == "landmarks" else nets.palm(x))


def canonical(key: str, outs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs in the torch module's order and shapes (TFLite names order them differently)."""
    b = outs[0].shape[0]
    if key == "landmarks" and outs[0].ndim == 2 and outs[0].shape[1] == 63:  # tflite: lm, presence, left, world
        return [outs[0].reshape(b, 21, 3), outs[1].reshape(b), outs[2].reshape(b), outs[3].reshape(b, 21, 3)]
    if key == "palm" and outs[1].ndim == 3:
        return [outs[0], outs[1][..., 0]]
    return [np.asarray(o).reshape(b, *np.asarray(o).shape[1:]) for o in outs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="thread counts to measure (default 1,2)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its compile takes minutes)")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    lm_x, palm_x = parity_inputs()
    folder = tempfile.mkdtemp(prefix="handtailor-candidates-")
    result: dict = {"unit": "ms per crop (median of interleaved rounds)", "torch": torch.__version__,
                    "cpu_count": os.cpu_count(), "load_average_before": list(os.getloadavg()),
                    "parity_bound_landmarks_px": PARITY_PX}
    for key, net, size, tfl, x in (("landmarks", load_landmark_net(), 224, runtimes.LANDMARK_TFLITE, lm_x),
                                   ("palm", load_palm_net(), 192, runtimes.PALM_TFLITE, palm_x)):
        ref = canonical(key, torch_fn(net, 8)(x))
        cands: dict = {}
        for th in thread_counts:
            torch.set_num_threads(th)
            cands[f"torch_bs1_t{th}"] = (torch_fn(net, 1), th)
            cands[f"torch_bs8_t{th}"] = (torch_fn(net, 8), th)
            cands[f"openvino_f32_t{th}"] = (openvino_fn(tfl, th, "f32"), th)
            for prec in ("f16", "bf16"):
                cands[f"openvino_{prec}_t{th}"] = (openvino_fn(tfl, th, prec), th)
            for name, make in (("onnxruntime", lambda: onnxruntime_fn(net, size, th, folder)),
                               ("litert", lambda: litert_fn(key, th))):
                try:
                    cands[f"{name}_t{th}"] = (make(), th)
                except ImportError as exc:
                    result.setdefault("missing", {})[name] = str(exc)
        if not args.no_compile:
            torch.set_num_threads(1)
            cands["torch_compile_bs1_t1"] = (torch_fn(net, 1, compiled=True), 1)
        table: dict = {}
        for name, (fn, th) in cands.items():
            torch.set_num_threads(th)
            t0 = time.perf_counter()
            out = canonical(key, fn(x))  # first call: warm-up (and compile), and the parity figures
            row = {"first_call_s": round(time.perf_counter() - t0, 3), "ms": [], "cpu_ms": []}
            if key == "landmarks":
                row["landmarks_px"] = float(np.abs(out[0][..., :2] - ref[0][..., :2]).max())
                row["world_mm"] = float(1000 * np.abs(out[3] - ref[3]).max())
                row["passes"] = row["landmarks_px"] <= PARITY_PX
            else:
                row["regressors_px"] = float(np.abs(out[0] - ref[0]).max())
            table[name] = row
        for _ in range(args.rounds):
            for name, (fn, th) in cands.items():
                torch.set_num_threads(th)
                w0, c0 = time.perf_counter(), time.process_time()
                fn(x)
                table[name]["ms"].append(1000 * (time.perf_counter() - w0) / len(x))
                table[name]["cpu_ms"].append(1000 * (time.process_time() - c0) / len(x))
        for row in table.values():
            row["ms"], row["cpu_ms"] = round(float(np.median(row["ms"])), 2), round(float(np.median(row["cpu_ms"])), 2)
        result[key] = table
    result["load_average_after"] = list(os.getloadavg())
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
