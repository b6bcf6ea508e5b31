"""The add-on's bpy-free layer (handtailor_blender/io): engine client and file readers, plain pytest."""

import pathlib
import sys

import numpy as np
import pytest

import blender_helpers as helpers
from handtailor_blender.io import engine_client
from handtailor_blender.io.engine_client import EngineClient, EngineFailure
from handtailor_blender.io.results import (ResultFileError, read_model, read_result, resolve_model_path,
                                           write_edits)

FAKE = pathlib.Path(__file__).parent / "fake_engine"
REPO = pathlib.Path(__file__).resolve().parents[2]


def start(monkeypatch, mode, **kw):
    monkeypatch.setenv("FAKE_ENGINE_MODE", mode)
    return EngineClient.start(sys.executable, str(FAKE), **kw)


def test_find_engine(monkeypatch, tmp_path):
    monkeypatch.delenv(engine_client.ENV_PYTHON, raising=False)
    monkeypatch.delenv(engine_client.ENV_ROOT, raising=False)
    py, root = engine_client.find_engine(start=REPO / "handtailor_blender")
    assert root == str(REPO) and py == str(REPO / ".venv" / "bin" / "python")
    monkeypatch.setenv(engine_client.ENV_ROOT, str(FAKE))
    monkeypatch.setenv(engine_client.ENV_PYTHON, sys.executable)
    assert engine_client.find_engine() == (sys.executable, str(FAKE))
    with pytest.raises(EngineFailure, match="does not exist or cannot run") as exc:
        engine_client.find_engine(python=str(tmp_path / "nope" / "python"), root=str(FAKE))
    assert exc.value.code == "engine_missing"
    monkeypatch.delenv(engine_client.ENV_ROOT)
    monkeypatch.delenv(engine_client.ENV_PYTHON)
    with pytest.raises(EngineFailure, match="cannot find the HandTailor engine"):
        engine_client.find_engine(start=tmp_path)


def test_client_ok_and_progress(monkeypatch, tmp_path, models_dir):
    d, right, _ = models_dir
    res = helpers.make_result(tmp_path / "r.npz", [right])
    monkeypatch.setenv("FAKE_ENGINE_RESULT", str(res))
    client = start(monkeypatch, "ok")
    assert client.hello["engine_version"] == "fake"
    seen = []
    out = client.request("capture", {"output": str(tmp_path / "o.npz")}).wait(
        timeout=20, on_progress=lambda j: seen.append((j.done, j.total)))
    assert out["files"]["result"] == str(tmp_path / "o.npz") and (2, 3) in seen
    client.close()
    assert not client.alive and client.returncode == 0


@pytest.mark.parametrize("mode,code", [("crash", "engine_died"), ("hang", "engine_hung"), ("error", "no_hand")])
def test_client_failures(monkeypatch, mode, code):
    client = start(monkeypatch, mode)
    with pytest.raises(EngineFailure) as exc:
        client.request("capture", {"output": "/nonexistent/x.npz"}, hang_timeout=1.5).wait(timeout=30)
    assert exc.value.code == code  # (a job still running after 30 s would fail with "timeout")
    if mode == "crash":
        assert "exit code -9" in str(exc.value) and "about to be killed" in str(exc.value)
    client.close()
    assert not client.alive


def test_client_cancel_and_silent_start(monkeypatch):
    client = start(monkeypatch, "hang")
    job = client.request("capture", {"output": "/nonexistent/x.npz"})
    while job.done < 1:  # the job is running (the stand-in hangs after its second progress event)
        assert job.poll() is None
        client._wait_event(1.0)
    job.cancel(grace=0.5)  # the stand-in ignores cancel: it gets killed
    with pytest.raises(EngineFailure) as exc:
        job.poll()
    assert exc.value.code == "cancelled" and not client.alive
    with pytest.raises(EngineFailure) as exc:
        start(monkeypatch, "silent_start", hello_timeout=1.0)
    assert exc.value.code == "engine_start_failed"


