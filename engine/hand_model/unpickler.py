"""The restricted unpickler for official MANO `.pkl` files: it hands out inert stand-ins, never numpy.

Official MANO files are Python-2 pickles holding numpy arrays, chumpy `Ch` objects and
`scipy.sparse.csc_matrix`. `find_class` answers only these names, each with a stand-in of ours that
records its arguments and pickled state and runs nothing:

- numpy's array pickle (`multiarray._reconstruct(ndarray, ...)` + BUILD state, `multiarray.scalar`,
  `numeric._frombuffer` of protocol 5) -> `ArrayStub`; `numpy.dtype` -> `DtypeStub`. numpy itself is
  never called with pickled arguments: `numpy.ndarray` called directly (a raw buffer cast to any dtype,
  e.g. object pointers) is refused outright, and arrays are rebuilt later by `pickled_arrays` from plain
  numeric dtypes and checked byte counts only.
- chumpy objects and scipy.sparse matrices -> `ChumpyStub` / `SparseStub` (their pickled state; chumpy and
  scipy are never imported).
- Python's `set`/`frozenset`/`object`, `bytes()` (empty), `copyreg._reconstructor` (for the stand-ins only)
  and `_codecs.encode` (latin-1 text -> bytes, as Python 3 pickles bytes for protocol < 3).

Every other global is refused with `ModelFileError` naming it, before anything is called: no code from a
model file ever runs, and no numpy object is made from its bytes until they have been checked.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from engine.errors import ModelFileError


class _LockedClass(type):
    """Metaclass of the stand-in classes: a pickle cannot rewrite their attributes (BUILD on a class)."""

    def __setattr__(cls, name, value):
        raise pickle.UnpicklingError(f"refusing to set attribute {name!r} on {cls.__name__}")


class Stub(metaclass=_LockedClass):
    """Stand-in for a pickled object: keeps its constructor arguments and pickled state, runs nothing."""

    origin = "?"
    _state = None
    _args = ()

    def __init__(self, *args):
        object.__setattr__(self, "_args", args)
        object.__setattr__(self, "_state", None)

    def __setstate__(self, state):
        object.__setattr__(self, "_state", state)

    def __setattr__(self, name, value):  # BUILD without __setstate__ never happens; be explicit anyway
        raise pickle.UnpicklingError(f"refusing to set attribute {name!r} on a {self.origin} stand-in")

    @property
    def args(self) -> tuple:
        return self._args

    @property
    def state(self):
        return self._state


class ChumpyStub(Stub):
    origin = "chumpy"


class SparseStub(Stub):
    origin = "scipy.sparse"


class DtypeStub(Stub):
    """`numpy.dtype(spec, align, copy)` + BUILD state, recorded; `pickled_arrays.dtype_of` checks it."""

    origin = "numpy.dtype"


class ArrayStub(Stub):
    """A pickled numpy array or scalar, recorded; `pickled_arrays` rebuilds it after checking it.

    kind: "reconstruct" (args: subtype, shape, typecode; the array comes with its BUILD state),
    "scalar" (args: dtype, raw bytes) or "frombuffer" (args: buffer, dtype, shape, order)."""

    origin = "numpy.ndarray"
    kind = "reconstruct"


class _ScalarStub(ArrayStub):
    kind = "scalar"


class _FrombufferStub(ArrayStub):
    kind = "frombuffer"


class NdarrayMarker(metaclass=_LockedClass):
    """What the pickle gets for `numpy.ndarray`: only an argument of `_reconstruct`, never called."""

    def __new__(cls, *args, **kwargs):
        raise ModelFileError(
            "it calls numpy.ndarray directly (an array cast from raw bytes, which can forge object "
            "pointers); numpy's own pickles never do this: the file may be malicious (nothing from it was run)")


def _stub_class(base: type, module: str, name: str) -> type:
    return _LockedClass(name, (base,), {"origin": f"{module}.{name}", "__module__": __name__})


def _safe_reconstructor(cls, base, state):
    """copyreg._reconstructor restricted to chumpy/sparse stand-ins (protocol 0/1 pickles of objects)."""
    if isinstance(cls, type) and issubclass(cls, (ChumpyStub, SparseStub)) and base is object and state is None:
        return cls()
    raise pickle.UnpicklingError(f"copy_reg._reconstructor is only allowed for array objects, got {cls!r}")


def _safe_codecs_encode(text, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as Python 3 pickles (protocol < 3) use it for bytes: latin-1 text -> bytes only."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed to rebuild latin-1 bytes")
    return text.encode("latin-1", errors="strict")


def _empty_bytes(*args):
    """`bytes()`: how Python 3 pickles an empty bytes object for protocol < 3 (an empty array's data)."""
    if args:
        raise pickle.UnpicklingError("builtins.bytes is only allowed without arguments (empty bytes)")
    return b""


_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): ArrayStub for m in _MULTIARRAY},
    **{(m, "scalar"): _ScalarStub for m in _MULTIARRAY},
    **{(m, "_frombuffer"): _FrombufferStub for m in _NUMERIC},
    **{(m, "ndarray"): NdarrayMarker for m in ("numpy", *_MULTIARRAY)},
    **{(m, "dtype"): DtypeStub for m in ("numpy", *_MULTIARRAY)},
}

