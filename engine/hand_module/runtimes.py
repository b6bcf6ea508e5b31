"""Inference runtimes for MediaPipe's two hand networks (palm detector, hand landmarks).

Every runtime takes uint8 RGB images and returns numpy arrays, so the tracker does not care which one runs:

- "openvino" (the default on CPU): OpenVINO's CPU plugin runs the shipped `.tflite` files through its
  TensorFlow Lite reader (nothing is exported, downloaded or cached). The uint8 -> [0, 1] conversion is
  folded into the graph. Precision is forced to f32: on CPUs with AMX or AVX512-FP16 OpenVINO would
  otherwise pick bf16, which moved landmarks by 2 px (f16: 0.17 px at 224) against the 0.1 px parity bound.
  Thread pinning is off (the engine shares the CPU with Blender).
- "litert": LiteRT (XNNPACK) on the same `.tflite` files, which is what MediaPipe itself runs: the
  benchmark's reference. Needs `ai-edge-litert` (the test extra).
- "torch": the torch port (`landmarks.HandLandmarkNet`, `blazepalm.BlazePalm`), the reference
  implementation; the only runtime for a torch device other than "cpu" (e.g. "cuda").

Measured per crop on the 2-core CPU and the parity of each against the torch port: the table in
`scripts/bench_mediapipe_port.py` (run it to reproduce).

Threads: the networks are small, so the tracker uses both cores by running independent tracking segments
concurrently (`streams` of them), each network call on one thread (`threads`). `HandNetworks` is safe to
call from `streams` threads at once: OpenVINO gets one inference stream per thread, LiteRT one interpreter
per thread, torch shares its modules (torch's own thread setting applies).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pathlib
import threading
from typing import NamedTuple

import numpy as np

from engine.caches import cache_folder, cpu_digest, write_atomically
from engine.errors import InputError

log = logging.getLogger(__name__)

MODEL_DIR = pathlib.Path(__file__).resolve().parents[2] / "models" / "mediapipe"
RUNTIMES = ("openvino", "litert", "torch")
LANDMARK_TFLITE = "hand_landmark_full.tflite"
PALM_TFLITE = "palm_detection_full.tflite"


class LandmarkArrays(NamedTuple):
    """Outputs of the hand landmark network for B crops (see `landmarks.LandmarkOutput`)."""

    landmarks: np.ndarray  # (B, 21, 3) crop pixels (x, y) and raw z, 224-px crop
    presence: np.ndarray  # (B,) probability
    handedness: np.ndarray  # (B,) probability of label "Left" (mirrored convention)
    world_landmarks: np.ndarray  # (B, 21, 3) metres, crop axes


class PalmArrays(NamedTuple):
    """Outputs of the palm detector for B images (see `blazepalm.PalmOutput`)."""

    regressors: np.ndarray  # (B, 2016, 18) 192-px units relative to the anchor
    logits: np.ndarray  # (B, 2016)


def default_runtime(device: str = "cpu") -> str:
    """The fastest runtime that passes parity on `device`: "openvino" on CPU, "torch" elsewhere."""
    return "openvino" if str(device) == "cpu" else "torch"


def check_runtime(runtime: str | None, device: str = "cpu") -> str:
    """The runtime to use (None: `default_runtime(device)`); InputError for a choice that cannot run."""
    runtime = default_runtime(device) if runtime is None else str(runtime)
    if runtime not in RUNTIMES:
        raise InputError(f"unknown network runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime != "torch" and str(device) != "cpu":
        raise InputError(f"the {runtime} runtime runs on the CPU only; use --runtime torch for device {device!r}")
    module = {"openvino": "openvino", "litert": "ai_edge_litert.interpreter"}.get(runtime)
    if module is not None:
        import importlib.util

        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            package = {"openvino": "openvino (a main dependency)", "litert": "ai-edge-litert (the test extra)"}
            raise InputError(f"the {runtime} runtime needs the {package[runtime]} package, which is not installed: "
                             "re-run scripts/setup_env.sh, or choose --runtime torch")
    return runtime


class HandNetworks:
    """The palm detector and the landmark network on one runtime (see the module docstring).

    landmarks(crops (B, 224, 224, 3) uint8 RGB) -> LandmarkArrays; palm(images (B, 192, 192, 3) uint8
    RGB, letterboxed) -> PalmArrays.
    """

    runtime = "?"

    def landmarks(self, crops: np.ndarray) -> LandmarkArrays:
        raise NotImplementedError

    def palm(self, images: np.ndarray) -> PalmArrays:
        raise NotImplementedError


def import_openvino():
    """`import openvino`, with its usage telemetry off: openvino's import (its bundled model converter)
    otherwise sends an event to Google Analytics unless the user opted out, from a process it forks, and
    forking a multithreaded process can deadlock it. openvino falls back to its own no-op stub when the
    `openvino_telemetry` package cannot be imported, so this process never imports it."""
    import sys

    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # makes `import openvino_telemetry` raise ImportError
    import openvino

    return openvino


def load_networks(runtime: str | None = None, device: str = "cpu", *, threads: int = 1, streams: int = 1,
                  batch_size: int = 8) -> HandNetworks:
    """Both networks on `runtime` (None: the default for `device`), callable from `streams` threads at once,
    each call on `threads` threads (OpenVINO, LiteRT; torch follows torch.set_num_threads). `batch_size`:
    crops per torch forward (the other runtimes run one crop at a time: batching gained nothing there)."""
    runtime = check_runtime(runtime, device)
    if runtime == "openvino":
        return OpenVinoNetworks(threads, streams)
    if runtime == "litert":
        return LiteRtNetworks(threads)
    return TorchNetworks(device, batch_size)


def _split_landmarks(lm: np.ndarray, presence: np.ndarray, left: np.ndarray, world: np.ndarray) -> LandmarkArrays:
    b = lm.shape[0]
    return LandmarkArrays(lm.reshape(b, 21, 3).astype(np.float32), presence.reshape(b).astype(np.float32),
                          left.reshape(b).astype(np.float32), world.reshape(b, 21, 3).astype(np.float32))


class TorchNetworks(HandNetworks):
    runtime = "torch"

    def __init__(self, device: str = "cpu", batch_size: int = 8):
        import torch

        from engine.hand_module.blazepalm import load_palm_net
        from engine.hand_module.landmarks import load_landmark_net

        self.device, self.batch_size = device, batch_size
        self.landmark_net = load_landmark_net().to(device).to(memory_format=torch.channels_last)
        self.palm_net = load_palm_net().to(device).to(memory_format=torch.channels_last)

    def _to_tensor(self, images: np.ndarray):
        """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 in [0, 1], channels_last, on the device."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last)

    def _forward(self, net, images: np.ndarray) -> list[np.ndarray]:
        import torch

        parts = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                parts.append([t.cpu().numpy() for t in net(self._to_tensor(images[start : start + self.batch_size]))])
        return [np.concatenate(p) for p in zip(*parts)]

    def landmarks(self, crops: np.ndarray) -> LandmarkArrays:
        return _split_landmarks(*self._forward(self.landmark_net, crops))

    def palm(self, images: np.ndarray) -> PalmArrays:
        reg, logits = self._forward(self.palm_net, images)
        return PalmArrays(reg, logits)


