"""Client of the engine protocol (engine/protocol.py): JSON lines over a child process's stdin/stdout.

No bpy here. The client never blocks the caller for long: `EngineJob.poll()` drains what the engine sent so
far and returns at once, which is what a modal operator's timer needs; `EngineJob.wait()` loops over it for
the headless path. A dead engine (the process exited), a hung one (no message for `hang_timeout` seconds)
and a missing one (no interpreter, no `engine/` package) each raise `EngineFailure` with a stable `code`
and a message a person can act on, quoting the end of the engine's log (its stderr).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
ENV_PYTHON = "HANDTAILOR_ENGINE_PYTHON"
ENV_ROOT = "HANDTAILOR_ENGINE_ROOT"


class EngineFailure(Exception):
    """The engine could not do a job. `code`: one of the engine's error codes (bad_input, no_hand, ...,
    cancelled) or the client's own: engine_missing, engine_start_failed, engine_died, engine_hung,
    protocol_error, timeout."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.args[0]}"


# --------------------------------------------------------------------------------------- locating it


def _venv_python(root: pathlib.Path) -> pathlib.Path:
    if os.name == "nt":
        return root / ".venv" / "Scripts" / "python.exe"
    return root / ".venv" / "bin" / "python"


def _is_engine_root(path: pathlib.Path) -> bool:
    return (path / "engine" / "__init__.py").is_file()


def find_engine(python: str = "", root: str = "", start: str | os.PathLike | None = None) -> tuple[str, str]:
    """(interpreter, repo root) for `python -m engine serve`.

    Order: the explicit arguments (the add-on preferences), then $HANDTAILOR_ENGINE_PYTHON /
    $HANDTAILOR_ENGINE_ROOT, then a folder holding `engine/` found walking up from `start` (the add-on's
    own folder) or from the interpreter's venv. Raises EngineFailure('engine_missing') naming what is
    missing."""
    python = python or os.environ.get(ENV_PYTHON, "")
    root = root or os.environ.get(ENV_ROOT, "")
    root_path = pathlib.Path(root).expanduser() if root else None
    if root_path is None and python:
        # <root>/.venv/bin/python -> <root> (no resolve(): a venv's python is a symlink that must stay one)
        for parent in pathlib.Path(python).expanduser().absolute().parents:
            if _is_engine_root(parent):
                root_path = parent
                break
    if root_path is None and start is not None:
        for parent in [pathlib.Path(start).absolute(), *pathlib.Path(start).absolute().parents]:
            if _is_engine_root(parent):
                root_path = parent
                break
    if root_path is None:
        raise EngineFailure(
            "engine_missing",
            "cannot find the HandTailor engine (a folder holding engine/): set the engine folder in the "
            f"HandTailor add-on preferences or the {ENV_ROOT} environment variable")
    if not _is_engine_root(root_path):
        raise EngineFailure("engine_missing", f"{root_path} holds no engine/ package: set the engine folder "
                                              "in the HandTailor add-on preferences to the project's root")
    if not python:
        python = str(_venv_python(root_path))
    py = pathlib.Path(python).expanduser()
    if not py.is_file() or not os.access(py, os.X_OK):
        raise EngineFailure(
            "engine_missing",
            f"the engine's Python interpreter {py} does not exist or cannot run: create the project's venv "
            f"(scripts/setup_env.sh) or set the interpreter in the HandTailor add-on preferences "
            f"({ENV_PYTHON})")
    return str(py), str(root_path)


def engine_command(python: str) -> list[str]:
    return [python, "-m", "engine", "serve"]


def child_env() -> dict:
    """The environment for the engine: Blender's own Python settings removed, output unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ------------------------------------------------------------------------------------------ the client


def check_hello(hello: dict) -> dict:
    """The one protocol rule, for every path that says hello (UI, headless, check): the engine's hello
    must carry this add-on's PROTOCOL_VERSION. Returns `hello`; EngineFailure('protocol_error') otherwise."""
    proto = hello.get("protocol") if isinstance(hello, dict) else None
    if proto != PROTOCOL_VERSION:
        raise EngineFailure("protocol_error",
                            f"the engine speaks protocol {proto}, this add-on speaks {PROTOCOL_VERSION}: "
                            "update the add-on or the engine so they match")
    return hello


