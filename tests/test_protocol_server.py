"""engine.protocol + `python -m engine serve`: requests, malformed lines, jobs, cancel, shutdown."""

import json
import os
import pathlib
import queue
import subprocess
import sys
import threading
import time

import pytest

from engine import protocol

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ pure protocol


def test_decode_request_fills_defaults():
    req = protocol.decode_request('{"id": "1", "cmd": "capture", "args": {"source": "a.mp4", "output": "b.npz"}}')
    assert req.id == "1" and req.cmd == "capture"
    assert req.args["stride"] == 1 and req.args["hands"] == 1 and req.args["overlay"] is None
    assert req.args["backbone"] == "mediapipe" and req.args["hourglass_weights"] is None
    req = protocol.decode_request('{"id": "2", "cmd": "capture", "args": {"source": "a.mp4", "output": "b.npz", '
                                  '"backbone": "hourglass", "hourglass_weights": "w.safetensors"}}')
    assert req.args["backbone"] == "hourglass" and req.args["hourglass_weights"] == "w.safetensors"
    assert protocol.decode_request('{"id": "h", "cmd": "hello"}').args == {}


@pytest.mark.parametrize(
    "line, code, has_id",
    [
        ("not json", "bad_request", False),
        ("[1, 2]", "bad_request", False),
        ('{"cmd": "hello"}', "bad_request", False),
        ('{"id": 5, "cmd": "hello"}', "bad_request", False),
        ('{"id": "a", "cmd": "dance"}', "unknown_command", True),
        ('{"id": "a", "cmd": "hello", "extra": 1}', "bad_request", True),
        ('{"id": "a", "cmd": "capture", "args": {"source": "x"}}', "bad_request", True),
        ('{"id": "a", "cmd": "capture", "args": {"source": "x", "output": "y", "stride": "2"}}', "bad_request", True),
        ('{"id": "a", "cmd": "capture", "args": {"source": "x", "output": "y", "hands": 3}}', "bad_request", True),
        ('{"id": "a", "cmd": "capture", "args": {"source": "x", "output": "y", "steady_shape": 1}}', "bad_request", True),
        ('{"id": "a", "cmd": "capture", "args": {"source": "x", "output": "y", "intrinsics": [1, 2]}}', "bad_request", True),
        ('{"id": "a", "cmd": "capture", "args": {"source": "x", "output": "y", "colour": "red"}}', "bad_request", True),
        ('{"id": "a", "cmd": "capture", "args": {"source": "x", "output": "y", "backbone": "resnet"}}', "bad_request", True),
        ('{"id": "a", "cmd": "capture", "args": {"source": "x", "output": "y", "backbone": null}}', "bad_request", True),
        ('{"id": "a", "cmd": "cancel", "args": []}', "bad_request", True),
        ('{"id": "a", "cmd": "retailor", "args": {"result": "r", "edits": "e", "output": "o", "joints": [1]}}', "bad_request", True),
    ],
)
def test_malformed_requests(line, code, has_id):
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_request(line)
    assert info.value.code == code
    assert (info.value.id == "a") == has_id


def test_replies_encode_to_one_ascii_line():
    line = protocol.encode(protocol.progress("é", 1, 10, "frame ✋\n2"))
    assert "\n" not in line and line.isascii()
    assert protocol.decode_reply(line)["message"] == "frame ✋\n2"
    assert protocol.error("x", "whatever", "m")["code"] == "internal"
    with pytest.raises(ValueError):
        protocol.encode({"x": float("nan")})
    with pytest.raises(ValueError):
        protocol.decode_reply('{"id": "1", "type": "result"}')


def test_docstring_documents_every_command_and_code():
    doc = protocol.__doc__
    for word in protocol.COMMANDS + protocol.ERROR_CODES:
        assert word in doc


# ------------------------------------------------------------------------------------------- server