class TfliteFileNetworks(HandNetworks):
    """A runtime of the .tflite files: `_run(key, images)` -> {TFLite output name: (B, ...) array}."""

    def _run(self, key: str, images: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def landmarks(self, crops: np.ndarray) -> LandmarkArrays:
        o = self._run("landmarks", crops)
        return _split_landmarks(o["Identity"], o["Identity_1"], o["Identity_2"], o["Identity_3"])

    def palm(self, images: np.ndarray) -> PalmArrays:
        o = self._run("palm", images)
        return PalmArrays(o["Identity"].astype(np.float32), o["Identity_1"][..., 0].astype(np.float32))


class OpenVinoNetworks(TfliteFileNetworks):
    """Each calling thread gets a compiled copy of its own (single stream): a sync inference then runs in
    the caller's thread, with the GIL released, instead of being handed to a stream's worker thread (two
    thread wake-ups per crop, which cost more than the crop on a loaded machine)."""

    runtime = "openvino"

    def __init__(self, threads: int = 1, streams: int = 1):
        self._ov = import_openvino()
        self._core = self._ov.Core()
        self._config = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": max(1, int(threads)),
                        "ENABLE_CPU_PINNING": False}
        self._files = {"landmarks": _model_file(MODEL_DIR / LANDMARK_TFLITE), "palm": _model_file(MODEL_DIR / PALM_TFLITE)}
        self._models: dict = {}  # read (and given their u8 input) only where a compile is needed
        self._shapes: dict = {}
        self._lock = threading.Lock()
        # compiled ahead for `streams` threads, side by side: importing a copy from the cache (two networks) is
        # ~0.1 s of mostly native work, and a capture waits for all of them before it tracks
        n = max(1, int(streams))
        if n == 1:
            self._spare = [self._compile()]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(n, thread_name_prefix="openvino-compile") as pool:
                self._spare = list(pool.map(lambda _: self._compile(), range(n)))
        self._local = threading.local()
        # One inference per network here, before any tracking thread runs one: the bindings initialize
        # function-level statics on the first call with the GIL released, and two threads making their
        # first call at once deadlock (one holds the static's guard waiting for the GIL, the other the GIL
        # waiting for the guard: seen with concurrent segments).
        for key, shape in self._shapes.items():
            self._run(key, np.zeros(shape, np.uint8))

    def _compile(self) -> dict:
        """One thread's inference requests: {key: (request, output names)}."""
        out = {}
        for key in self._files:
            compiled = self._compiled(key)
            self._shapes[key] = tuple(compiled.input(0).get_shape())
            out[key] = (compiled.create_infer_request(), [o.get_any_name() for o in compiled.outputs])
        return out

    def _compiled(self, key: str):
        """Network `key` compiled for this CPU: imported from the engine's cache folder (`openvino`) when
        there, else compiled and kept there. A tracker's four compiles (two networks, two segments) took
        0.84 s, their imports 0.28 (issue 18). Not OpenVINO's own CACHE_DIR: concurrent processes on one
        cache (`engine batch`, two Blenders) failed there ("cannot set permissions") or died of SIGBUS
        reading a blob another was rewriting; these files are written whole (`caches.write_atomically`)."""
        path = self._cache_path(key)
        if path is not None and path.is_file():
            try:
                return self._core.import_model(path.read_bytes(), "CPU", self._config)
            except Exception as exc:  # noqa: BLE001 - another OpenVINO's or a damaged file: compiled again
                log.debug("ignoring %s: %s", path, exc)
        compiled = self._core.compile_model(self._model(key), "CPU", self._config)
        if path is not None:
            try:
                blob = compiled.export_model()
                write_atomically(path, blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob))
            except Exception as exc:  # noqa: BLE001 - a cache only
                log.debug("could not keep %s: %s", path, exc)
        return compiled

    def _model(self, key: str):
        """The network read from its .tflite file, taking uint8 pixels (converted and scaled by OpenVINO)."""
        with self._lock:  # copies compile on several threads (__init__): the file is read once
            if key not in self._models:
                from openvino.preprocess import PrePostProcessor

                ppp = PrePostProcessor(self._core.read_model(str(self._files[key])))
                ppp.input().tensor().set_element_type(self._ov.Type.u8)
                ppp.input().preprocess().convert_element_type(self._ov.Type.f32).scale(255.0)
                self._models[key] = ppp.build()
            return self._models[key]

    def _cache_path(self, key: str) -> pathlib.Path | None:
        """Where network `key` compiled with these settings is kept: named by the .tflite file's sha256, the
        input conversion, the settings, OpenVINO's version and the CPU."""
        folder = cache_folder("openvino")
        if folder is None:
            return None
        text = "|".join([self._ov.get_version(), _model_digest(self._files[key]), "u8 -> f32 / 255",
                         repr(sorted(self._config.items())), cpu_digest()])
        return folder / f"{self._files[key].stem}-{hashlib.sha256(text.encode()).hexdigest()[:24]}.blob"

    def _run(self, key: str, images: np.ndarray) -> dict[str, np.ndarray]:
        """One inference per image on this thread's request -> {output name: (B, ...) array}."""
        requests = getattr(self._local, "requests", None)
        if requests is None:
            with self._lock:
                requests = self._spare.pop() if self._spare else None
            requests = self._local.requests = requests or self._compile()
        req, names = requests[key]
        out: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for image in images:
            req.infer({0: np.ascontiguousarray(image[None])}, share_inputs=True)  # releases the GIL
            for i, n in enumerate(names):
                out[n].append(req.get_output_tensor(i).data.copy())
        return {n: np.concatenate(v) for n, v in out.items()}