class EngineJob:
    """One request in flight. `poll()` returns the new progress events; `result` / `error` when done."""

    def __init__(self, client: "EngineClient", job_id: str, cmd: str, hang_timeout: float):
        self.client = client
        self.id = job_id
        self.cmd = cmd
        self.hang_timeout = hang_timeout
        self.last_activity = time.monotonic()
        self.done = 0
        self.total = 0
        self.message = ""
        self.result: dict | None = None
        self.error: EngineFailure | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def poll(self) -> dict | None:
        """Processes what arrived; returns the result dict once finished, None while running.
        Raises EngineFailure for an engine error reply, a dead engine or a hung one."""
        self.client._pump()
        if self.error is not None:
            raise self.error
        if self.result is not None:
            return self.result
        if not self.client.alive:
            self.client._out_thread.join(timeout=1.0)  # the last lines may have arrived with the exit
            self.client._pump()
            if self.result is not None:
                return self.result
            if self.error is not None:
                raise self.error
            self.error = EngineFailure(
                "engine_died",
                f"the engine stopped (exit code {self.client.returncode}) during {self.cmd}. "
                f"{self.client.log_tail_text()}")
            raise self.error
        if time.monotonic() - self.last_activity > self.hang_timeout:
            self.client.kill()
            self.error = EngineFailure(
                "engine_hung",
                f"the engine sent nothing for {self.hang_timeout:.0f} s during {self.cmd} and was stopped. "
                f"{self.client.log_tail_text()}")
            raise self.error
        return None

    def wait(self, timeout: float | None = None, on_progress=None, interval: float = 0.05) -> dict:
        """Blocks until the job ends (headless path). `on_progress(job)` is called after each poll."""
        t_end = None if timeout is None else time.monotonic() + timeout
        while True:
            res = self.poll()
            if on_progress is not None:
                on_progress(self)
            if res is not None:
                return res
            if t_end is not None and time.monotonic() > t_end:
                self.cancel()
                raise EngineFailure("timeout", f"{self.cmd} did not finish within {timeout:.0f} s")
            self.client._wait_event(interval)

    def cancel(self, grace: float = 3.0) -> None:
        """Asks the engine to cancel; kills it when it does not stop within `grace` seconds."""
        if self.finished:
            return
        try:
            self.client._send({"id": f"{self.id}-cancel", "cmd": "cancel", "args": {"target": self.id}})
        except EngineFailure:
            pass
        t_end = time.monotonic() + grace
        while time.monotonic() < t_end and self.client.alive:
            self.client._pump()
            if self.finished:
                break
            self.client._wait_event(0.05)
        if not self.finished:
            self.client.kill()
        if self.error is None and self.result is None:
            self.error = EngineFailure("cancelled", f"{self.cmd} was cancelled")