def test_read_result_checks(tmp_path, models_dir):
    d, right, left = models_dir
    path = helpers.make_result(tmp_path / "r.npz", [right, left])
    res = read_result(path)
    assert res.num_tracks == 2 and res.hand_side == ("right", "left") and res.valid.shape == (2, 12)
    data = dict(np.load(path))
    for change, message in ((lambda d: d.pop("theta"), "'theta' is missing"),
                            (lambda d: d.update(format_version=np.array(3)), "newer than this add-on"),
                            (lambda d: d.update(hand_model=np.array(["a"])), "one entry per track"),
                            (lambda d: d.update(beta=d["beta"][..., :9]), "'beta' has shape"),
                            (lambda d: d["root"].__setitem__((0, 0, 0), np.nan), "NaN/inf on frames marked valid"),
                            (lambda d: d.update(hand_side=np.array(["right", "up"])), "hand_side")):
        broken = dict(data)
        broken = {k: np.array(v, copy=True) for k, v in broken.items()}
        change(broken)
        np.savez(tmp_path / "b.npz", **broken)
        with pytest.raises(ResultFileError, match=message):
            read_result(tmp_path / "b.npz")
    with pytest.raises(ResultFileError, match="no such capture result"):
        read_result(tmp_path / "none.npz")
    # format 1: one entry, track 0's; the other side's track has no recorded file (a folder serves both)
    assert res.hand_model == ("", "")
    v1 = dict(data, format_version=np.array(1), hand_model=np.array(str(d / "open_hand_right.npz")),
              hand_model_sha256=np.array("ab" * 32))
    np.savez(tmp_path / "v1.npz", **v1)
    old = read_result(tmp_path / "v1.npz")
    assert old.hand_model == (str(d / "open_hand_right.npz"), "") and old.hand_model_sha256 == ("ab" * 32, "")


def test_edits_writer_and_models(tmp_path, models_dir):
    d, right, _ = models_dir
    T, N = 2, 5
    write_edits(tmp_path / "e.npz", np.zeros((T, N, 16, 4)), np.zeros((T, N, 10)), np.zeros((T, N, 3)),
                np.ones((T, N)), np.zeros((T, N, 16), bool), np.zeros((T, N), bool), np.zeros((T, N), bool),
                np.zeros((T, N), bool))
    e = np.load(tmp_path / "e.npz", allow_pickle=False)
    assert e["lock_theta"].dtype == bool and e["theta"].shape == (T, N, 16, 4)
    with pytest.raises(ValueError):
        write_edits(tmp_path / "e.npz", np.zeros((T, N, 16, 4)), np.zeros((T, N, 9)), np.zeros((T, N, 3)),
                    np.ones((T, N)), np.zeros((T, N, 16), bool), np.zeros((T, N), bool), np.zeros((T, N), bool),
                    np.zeros((T, N), bool))
    # model lookup: a folder, a track's own file (never a guessed sibling), the fallbacks, the sha256 record
    assert resolve_model_path(str(d), "left") == str(d / "open_hand_left.npz")
    assert resolve_model_path(str(d / "open_hand_right.npz"), "left") == str(d / "open_hand_right.npz")
    assert resolve_model_path("", "right", str(d)) == str(d / "open_hand_right.npz")
    assert resolve_model_path(str(tmp_path / "gone.npz"), "left", None, str(d)) == str(d / "open_hand_left.npz")
    import hashlib

    sha = hashlib.sha256((d / "open_hand_left.npz").read_bytes()).hexdigest()
    assert resolve_model_path(str(tmp_path / "gone.npz"), "left", str(d), sha256=sha) == str(d / "open_hand_left.npz")
    with pytest.raises(ResultFileError, match="holds another model"):
        resolve_model_path(str(tmp_path / "gone.npz"), "left", str(d), sha256="ab" * 32)
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"x")
    assert resolve_model_path(str(tmp_path), "right") == str(tmp_path / "MANO_RIGHT.pkl")
    with pytest.raises(ResultFileError, match="not read inside Blender"):
        read_model(tmp_path / "MANO_RIGHT.pkl", "right")
    with pytest.raises(ResultFileError, match="this is a right hand model"):
        read_model(d / "open_hand_right.npz", "left")
    shipped = REPO / "models" / "open_hand" / "open_hand_right.npz"
    if shipped.exists():
        m = read_model(shipped, "right")
        assert m.J0.shape == (16, 3) and m.Jdirs.shape == (16, 3, 10)


def test_every_module_is_reloaded_on_re_register():
    """handtailor_blender/__init__.py's MODULES (its reload list) names every submodule, each after those it
    imports; no module imports another's private names."""
    import ast

    pkg = REPO / "handtailor_blender"
    tree = ast.parse((pkg / "__init__.py").read_text())
    listed = next(ast.literal_eval(n.value) for n in tree.body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "MODULES")
    files = {".".join(p.relative_to(pkg).with_suffix("").parts) for p in pkg.rglob("*.py")}
    assert set(listed) == files - {"__init__", "__main__", "io.__init__"}
    for i, name in enumerate(listed):
        src = (pkg / (name.replace(".", "/") + ".py")).read_text()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = name.rsplit(".", 1)[0] + "." if node.level == 1 and "." in name else ""
                deps = [base + (node.module + "." if node.module else "") + a.name for a in node.names]
                deps = [d if d in files else d.rsplit(".", 1)[0] for d in deps]
                for d in deps:
                    if d in listed:
                        assert listed.index(d) < i, f"{name} imports {d}, which is reloaded after it"
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{name} imports private {private} from {node.module}"
