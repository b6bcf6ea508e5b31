"""Where `engine batch` runs its clips: the task (`run_clip`) and the two pools it is submitted to.

Both pools have the same face for the batch loop (engine/batch.py): `workers`, `queue` (progress messages
(clip index, fraction done) from the tasks), `submit(job) -> concurrent.futures.Future`, `worker_died(exc)`,
`stop()` (Ctrl-C: kill the running tasks) and `close()`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import logging
import multiprocessing
import os
import pathlib
import signal
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.managers import SyncManager

from engine import protocol
from engine.errors import EngineError

log = logging.getLogger("engine.batch")


class RayNotInstalled(EngineError):
    code = "ray_not_installed"


def source_sha256(source: str | os.PathLike) -> str | None:
    """sha256 of a video file's bytes, or of an image folder's file names and bytes; None if unreadable."""
    p = pathlib.Path(source)
    h = hashlib.sha256()
    try:
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if p.is_dir():
                h.update(f.name.encode("utf-8") + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()



# ----------------------------------------------------------------------------------------------- worker


def limit_threads(threads: int) -> None:
    """Caps the thread pools of one worker (torch, OpenMP/BLAS, OpenCV, XLA). XLA reads its flags when JAX
    first starts a backend, so this runs before the capture imports JAX."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "jax" not in sys.modules and "intra_op_parallelism_threads" not in os.environ.get("XLA_FLAGS", ""):
        eigen = "false" if threads == 1 else "true"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={threads}").strip()
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def run_clip(job: dict, progress_queue) -> dict:
    """One clip, in a worker: `run_capture` into the clip's partial folder. Never raises for a clip's own
    failure: returns {"status": "ok", "files", "frames", ...} or {"status": "error", "code", "message"}."""
    from engine.capture import run_capture

    t0 = time.perf_counter()
    index, options = job["index"], job["options"]
    last = [0.0]

    def progress(done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done >= total:
            last[0] = now
            _send(progress_queue, (index, done / max(total, 1)))

    try:
        limit_threads(job["threads"])
        pathlib.Path(options.output).parent.mkdir(parents=True, exist_ok=True)
        digest = source_sha256(options.source)
        out = run_capture(options, progress=progress)
        return {"status": "ok", "files": out["files"], "frames": out["frames"], "source_sha256": digest,
                "seconds": time.perf_counter() - t0}
    except EngineError as exc:  # the manifest speaks the protocol's error codes, as the server does
        err = protocol.error(None, exc.code, str(exc))
        return {"status": "error", "code": err["code"], "message": err["message"], "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - one clip's bug must not stop the others; the log has the traceback
        log.exception("capture of %s failed", options.source)
        return {"status": "error", "code": "internal", "message": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t0}


def _send(q, item) -> None:
    try:
        q.put(item)
    except Exception:  # noqa: BLE001 - progress is a display only; the capture goes on without it
        pass


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which stops them (a terminal sends SIGINT to the whole group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------------------------------ pools


class LocalWorkers:
    """Worker processes on this machine (spawn: nothing inherited from the parent but the job)."""

    def __init__(self, workers: int | None, threads: int):
        self._ctx = multiprocessing.get_context("spawn")
        self.workers = workers or os.cpu_count() or 1
        self._manager = SyncManager(ctx=self._ctx)
        self._manager.start(_ignore_interrupts)
        self.queue = self._manager.Queue()
        self._executor = None

    def submit(self, job: dict) -> cf.Future:
        if self._executor is None:
            self._executor = cf.ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_ignore_interrupts)
        try:
            return self._executor.submit(run_clip, job, self.queue)
        except BrokenProcessPool:  # a worker died: the executor has stopped the others; a new one takes over
            self._executor.shutdown(wait=True)
            self._executor = None
            return self.submit(job)

    def worker_died(self, exc: BaseException) -> bool:
        """A worker process died (a crash, the OOM killer): every clip then in the pool fails with this."""
        return isinstance(exc, BrokenProcessPool)

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():  # the workers and the queue's manager: all ours
            child.terminate()
        for child in multiprocessing.active_children():
            child.join()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._manager.shutdown()


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayNotInstalled(
            "--ray needs Ray, an optional extra of the engine: run `pip install -e '.[cluster]'` in the HandTailor "
            "folder (installs the pinned Ray), or leave out --ray to use local worker processes.") from None
    return ray


class RayWorkers:
    """Ray tasks: `local` starts a private single-machine instance (no dashboard, no usage stats), an
    address joins a running cluster, whose nodes need the engine and its model files (README)."""

    def __init__(self, address: str, workers: int | None, threads: int):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray = self._ray = import_ray()
        try:
            if address == "local":
                ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=address, logging_level=logging.WARNING)
        except Exception as exc:  # noqa: BLE001 - Ray raises several kinds; the user needs the address and why
            raise EngineError(f"cannot start or join Ray at {address!r}: {exc}. Check the address "
                              "(`ray status` on the head node) or use --ray local.", code="ray_unavailable") from None
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})  # takes no CPU from the clips
        # no retries by Ray: a clip whose worker died is retried once, alone, by the batch (same policy as local)
        self._task = ray.remote(run_clip).options(num_cpus=threads, max_retries=0)
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        self._refs: list = []

    def submit(self, job: dict) -> cf.Future:
        ref = self._task.remote(job, self.queue)
        self._refs.append(ref)
        return ref.future()

    def worker_died(self, exc: BaseException) -> bool:
        return isinstance(exc, (self._ray.exceptions.WorkerCrashedError, self._ray.exceptions.NodeDiedError))

    def stop(self) -> None:
        for ref in self._refs:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)
        self._ray.shutdown()

    def close(self) -> None:
        self._ray.shutdown()