class EngineClient:
    """A running engine child process.

    `EngineClient.start(python, root)` launches `[python, -m, engine, serve]` in `root` and says hello;
    `request(cmd, args)` sends a request and returns its EngineJob; `close()` asks the engine to shut down
    and kills it when it does not."""

    _ids = itertools.count(1)

    def __init__(self, argv: list[str], cwd: str | None = None, env: dict | None = None, log_lines: int = 200):
        self.argv = list(argv)
        try:
            self.proc = subprocess.Popen(
                self.argv, cwd=cwd, env=env if env is not None else child_env(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, encoding="utf-8", errors="replace", bufsize=1,
                start_new_session=True)  # a group of its own: killing the engine kills its job processes too
        except OSError as exc:
            raise EngineFailure("engine_missing", f"cannot start the engine ({' '.join(self.argv)}): {exc}") from None
        self._queue: queue.Queue = queue.Queue()
        self._jobs: dict[str, EngineJob] = {}
        self._log = collections.deque(maxlen=log_lines)
        self._event = threading.Event()
        self._out_thread = threading.Thread(target=self._read_stdout, daemon=True)
        self._err_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._out_thread.start()
        self._err_thread.start()
        self.hello: dict = {}

    # -- lifecycle
    @classmethod
    def start(cls, python: str, root: str, hello_timeout: float = 60.0) -> "EngineClient":
        """Starts the engine and waits for its hello; EngineFailure when it cannot."""
        client = cls(engine_command(python), cwd=root)
        try:
            client.hello = client.request("hello", {}, hang_timeout=hello_timeout).wait(timeout=hello_timeout + 5)
        except EngineFailure as exc:
            client.kill()
            raise EngineFailure("engine_start_failed" if exc.code != "engine_missing" else exc.code,
                                f"the engine did not start: {exc.args[0]}") from None
        try:
            check_hello(client.hello)
        except EngineFailure:
            client.close()
            raise
        return client

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.poll()

    def kill(self) -> None:
        """Kills the engine and every process it started (a job process left alive would hold the engine's
        output pipes open, and a hung one would never let go)."""
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        if hasattr(os, "killpg"):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is gone: nothing of the engine's left
        self._close_pipes()

    def close(self, timeout: float = 5.0) -> None:
        """Polite shutdown, then kill."""
        if self.proc.poll() is None:
            try:
                job = self.request("shutdown", {}, hang_timeout=timeout)
                job.wait(timeout=timeout)
            except EngineFailure:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin,):
            try:
                if pipe:
                    pipe.close()
            except OSError:
                pass
        self._out_thread.join(timeout=2)
        self._err_thread.join(timeout=2)
        # a pipe a reader thread still blocks on is left to it (closing it would wait for that read forever)
        for pipe, reader in ((self.proc.stdout, self._out_thread), (self.proc.stderr, self._err_thread)):
            try:
                if pipe and not reader.is_alive():
                    pipe.close()
            except (OSError, ValueError):
                pass

    # -- requests
    def request(self, cmd: str, args: dict, hang_timeout: float = 120.0) -> EngineJob:
        job = EngineJob(self, f"ht{next(self._ids)}", cmd, hang_timeout)
        self._jobs[job.id] = job
        self._send({"id": job.id, "cmd": cmd, "args": args})
        return job

    def _send(self, msg: dict) -> None:
        if self.proc.poll() is not None:
            raise EngineFailure("engine_died", f"the engine is not running (exit code {self.proc.poll()}). "
                                               f"{self.log_tail_text()}")
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise EngineFailure("engine_died", f"cannot talk to the engine ({exc}). {self.log_tail_text()}") from None

    # -- reading
    def _read_stdout(self) -> None:
        try:
            for line in self.proc.stdout:
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    self._log.append(f"(stdout) {line}")
                    continue
                self._queue.put(msg)
                self._event.set()
        except (OSError, ValueError):
            pass
        self._event.set()

    def _read_stderr(self) -> None:
        try:
            for line in self.proc.stderr:
                line = line.rstrip("\n")
                self._log.append(line)
                log.debug("engine: %s", line)
        except (OSError, ValueError):
            pass

    def _wait_event(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()

    def _pump(self) -> None:
        while True:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                return
            job = self._jobs.get(str(msg.get("id")))
            if job is None:
                if msg.get("type") == "error":
                    self._log.append(f"(engine error without job) {msg.get('code')}: {msg.get('message')}")
                continue
            job.last_activity = time.monotonic()
            kind = msg.get("type")
            if kind == "progress":
                job.done = int(msg.get("done", 0))
                job.total = int(msg.get("total", 0))
                job.message = str(msg.get("message", ""))
            elif kind == "result":
                job.result = msg.get("result") or {}
                self._jobs.pop(job.id, None)
            elif kind == "error":
                job.error = EngineFailure(str(msg.get("code", "internal")), str(msg.get("message", "")))
                self._jobs.pop(job.id, None)
            else:
                self._log.append(f"(unknown message) {msg}")

    def log_tail(self, n: int = 12) -> list[str]:
        time.sleep(0.05)  # let the stderr reader catch the last lines of a dying engine
        return list(self._log)[-n:]

    def log_tail_text(self, n: int = 8) -> str:
        tail = self.log_tail(n)
        return ("Engine log: " + " | ".join(tail)) if tail else "The engine wrote no log."


def check_engine(python: str = "", root: str = "", start=None, timeout: float = 60.0) -> dict:
    """Starts the engine, returns its hello (versions), shuts it down. Raises EngineFailure."""
    py, rt = find_engine(python, root, start)
    client = EngineClient.start(py, rt, hello_timeout=timeout)
    try:
        info = dict(client.hello)
        info["python_path"] = py
        info["root"] = rt
        return info
    finally:
        client.close()


def convert_model(python: str, root: str, source: str, side: str, output: str, timeout: float = 300.0) -> str:
    """Has the engine turn a hand model file (a MANO .pkl: read by its restricted unpickler, in its own
    Python) into the MANO-named .npz the add-on reads: protocol command `export_model`. Returns the file
    written; EngineFailure (code `bad_model_file` when the engine refuses the model) otherwise."""
    client = EngineClient.start(python, root, hello_timeout=timeout)
    try:
        res = client.request("export_model", {"source": source, "side": side, "output": output},
                             hang_timeout=timeout).wait(timeout=timeout)
    finally:
        client.close()
    return (res.get("files") or {}).get("model") or output


def _main(argv=None) -> int:  # a tiny manual check: python -m handtailor_blender.io.engine_client
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        info = check_engine(start=pathlib.Path(__file__).parent)
    except EngineFailure as exc:
        log.error("%s", exc)
        return 2
    json.dump(info, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
