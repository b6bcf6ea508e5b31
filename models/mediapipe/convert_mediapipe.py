"""Convert MediaPipe's hand models (Apache-2.0) to fp16 safetensors for the torch port.

Run once by a developer, never at run time:

    .venv/bin/python models/mediapipe/convert_mediapipe.py [--wheel mediapipe-0.10.21-...whl]

Without --wheel it runs `pip download mediapipe==0.10.21 --no-deps --only-binary=:all:` into a temporary
folder (mediapipe is never installed). From the wheel it takes, unmodified:
hand_landmark_full.tflite, palm_detection_full.tflite (the parity tests' reference), handedness.txt and the
wheel's LICENSE; it writes hand_landmark_full.safetensors and palm_detection_full.safetensors (every TFLite
weight is an fp16 constant, so fp16 is lossless) and PROVENANCE.md with sha256 sums.

Weights are mapped by walking the TFLite op list in order (not by tensor name: some palm layers share one
zero bias tensor), matching each weighted op to the torch module's `weight_slots()` with kind and shape
checks. Needs the `tflite` flatbuffer reader (`pip install tflite==2.18.0`, the `convert` extra).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

VERSION = "0.10.21"
WHEEL_FILES = {
    "hand_landmark_full.tflite": "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
    "palm_detection_full.tflite": "mediapipe/modules/palm_detection/palm_detection_full.tflite",
    "handedness.txt": "mediapipe/modules/hand_landmark/handedness.txt",
    "LICENSE": f"mediapipe-{VERSION}.dist-info/LICENSE",
}
EXPECTED_SHA256 = {
    "hand_landmark_full.tflite": "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    "palm_detection_full.tflite": "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
}
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "PRELU")


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_wheel(dest: pathlib.Path) -> pathlib.Path:
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={VERSION}", "--no-deps",
           "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", str(dest)]
    subprocess.run(cmd, check=True)
    return next(dest.glob("mediapipe-*.whl"))


def tflite_weights(path: pathlib.Path) -> list[tuple[str, list[np.ndarray]]]:
    """(op kind, [weight arrays as fp16]) for each weighted op of the graph, in op order.

    Each weight is a FLOAT16 constant feeding a DEQUANTIZE op; the op's inputs name the DEQUANTIZE
    outputs, which we trace back to the constant buffers."""
    import tflite

    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    names = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}

    def kind(op) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())
        return names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]

    def constant(t: int) -> np.ndarray | None:
        tensor = graph.Tensors(t)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data is None or len(data) == 0:
            return None
        assert tensor.Type() == tflite.TensorType.FLOAT16, f"tensor {t} is not fp16"
        return np.frombuffer(data.tobytes(), dtype=np.float16).reshape(tensor.ShapeAsNumpy())

    dequantized = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if kind(op) == "DEQUANTIZE":
            dequantized[op.Outputs(0)] = constant(op.Inputs(0))
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        k = kind(op)
        if k in WEIGHTED_OPS:
            weights = [dequantized[op.Inputs(j)] for j in range(1, op.InputsLength()) if op.Inputs(j) in dequantized]
            out.append((k, weights))
    return out


def to_torch_layout(kind: str, weights: list[np.ndarray]) -> list[np.ndarray]:
    """TFLite layouts -> torch: conv OHWI -> OIHW, depthwise 1HWC -> C1HW, FC as is, PReLU [1,1,C] -> (C,)."""
    if kind == "CONV_2D":
        return [weights[0].transpose(0, 3, 1, 2), weights[1]]
    if kind == "DEPTHWISE_CONV_2D":
        return [weights[0].transpose(3, 0, 1, 2), weights[1]]
    if kind == "FULLY_CONNECTED":
        return [weights[0], weights[1]]
    if kind == "PRELU":
        return [weights[0].reshape(-1)]
    raise ValueError(kind)


def convert(module, tflite_path: pathlib.Path) -> dict[str, "torch.Tensor"]:
    """Maps every TFLite weight onto `module`'s parameters (kind and shape checked) -> fp16 state dict."""
    import torch

    params = dict(module.state_dict())
    ops = tflite_weights(tflite_path)
    slots = module.weight_slots()
    if len(ops) != len(slots):
        raise SystemExit(f"{tflite_path.name}: {len(ops)} weighted ops but the module has {len(slots)} slots")
    state = {}
    for (kind, weights), (slot_kind, prefix) in zip(ops, slots):
        if kind != slot_kind:
            raise SystemExit(f"{prefix}: TFLite op {kind}, module expects {slot_kind}")
        names = [f"{prefix}.weight"] + ([f"{prefix}.bias"] if kind != "PRELU" else [])
        for name, w in zip(names, to_torch_layout(kind, weights), strict=True):
            if tuple(params[name].shape) != w.shape:
                raise SystemExit(f"{name}: module shape {tuple(params[name].shape)} != TFLite {w.shape}")
            state[name] = torch.from_numpy(np.array(w, dtype=np.float16, copy=True, order="C"))
    missing = set(params) - set(state)
    if missing:
        raise SystemExit(f"parameters without a TFLite weight: {sorted(missing)}")
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=pathlib.Path, help=f"a downloaded mediapipe-{VERSION} wheel")
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from safetensors.torch import save_file

    from engine.hand_module.blazepalm import BlazePalm
    from engine.hand_module.landmarks import HandLandmarkNet

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(pathlib.Path(tmp))
        with zipfile.ZipFile(wheel) as z:
            for name, member in WHEEL_FILES.items():
                (args.out / name).write_bytes(z.read(member))
    for name, digest in EXPECTED_SHA256.items():
        if sha256(args.out / name) != digest:
            raise SystemExit(f"{name}: sha256 differs from the audited {digest}")

    outputs = {}
    for cls, stem in ((HandLandmarkNet, "hand_landmark_full"), (BlazePalm, "palm_detection_full")):
        state = convert(cls(), args.out / f"{stem}.tflite")
        path = args.out / f"{stem}.safetensors"
        # one metadata key: safetensors writes its metadata map in no fixed order (bytes would differ per run)
        save_file(state, str(path), metadata={"source": f"mediapipe {VERSION} {stem}.tflite, Apache-2.0"})
        path.chmod(0o644)
        outputs[path.name] = sum(t.numel() for t in state.values())

    rows = "\n".join(
        f"| `{p.name}` | {p.stat().st_size} | `{sha256(p)}` |"
        for p in sorted(args.out.iterdir())
        if p.suffix in (".tflite", ".safetensors", ".txt") or p.name == "LICENSE"
    )
    params = ", ".join(f"{k}: {v:,} parameters" for k, v in outputs.items())
    (args.out / "PROVENANCE.md").write_text(f"""# MediaPipe hand models (Apache-2.0)

- Source: the PyPI wheel `{wheel.name}` (mediapipe {VERSION}, Google LLC), files
  `{WHEEL_FILES['hand_landmark_full.tflite']}`, `{WHEEL_FILES['palm_detection_full.tflite']}`,
  `{WHEEL_FILES['handedness.txt']}`, and the wheel's `{WHEEL_FILES['LICENSE']}` (Apache License 2.0; the
  wheel has no NOTICE file). Model card: "Hands model card", linked from the MediaPipe hand landmarker docs.
- The `.tflite` and `handedness.txt` files are copied unmodified (reference for the parity tests).
- The `.safetensors` files are the same weights re-laid out for the torch modules in
  `engine/hand_module/landmarks.py` and `engine/hand_module/blazepalm.py` ({params}); every TFLite weight is
  an fp16 constant, so the fp16 files are lossless. Made by `convert_mediapipe.py` (this folder).
- Changes: layout only (OHWI -> OIHW convs, 1HWC -> C1HW depthwise, [1,1,C] -> (C,) PReLU).

| file | bytes | sha256 |
|---|---|---|
{rows}
""")
    logging.getLogger(__name__).info("wrote %s to %s", ", ".join(outputs), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