class Engine:
    """A `python -m engine serve` child (or `tests/job_server.py`: the same server plus a `wait` job) with a
    reader thread."""

    def __init__(self, *argv):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, *(argv or ("-m", "engine", "serve"))],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            text=True, encoding="utf-8", bufsize=1,
        )
        self.replies: queue.Queue = queue.Queue()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw.append(line)
            self.replies.put(protocol.decode_reply(line))

    def send(self, obj):
        self.proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.proc.stdin.flush()

    def next(self, timeout=30.0, rid=None, skip_progress=True):
        deadline = time.monotonic() + timeout
        while True:
            msg = self.replies.get(timeout=max(0.01, deadline - time.monotonic()))
            if skip_progress and msg["type"] == "progress":
                continue
            if rid is not None and msg["id"] != rid:
                continue
            return msg

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


JOB_SERVER = str(REPO / "tests" / "job_server.py")


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def engine():
    e = Engine(JOB_SERVER)
    yield e
    e.close()


def test_hello_and_shutdown():
    engine = Engine()  # the product's server: it knows no test-only job
    try:
        engine.send({"id": "w", "cmd": "wait", "args": {}})
        assert engine.next(rid="w")["code"] == "unknown_command"
        engine.send({"id": "h", "cmd": "hello"})
        msg = engine.next()
        assert msg["id"] == "h" and msg["type"] == "result"
        r = msg["result"]
        assert r["protocol"] == 1 and r["capabilities"] == ["capture", "retailor", "export_model", "cancel", "shutdown"]
        assert r["engine_version"] and r["python"].startswith("3.") and "numpy" in r["versions"]
        engine.send({"id": "bye", "cmd": "shutdown"})
        assert engine.next() == {"id": "bye", "type": "result", "result": {}}
        assert engine.proc.wait(10) == 0
    finally:
        engine.close()


def test_malformed_lines_get_errors_never_a_crash(engine):
    engine.send("this is not json")
    engine.send("")
    engine.send('{"id": "u", "cmd": "teleport"}')
    engine.send('{"id": 3}')
    engine.send("\x00\x01 garbage {")
    engine.send({"id": "c", "cmd": "cancel", "args": {"target": "nothing"}})
    engine.send({"id": "h", "cmd": "hello"})
    got = [engine.next() for _ in range(6)]
    assert [m["type"] for m in got] == ["error", "error", "error", "error", "result", "result"]
    assert got[0]["id"] is None and got[0]["code"] == "bad_request"
    assert got[1]["id"] == "u" and got[1]["code"] == "unknown_command"
    assert got[4] == {"id": "c", "type": "result", "result": {"cancelled": False}}
    assert got[5]["id"] == "h"
    assert engine.proc.poll() is None
    # every line on stdout is a protocol reply: nothing else leaks onto the channel
    assert all(protocol.decode_reply(line) for line in engine.raw)


def test_job_runs_and_reports_progress(engine, tmp_path):
    out = tmp_path / "out put ✋.npz"
    engine.send({"id": "j", "cmd": "wait", "args": {"steps": 5, "output": str(out)}})
    msgs = []
    while True:
        m = engine.next(rid="j", skip_progress=False)
        msgs.append(m)
        if m["type"] != "progress":
            break
    assert msgs[-1]["type"] == "result" and msgs[-1]["result"]["files"]["result"] == str(out)
    assert any(m["type"] == "progress" for m in msgs)
    assert out.exists()


def test_cancel_stops_the_job_process_and_leaves_nothing(engine, tmp_path):
    out = tmp_path / "never.npz"
    pid_file = tmp_path / "pid"
    engine.send({"id": "long", "cmd": "wait", "args": {"block": True, "output": str(out), "pid_file": str(pid_file)}})
    first = engine.next(rid="long", skip_progress=False, timeout=60)
    assert first["type"] == "progress"
    pid = int(pid_file.read_text())
    pid_file.unlink()
    # the engine keeps answering while the job runs
    engine.send({"id": "h", "cmd": "hello"})
    assert engine.next(rid="h")["type"] == "result"
    assert not process_gone(pid)
    engine.send({"id": "c", "cmd": "cancel", "args": {"target": "long"}})
    got = {}
    while len(got) < 2:
        m = engine.next()
        got[m["id"]] = m
    # by the time both answers are out, the job's process has ended and its files are gone
    assert process_gone(pid)
    assert got["long"]["type"] == "error" and got["long"]["code"] == "cancelled"
    assert got["c"]["result"] == {"cancelled": True}
    assert list(tmp_path.iterdir()) == []
    # a duplicate id of a finished job is fine again; a second cancel says nothing was running
    engine.send({"id": "c2", "cmd": "cancel", "args": {"target": "long"}})
    assert engine.next(rid="c2")["result"] == {"cancelled": False}


