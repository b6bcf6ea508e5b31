"""The tailor's Adam loop as one XLA kernel for a few frames (`engine.SMALL_LOOP_KERNEL_BYTES`).

It is what makes a one-frame fit fast, and XLA cannot run it for large loops (the process aborts at
B = 16 with no limit), so: it is in use for 1-4 frames and not for 16, and a fresh process with it turned
off computes the same fits (there, every op of the loop is a thunk).
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine.hand_model import load_hand_model
from engine.tailor import TailorConfig, fit, model_params
from engine.tailor.api import loop_is_one_kernel
from engine.tailor.synthetic import make_case

SIZES = (1, 4, 16)  # buckets 1 and 4 take the one-kernel loop, 16 the per-op loop
# float32 rounding differs between the two compilations and 20 Adam steps carry it on: allowed is 1e-4 in
# each output's unit (quaternion, hand scale; meters: 0.1 mm for joints and root), for beta shape_step times
# that (Eq. P5: its steps, hence its rounding, are 3x the others'). Measured: at most 3.0e-5 (beta, B = 4, weak
# perspective), 2.4e-5 at B = 1 (perspective, Eq. P6 compiled in; at B = 4 it carried beta's rounding to 1.0e-3:
# Adam's steps follow the sign of a near-zero gradient, and P6's test can go either way at a rounding's distance).
ATOL = 1e-4
ATOL_BETA = TailorConfig().shape_step * ATOL
OFF = "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=0"


# (B, camera): both executables on the one-kernel loop (perspective: Eq. P6 compiled in; weak perspective: not, as
# a clip's), and B = 16 on the per-op loop; every pair is a compile in each process (two cold: ~2 minutes)
CASES = ((1, "perspective"), (4, "weak_perspective"), (16, "perspective"))


def fits(cases=CASES) -> dict:
    """{camera_name_B: array} of the tailor's outputs for the first B frames of a fixed synthetic case."""
    model = load_hand_model()
    case = make_case(model, model_params(model), max(b for b, _ in cases), seed=5)
    out = {}
    for b, camera in cases:
        res = fit(model, case["theta0"][:b], case["beta0"][:b], case["root0"][:b], case["keypoints_2d"][:b],
                  case["confidence"][:b], None, case["K"], None, TailorConfig(camera_model=camera))
        for name in ("theta", "beta", "root", "hand_scale", "joints_3d"):
            out[f"{camera}_{name}_{b}"] = res[name]
    return out


def _child(path: str) -> None:  # run by the subprocess below, with the one-kernel loop off
    model = load_hand_model()
    np.savez(path, one_kernel=loop_is_one_kernel(model_params(model), 1), **fits())


@pytest.mark.slow
def test_one_kernel_loop_is_used_for_few_frames_and_matches_the_per_op_loop(tmp_path):
    if not engine.SMALL_LOOP_KERNEL_FLAG_SET:
        pytest.skip("XLA_FLAGS sets its own backend options here: the engine leaves them alone")
    params = model_params(load_hand_model())
    assert [loop_is_one_kernel(params, b) for b in SIZES] == [True, True, False]
    mine = fits()  # includes B = 16: runs without aborting

    out = tmp_path / "per_op.npz"
    tests_dir = pathlib.Path(__file__).parent
    code = f"import sys; sys.path.insert(0, {str(tests_dir)!r}); import test_tailor_loop_kernel as t; t._child({str(out)!r})"
    env = dict(os.environ, XLA_FLAGS=OFF)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = np.load(out)
    assert not theirs["one_kernel"]  # the child really ran the per-op loop
    for name, value in mine.items():
        if name.endswith("_16"):  # the per-op loop in both processes: the same bits
            np.testing.assert_array_equal(value, theirs[name], err_msg=name)
        else:
            atol = ATOL_BETA if "_beta_" in name else ATOL
            np.testing.assert_allclose(value, theirs[name], rtol=0, atol=atol, err_msg=name)