class LiteRtNetworks(TfliteFileNetworks):
    runtime = "litert"

    def __init__(self, threads: int = 1):
        self.threads = max(1, int(threads))
        self._paths = {"landmarks": _model_file(MODEL_DIR / LANDMARK_TFLITE), "palm": _model_file(MODEL_DIR / PALM_TFLITE)}
        self._local = threading.local()
        self._interpreter("landmarks")  # fail early on a bad file

    def _interpreter(self, key: str):
        from ai_edge_litert.interpreter import Interpreter

        interps = getattr(self._local, "interps", None)
        if interps is None:
            interps = self._local.interps = {}
        if key not in interps:
            it = Interpreter(model_path=str(self._paths[key]), num_threads=self.threads)
            it.allocate_tensors()
            interps[key] = (it, it.get_input_details()[0]["index"], {d["name"]: d["index"] for d in it.get_output_details()})
        return interps[key]

    def _run(self, key: str, images: np.ndarray) -> dict[str, np.ndarray]:
        it, inp, outs = self._interpreter(key)
        res: dict[str, list[np.ndarray]] = {n: [] for n in outs}
        for image in images:
            it.set_tensor(inp, (image[None].astype(np.float32) / np.float32(255.0)))
            it.invoke()
            for n, i in outs.items():
                res[n].append(it.get_tensor(i).copy())
        return {n: np.concatenate(v) for n, v in res.items()}


@functools.lru_cache(maxsize=4)
def _model_digest(path: pathlib.Path) -> str:
    from engine.outputs import file_sha256

    return file_sha256(path)


def _model_file(path):
    from engine.errors import ModelFileError

    if not path.is_file():
        raise ModelFileError(f"{path} is missing: the MediaPipe hand models ship with the project "
                             "(re-create them with `python models/mediapipe/convert_mediapipe.py`)")
    return path


__all__ = ["RUNTIMES", "HandNetworks", "LandmarkArrays", "PalmArrays", "check_runtime", "default_runtime",
           "load_networks"]