def test_capture_errors_have_stable_codes(engine, tmp_path):
    engine.send({"id": "m", "cmd": "capture", "args": {"source": str(tmp_path / "missing.mp4"), "output": str(tmp_path / "r.npz")}})
    m = engine.next(rid="m", timeout=120)
    assert m["type"] == "error" and m["code"] == "bad_input" and "does not exist" in m["message"]
    src = tmp_path / "clip.avi"
    src.write_bytes(b"not a video")
    engine.send({"id": "o", "cmd": "capture", "args": {"source": str(src), "output": str(tmp_path / "no dir" / "r.npz")}})
    m = engine.next(rid="o", timeout=120)
    assert m["type"] == "error" and m["code"] == "unwritable_output" and "does not exist" in m["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]
    engine.send({"id": "h", "cmd": "capture", "args": {"source": str(src), "output": str(tmp_path / "r.npz"),
                                                        "backbone": "hourglass"}})
    m = engine.next(rid="h", timeout=120)
    assert m["type"] == "error" and m["code"] == "bad_model_file" and "hourglass_weights" in m["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_eof_on_stdin_ends_the_engine(tmp_path):
    e = Engine(JOB_SERVER)
    try:
        e.send({"id": "long", "cmd": "wait", "args": {"block": True, "output": str(tmp_path / "x.npz"),
                                                      "pid_file": str(tmp_path / "pid")}})
        e.next(rid="long", skip_progress=False, timeout=60)
        e.proc.stdin.close()
        assert e.proc.wait(10) == 0
        assert process_gone(int((tmp_path / "pid").read_text()))
        assert not (tmp_path / "x.npz").exists()
    finally:
        e.close()


def test_retailor_errors_have_stable_codes(engine, tmp_path):
    engine.send({"id": "r", "cmd": "retailor", "args": {"result": str(tmp_path / "nope.npz"), "edits": str(tmp_path / "e.npz"),
                                                        "output": str(tmp_path / "new.npz")}})
    m = engine.next(rid="r", timeout=120)
    assert m["type"] == "error" and m["code"] == "bad_input" and "does not exist" in m["message"]
    assert list(tmp_path.iterdir()) == []


def test_export_model_writes_a_mano_pickle_as_plain_arrays(tmp_path):
    """The add-on's way to a MANO model: the engine reads the pickle (restricted) and writes an .npz."""
    import numpy as np

    from engine.hand_model import load_hand_model
    from test_hand_model_loading import official_mano_pickle

    blob, fields = official_mano_pickle(seed=4)
    (tmp_path / "MANO_LEFT.pkl").write_bytes(blob)
    engine = Engine()
    try:
        out = tmp_path / "left ✋.npz"
        engine.send({"id": "x", "cmd": "export_model", "args": {"source": str(tmp_path), "side": "left", "output": str(out)}})
        msg = engine.next(rid="x", timeout=120)
        assert msg["type"] == "result", msg
        model = load_hand_model(tmp_path, side="left")
        assert msg["result"] == {"files": {"model": str(out)}, "name": model.name, "side": "left",
                                 "sha256": model.sha256, "format": "mano_pkl"}
        with np.load(out, allow_pickle=False) as z:
            np.testing.assert_array_equal(z["shapedirs"], model.shapedirs)  # the left-hand fix applied
            np.testing.assert_array_equal(z["v_template"], model.v_template)
            assert str(z["side"]) == "left" and str(z["source_sha256"]) == model.sha256
        again = load_hand_model(out, side="left")
        np.testing.assert_array_equal(again.J_regressor, model.J_regressor)
        engine.send({"id": "y", "cmd": "export_model", "args": {"source": str(tmp_path), "side": "right",
                                                                "output": str(tmp_path / "right.npz")}})
        msg = engine.next(rid="y", timeout=120)
        assert msg["type"] == "error" and msg["code"] == "bad_model_file" and "MANO_RIGHT.pkl" in msg["message"]
        assert not (tmp_path / "right.npz").exists()
    finally:
        engine.close()
