"""engine.tailor.executables: the tailor's lowering kept on disk. Each run is a fresh process over one cache
folder, as a user's captures are: the first traces and stores, the next loads (tracing is refused there),
a damaged file is replaced, and each gives the same result bit for bit."""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import hashlib, sys
import numpy as np
import jax.export
from engine.hand_model import load_hand_model
from engine.tailor import TailorConfig, fit, model_params
from engine.tailor.synthetic import make_case

model = load_hand_model()
c = make_case(model, model_params(model), 3, seed=5)
args = (c["theta0"], c["beta0"], c["root0"], c["keypoints_2d"], c["confidence"], None, c["K"])
config = TailorConfig(iterations=5, temporal_weight=3.0)
mode = sys.argv[1]
if mode == "stored":
    def refuse(*a, **k):
        raise AssertionError("the tailor was traced although its lowering is stored")
    jax.export.export = refuse
out = fit(model, *args, config=config)
digest = lambda o: hashlib.sha256(b"".join(np.ascontiguousarray(o[k]).tobytes()
                                          for k in ("theta", "beta", "root", "joints_3d"))).hexdigest()
print(digest(out))
"""


@pytest.fixture()
def run(tmp_path, repo_dir):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def run(mode: str) -> str:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=repo_dir, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.split()[-1]

    return run


def test_the_lowering_is_stored_then_loaded_and_a_damaged_file_replaced(run, tmp_path):
    folder = tmp_path / "cache" / "handtailor" / "jax" / "handtailor-exported"
    first = run("first")
    (stored,) = folder.glob("tailor-solve-*.jaxexport")
    data = stored.read_bytes()
    assert run("stored") == first  # loaded: tracing would have raised
    assert stored.read_bytes() == data
    stored.write_bytes(b"not a lowering")
    assert run("damaged") == first
    assert stored.read_bytes() == data  # written anew, whole
    assert [p.name for p in folder.iterdir()] == [stored.name]  # no temporary file left behind


def test_a_capture_makes_its_tailor_ready_while_it_tracks(tmp_path, monkeypatch):
    """The capture's warm-up thread loads the very executable its windows then use (same signature): the
    fit itself loads nothing. A scripted tracker and a no-network initialization; the real tailor."""
    import threading

    from capture_fixtures import ScriptedTracker, fake_fit_init, fake_observation, write_video
    from engine import capture
    from engine.tailor import executables

    monkeypatch.setattr(capture, "fit_init", fake_fit_init)
    tracker = ScriptedTracker(lambda n, img: [fake_observation(7, "right")])
    monkeypatch.setattr(capture, "make_tracker", lambda options: tracker)
    loads, load = [], executables.Exported._load

    def recorded(self, *args):
        loads.append(threading.current_thread().name)
        return load(self, *args)

    monkeypatch.setattr(executables.Exported, "_load", recorded)
    executables.clear_caches()
    out = capture.run_capture(capture.CaptureOptions(str(write_video(tmp_path / "c.avi", 12)), str(tmp_path / "r.npz")))
    assert loads == ["tailor-warm-up"]
    assert out["files"]["result"]


KERNEL_SCRIPT = r"""
import numpy as np
import jax.numpy as jnp
from engine.tailor.executables import Exported

solve = Exported(lambda a, b: jnp.linalg.solve(a, b), "kernel-test")  # lowers to LAPACK custom calls
print(np.asarray(solve(np.eye(3, dtype=np.float32) * 2, np.ones(3, np.float32))).tolist())
"""


def test_a_function_calling_jaxlibs_kernels_is_not_stored(tmp_path, repo_dir):
    """Such a stored lowering, called in a later process before that process lowered the kernel itself,
    crashed it (SIGSEGV): it is jitted as usual and never kept, so every run works."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", KERNEL_SCRIPT], cwd=repo_dir, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
        assert proc.stdout.split("\n")[-2] == "[0.5, 0.5, 0.5]"
    assert not list((tmp_path / "cache").rglob("kernel-test-*"))
