"""The tailor's compiled code kept on disk between runs, so a capture's first fit neither traces nor compiles.

One folder ($JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/handtailor/jax, i.e. ~/.cache/handtailor/jax)
holds two caches:
- JAX's persistent compilation cache: XLA executables keyed by their HLO (skips XLA's compile, ~7 s for
  the tailor on 2 cores the first time ever);
- `Exported`: a jitted function's lowering (`jax.export`, serialized StableHLO) keyed by the engine's source,
  the JAX version and the arguments' shapes. Loading it skips tracing and lowering, which were the rest of
  a capture's first fit (1.3 s of tracing + 0.4 s of lowering of the tailor's solve on a 2-core machine,
  against 0.35 s to load and call the stored one).
A file that is missing, stale or unreadable costs only the time it would have saved: the function is traced
as usual and the file written anew (atomically, so concurrent processes never read half a file). A
function that calls jaxlib's own kernels (LAPACK, ...) is never stored (`portable`): loading one crashed
the process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import tempfile
import threading
import weakref
from typing import Callable

import jax
from jax import export

log = logging.getLogger(__name__)

_ENGINE = pathlib.Path(__file__).resolve().parents[1]


def enable_compilation_cache() -> None:
    """Keeps XLA executables on disk between runs. $JAX_COMPILATION_CACHE_DIR wins; else
    $XDG_CACHE_HOME/handtailor/jax (~/.cache/handtailor/jax). Silently skipped where not possible."""
    try:
        if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
            return
        base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
        path = base / "handtailor" / "jax"
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
    except Exception as exc:  # noqa: BLE001 - a cache is an optimization only
        log.debug("no JAX compilation cache: %s", exc)


def cache_dir() -> pathlib.Path | None:
    """The folder of the exported functions (inside the compilation cache's), or None when there is none."""
    base = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return pathlib.Path(base) / "handtailor-exported" if base else None


_SOURCE_DIGEST: str | None = None
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
        """The jitted call of the stored lowering for this signature, exported and stored when not yet."""
        enable_compilation_cache()
        folder = cache_dir()
        if folder is None:  # no cache on disk: plain jit
            return jax.jit(lambda *xs: self._fn(*jax.tree_util.tree_unflatten(treedef, xs)))
        key = hashlib.sha256(f"{source_digest()}|{treedef}|{avals}".encode()).hexdigest()[:40]
        path = folder / f"{self._name}-{key}.jaxexport"
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
            _write_atomically(path, exported.serialize())
        return jax.jit(exported.call)


def portable(exported: export.Exported) -> bool:
    """Whether a stored lowering may be called in a later process: not when it calls jaxlib's own kernels
    (`stablehlo.custom_call`: LAPACK for `jnp.linalg.solve`, ...). jaxlib makes those ready only when a
    process first lowers such an op itself; a deserialized module that calls one before that kills the
    process (SIGSEGV; measured with jax 0.7.1, `jnp.linalg.solve` -> lapack_sgetrf_ffi). Such a function is
    jitted as usual and never stored. Checked once, when exporting (the text costs ~80 ms for the tailor):
    a file under this source's key was written by this check."""
    return "stablehlo.custom_call" not in exported.mlir_module()


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
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
    except OSError as exc:  # a read-only or full disk: the next run traces again
        log.debug("could not keep %s: %s", path, exc)
