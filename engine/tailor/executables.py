"""The tailor's compiled code kept on disk between runs, so a capture's first fit neither traces nor compiles.

One folder ($JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/handtailor/jax, i.e. ~/.cache/handtailor/jax)
holds three kinds of files:
- JAX's persistent compilation cache: XLA executables keyed by their HLO (skips XLA's compile, ~7 s for
  the tailor on 2 cores the first time ever);
- `Exported`: a jitted function's lowering (`jax.export`, serialized StableHLO) keyed by the engine's source,
  the JAX version and the arguments' shapes. Loading it skips tracing and lowering, which were the rest of
  a capture's first fit (1.3 s of tracing + 0.4 s of lowering of the tailor's solve on a 2-core machine,
  against 0.35 s to load and call the stored one);
- beside each lowering, its compiled executable (`.xla`: `jax.experimental.serialize_executable`, keyed
  also by the host's CPU features and XLA_FLAGS). Loading it skips even the lowering's embedding in a jit
  and JAX's cache key (0.15 s of Python holding the GIL, which the capture's tracking threads waited on:
  measured, their first frame came 0.13 s later, issue 18); what remains, the executable's deserialization
  (0.13-0.18 s), runs without the GIL. It is compiled by this module itself, not loaded from JAX's cache:
  an executable that JAX's cache loaded serializes without its kernels (jax 0.7.1: "Function ... not
  found" when the reloaded one runs), so it is compiled with one compiler option at its default value
  (`_OWN_COMPILE`: the same code under another cache key), kept out of JAX's cache, and written only after
  a reloaded copy gave the same outputs bit for bit.
A file that is missing, stale or unreadable costs only the time it would have saved: the function is traced
(or compiled) as usual and the file written anew (atomically, so concurrent processes never read half a
file). A function that calls jaxlib's own kernels (LAPACK, ...) is never stored (`portable`): loading one
crashed the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import pickle
import threading
import weakref
import zlib
from typing import Callable

import jax
import numpy as np
from jax import export
from jax.experimental import serialize_executable

from engine.caches import cache_folder, cpu_digest, write_atomically

try:  # thread-local: keeps the executable compiled here out of JAX's own cache (it is kept in `.xla`)
    from jax._src.config import persistent_cache_min_compile_time_secs as _jax_cache_threshold
except ImportError:  # another JAX: JAX keeps a copy too; the check before writing still holds
    _jax_cache_threshold = None

log = logging.getLogger(__name__)

_ENGINE = pathlib.Path(__file__).resolve().parents[1]


def enable_compilation_cache() -> None:
    """Keeps XLA executables on disk between runs. $JAX_COMPILATION_CACHE_DIR wins; else
    $XDG_CACHE_HOME/handtailor/jax (~/.cache/handtailor/jax). Silently skipped where not possible."""
    try:
        if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
            return
        path = cache_folder("jax")
        if path is not None:
            jax.config.update("jax_compilation_cache_dir", str(path))
    except Exception as exc:  # noqa: BLE001 - a cache is an optimization only
        log.debug("no JAX compilation cache: %s", exc)


def cache_dir() -> pathlib.Path | None:
    """The folder of the exported functions (inside the compilation cache's), or None when there is none."""
    base = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return pathlib.Path(base) / "handtailor-exported" if base else None


_SOURCE_DIGEST: str | None = None
_HOST_DIGEST: str | None = None
# A compiler option at its default value: the executable XLA makes without it, under another cache key, so
# that this module compiles it rather than JAX's cache loading one (which cannot be serialized again).
_OWN_COMPILE = {"xla_cpu_enable_fast_math": False}
_INSTANCES: weakref.WeakSet = weakref.WeakSet()


def clear_caches() -> None:
    """Forgets every compiled function of this process (JAX's and `Exported`'s), as in a fresh process; the
    files on disk stay."""
    jax.clear_caches()
    for instance in list(_INSTANCES):
        instance._calls.clear()


def source_digest() -> str:
    """sha256 of every engine source file and the JAX versions: what a traced function can depend on."""
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        import jaxlib

        h = hashlib.sha256(f"jax {jax.__version__} jaxlib {jaxlib.__version__} {jax.default_backend()}".encode())
        for path in sorted(_ENGINE.rglob("*.py")):
            h.update(str(path.relative_to(_ENGINE)).encode() + b"\0" + path.read_bytes() + b"\0")
        _SOURCE_DIGEST = h.hexdigest()
    return _SOURCE_DIGEST


def host_digest() -> str:
    """What XLA compiles a CPU executable for: the CPU (`engine.caches.cpu_digest`) and XLA_FLAGS."""
    global _HOST_DIGEST
    if _HOST_DIGEST is None:
        _HOST_DIGEST = hashlib.sha256(f"{cpu_digest()}|{os.environ.get('XLA_FLAGS', '')}".encode()).hexdigest()[:16]
    return _HOST_DIGEST


class Exported:
    """`jax.jit(fn)` whose lowering is kept on disk: calling it with arguments of a signature seen before
    (in this process or an earlier one with the same engine source and JAX) skips tracing and lowering.

    fn: a function of pytrees of arrays, traceable by `jax.jit` with no static arguments.
    name: the files' prefix in `cache_dir()`.
    """

    def __init__(self, fn: Callable, name: str):
        self._fn = fn
        self._name = name
        self._calls: dict = {}  # (treedef, avals) -> jitted call of the leaves
        self._lock = threading.Lock()
        _INSTANCES.add(self)

    def __call__(self, *args):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        sig = (treedef, tuple(jax.api_util.shaped_abstractify(x) for x in leaves))
        call = self._calls.get(sig)
        if call is None:
            with self._lock:
                call = self._calls.get(sig) or self._calls.setdefault(sig, self._load(treedef, sig[1], leaves))
        return call(*leaves)

    def _load(self, treedef, avals, leaves) -> Callable:
        """The call for this signature: its stored executable, else its stored lowering jitted (exported and
        stored when not yet), compiled here and its executable stored."""
        enable_compilation_cache()
        folder = cache_dir()
        if folder is None:  # no cache on disk: plain jit
            return jax.jit(lambda *xs: self._fn(*jax.tree_util.tree_unflatten(treedef, xs)))
        key = hashlib.sha256(f"{source_digest()}|{treedef}|{avals}".encode()).hexdigest()[:40]
        path = folder / f"{self._name}-{key}.jaxexport"
        executable = folder / f"{self._name}-{key}-{host_digest()}.xla"
        compiled = _read_executable(executable)
        if compiled is not None and compiled is not _NOT_KEPT:
            return compiled
        exported = None
        if path.is_file():
            try:
                exported = export.deserialize(bytearray(path.read_bytes()))
            except Exception as exc:  # noqa: BLE001 - unreadable: export it again
                log.debug("ignoring %s: %s", path, exc)
        if exported is None:
            flat = jax.jit(lambda *xs: self._fn(*jax.tree_util.tree_unflatten(treedef, xs)))
            exported = export.export(flat)(*leaves)
            if not portable(exported):
                return flat
            write_atomically(path, exported.serialize())
        jitted = jax.jit(exported.call)
        if compiled is _NOT_KEPT:
            return jitted
        return _compile_and_store(jitted, leaves, executable) or jitted


_NOT_KEPT = object()  # an empty `.xla`: this signature's executable cannot be kept here (`_compile_and_store`)


def _read_executable(path: pathlib.Path):
    """The executable stored at `path`, loaded (callable on the flat arguments); _NOT_KEPT; or None."""
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        if not data:
            return _NOT_KEPT
        payload, in_tree, out_tree = pickle.loads(zlib.decompress(data))
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception as exc:  # noqa: BLE001 - unreadable: compiled and written again
        log.debug("ignoring %s: %s", path, exc)
        return None


def _compile_and_store(jitted, leaves, path: pathlib.Path):
    """`jitted` compiled for `leaves` by this module (`_OWN_COMPILE`) and its executable written to `path`
    once a reloaded copy gives the same outputs on `leaves` bit for bit. Returns the compiled call, or None.
    Where the reloaded copy fails or differs (its compile came from JAX's cache after all: only where a JAX
    without the thread-local threshold kept an earlier one there), an empty file says so and later runs use
    JAX's cache as before, instead of compiling and checking again on every run. Nothing is compiled here
    where the folder cannot be written."""
    if not os.access(path.parent, os.W_OK):
        return None
    try:
        lowered = jitted.lower(*leaves)
        with contextlib.nullcontext() if _jax_cache_threshold is None else _jax_cache_threshold(float("inf")):
            compiled = lowered.compile(_OWN_COMPILE)
    except Exception as exc:  # noqa: BLE001 - an optimization only
        log.debug("could not compile %s: %s", path, exc)
        return None
    try:
        payload, in_tree, out_tree = serialize_executable.serialize(compiled)
        reloaded = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
        bits = lambda out: [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(out)]  # noqa: E731
        same = bits(compiled(*leaves)) == bits(reloaded(*leaves))
    except Exception as exc:  # noqa: BLE001 - e.g. "Function ... not found": serialized without its kernels
        log.debug("not keeping %s: %s", path, exc)
        same, payload = False, None
    if same:
        write_atomically(path, zlib.compress(pickle.dumps((payload, in_tree, out_tree))))  # 2.5 -> 0.5 MB, 8 ms
    else:
        log.debug("not keeping %s: its reloaded executable fails or computes otherwise", path)
        write_atomically(path, b"")
    return compiled


def portable(exported: export.Exported) -> bool:
    """Whether a stored lowering may be called in a later process: not when it calls jaxlib's own kernels
    (`stablehlo.custom_call`: LAPACK for `jnp.linalg.solve`, ...). jaxlib makes those ready only when a
    process first lowers such an op itself; a deserialized module that calls one before that kills the
    process (SIGSEGV; measured with jax 0.7.1, `jnp.linalg.solve` -> lapack_sgetrf_ffi). Such a function is
    jitted as usual and never stored. Checked once, when exporting (the text costs ~80 ms for the tailor):
    a file under this source's key was written by this check."""
    return "stablehlo.custom_call" not in exported.mlir_module()
