"""`python -m engine serve`: the engine protocol (see `engine.protocol`) on stdin/stdout.

The main thread reads request lines and answers `hello`, `cancel` and `shutdown` itself. `capture` and
`retailor` run as jobs, each in its own child process (multiprocessing, spawn): a JAX compile or a torch
forward cannot be interrupted from inside, but a process can be terminated. The child sends progress,
its result or its error through a pipe; a watcher thread per job turns them into reply lines.

Cancel: the child is terminated (SIGTERM, then SIGKILL after 0.3 s), the partial files it may have left
(temporary files next to the outputs, an output that appeared during the job) are removed, and the job's
request gets the error "cancelled". Results are always written atomically, so a finished file is either
complete or absent.

Limits and safety (see engine.protocol for what clients see):
- stdin is read as bytes by a bounded reader: a line longer than protocol.MAX_LINE_BYTES (1 MiB) gets an
  error reply (id null) as soon as it passes the limit and is discarded up to its newline, so a huge or
  endless line costs the engine a 64 KiB read buffer, never the line.
- paths in a job's args are resolved against the base folder (`--base`, default: the folder the engine
  was started in; `hello` reports it as base_dir); outputs may not be inputs, and an existing file is
  replaced only by an output of the same kind (engine.outputs).
- at most `--max-jobs` jobs (default 2) run at once; another job request gets the error "busy".
- SIGTERM stops the engine like `shutdown`: running jobs are cancelled and their partial files removed.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import pathlib
import signal
import sys
import threading
import time
import traceback
from typing import Iterator

from engine import protocol
from engine.cli_args import log_to_stderr

log = logging.getLogger("engine.server")

KILL_GRACE_S = 0.3
DEFAULT_MAX_JOBS = 2  # each job is a process holding torch + JAX (1-2 GB): two fit a small machine
READ_CHUNK = 1 << 16
# Path arguments of each job command: resolved against the server's base folder before the job starts.
PATH_ARGS = {
    "capture": ("source", "output", "overlay", "hand_model", "hourglass_weights"),
    "retailor": ("result", "edits", "output", "hand_model"),
    "export_model": ("source", "output"),
}
PACKAGES = ("numpy", "scipy", "opencv-python-headless", "torch", "jax", "jaxlib", "smplx", "optax")


# ------------------------------------------------------------------------------------------ child side


def run_capture_job(args: dict, progress) -> dict:
    from engine import capture

    return capture.run_capture(capture.CaptureOptions.from_protocol(args), progress=progress)


def run_retailor_job(args: dict, progress) -> dict:
    from engine import retailor

    return retailor.run_retailor(retailor.RetailorOptions.from_protocol(args), progress=progress)


def run_export_model_job(args: dict, progress) -> dict:
    from engine.hand_model import load_hand_model
    from engine.hand_model.export import export_npz
    from engine.results import check_output_path

    out = check_output_path(args["output"])
    model = load_hand_model(args.get("source"), side=args["side"])
    written = export_npz(model, out)
    progress(1, 1, "exported")
    return {"files": {"model": str(written)}, "name": model.name, "side": model.side, "sha256": model.sha256,
            "format": model.format}


# command -> the function a job's child process runs: fn(args, progress) -> the result dict
JOBS = {"capture": run_capture_job, "retailor": run_retailor_job, "export_model": run_export_model_job}


def _child_main(job, args: dict, conn) -> None:
    """Entry point of a job's child process: runs `job(args, progress)`, sends ('progress'|'result'|'error', ...)."""
    # stdout is the protocol channel of the parent: nothing in the child may write to it.
    try:
        os.dup2(2, 1)
    except OSError:
        pass
    sys.stdout = sys.stderr
    log_to_stderr(fmt="engine[%(process)d] %(levelname)s %(name)s: %(message)s")
    from engine.errors import EngineError

    last = [0.0]

    def progress(done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if now - last[0] >= 0.1 or done >= total:
            last[0] = now
            conn.send(("progress", int(done), int(total), str(message)))

    try:
        conn.send(("result", job(args, progress)))
    except EngineError as exc:
        conn.send(("error", exc.code if exc.code in protocol.ERROR_CODES else "internal", str(exc)))
    except KeyboardInterrupt:
        conn.send(("error", "cancelled", "interrupted"))
    except BaseException as exc:  # noqa: BLE001 - a job must always answer
        traceback.print_exc(file=sys.stderr)
        conn.send(("error", "internal", f"{type(exc).__name__}: {exc} (engine bug; the engine log has the traceback)"))
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------- parent side


def _output_paths(cmd: str, args: dict) -> list[pathlib.Path]:
    paths = [args.get("output")]
    if cmd == "capture":
        paths.append(args.get("overlay"))
    return [pathlib.Path(p).expanduser().absolute() for p in paths if p]


def _stat_key(p: pathlib.Path):
    try:
        st = p.stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return None


class Job:
    def __init__(self, server: "Server", request: protocol.Request, ctx, job):
        self.server = server
        self.request = request
        self.outputs = _output_paths(request.cmd, request.args)
        self.before = {p: _stat_key(p) for p in self.outputs}
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        self.conn = parent_conn
        self.process = ctx.Process(
            target=_child_main, args=(job, request.args, child_conn), name=f"engine-job-{request.id}", daemon=True
        )
        self.cancelled = False
        self.finished = threading.Event()
        self.lock = threading.Lock()
        self.process.start()
        child_conn.close()
        self.watcher = threading.Thread(target=self._watch, name=f"watch-{request.id}", daemon=True)
        self.watcher.start()

    @property
    def id(self) -> str:
        return self.request.id

    def _finish(self, reply: dict, from_cancel: bool = False) -> None:
        with self.lock:
            if self.finished.is_set() or (self.cancelled and not from_cancel):
                return
            self.finished.set()
        self.server.job_done(self)  # first: a client answered may start its next job at once
        self.server.send(reply)

    def _watch(self) -> None:
        rid = self.id
        while True:
            try:
                if not self.conn.poll(0.05):
                    if not self.process.is_alive() and not self.conn.poll(0):
                        break
                    continue
                msg = self.conn.recv()
            except (EOFError, OSError):
                break
            if self.cancelled:
                break
            kind = msg[0]
            if kind == "progress":
                if not self.finished.is_set():
                    self.server.send(protocol.progress(rid, msg[1], msg[2], msg[3]))
            elif kind == "result":
                self.process.join(5)
                self._finish(protocol.result(rid, msg[1]))
                return
            elif kind == "error":
                if msg[1] == "cancelled" or self.cancelled:
                    self._cleanup()
                self._finish(protocol.error(rid, msg[1], msg[2]))
                return
        if self.cancelled:
            return  # cancel() answers
        self.process.join(1)
        code = self.process.exitcode
        self._cleanup()
        self._finish(protocol.error(rid, "internal", f"the job's process ended without an answer (exit code {code}); see the engine log"))

    def cancel(self) -> bool:
        """Stops the child now; answers the job with 'cancelled'. False when it had already finished."""
        with self.lock:
            if self.finished.is_set():
                return False
            self.cancelled = True
        _terminate(self.process)
        self._cleanup()
        self._finish(protocol.error(self.id, "cancelled", "cancelled by the user; nothing was written"), from_cancel=True)
        return True

    def _cleanup(self) -> None:
        """Removes temp files next to the outputs and outputs that appeared or changed during the job."""
        for p in self.outputs:
            parent = p.parent
            try:
                for tmp in parent.glob(f".{p.stem}.*.tmp*"):
                    tmp.unlink(missing_ok=True)
            except OSError:
                pass
            if _stat_key(p) is not None and _stat_key(p) != self.before.get(p):
                try:
                    p.unlink()
                except OSError:
                    pass


def _terminate(process) -> None:
    if process.is_alive():
        process.terminate()
        process.join(KILL_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join(1.0)


class LineTooLong:
    """What read_lines yields for a line over the limit (once, when it passes it); the rest is discarded."""

    def __init__(self, limit: int):
        self.limit = limit


def read_lines(fd: int, limit: int = protocol.MAX_LINE_BYTES, chunk: int = READ_CHUNK) -> Iterator[bytes | LineTooLong]:
    """Lines of `fd` as bytes (without the newline), reading at most `chunk` bytes at a time and never
    keeping more than `limit` bytes of one line: a longer line yields one LineTooLong, then its bytes are
    dropped until its newline. Ends at EOF (a last line without newline is yielded when within the limit)."""
    buf = bytearray()
    discarding = False
    while True:
        try:
            data = os.read(fd, chunk)
        except InterruptedError:  # pragma: no cover - Python retries EINTR itself
            continue
        if not data:
            if buf and not discarding:
                yield bytes(buf)
            return
        start = 0
        while True:
            nl = data.find(b"\n", start)
            piece = data[start:] if nl < 0 else data[start:nl]
            if not discarding:
                if len(buf) + len(piece) > limit:
                    discarding = True
                    buf.clear()
                    yield LineTooLong(limit)
                else:
                    buf += piece
            if nl < 0:
                break
            if not discarding:
                yield bytes(buf)
            buf.clear()
            discarding = False
            start = nl + 1


class Server:
    """Reads requests from `inp` (a file descriptor, read by `read_lines`), writes replies to `out` (a text
    stream), one JSON object a line.

    `jobs`: command -> the function its child process runs (default `JOBS`); `base`: the folder relative
    paths are resolved against (default: the current folder); `max_jobs`: jobs running at once."""

    def __init__(self, inp: int, out, mp_context: str = "spawn", jobs: dict | None = None,
                 base: str | os.PathLike | None = None, max_jobs: int = DEFAULT_MAX_JOBS):
        self.inp = inp
        self.out = out
        self.job_functions = dict(JOBS if jobs is None else jobs)
        self.base = pathlib.Path(base if base is not None else os.getcwd()).expanduser().absolute()
        self.max_jobs = int(max_jobs)
        self.write_lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.jobs_lock = threading.Lock()
        self.ctx = multiprocessing.get_context(mp_context)

    def send(self, message: dict) -> None:
        line = protocol.encode(message)
        with self.write_lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the client went away; the read loop ends at EOF

    def job_done(self, job: Job) -> None:
        with self.jobs_lock:
            if self.jobs.get(job.id) is job:
                del self.jobs[job.id]

    def hello(self) -> dict:
        from importlib import metadata

        from engine import __version__

        versions = {}
        for name in PACKAGES:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "engine_version": __version__,
            "python": sys.version.split()[0],
            "versions": versions,
            "capabilities": list(protocol.CAPABILITIES),
            "base_dir": str(self.base),
            "max_jobs": self.max_jobs,
        }

    def handle_line(self, line: bytes | str | LineTooLong) -> bool:
        """Serves one line; returns False when the engine should stop."""
        if isinstance(line, LineTooLong):
            self.send(protocol.error(None, "bad_request", f"request line longer than {line.limit} bytes "
                                     "(the protocol's limit): it is discarded up to its newline"))
            return True
        if not line.strip():
            return True
        try:
            req = protocol.decode_request(line)
        except protocol.ProtocolError as exc:
            self.send(protocol.error(exc.id, exc.code, str(exc)))
            return True
        try:
            return self.dispatch(req)
        except protocol.ProtocolError as exc:
            self.send(protocol.error(req.id, exc.code, str(exc)))
        except Exception as exc:  # noqa: BLE001 - never crash on a request
            log.exception("request %s failed", req.id)
            self.send(protocol.error(req.id, "internal", f"{type(exc).__name__}: {exc}"))
        return True

    def dispatch(self, req: protocol.Request) -> bool:
        if req.cmd == "hello":
            self.send(protocol.result(req.id, self.hello()))
        elif req.cmd == "cancel":
            with self.jobs_lock:
                job = self.jobs.get(req.args["target"])
            done = job.cancel() if job is not None else False
            self.send(protocol.result(req.id, {"cancelled": bool(done)}))
        elif req.cmd == "shutdown":
            self.cancel_all()
            self.send(protocol.result(req.id, {}))
            return False
        elif req.cmd in self.job_functions:
            self.start_job(req)
        return True

    def start_job(self, req: protocol.Request) -> None:
        req = self.resolve_paths(req)
        self.check_outputs(req)
        with self.jobs_lock:
            if req.id in self.jobs:
                raise protocol.ProtocolError("bad_request", f"a job with id {req.id!r} is still running; use a new id", req.id)
            if len(self.jobs) >= self.max_jobs:
                raise protocol.ProtocolError(
                    "busy", f"{len(self.jobs)} job(s) are running, the most this engine runs at once "
                    f"(serve --max-jobs {self.max_jobs}); wait for one to finish or cancel one", req.id)
            outs = set(_output_paths(req.cmd, req.args))
            for other in self.jobs.values():
                clash = outs & set(other.outputs)
                if clash:
                    raise protocol.ProtocolError(
                        "bad_request", f"{sorted(map(str, clash))} is being written by job {other.id!r}; wait or cancel it", req.id
                    )
            self.jobs[req.id] = Job(self, req, self.ctx, self.job_functions[req.cmd])

    def resolve_paths(self, req: protocol.Request) -> protocol.Request:
        """The request with its path arguments made absolute against the base folder."""
        from engine.outputs import resolve

        args = dict(req.args)
        for key in PATH_ARGS.get(req.cmd, ()):
            if args.get(key):
                args[key] = resolve(args[key], self.base)
        return protocol.Request(req.id, req.cmd, args)

    def check_outputs(self, req: protocol.Request) -> None:
        """Before a job starts: its outputs are not its inputs and replace only earlier outputs (engine.outputs)."""
        from engine import outputs
        from engine.errors import OutputError

        a = req.args
        try:
            if req.cmd == "capture":
                outputs.check_not_inputs({"output": a.get("output"), "overlay": a.get("overlay")},
                                         {"footage": a.get("source"), "hand model": a.get("hand_model"),
                                          "hourglass weights": a.get("hourglass_weights")})
                outputs.check_replaceable(a["output"], "result")
                if a.get("overlay"):
                    outputs.check_replaceable(a["overlay"], "overlay", result_path=a["output"])
            elif req.cmd == "retailor":
                outputs.check_not_inputs({"output": a.get("output")},
                                         {"capture result": a.get("result"), "edits file": a.get("edits"),
                                          "hand model": a.get("hand_model")})
                outputs.check_replaceable(a["output"], "result")
            elif req.cmd == "export_model":
                outputs.check_not_inputs({"output": a.get("output")}, {"hand model": a.get("source")})
                outputs.check_replaceable(a["output"], "model")
        except OutputError as exc:
            raise protocol.ProtocolError(exc.code, str(exc), req.id) from None

    def cancel_all(self) -> None:
        with self.jobs_lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel()

    def serve_forever(self) -> int:
        try:
            for line in read_lines(self.inp):
                if not self.handle_line(line):
                    break
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see main): stop like shutdown
            pass
        finally:
            self.cancel_all()
        return 0


