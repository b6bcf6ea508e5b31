"""engine.tailor.executables: the tailor's lowering and executable kept on disk. Each run is a fresh process
over one cache folder, as a user's captures are: the first traces, compiles and stores, the next loads
(tracing, and there lowering too, are refused), a damaged file is replaced, and each gives the same result
bit for bit."""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import hashlib, os, sys
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

def refuse(what):
    def refused(*a, **k):  # ends the process: no handler in the engine can take it for a failed optimization
        print(what, file=sys.stderr, flush=True)
        os._exit(3)
    return refused

if mode in ("stored", "executable"):
    jax.export.export = refuse("the tailor was traced although its lowering is stored")
if mode == "executable":
    jax.export.deserialize = refuse("the tailor's lowering was read although its executable is stored")
if mode == "unkeepable":  # as an executable that JAX's cache loaded: serialized without its kernels
    from jax.experimental import serialize_executable
    def unkeepable(*a, **k):
        raise RuntimeError("NOT_FOUND: Function compare_convert_fusion.1 not found")
    serialize_executable.deserialize_and_load = unkeepable
if mode == "not-kept":
    import jax.stages
    jax.stages.Lowered.compile = refuse("compiled again although its executable cannot be kept")
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


def test_the_lowering_and_executable_are_stored_then_loaded_and_damaged_files_replaced(run, tmp_path):
    folder = tmp_path / "cache" / "handtailor" / "jax" / "handtailor-exported"
    first = run("first")
    (lowering,) = folder.glob("tailor-solve-*.jaxexport")
    (executable,) = folder.glob("tailor-solve-*.xla")
    lowered, compiled = lowering.read_bytes(), executable.read_bytes()
    assert compiled
    assert run("executable") == first  # loaded: tracing, or reading the lowering, would have raised
    assert (lowering.read_bytes(), executable.read_bytes()) == (lowered, compiled)
    executable.write_bytes(b"not an executable")
    assert run("stored") == first  # compiled again from the stored lowering
    assert run("executable") == first  # and its executable written anew
    lowering.write_bytes(b"not a lowering")
    executable.unlink()
    assert run("first") == first
    assert lowering.read_bytes() == lowered  # written anew, whole
    assert sorted(p.name for p in folder.iterdir()) == sorted([lowering.name, executable.name])  # no temp files


def test_an_executable_that_cannot_be_kept_is_not_compiled_again_on_every_run(run, tmp_path):
    """Where a reloaded executable fails (JAX's cache served the compile: its serialization lacks the
    kernels), an empty file says so, and later runs take JAX's cache as before instead of compiling,
    serializing and checking again each time."""
    folder = tmp_path / "cache" / "handtailor" / "jax" / "handtailor-exported"
    first = run("unkeepable")
    (executable,) = folder.glob("tailor-solve-*.xla")
    assert executable.read_bytes() == b""
    assert run("not-kept") == first


def test_a_capture_makes_its_tailor_ready_while_it_tracks(tmp_path, monkeypatch):
    """The capture's warm-up thread loads the very executables the fit then uses (same signatures): the
    hand module's posing and the tailor's solve; the fit itself loads nothing. A scripted tracker and a
    no-network initialization; the real tailor."""
    import threading

    from capture_fixtures import ScriptedTracker, fake_fit_init, fake_observation, write_video
    from engine import capture
    from engine.tailor import executables

    monkeypatch.setattr(capture, "fit_init", fake_fit_init)
    tracker = ScriptedTracker(lambda n, img: [fake_observation(7, "right")])
    monkeypatch.setattr(capture, "make_tracker", lambda options: tracker)
    loads, load = [], executables.Exported._load

    def recorded(self, *args):
        loads.append((threading.current_thread().name, self._name))
        return load(self, *args)

    monkeypatch.setattr(executables.Exported, "_load", recorded)
    executables.clear_caches()
    out = capture.run_capture(capture.CaptureOptions(str(write_video(tmp_path / "c.avi", 12)), str(tmp_path / "r.npz")))
    assert sorted(loads) == [("tailor-warm-up", "model-keypoints"), ("tailor-warm-up", "tailor-solve")]
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
