"""Where the engine keeps what it can always rebuild (compiled code): one folder per kind under the user's
cache folder, $XDG_CACHE_HOME/handtailor (else ~/.cache/handtailor), files written whole or not at all
(`write_atomically`: processes that read a file while another writes it see the old one or the new one).
Deleting the folder is always safe. In memory: `LruCache`, for what a process rebuilds from contents."""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import platform
import tempfile
import threading
from collections import OrderedDict

log = logging.getLogger(__name__)

_CPU_DIGEST: str | None = None


def cache_folder(kind: str) -> pathlib.Path | None:
    """$XDG_CACHE_HOME/handtailor/<kind> (~/.cache/handtailor/<kind>), created; None where it cannot be (no
    home, a read-only disk): the caller then works without a cache."""
    try:
        base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
        path = base / "handtailor" / kind
        path.mkdir(parents=True, exist_ok=True)
        return path
    except (OSError, RuntimeError):
        return None


def cpu_digest() -> str:
    """sha256 of what compiled code is made for: the machine, the processor and its features (Linux:
    /proc/cpuinfo's flags; elsewhere the processor's name stands for them)."""
    global _CPU_DIGEST
    if _CPU_DIGEST is None:
        flags = ""
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
        except OSError:
            pass
        _CPU_DIGEST = hashlib.sha256(f"{platform.machine()}|{platform.processor()}|{flags}".encode()).hexdigest()
    return _CPU_DIGEST


def write_atomically(path: pathlib.Path, data: bytes) -> None:
    """`data` to `path` through a temporary file in the same folder and a rename. A read-only or full disk is
    logged only (the file is rebuilt next time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.debug("could not keep %s: %s", path, exc)


class LruCache:
    """A small least-recently-used cache; keys are contents (bytes, tuples), never object ids. Thread-safe
    (a clip's windows are fitted on several threads)."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key, make):
        with self.lock:
            hit = self.items.get(key)
            if hit is None:
                hit = self.items[key] = make()
                if len(self.items) > self.size:
                    self.items.popitem(last=False)
            else:
                self.items.move_to_end(key)
            return hit