def main(argv: list[str], prog: str = "python -m engine serve") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="JSON-lines engine protocol on stdin/stdout for the Blender add-on (see engine/protocol.py).",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--base", metavar="DIR", help="folder that relative paths in requests are resolved against "
                        "(default: the folder the engine is started in; hello reports it as base_dir)")
    parser.add_argument("--max-jobs", type=int, default=DEFAULT_MAX_JOBS,
                        help=f"jobs run at once; more get the error 'busy' (default {DEFAULT_MAX_JOBS})")
    args = parser.parse_args(argv)
    if args.max_jobs < 1:
        parser.error(f"--max-jobs must be at least 1 (got {args.max_jobs})")
    base = pathlib.Path(args.base).expanduser().absolute() if args.base else pathlib.Path.cwd()
    if not base.is_dir():
        parser.error(f"--base {str(base)!r} is not a folder")
    return serve_stdio(args.log_level, base=base, max_jobs=args.max_jobs)


def serve_stdio(log_level: str = "INFO", jobs: dict | None = None, base: str | os.PathLike | None = None,
                max_jobs: int = DEFAULT_MAX_JOBS) -> int:
    """Serves the protocol on this process's stdin/stdout until EOF, `shutdown` or SIGTERM; returns the exit code."""
    log_to_stderr(log_level, fmt="engine %(levelname)s %(name)s: %(message)s")
    # Replies must not be mangled by the platform's text encoding or line endings.
    out = open(sys.stdout.fileno(), "w", encoding="utf-8", newline="\n", closefd=False)
    sys.stdout = sys.stderr  # nothing else may write to the protocol channel
    signal.signal(signal.SIGTERM, _terminate_like_shutdown)
    server = Server(sys.stdin.fileno(), out, jobs=jobs, base=base, max_jobs=max_jobs)
    log.info("engine protocol %d ready (pid %d; paths relative to %s; at most %d jobs)", protocol.PROTOCOL_VERSION,
             os.getpid(), server.base, server.max_jobs)
    return server.serve_forever()


def _terminate_like_shutdown(signum, frame):
    """SIGTERM: unwind the main loop like Ctrl-C, so running jobs are cancelled and their files removed."""
    raise KeyboardInterrupt
