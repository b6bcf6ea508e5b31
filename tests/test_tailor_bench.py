"""`python -m engine bench tailor --json` prints one JSON object with the agreed keys."""

import json

import pytest


@pytest.mark.slow
def test_bench_json(capsys):
    from engine.cli import main

    rc = main(["bench", "tailor", "--json", "--batch-size", "40", "--repeats", "1", "--reference-frames", "0"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("single_ms_per_frame", "batched_ms_per_frame", "batch_size", "reference_single_ms_per_frame",
                "reference_to_single_ratio", "iterations_table", "loop_one_kernel"):
        assert key in out
    assert out["batch_size"] == 40 and out["single_ms_per_frame"] > 0
    import engine

    if engine.SMALL_LOOP_KERNEL_FLAG_SET:  # one frame: the one-kernel loop; 40 frames (bucket 64): per op
        assert out["loop_one_kernel"] == {"single": True, "batched": False}
    rows = out["iterations_table"]
    assert {(r["adam"], r["iterations"]) for r in rows} == {
        (a, i) for a in ("paper", "authors", "default") for i in (10, 20, 50, 100)
    }
    for r in rows:
        assert r["residual_2d_px"] < out["initial_residual_2d_px"]
