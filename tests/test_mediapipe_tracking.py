"""Pieces of the MediaPipe port: anchors, weighted NMS, crop geometry, the tracker's behaviour, tight
crops and the `keypoints` CLI."""

from __future__ import annotations

import io
import json
import math
import pathlib
from contextlib import redirect_stdout

import cv2
import numpy as np
import pytest

from engine.errors import InputError
from engine.hand_module import crops, palm_detections
from engine.hand_module.tracking import HandObservation, HandTracker

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGES = REPO / "tests" / "data" / "images"
THUMB_UP = IMAGES / "mediapipe-samples" / "gesture_recognizer_hand_thumb_up.jpg"
TWO_HANDS = IMAGES / "hamer" / "test1.jpg"


def read_rgb(path: pathlib.Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def tracker():
    return HandTracker()


def test_anchors():
    a = palm_detections.ANCHORS
    assert a.shape == (2016, 2)
    np.testing.assert_allclose(a[0], [0.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(a[1], a[0])  # 2 anchors per 24x24 cell
    np.testing.assert_allclose(a[1152], [0.5 / 12, 0.5 / 12])
    np.testing.assert_allclose(a[1152 + 6], [1.5 / 12, 0.5 / 12])  # 6 per 12x12 cell, x fastest


def test_weighted_nms_merges_overlaps_by_score():
    kp = np.zeros((7, 2))
    d1 = palm_detections.PalmDetection(0.9, np.array([0.0, 0.0, 1.0, 1.0]), kp)
    d2 = palm_detections.PalmDetection(0.6, np.array([0.1, 0.0, 1.1, 1.0]), kp + 1)
    d3 = palm_detections.PalmDetection(0.7, np.array([5.0, 5.0, 6.0, 6.0]), kp)
    out = palm_detections.weighted_nms([d2, d3, d1])
    assert [d.score for d in out] == [0.9, 0.7]
    np.testing.assert_allclose(out[0].box, [0.04, 0.0, 1.04, 1.0], atol=1e-6)  # (0.9*0 + 0.6*0.1) / 1.5
    np.testing.assert_allclose(out[0].keypoints, np.full((7, 2), 0.4), atol=1e-6)


def test_crop_and_back_projection_are_inverse():
    roi = crops.Roi(300.0, 200.0, 180.0, 0.7)
    m = crops.crop_matrix(roi, 224)
    crop_pts = np.array([[10.0, 20.0], [112.0, 112.0], [200.0, 50.0]])
    lm = np.concatenate([crop_pts, np.zeros((3, 1))], axis=1)
    img = crops.landmarks_to_image(lm, roi)[:, :2]
    back = cv2.perspectiveTransform(img[None].astype(np.float64), m)[0]
    np.testing.assert_allclose(back, crop_pts, atol=1e-3)
    np.testing.assert_allclose(crops.landmarks_to_image(np.array([[112.0, 112.0, 22.4]]), roi)[0],
                               [300.0, 200.0, 22.4 / 224 / 0.4 * 180.0])
    w = np.random.default_rng(0).normal(size=(21, 3))
    r = crops.rotate_world(w, 0.7)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), np.linalg.norm(w, axis=1))
    np.testing.assert_allclose(r[:, 2], w[:, 2])


def test_roi_from_landmarks_of_upright_hand():
    # An upright hand (fingers up, y down): wrist at the bottom -> angle 0, centred between the extremes.
    lm = np.zeros((21, 2))
    lm[:, 0] = np.linspace(100, 200, 21)
    lm[:, 1] = 300.0
    lm[0] = [150, 400]
    lm[[5, 9, 13]] = [[120, 300], [150, 300], [180, 300]]
    roi = crops.roi_from_landmarks(lm)
    assert abs(roi.angle) < 1e-9
    assert roi.size == pytest.approx(2.0 * 100.0)


def test_tracker_keeps_ids_and_reports_contract_fields(tracker):
    rgb = read_rgb(TWO_HANDS)
    tracker.reset()
    out = tracker.process_batch([rgb, rgb]) + tracker.process_batch([rgb])
    assert [len(o) for o in out] == [2, 2, 2]
    assert [sorted(h.track_id for h in o) for o in out] == [[0, 1]] * 3
    for o in out[2]:
        assert isinstance(o, HandObservation)
        assert o.keypoints_uvd.shape == (21, 3) and o.world_landmarks.shape == (21, 3) and o.confidence.shape == (21,)
        assert o.side in ("left", "right") and 0.5 <= o.side_score <= 1 and 0.5 <= o.presence <= 1
        assert len(o.roi) == 4
        np.testing.assert_allclose(o.confidence, o.presence)  # every joint inside the frame
        bone = np.linalg.norm(o.world_landmarks[9] - o.world_landmarks[0])
        assert 0.05 < bone < 0.12  # metres: wrist to middle MCP
    tracker.reset()
    assert sorted(h.track_id for h in tracker.process_batch([rgb])[0]) == [0, 1]


def test_mirrored_swaps_sides():
    rgb = read_rgb(THUMB_UP)
    a = HandTracker(static_images=True).process_batch([rgb])[0][0]
    b = HandTracker(static_images=True, mirrored=True).process_batch([rgb])[0][0]
    assert {a.side, b.side} == {"left", "right"}
    assert a.side == ("right" if a.handedness_left >= 0.5 else "left")


def test_lost_track_is_dropped_and_redetected(tracker):
    rgb = read_rgb(THUMB_UP)
    blank = np.full_like(rgb, 128)
    tracker.reset()
    out = tracker.process_batch([rgb, blank, rgb])
    assert [len(o) for o in out] == [1, 0, 1]
    assert out[2][0].track_id != out[0][0].track_id


def tight_crop(rgb: np.ndarray, keypoints: np.ndarray, margin: float = 1.1) -> np.ndarray:
    c = (keypoints.max(0) + keypoints.min(0)) / 2
    s = (keypoints.max(0) - keypoints.min(0)).max() * margin
    m = np.array([[224 / s, 0, 112 - c[0] * 224 / s], [0, 224 / s, 112 - c[1] * 224 / s]])
    return cv2.warpAffine(rgb, m, (224, 224), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def test_tight_crop_found_by_the_zoomed_out_retry():
    golden = json.loads((REPO / "tests" / "data" / "mediapipe_goldens" / "static_images.json").read_text())
    im = next(i for i in golden["images"] if i["image"].endswith("hand_landmarker_test_image.jpg"))
    kp = np.array(im["hands"][0]["landmarks_px"])[:, :2]
    crop = tight_crop(read_rgb(REPO / im["image"]), kp)
    assert HandTracker(static_images=True, retry_zoomed_out=False).process_batch([crop])[0] == []
    found = HandTracker(static_images=True).process_batch([crop])[0]
    assert len(found) == 1
    c = (kp.max(0) + kp.min(0)) / 2
    s = (kp.max(0) - kp.min(0)).max() * 1.1
    expected = (kp - c) * 224 / s + 112
    assert np.median(np.linalg.norm(found[0].keypoints_uvd[:, :2] - expected, axis=1)) < 10.0


def test_keypoints_cli_json_and_overlay(tmp_path):
    from engine.hand_module.cli import main

    paths = [str(THUMB_UP), str(TWO_HANDS)]
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(paths + ["--json", "--overlay", str(tmp_path / "ov")]) == 0
    doc = json.loads(buf.getvalue())
    assert list(doc) == ["images"] and [i["image"] for i in doc["images"]] == paths
    assert [len(i["hands"]) for i in doc["images"]] == [1, 2]
    hand = doc["images"][0]["hands"][0]
    assert list(hand) == ["side", "score", "keypoints_2d_px", "confidence", "world_landmarks_m"]
    assert np.array(hand["keypoints_2d_px"]).shape == (21, 2) and len(hand["confidence"]) == 21
    assert np.array(hand["world_landmarks_m"]).shape == (21, 3)
    assert (tmp_path / "ov" / "gesture_recognizer_hand_thumb_up_keypoints.png").is_file()
    with pytest.raises(InputError, match="missing.jpg"):
        main([str(THUMB_UP), str(tmp_path / "missing.jpg"), "--json"])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.png"):
        main([str(tmp_path / "bad.png"), "--json"])


def test_normalize_radians():
    assert palm_detections.normalize_radians(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert palm_detections.normalize_radians(-math.pi / 4) == pytest.approx(-math.pi / 4)


def test_dedupe_keeps_the_older_of_two_fits_of_one_hand():
    from engine.hand_module.tracking import _Track, dedupe_tracks

    def obs(track_id: int, side: str, kp: np.ndarray) -> HandObservation:
        z = np.zeros(21, np.float32)
        return HandObservation(track_id, side, 1.0, 1.0, np.c_[kp, z].astype(np.float32), z + 1, np.zeros((21, 3)),
                               (0, 0, 1, 0))

    kp = np.random.default_rng(1).uniform(100, 200, size=(21, 2))
    a = _Track(3, crops.Roi(150, 150, 200, 0.0))
    b = _Track(7, crops.Roi(400, 150, 300, 0.0))  # ROIs apart (IoU 0), keypoints nested: one hand fitted twice
    kept = dedupe_tracks([b, a], [obs(7, "right", kp * 0.9 + 15), obs(3, "right", kp)])
    assert [t.track_id for t in kept] == [3]
    # a left and a right hand clasped together stay two hands
    kept = dedupe_tracks([b, a], [obs(7, "left", kp * 0.9 + 15), obs(3, "right", kp)])
    assert [t.track_id for t in kept] == [7, 3]


# ------------------------------------------------------------------------------- --backbone hourglass
@pytest.fixture(scope="module")
def tiny_hourglass_weights(tmp_path_factory):
    """An untrained smoke-size hourglass saved with save_weights: enough to run the pipeline end to end."""
    import torch

    from engine.hand_module import hourglass as hg

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hg_weights") / "hourglass.safetensors"
    hg.save_weights(path, hg.HourglassNet(hg.SMOKE_CONFIG))
    return path


def test_hourglass_backbone_without_weights_fails_early_with_what_to_pass(tmp_path):
    from engine.errors import ModelFileError
    from engine.hand_module.cli import main
    from engine.hand_module.tracking import check_backbone

    with pytest.raises(ModelFileError, match="--hourglass-weights") as info:
        HandTracker(backbone="hourglass")
    assert "python -m engine train run" in str(info.value)
    with pytest.raises(ModelFileError, match="not found"):
        check_backbone("hourglass", tmp_path / "none.safetensors")
    with pytest.raises(InputError, match="mediapipe"):
        check_backbone("resnet")
    check_backbone("mediapipe")  # the default needs nothing
    # the CLI refuses before touching any image (this one does not exist)
    with pytest.raises(ModelFileError, match="--hourglass-weights"):
        main([str(tmp_path / "missing.jpg"), "--backbone", "hourglass"])


def test_keypoints_cli_with_the_hourglass_backbone(tiny_hourglass_weights):
    from engine.hand_module.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main([str(THUMB_UP), "--json", "--backbone", "hourglass",
                     "--hourglass-weights", str(tiny_hourglass_weights)]) == 0
    hands = json.loads(buf.getvalue())["images"][0]["hands"]
    assert len(hands) == 1  # MediaPipe's palm detector still finds the hand
    kp = np.array(hands[0]["keypoints_2d_px"])
    conf = np.array(hands[0]["confidence"])
    assert kp.shape == (21, 2) and np.isfinite(kp).all()
    assert conf.shape == (21,) and ((conf >= 0) & (conf <= 1)).all()
    assert hands[0]["score"] == pytest.approx(conf.mean(), abs=1e-5)  # presence = mean heatmap peak
    assert np.array(hands[0]["world_landmarks_m"]).shape == (21, 3)


def test_hourglass_tracker_observation_follows_the_integration_guide(tiny_hourglass_weights):
    from engine.hand_module.hourglass import HourglassBackbone

    rgb = read_rgb(THUMB_UP)
    h, w = rgb.shape[:2]
    K = np.array([[float(max(h, w)), 0, w / 2], [0, float(max(h, w)), h / 2], [0, 0, 1]])
    mp = HandTracker(static_images=True).process_batch([rgb])[0]
    hg_tracker = HandTracker(static_images=True, backbone="hourglass", hourglass_weights=tiny_hourglass_weights)
    for k in (None, K):
        (obs,) = hg_tracker.process_batch([rgb], K=k)[0]
        assert obs.roi == mp[0].roi and obs.side == mp[0].side  # same ROI and side as the MediaPipe stage
        ref = HourglassBackbone(tiny_hourglass_weights).predict(rgb, side=obs.side, K=k, roi=obs.roi)
        np.testing.assert_allclose(obs.keypoints_uvd, ref["keypoints_uvd"], atol=1e-3)
        np.testing.assert_allclose(obs.confidence, ref["confidence"], atol=1e-6)
        scale = 1.0 if k is not None else ref["bone_length"]
        np.testing.assert_allclose(obs.world_landmarks, ref["joints_3d"] * scale, atol=1e-5)
    # video mode with the tracker's own K runs too (tracking ROIs from MediaPipe's landmarks)
    video = HandTracker(backbone="hourglass", hourglass_weights=tiny_hourglass_weights, K=K)
    out = video.process_batch([rgb, rgb])
    assert [len(f) for f in out] == [1, 1] and out[0][0].track_id == out[1][0].track_id
