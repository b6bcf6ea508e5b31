"""`python -m engine batch`: many clips on local worker processes and on a local Ray instance.

Short clips are cut from the bundled sample with OpenCV; the batch runs as a subprocess, like a user's.
Every subprocess carries a marker in its environment, so a test can see that no worker, Ray process or
manager outlived the batch (/proc/PID/environ of every process still running).
"""

import argparse
import contextlib
import json
import os
import pathlib
import signal
import socket
import shutil
import subprocess
import sys
import threading
import uuid

import cv2
import numpy as np
import pytest

from engine import batch, capture, cli_args, results

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"
FRAMES = 10


# ------------------------------------------------------------------------------------------------ helpers


def cut_clip(path: pathlib.Path, start: int, n: int = FRAMES) -> pathlib.Path:
    """n frames of the sample from `start`, at half size (MJPG .avi: any OpenCV build writes it)."""
    cap = cv2.VideoCapture(str(SAMPLE))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    for _ in range(n):
        ok, frame = cap.read()
        assert ok
        frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (frame.shape[1], frame.shape[0]))
        writer.write(frame)
    writer.release()
    cap.release()
    return path


def run_batch(args, marker, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, HANDTAILOR_BATCH_TEST=marker)
    return subprocess.run([sys.executable, "-m", "engine", "batch", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, **kw)


def survivors(marker: str) -> list[int]:
    """Processes still running that were started by a batch carrying `marker`."""
    pids = []
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if f"HANDTAILOR_BATCH_TEST={marker}".encode() in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def manifest(outdir: pathlib.Path) -> list[dict]:
    return [json.loads(s) for s in (outdir / "manifest.jsonl").read_text().splitlines()]


@contextlib.contextmanager
def ctrl_c_reaches_children():
    """Children started inside start with Ctrl-C (SIGINT) at its default, as a terminal's foreground job does.
    A shell starts a background command (`pytest ... &`, or a script's) with SIGINT ignored; that is inherited
    through exec, and Python (like any program) keeps an ignored SIGINT, so the batch would never see the
    test's Ctrl-C. (A real Ctrl-C only reaches the foreground job, whose SIGINT is not ignored.)"""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:  # a handler set here is reset to the default in the child by exec
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)


def stalled_clip(path: pathlib.Path) -> pathlib.Path:
    """A clip that cannot finish: a named pipe, which a worker's first read of the clip waits on."""
    os.mkfifo(path)
    return path


def await_worker_on(fifo: pathlib.Path, proc: subprocess.Popen, timeout: float = 300.0) -> int:
    """Opens the stalled clip for writing; returns the descriptor once a worker has opened it to read, that is,
    once that clip is running (and cannot end while the descriptor stays open with nothing written)."""
    box: dict = {}
    opener = threading.Thread(target=lambda: box.setdefault("fd", os.open(fifo, os.O_WRONLY)), daemon=True)
    opener.start()
    opener.join(timeout)
    if "fd" not in box:  # no worker came: release the opener (a reader of our own) and fail
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        opener.join()
        os.close(box["fd"])
        communicate_or_dump(proc, 0)
        pytest.fail(f"no batch worker opened {fifo} within {timeout:.0f} s (exit {proc.returncode})")
    return box["fd"]


def communicate_or_dump(proc: subprocess.Popen, timeout: float) -> tuple:
    """proc.communicate(timeout); past it, the process (run with PYTHONFAULTHANDLER=1) is sent SIGABRT and the
    test fails with every thread's stack, so a hang says where it was."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        before = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=60)
        os.set_blocking(proc.stderr.fileno(), False)  # its workers may outlive it and hold stderr open: no EOF
        try:
            stacks = proc.stderr.buffer.read() or b""
        except BlockingIOError:
            stacks = b""
        pytest.fail(f"the batch did not end within {timeout:.0f} s; its log and stacks:\n{before[-2000:]}\n"
                    f"{stacks.decode('utf-8', 'replace')[-8000:]}")

KEYS = {"source", "status", "result", "overlay", "error", "seconds", "options_sha256", "source_sha256", "frames"}


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three short clips (two share a file name, in different folders) and one broken file, in a list."""
    d = tmp_path_factory.mktemp("clips")
    good = [cut_clip(d / "a" / "take.avi", 0), cut_clip(d / "b" / "take.avi", 120), cut_clip(d / "c" / "other.avi", 240)]
    broken = d / "broken.mp4"
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    listing = d / "clips.txt"
    listing.write_text("# takes of the day\na/take.avi\nb/take.avi\n\nc/other.avi\nbroken.mp4\n")
    return {"good": good, "broken": broken, "list": listing}


