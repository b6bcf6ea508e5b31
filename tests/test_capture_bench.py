"""`python -m engine bench capture --json` on a stretch of the bundled clip: one JSON object with our
capture, the reference (MediaPipe's networks through LiteRT) and the no-hand clip, side by side."""

import json

import pytest


@pytest.mark.slow
def test_bench_capture_json(capsys):
    pytest.importorskip("ai_edge_litert.interpreter", reason="the reference runs on ai-edge-litert (test extra)")
    from engine.cli import main

    rc = main(["bench", "capture", "--frames", "0:39", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == 40 and out["valid_frames"] == [40]
    assert out["runtime"] == "openvino" and out["segments"] >= 1
    for key in ("fps", "mediapipe_fps", "ratio_vs_mediapipe", "no_hand_fps", "mediapipe_no_hand_fps", "peak_rss_mb"):
        assert out[key] > 0, key
    assert set(out["mediapipe_fps_by_threads"]) == {"1", "2"}
    assert out["mediapipe_fps"] == max(out["mediapipe_fps_by_threads"].values())
    assert out["ratio_vs_mediapipe"] == pytest.approx(out["fps"] / out["mediapipe_fps"])
    # three alternating runs by default (medians), each run's figures beside them; JAX was imported before
    # any of them was timed (the first run no longer pays it alone)
    assert len(out["fps_runs"]) == len(out["ratio_runs"]) == 3
    assert out["fps"] == pytest.approx(sorted(out["fps_runs"])[1])
    assert out["imports_s"] >= 0
    assert "XNNPACK" in out["mediapipe_backend"] and "decoding not timed" in out["mediapipe_backend"]
    # the no-hand clip really has no hand, and costs about one palm pass a frame (not 3-5)
    assert out["no_hand_frames"] == 40 and out["no_hand_frames_with_a_hand"] == 0
    assert 1.0 <= out["no_hand_palm_passes_per_frame"] < 2.0
    assert set(out["stages_ms"]) == {"decode", "detect", "keypoints", "lift_ik", "tailor", "write"}
    assert out["stages_ms"]["keypoints"] > 0
    # the fit's motion figures (issue 15): chatter, fit to the keypoints, jitter and lag, all finite
    for key in ("chatter_deg_median", "chatter_deg_p95", "fit_residual_px", "jitter_with_temporal",
                "jitter_without_temporal"):
        assert 0 < out[key] < 100, key
    assert out["chatter_deg_median"] <= out["chatter_deg_p95"]
    assert abs(out["lag_frames"]) < 5
