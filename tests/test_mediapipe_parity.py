"""The torch port of MediaPipe's hand networks against the TFLite originals (ai-edge-litert), network to
network on the same input tensors made from the real photos in tests/data/images."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest
import torch

from engine.hand_module import blazepalm, crops
from engine.hand_module.landmarks import MODEL_DIR, load_landmark_net

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (test extra) is the TFLite reference")

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDENS = REPO / "tests" / "data" / "mediapipe_goldens" / "static_images.json"


def read_rgb(path: pathlib.Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def tflite_run(name: str, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Runs the shipped .tflite on each (S, S, 3) float32 input -> per input, {output name: array}."""
    interp = litert.Interpreter(model_path=str(MODEL_DIR / name), num_threads=1)
    interp.allocate_tensors()
    outs = []
    for x in batch:
        interp.set_tensor(interp.get_input_details()[0]["index"], x[None])
        interp.invoke()
        outs.append({d["name"]: interp.get_tensor(d["index"])[0].copy() for d in interp.get_output_details()})
    return outs


@pytest.fixture(scope="module")
def photos():
    golden = json.loads(GOLDENS.read_text())
    return [(read_rgb(REPO / im["image"]), im["hands"]) for im in golden["images"]]


def test_hand_landmark_net_matches_tflite(photos):
    # Inputs: the crops MediaPipe itself used (its ROIs are in the goldens).
    inputs = []
    for rgb, hands in photos:
        for h in hands:
            cx, cy, size, _, angle = h["roi_px"]
            inputs.append(crops.warp(rgb, crops.Roi(cx, cy, size, angle), 224))
    assert len(inputs) >= 10
    x = np.stack(inputs).astype(np.float32) / 255.0
    ref = tflite_run("hand_landmark_full.tflite", x)
    net = load_landmark_net()
    with torch.no_grad():
        out = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    lm_ref = np.stack([r["Identity"].reshape(21, 3) for r in ref])
    world_ref = np.stack([r["Identity_3"].reshape(21, 3) for r in ref])
    presence_ref = np.array([r["Identity_1"][0] for r in ref])
    left_ref = np.array([r["Identity_2"][0] for r in ref])
    assert out.landmarks.shape == (len(inputs), 21, 3) and out.world_landmarks.shape == (len(inputs), 21, 3)
    assert out.presence.shape == (len(inputs),) and out.handedness.shape == (len(inputs),)
    assert np.abs(out.landmarks.numpy()[..., :2] - lm_ref[..., :2]).max() < 1e-2  # px at 224
    assert np.abs(out.landmarks.numpy()[..., 2] - lm_ref[..., 2]).max() < 1e-2
    assert np.abs(out.world_landmarks.numpy() - world_ref).max() < 1e-5  # 1e-2 mm
    assert np.abs(out.presence.numpy() - presence_ref).max() < 1e-4
    assert np.abs(out.handedness.numpy() - left_ref).max() < 1e-4
    assert (presence_ref > 0.8).all()  # real hands: the comparison is not on empty crops


def test_palm_net_matches_tflite(photos):
    x = np.stack([
        crops.warp(rgb, crops.letterbox_roi(rgb.shape[1], rgb.shape[0]), 192, border="constant") for rgb, _ in photos
    ]).astype(np.float32) / 255.0
    ref = tflite_run("palm_detection_full.tflite", x)
    net = blazepalm.load_palm_net()
    with torch.no_grad():
        out = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    reg_ref = np.stack([r["Identity"] for r in ref])
    logit_ref = np.stack([r["Identity_1"][:, 0] for r in ref])
    assert out.regressors.shape == (len(photos), 2016, 18) and out.logits.shape == (len(photos), 2016)
    assert np.abs(out.regressors.numpy() - reg_ref).max() < 1e-2  # 192-px units
    sig = lambda z: 1 / (1 + np.exp(-np.clip(z, -100, 100)))  # noqa: E731
    assert np.abs(sig(out.logits.numpy()) - sig(logit_ref)).max() < 1e-4
    assert (sig(logit_ref).max(axis=1) > 0.5).sum() >= 7  # hands are found in most photos


def test_channels_last_is_identical(photos):
    rgb, hands = photos[0]
    cx, cy, size, _, angle = hands[0]["roi_px"]
    x = torch.from_numpy(crops.warp(rgb, crops.Roi(cx, cy, size, angle), 224)).permute(2, 0, 1)[None].float() / 255
    net = load_landmark_net()
    with torch.no_grad():
        a = net(x).landmarks
        b = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last)).landmarks
    assert torch.allclose(a, b, atol=1e-4)