@pytest.fixture(scope="module")
def local_run(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    marker = uuid.uuid4().hex
    proc = run_batch([clips["list"], "-o", out, "--workers", 2], marker)
    return {"proc": proc, "out": out, "lines": manifest(out) if out.exists() else [], "marker": marker}


@pytest.mark.slow
def test_local_workers_three_ok_one_error(clips, local_run):
    proc, out, lines = local_run["proc"], local_run["out"], local_run["lines"]
    assert proc.returncode == batch.EXIT_SOME_FAILED, proc.stderr
    assert all(set(line) == KEYS for line in lines)
    by_source = {line["source"]: line for line in lines}
    assert sorted(by_source) == sorted(str(p) for p in clips["good"] + [clips["broken"]])
    bad = by_source.pop(str(clips["broken"]))
    assert bad["status"] == "error" and bad["error"]["code"] == "bad_input" and bad["result"] is None
    assert "broken.mp4" in bad["error"]["message"]
    assert [line["status"] for line in by_source.values()] == ["ok"] * 3
    names = {line["result"] for line in by_source.values()}
    assert len(names) == 3 and all(n.startswith(("take-", "other-")) for n in names)  # same basename, no collision
    for src, line in by_source.items():
        r = results.read_result(out / line["result"])
        assert str(r["source"]) == src and r["valid"].all() and line["frames"] == FRAMES == r["theta"].shape[1]
        assert line["source_sha256"] == batch.source_sha256(src) and line["error"] is None
    # the results, the manifest, and nothing else: no partial folder, no temp file
    assert sorted(p.name for p in out.iterdir()) == sorted(names | {"manifest.jsonl"})
    assert survivors(local_run["marker"]) == []
    assert "3 ok, 0 skipped, 1 failed" in proc.stderr


@pytest.mark.slow
def test_resume_skips_finished_clips_and_recomputes_nothing(clips, local_run):
    out = local_run["out"]
    first = local_run["lines"]
    files = {line["result"]: (out / line["result"]).stat() for line in first if line["status"] == "ok"}
    proc = run_batch([*clips["good"], clips["broken"], "-o", out, "--workers", 2, "--resume"], uuid.uuid4().hex)
    assert proc.returncode == batch.EXIT_SOME_FAILED, proc.stderr
    new = manifest(out)[len(first):]
    assert sorted(line["status"] for line in new) == ["error", "skipped", "skipped", "skipped"]
    for line in new:
        if line["status"] == "skipped":
            st = (out / line["result"]).stat()
            assert line["result"] in files and line["seconds"] == 0.0
            # the very same file: not rewritten, not replaced
            assert (st.st_ino, st.st_mtime_ns) == (files[line["result"]].st_ino, files[line["result"]].st_mtime_ns)
    assert "0 ok, 3 skipped, 1 failed" in proc.stderr


@pytest.mark.slow
def test_ray_local_gives_the_same_results_as_local_workers(clips, local_run, tmp_path):
    pytest.importorskip("ray", reason="Ray is in the test extras; install with pip install -e '.[test]'")
    out = tmp_path / "ray"
    marker = uuid.uuid4().hex
    proc = run_batch([clips["list"], "-o", out, "--ray", "local"], marker)
    assert proc.returncode == batch.EXIT_SOME_FAILED, proc.stderr
    ray_lines = {line["source"]: line for line in manifest(out)}
    for line in local_run["lines"]:
        other = ray_lines[line["source"]]
        assert other["status"] == line["status"] and other["result"] == line["result"]
        if line["status"] == "ok":
            a = results.read_result(local_run["out"] / line["result"])
            b = results.read_result(out / other["result"])
            assert np.array_equal(a["valid"], b["valid"])
            np.testing.assert_allclose(b["theta"], a["theta"], atol=1e-5, rtol=0)
        else:
            assert other["error"]["code"] == line["error"]["code"]
    assert survivors(marker) == []  # ray.shutdown() took the local instance down


@pytest.mark.slow
def test_ray_address_joins_a_running_cluster(clips, local_run, tmp_path):
    """`ray start --head` (a one-node cluster, as on a real head node), then `--ray ADDRESS` from a driver."""
    pytest.importorskip("ray", reason="Ray is in the test extras; install with pip install -e '.[test]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    marker = uuid.uuid4().hex
    # a token of this test's own: the cluster accepts only its driver (Ray's token authentication)
    env = dict(os.environ, HANDTAILOR_BATCH_TEST=marker, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=uuid.uuid4().hex)
    ray_cli = pathlib.Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--block"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in head.stdout:  # the head is up when it says so
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail(f"ray start --head ended (exit {head.wait()})")
        out = tmp_path / "cluster"
        proc = subprocess.run([sys.executable, "-m", "engine", "batch", str(clips["good"][0]), str(clips["broken"]),
                               "-o", str(out), "--ray", f"127.0.0.1:{port}"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        head.terminate()  # --block: the head takes its processes down with it
        head.communicate(timeout=120)
    assert proc.returncode == batch.EXIT_SOME_FAILED, proc.stderr
    lines = {line["source"]: line for line in manifest(out)}
    assert lines[str(clips["broken"])]["error"]["code"] == "bad_input"
    mine = lines[str(clips["good"][0])]
    (local,) = [line for line in local_run["lines"] if line["source"] == mine["source"]]
    np.testing.assert_allclose(results.read_result(out / mine["result"])["theta"],
                               results.read_result(local_run["out"] / local["result"])["theta"], atol=1e-5, rtol=0)
    assert survivors(marker) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_workers_and_leaves_no_partial_files(clips, tmp_path, sig, code, word):
    out = tmp_path / "out"
    marker = uuid.uuid4().hex
    env = dict(os.environ, HANDTAILOR_BATCH_TEST=marker, PYTHONFAULTHANDLER="1")
    stalled = stalled_clip(tmp_path / "stalled.avi")  # the second clip: Ctrl-C comes while it runs
    first, *rest = clips["good"]
    with ctrl_c_reaches_children():
        proc = subprocess.Popen([sys.executable, "-m", "engine", "batch", first, stalled, *rest, "-o", str(out),
                                 "--workers", "1"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    fd = None
    try:
        fd = await_worker_on(stalled, proc)
        assert [line["status"] for line in manifest(out)] == ["ok"]
        proc.send_signal(sig)
        _, err = communicate_or_dump(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if fd is not None:
            os.close(fd)
    assert proc.returncode == code, err
    assert "--resume" in err and err.count(word) == 1, err  # said once, with what to do
    lines = manifest(out)  # every line whole; only finished clips' files, no partial folder or temp file
    done = {line["result"] for line in lines if line["status"] == "ok"}
    assert len(done) >= 1
    assert sorted(p.name for p in out.iterdir()) == sorted(done | {"manifest.jsonl"})
    assert survivors(marker) == []
    if sig != signal.SIGINT:
        return
    again = run_batch([*clips["good"], "-o", out, "--workers", 1, "--resume"], marker)
    assert again.returncode == 0, again.stderr
    new = manifest(out)[len(lines):]
    assert {line["result"] for line in new if line["status"] == "skipped"} == done
    assert sum(line["status"] == "ok" for line in new) == 3 - len(done)


@pytest.mark.slow
def test_a_dead_worker_costs_a_retry_not_the_batch(clips, tmp_path):
    out = tmp_path / "out"
    stalled = stalled_clip(tmp_path / "second.avi")  # the worker dies while it runs the second clip
    first, *rest = clips["good"]
    proc = subprocess.Popen([sys.executable, "-m", "engine", "batch", first, stalled, *rest, "-o", str(out),
                             "--workers", "1"], cwd=REPO, env=dict(os.environ, PYTHONFAULTHANDLER="1"),
                            stderr=subprocess.PIPE, text=True)
    fd = None
    try:
        fd = await_worker_on(stalled, proc)
        # the batch's children: the pool's worker (it has loaded torch), the progress queue's manager and
        # multiprocessing's resource tracker
        children = pathlib.Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [int(c) for c in children if b"libtorch" in pathlib.Path(f"/proc/{c}/maps").read_bytes()]
        assert len(workers) == 1
        # the retry finds a real clip at that path (the pipe's reader was the worker that dies)
        shutil.copy(rest[0], tmp_path / "copy.avi")
        os.replace(tmp_path / "copy.avi", stalled)
        os.kill(workers[0], signal.SIGKILL)  # as the OOM killer would
        _, err = communicate_or_dump(proc, timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        if fd is not None:
            os.close(fd)
    assert proc.returncode == 0, err
    assert "a worker process died while it ran; retrying it alone" in err
    assert sorted(line["status"] for line in manifest(out)) == ["ok"] * 4


def test_ray_missing_is_a_named_error_saying_how_to_install(clips, tmp_path):
    # `import ray` fails in this child (sys.modules entry None), as where the extra is not installed
    code = ("import sys; sys.modules['ray'] = None; from engine.cli import main; "
            f"sys.exit(main(['batch', {str(clips['broken'])!r}, '-o', {str(tmp_path / 'out')!r}, '--ray', 'local']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "[ray_not_installed]" in proc.stderr and ".[cluster]" in proc.stderr
    assert not (tmp_path / "out").exists()  # failed before any work


# ---------------------------------------------------------------------------------------------- pieces


def test_inputs_from_a_list_relative_to_it_in_order_once(tmp_path):
    (tmp_path / "l").mkdir()
    listing = tmp_path / "l" / "takes.txt"
    listing.write_text("# comment\n one.mp4 \n\nframes\n../two.mov\none.mp4\n")
    got = batch.expand_inputs([str(listing), str(tmp_path / "l" / "frames"), str(tmp_path / "three.mp4")])
    assert got == [tmp_path / "l" / "one.mp4", tmp_path / "l" / "frames", tmp_path / "two.mov", tmp_path / "three.mp4"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# none yet\n")
    with pytest.raises(batch.InputError, match="no clips"):
        batch.expand_inputs([str(empty)])


def test_output_names_never_collide_and_stay_readable():
    a = batch.output_name(pathlib.Path("/shoot/day1/take 01.mp4"))
    b = batch.output_name(pathlib.Path("/shoot/day2/take 01.mp4"))
    assert a != b and a.startswith("take_01-") and b.startswith("take_01-")
    assert batch.output_name(pathlib.Path("/shoot/day1/take 01.mp4")) == a  # a rerun finds the same name
    assert batch.output_name(pathlib.Path("/shoot/frames_07")).startswith("frames_07-")


def test_hashes_follow_content_and_result_shaping_options(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((8, 8, 3), i, np.uint8))
    before = batch.source_sha256(folder)
    cv2.imwrite(str(folder / "001.png"), np.full((8, 8, 3), 9, np.uint8))
    assert batch.source_sha256(folder) != before and batch.source_sha256(tmp_path / "missing.mp4") is None
    base = capture.CaptureOptions("a.mp4", "a.npz")
    same = capture.CaptureOptions("b.mp4", "b.npz", threads=4)  # paths and threads do not shape the result
    assert batch.options_sha256(base) == batch.options_sha256(same)
    assert batch.options_sha256(base) != batch.options_sha256(capture.CaptureOptions("a.mp4", "a.npz", iterations=5))
    assert batch.options_sha256(base) != batch.options_sha256(capture.CaptureOptions("a.mp4", "a.npz", overlay="o.mp4"))


def test_an_existing_batch_is_not_overwritten_without_resume(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_text('{"source": "/x.mp4", "status": "ok"}\n')
    proc = subprocess.run([sys.executable, "-m", "engine", "batch", str(tmp_path / "x.mp4"), "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert (out / "manifest.jsonl").read_text() == '{"source": "/x.mp4", "status": "ok"}\n'


def test_capture_and_batch_share_one_definition_of_the_capture_options():
    ref = argparse.ArgumentParser()
    cli_args.add_capture_options(ref)
    shared = vars(ref.parse_args([]))
    in_batch = vars(batch.build_parser("batch").parse_args(["x.mp4", "-o", "out"]))
    in_capture = vars(cli_args.capture_parser("capture").parse_args(["x.mp4", "-o", "r.npz"]))
    assert shared.items() <= in_batch.items() and shared.items() <= in_capture.items()
    args = batch.build_parser("batch").parse_args(["x.mp4", "-o", "out", "--iterations", "7", "--frames", "0:9",
                                                   "--hands", "2", "--overlay"])
    assert (args.iterations, args.frames, args.hands, args.overlay) == (7, "0:9", 2, True)
