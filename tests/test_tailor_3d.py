"""The tailor improves 3D over the hand module on hands that do not come from the fitting model (issue 14).

A small fixed sample of scripts/make_mismatch_set.py (published anthropometry, MediaPipe-like keypoint-stage
outputs) through `engine.evaluation.evaluate`, as `python -m engine eval` runs it. Margins are about a third
of what the sample shows (figures in the asserts' comments, measured when the test was written), so a change
that loses most of the gain fails, noise does not. The paper's tailor (`TailorConfig.paper()`) fails the
iteration test on such sets (PA-MPJPE rises from 20 to 100 iterations).
"""

import importlib.util
import pathlib

import pytest

from engine import evaluation

REPO = pathlib.Path(__file__).resolve().parents[1]
N, SEED = 48, 7


def _mismatch_set(folder: pathlib.Path) -> pathlib.Path:
    spec = importlib.util.spec_from_file_location("make_mismatch_set", REPO / "scripts" / "make_mismatch_set.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make_set(folder, N, SEED)
    return folder


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = _mismatch_set(tmp_path_factory.mktemp("mismatch") / "set")
    det = folder / "detections.json"
    detected = evaluation.evaluate(folder, iterations=[20, 100], detections=det)
    oracle = evaluation.evaluate(folder, iterations=[20, 100], detections=det, oracle_2d=True)
    return detected, oracle


def _sweep(report, iterations):
    return next(r for r in report["tailor_sweep"] if r["iterations"] == iterations)


@pytest.mark.slow
def test_tailor_improves_3d_over_the_hand_module(sample):
    rep, _ = sample
    assert rep["evaluated"] == N and rep["failures"] == 0
    hm, tl = rep["stages"]["hand_module"], rep["stages"]["tailored"]
    assert tl["pa_mpjpe_mm"] < hm["pa_mpjpe_mm"] - 0.35  # measured: 8.84 -> 7.90 mm
    assert tl["mpjpe_mm"] < hm["mpjpe_mm"] - 1.0  # measured: 17.94 -> 14.54 mm
    # the fitted hand follows the keypoints: its 2D error is about theirs (measured: 13.69 vs 13.42 px; 13.80
    # with shape_step 1: beta, which alone fits the palm's proportions, moved too little in 20 iterations)
    assert tl["px_error"] < rep["stages"]["backbone"]["px_error"] + 0.6


@pytest.mark.slow
def test_more_iterations_do_not_make_3d_worse(sample):
    rep, _ = sample
    at20, at100 = _sweep(rep, 20), _sweep(rep, 100)
    assert at100["pa_mpjpe_mm"] <= at20["pa_mpjpe_mm"] + 0.05  # measured: 7.90 -> 7.70 mm
    assert at100["mpjpe_mm"] <= at20["mpjpe_mm"] + 0.1  # measured: 14.54 -> 13.78 mm
    assert at100["fit_residual_px"] < at20["fit_residual_px"]


@pytest.mark.slow
def test_with_ground_truth_2d_the_tailor_improves_3d(sample):
    _, rep = sample
    hm, tl = rep["stages"]["hand_module"], rep["stages"]["tailored"]
    assert tl["pa_mpjpe_mm"] < hm["pa_mpjpe_mm"] - 0.7  # measured: 8.28 -> 6.47 mm
    assert tl["mpjpe_mm"] < hm["mpjpe_mm"] - 1.3  # measured: 17.07 -> 13.02 mm
    assert _sweep(rep, 100)["pa_mpjpe_mm"] <= _sweep(rep, 20)["pa_mpjpe_mm"] + 0.05  # measured: 6.47 -> 6.20
