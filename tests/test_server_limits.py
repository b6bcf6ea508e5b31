"""`python -m engine serve` under abuse (issue 17): the 1 MiB line limit (defect 7), paths resolved against a
stated base, outputs that may not replace inputs or foreign files, a cap on concurrent jobs (risks).

The engine's memory is read from /proc (VmHWM: its peak resident set), a memory figure, not a timing."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import subprocess
import sys
import threading

import pytest

from capture_fixtures import fake_result, write_video
from engine import protocol, results

REPO = pathlib.Path(__file__).resolve().parents[1]
MiB = 1 << 20


class Serve:
    """`python -m engine serve ARGS` with a reader thread; stdin is binary (the test sends raw bytes)."""

    def __init__(self, *args, cwd=REPO):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", *map(str, args)], cwd=cwd,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.replies.put(protocol.decode_reply(line.decode("utf-8")))

    def write(self, data: bytes):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def request(self, rid, cmd, **args):
        self.write(json.dumps({"id": rid, "cmd": cmd, "args": args}).encode() + b"\n")

    def next(self, rid="__any__", timeout=120.0):
        while True:
            msg = self.replies.get(timeout=timeout)
            if msg["type"] == "progress":
                continue
            if rid == "__any__" or msg["id"] == rid:
                return msg

    def peak_rss_mb(self) -> float:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        raise AssertionError("no VmHWM")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def serve():
    s = Serve()
    yield s
    s.close()


def _hello(s: Serve, rid="h"):
    s.request(rid, "hello")
    msg = s.next(rid)
    assert msg["type"] == "result", msg
    return msg["result"]


# ------------------------------------------------------------------------------ defect 7: line limit


def _send_in_thread(s: Serve, chunks):
    def run():
        for c in chunks:
            s.write(c)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_64_mib_line_gets_an_error_and_the_engine_keeps_serving(serve):
    _hello(serve)
    before = serve.peak_rss_mb()
    head = b'{"id": "big", "cmd": "hello", "args": {"pad": "'
    body = b"A" * MiB
    writer = _send_in_thread(serve, [head] + [body] * 64 + [b'"}}\n'])
    err = serve.next()
    assert err["type"] == "error" and err["code"] == "bad_request" and err["id"] is None
    assert f"longer than {protocol.MAX_LINE_BYTES} bytes" in err["message"]
    writer.join()
    assert _hello(serve, "after")["protocol"] == protocol.PROTOCOL_VERSION  # still serving
    grown = serve.peak_rss_mb() - before
    assert grown < 16, f"the engine grew by {grown:.0f} MB for one refused line"


def test_a_1_gib_line_without_newline(serve):
    _hello(serve)
    before = serve.peak_rss_mb()
    block = b"B" * (4 * MiB)
    writer = _send_in_thread(serve, [block] * 256)  # 1 GiB, no newline
    err = serve.next()
    assert err["code"] == "bad_request" and "longer than" in err["message"]
    writer.join()
    serve.write(b"\n")  # the endless line ends; the next request is served
    assert _hello(serve, "after")["protocol"] == protocol.PROTOCOL_VERSION
    assert serve.peak_rss_mb() - before < 16


def test_lines_within_the_limit_still_work(serve):
    pad = "x" * (protocol.MAX_LINE_BYTES - 200)
    serve.write(json.dumps({"id": "near", "cmd": "hello", "args": {"pad": pad}}).encode() + b"\n")
    msg = serve.next("near")
    assert msg["type"] == "error" and "unknown argument" in msg["message"]  # parsed: the limit did not cut it
    serve.write(b'{"id": "crlf", "cmd": "hello"}\r\n')
    assert serve.next("crlf")["type"] == "result"


# ------------------------------------------------------------------------------ risk: paths and outputs


def test_relative_paths_resolve_against_the_stated_base(tmp_path):
    base = tmp_path / "base dir"
    base.mkdir()
    s = Serve("--base", base)
    try:
        assert _hello(s)["base_dir"] == str(base)
        s.request("c", "capture", source="missing.mp4", output="r.npz")
        msg = s.next("c")
        assert msg["code"] == "bad_input" and str(base / "missing.mp4") in msg["message"]
    finally:
        s.close()
    assert not (REPO / "r.npz").exists()


def test_an_output_may_not_be_the_footage(serve, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", 3, fourcc="mp4v")
    before = clip.read_bytes()
    serve.request("c", "capture", source=str(clip), output=str(tmp_path / "r.npz"), overlay=str(clip))
    msg = serve.next("c")
    assert msg["type"] == "error" and msg["code"] == "unwritable_output" and "footage" in msg["message"]
    assert clip.read_bytes() == before


def test_retailor_output_may_not_be_its_edits_or_result(serve, tmp_path):
    r = fake_result()
    rp = results.write_result(tmp_path / "r.npz", r)
    ep = results.write_edits(tmp_path / "e.npz", results.empty_edits(r), r)
    saved = {p: p.read_bytes() for p in (rp, ep)}
    for rid, out in (("edits", ep), ("result", rp)):
        serve.request(rid, "retailor", result=str(rp), edits=str(ep), output=str(out))
        msg = serve.next(rid)
        assert msg["type"] == "error" and msg["code"] == "unwritable_output", msg
    assert all(p.read_bytes() == b for p, b in saved.items())


def test_a_foreign_file_is_not_replaced(serve, tmp_path):
    notes = tmp_path / "notes.npz"
    notes.write_bytes(b"my notes, not a capture result")
    clip = write_video(tmp_path / "clip.avi", 3)
    serve.request("c", "capture", source=str(clip), output=str(notes))
    msg = serve.next("c")
    assert msg["type"] == "error" and msg["code"] == "unwritable_output" and "not a HandTailor capture result" in msg["message"]
    other = tmp_path / "holiday.mp4"
    other.write_bytes(b"someone's video")
    serve.request("o", "capture", source=str(clip), output=str(tmp_path / "r.npz"), overlay=str(other))
    msg = serve.next("o")
    assert msg["code"] == "unwritable_output" and "holiday.mp4" in msg["message"]
    assert notes.read_bytes() == b"my notes, not a capture result" and other.read_bytes() == b"someone's video"


def test_concurrent_jobs_are_capped(tmp_path):
    s = Serve("--max-jobs", 1)
    try:
        assert _hello(s)["max_jobs"] == 1
        # the first job needs a second or more to start its process; the second request is read before
        s.request("one", "capture", source=str(tmp_path / "a.mp4"), output=str(tmp_path / "a.npz"))
        s.request("two", "capture", source=str(tmp_path / "b.mp4"), output=str(tmp_path / "b.npz"))
        two = s.next("two")
        assert two["type"] == "error" and two["code"] == "busy" and "--max-jobs 1" in two["message"]
        assert s.next("one")["code"] == "bad_input"  # the first one ran (and found no footage)
        s.request("three", "capture", source=str(tmp_path / "c.mp4"), output=str(tmp_path / "c.npz"))
        assert s.next("three")["code"] == "bad_input"  # room again
    finally:
        s.close()


# ------------------------------------------------------------------------------ defect 8: SIGTERM


@pytest.mark.slow
def test_sigterm_during_the_overlay_leaves_nothing(tmp_path):
    """A real capture job, stopped by SIGTERM to the engine while it writes the overlay video: the engine
    cancels the job like `shutdown` and removes its partial files (temp result, temp video)."""
    import signal

    sample = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"
    out = tmp_path / "out"
    out.mkdir()
    s = Serve()
    try:
        s.request("cap", "capture", source=str(sample), output=str(out / "r.npz"), overlay=str(out / "r.mp4"),
                  frame_start=0, frame_end=11, iterations=2)
        while True:  # order on the job's own events: wait until it is writing the overlay
            msg = s.replies.get(timeout=600)
            assert msg["type"] == "progress", msg
            if "overlay" in msg["message"]:
                break
        s.proc.send_signal(signal.SIGTERM)
        code = s.proc.wait(60)
    finally:
        s.close()
    assert sorted(p.name for p in out.iterdir()) == []
    assert code == 0  # an orderly stop, like shutdown