_SPARSE_MODULES = (
    "scipy.sparse",
    "scipy.sparse.csc",
    "scipy.sparse.csr",
    "scipy.sparse.coo",
    "scipy.sparse._csc",
    "scipy.sparse._csr",
    "scipy.sparse._coo",
    "scipy.sparse.compressed",
    "scipy.sparse._compressed",
)
_SPARSE_NAMES = ("csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array")


def _python3_name(module: str, name: str) -> str:
    """'module.name' as Python 3 knows it (Python 2 pickles say __builtin__.eval, commands.call)."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` hands out inert stand-ins and a few harmless builtins only."""

    def __init__(self, file, display_name: str):
        super().__init__(file, encoding="latin1")
        self._name = display_name
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[key]
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _safe_codecs_encode
        if module in ("__builtin__", "builtins"):
            if name == "object":
                return object
            if name in ("set", "frozenset"):
                return set if name == "set" else frozenset
            if name == "bytes":
                return _empty_bytes
        if module == "chumpy" or module.startswith("chumpy."):
            if key not in self._stubs:
                self._stubs[key] = _stub_class(ChumpyStub, module, name)
            return self._stubs[key]
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            if key not in self._stubs:
                self._stubs[key] = _stub_class(SparseStub, module, name)
            return self._stubs[key]
        raise ModelFileError(
            f"refusing to load {self._name}: it references {_python3_name(module, name)}, which a hand "
            "model never needs; the file may be malicious (nothing from it was run)"
        )

    def persistent_load(self, pid):
        raise ModelFileError(f"refusing to load {self._name}: it uses persistent ids, which a hand model never needs")


def unpickle(data: bytes, display_name: str) -> Any:
    """The pickle's object with stand-ins in place of arrays, dtypes, chumpy and sparse objects.

    Raises ModelFileError for refused globals, truncated or corrupt data."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), display_name).load()
    except ModelFileError as exc:
        if str(exc).startswith("it calls numpy.ndarray"):
            raise ModelFileError(f"refusing to load {display_name}: {exc}") from None
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, RecursionError, UnicodeDecodeError) as exc:
        text = str(exc)
        if isinstance(exc, EOFError) or "truncated" in text:
            raise ModelFileError(
                f"truncated file: {display_name} ends early ({text or 'unexpected end of data'}); "
                "re-download it"
            ) from None
        if isinstance(exc, pickle.UnpicklingError) and "invalid load key" in text:
            raise ModelFileError(
                f"{display_name} is neither a pickle (.pkl) nor an .npz archive ({text}): expected an "
                "official MANO .pkl or a hand model .npz"
            ) from None
        raise ModelFileError(f"corrupt file: {display_name} could not be unpickled ({type(exc).__name__}: "
                             f"{text[:200]}); re-download it") from None
