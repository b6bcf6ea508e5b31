"""Plain numpy arrays from the restricted unpickler's stand-ins, within a memory bound.

`read_mano_pickle` unpickles (engine.hand_model.unpickler) and then replaces every stand-in, recursively:

- numpy arrays and scalars are rebuilt with `numpy.frombuffer` only after their dtype is a plain number
  (bool, int, uint, float: never object, structured, string or datetime) and the byte count equals
  shape x item size; a refused array makes its field unreadable (an error if the model needs it).
- scipy.sparse matrices become dense arrays (CSC/CSR/COO from `data`/`indices`/`indptr`, numpy only);
  chumpy objects become the plain array in their state, and a few simple chumpy expressions (elementwise
  ops, reshape, transpose, matrix-vector product) are evaluated with numpy.

Memory bound: arrays read from the file's bytes are bounded by the file's size (the loader caps that).
Everything the loader *derives* (a dense copy of a sparse matrix, a broadcast result, a list that numpy
would stack, including a list holding one array many times through the pickle's memo) is sized from its
declared shapes first and counted against `MAX_ARRAY_VALUES` per array and `MAX_DERIVED_VALUES` per file,
before anything is allocated. Nesting deeper than `MAX_NESTING` (or a list holding itself) is refused.
MANO's largest array has 315,090 values (posedirs); all its derived arrays together about 20,000.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from engine.errors import ModelFileError
from engine.hand_model.unpickler import ArrayStub, ChumpyStub, DtypeStub, NdarrayMarker, SparseStub, unpickle

#: Values one derived array may hold (2**24: 128 MiB as float64; MANO needs 12,448).
MAX_ARRAY_VALUES = 1 << 24
#: Values all derived arrays of one file may hold together (2**25: 256 MiB as float64).
MAX_DERIVED_VALUES = 1 << 25
#: Containers nested deeper than this are not a hand model (MANO: a dict of arrays, depth 3 with chumpy).
MAX_NESTING = 32

_PLAIN_KINDS = "biuf"
_DTYPE_SPEC = re.compile(r"[<>|=]?[a-zA-Z?]{1,2}\d{0,2}")


class Unreadable:
    """A pickled field that could not be rebuilt as an array; an error only when the model needs it."""

    def __init__(self, message: str):
        self.message = message


class _Rebuilder:
    """One pass over an unpickled object: stand-ins -> arrays, each object once (the pickle's memo can make
    one object appear many times, or a container hold itself), derived sizes counted before allocating."""

    def __init__(self):
        self.left = MAX_DERIVED_VALUES
        self.done: dict[int, Any] = {}  # id(stand-in or container) -> its plain value
        self.counts: dict[int, int] = {}  # id(plain list/tuple) -> values numpy would stack from it
        self.active: set[int] = set()  # containers being rebuilt (met again: the object holds itself)

    def take(self, n: int, where: str, what: str) -> None:
        if n > MAX_ARRAY_VALUES or n > self.left:
            limit = MAX_ARRAY_VALUES if n > MAX_ARRAY_VALUES else MAX_DERIVED_VALUES
            raise ModelFileError(
                f"{where}: {what} would hold {n:,} values, more than a hand model ever needs (limit "
                f"{limit:,}); the file is corrupt or malicious (nothing was allocated)")
        self.left -= n

    def plain(self, value: Any, where: str, depth: int = 0) -> Any:
        """Replaces stand-ins by plain numpy arrays, recursively (lists, tuples, dicts)."""
        if not isinstance(value, (ArrayStub, ChumpyStub, SparseStub, DtypeStub, dict, list, tuple)):
            return value
        key = id(value)
        if key in self.done:
            return self.done[key]
        if depth > MAX_NESTING or key in self.active:
            raise ModelFileError(f"{where}: containers nested more than {MAX_NESTING} deep (or holding "
                                 "themselves); a hand model is a dict of arrays")
        self.active.add(key)
        try:
            if isinstance(value, ArrayStub):
                out = rebuild_array(value, where)
            elif isinstance(value, ChumpyStub):
                out = _reduce_chumpy(value, where, self, depth + 1)
            elif isinstance(value, SparseStub):
                out = _densify_sparse(value, where, self, depth + 1)
            elif isinstance(value, DtypeStub):
                out = dtype_of(value, where)
            elif isinstance(value, dict):
                out = {k: self.plain(v, where, depth + 1) for k, v in value.items()}
            else:
                items = [self.plain(v, where, depth + 1) for v in value]
                n = self.count(items)
                if n > len(items):  # numpy would stack these into one array: count what that allocates
                    self.take(n, where, "a list of arrays")
                out = type(value)(items)
                self.counts[id(out)] = n
        finally:
            self.active.discard(key)
        self.done[key] = out
        return out

    def count(self, items) -> int:
        """How many values numpy would allocate to stack `items` (plain values; sub-lists already counted)."""
        n = 0
        for item in items:
            if isinstance(item, np.ndarray):
                n += item.size
            elif isinstance(item, (list, tuple)):
                n += self.counts.get(id(item), len(item))
            else:
                n += 1
        return n


def read_mano_pickle(data: bytes, display_name: str = "model.pkl") -> dict[str, Any]:
    """Unpickles an official MANO file with the restricted unpickler -> dict of plain numpy arrays/values.

    Fields that cannot be rebuilt are `Unreadable` (an error only when the model needs them). Raises
    ModelFileError for refused globals, truncated or corrupt data, or a pickle that is not a dict.
    """
    obj = unpickle(data, display_name)
    if not isinstance(obj, dict):
        raise ModelFileError(
            f"{display_name} holds a {type(obj).__name__}, not the dict of arrays of a MANO model file"
        )
    rebuilder = _Rebuilder()
    fields: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if not isinstance(key, str):
            raise ModelFileError(f"{display_name}: a field name is a {type(key).__name__}, not text; not a MANO file")
        try:
            fields[key] = rebuilder.plain(value, f"{display_name}:{key}")
        except ModelFileError as exc:  # only an error if the model needs this field
            fields[key] = Unreadable(str(exc))
    return fields


# ------------------------------------------------------------------------------------------ numpy arrays


def dtype_of(stub: Any, where: str) -> np.dtype:
    """The plain numeric dtype a pickled `numpy.dtype(spec)` + BUILD state describes; refuses anything else."""
    if not isinstance(stub, DtypeStub) or not stub.args:
        raise ModelFileError(f"{where}: an array's dtype is not a numpy dtype; the file is corrupt")
    spec = stub.args[0]
    if isinstance(spec, bytes):
        spec = spec.decode("latin-1")
    if not isinstance(spec, str) or not _DTYPE_SPEC.fullmatch(spec):
        raise ModelFileError(f"{where}: unsupported array dtype {spec!r}; a hand model holds only plain numbers")
    try:
        dtype = np.dtype(spec)
    except TypeError as exc:
        raise ModelFileError(f"{where}: unknown array dtype {spec!r}") from exc
    if dtype.kind not in _PLAIN_KINDS or dtype.names is not None or dtype.subdtype is not None:
        raise ModelFileError(
            f"{where}: arrays of dtype {spec!r} are refused; a hand model holds only plain numbers "
            "(bool, int, uint, float)")
    state = stub.state
    if state is not None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise ModelFileError(f"{where}: a structured or sub-array dtype; a hand model holds only plain numbers")
        order = state[1]
        if order in ("<", ">"):
            dtype = dtype.newbyteorder(order)
        elif order not in ("|", "="):
            raise ModelFileError(f"{where}: unknown byte order {order!r} in an array's dtype")
    return dtype


def _raw_bytes(raw: Any, where: str) -> bytes | bytearray | memoryview:
    if isinstance(raw, str):  # a Python 2 str, decoded with latin-1 by the unpickler
        return raw.encode("latin-1")
    if isinstance(raw, (bytes, bytearray)):
        return raw
    if isinstance(raw, list):
        raise ModelFileError(f"{where}: an array pickled as a list of objects (an object array); refused")
    raise ModelFileError(f"{where}: an array's data is a {type(raw).__name__}, not bytes; the file is corrupt")


def _shape(shape: Any, where: str) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if (not isinstance(shape, (tuple, list)) or len(shape) > 32
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise ModelFileError(f"{where}: an array's shape {shape!r} is not a tuple of sizes; the file is corrupt")
    return tuple(shape)


def rebuild_array(stub: ArrayStub, where: str) -> np.ndarray | np.generic:
    """The array (or numpy scalar) a pickled numpy object describes, read-only, from checked bytes."""
    args = stub.args
    if stub.kind == "scalar":
        if len(args) != 2:
            raise ModelFileError(f"{where}: a numpy scalar with {len(args)} arguments; the file is corrupt")
        dtype = dtype_of(args[0], where)
        raw = _raw_bytes(args[1], where)
        shape, fortran = (), False
    elif stub.kind == "frombuffer":
        if len(args) != 4 or args[3] not in ("C", "F"):
            raise ModelFileError(f"{where}: a protocol 5 numpy array with unexpected arguments; the file is corrupt")
        raw = args[0] if isinstance(args[0], (bytes, bytearray)) else _raw_bytes(args[0], where)
        dtype, shape, fortran = dtype_of(args[1], where), _shape(args[2], where), args[3] == "F"
    else:
        if len(args) != 3 or args[0] is not NdarrayMarker:
            raise ModelFileError(f"{where}: numpy's _reconstruct is only allowed for plain numpy arrays")
        state = stub.state
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, data) -> version 0's 4-tuple
        if not isinstance(state, tuple) or len(state) != 4:
            raise ModelFileError(f"{where}: a numpy array without its data; the file is corrupt")
        shape, dtype, fortran, raw = _shape(state[0], where), dtype_of(state[1], where), bool(state[2]), state[3]
        raw = _raw_bytes(raw, where)
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise ModelFileError(
            f"{where}: an array declares shape {shape} of {dtype} ({count * dtype.itemsize:,} bytes) but holds "
            f"{len(raw):,} bytes; the file is corrupt")
    flat = np.frombuffer(raw, dtype=dtype, count=count)  # a view of the file's bytes: nothing allocated
    if shape == ():
        return flat[0]
    return flat.reshape(shape, order="F" if fortran else "C")


# ----------------------------------------------------------------------------------------------- chumpy

_BINARY_OPS = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
    "true_divide": np.true_divide,
    "power": np.power,
}


def _as_state_dict(state, where: str, name: str) -> dict:
    """A stand-in's pickled state as one dict (`__dict__`, or the (dict, slots dict) pair)."""
    if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
        state = {**(state[0] or {}), **(state[1] or {})}
    if not isinstance(state, dict):
        raise ModelFileError(f"{where}: a pickled {name} object has no state to rebuild its array from")
    return state


def _reduce_chumpy(obj: ChumpyStub, where: str, rebuilder: _Rebuilder, depth: int) -> np.ndarray:
    """The plain array value of a pickled chumpy object (chumpy's `Ch.__getstate__` is its `__dict__`).

    A plain `Ch` keeps its value in `x`; a few simple chumpy expressions (elementwise ops, reshape,
    transpose, matrix-vector product) are evaluated with numpy from their operands, each result sized first.
    """
    name = type(obj).origin
    state = _as_state_dict(obj.state, where, name)
    short = name.rsplit(".", 1)[-1]

    def operand(key):
        value = rebuilder.plain(state[key], where, depth + 1)
        if isinstance(value, (list, tuple)):
            rebuilder.take(rebuilder.count(value), where, f"chumpy operand {key!r}")
        array = np.asarray(value)
        if array.dtype.kind not in _PLAIN_KINDS:
            raise ModelFileError(f"{where}: chumpy operand {key!r} is not numeric ({array.dtype})")
        return array

    try:
        if short in _BINARY_OPS and "a" in state and "b" in state:
            a, b = operand("a"), operand("b")
            rebuilder.take(math.prod(np.broadcast_shapes(a.shape, b.shape)), where, f"the chumpy {short} result")
            return _BINARY_OPS[short](a.astype(np.float64), b.astype(np.float64))
        if short == "negative" and "x" in state:
            x = operand("x")
            rebuilder.take(x.size, where, "the chumpy negative result")
            return -x.astype(np.float64)
        if "x" in state and short in ("Ch", "ChHandle") or ("x" in state and not ({"a", "b"} & set(state))):
            return rebuilder.plain(state["x"], where, depth + 1)
        if short == "Reshape" and "a" in state:
            newshape = state.get("newshape", -1)
            if not (isinstance(newshape, int) or (isinstance(newshape, (tuple, list)) and len(newshape) <= 32
                                                  and all(isinstance(n, int) for n in newshape))):
                raise ValueError(f"newshape {newshape!r} is not a shape")
            return operand("a").reshape(newshape)  # same values: a view or a copy of a counted operand
        if short == "transpose" and "a" in state:
            return np.transpose(operand("a"), state.get("axes"))
        if short == "MatVecMult" and "mtx" in state and "vec" in state:
            mtx, vec = operand("mtx"), operand("vec").ravel()
            if mtx.ndim != 2 or mtx.shape[1] != vec.size:
                raise ValueError(f"matrix {mtx.shape} times vector ({vec.size},)")
            rebuilder.take(mtx.shape[0], where, "the chumpy MatVecMult result")
            return (mtx.astype(np.float64) @ vec.astype(np.float64)).reshape(-1, 3)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{where}: cannot evaluate the pickled {name} expression: {exc}") from exc
    raise ModelFileError(
        f"{where}: the pickled chumpy expression {name} cannot be reduced to an array without running "
        "chumpy; save the model with plain arrays (e.g. np.asarray(value)) and load that file"
    )


# ----------------------------------------------------------------------------------------- scipy.sparse


def _densify_sparse(obj: SparseStub, where: str, rebuilder: _Rebuilder, depth: int) -> np.ndarray:
    """Rebuilds a pickled scipy.sparse CSC/CSR/COO matrix as a dense float64 array with numpy only."""
    name = type(obj).origin
    state = _as_state_dict(obj.state, where, name)
    shape = state.get("_shape", state.get("shape"))
    try:
        n_rows, n_cols = (int(s) for s in shape)
        if n_rows < 0 or n_cols < 0:
            raise ValueError(f"negative shape {shape}")
        rebuilder.take(n_rows * n_cols, where, f"the dense copy of a {n_rows:,} x {n_cols:,} sparse matrix")

        def part(key, dtype):
            value = np.asarray(rebuilder.plain(state[key], where, depth + 1))
            if value.dtype.kind not in _PLAIN_KINDS or value.ndim != 1:
                raise ValueError(f"{key!r} is not a 1-D numeric array")
            return value.astype(dtype)

        data = part("data", np.float64)
        out = np.zeros((n_rows, n_cols), dtype=np.float64)
        if "indptr" in state:
            indices = part("indices", np.int64)
            indptr = part("indptr", np.int64)
            csc = "csc" in name.rsplit(".", 1)[-1]
            n_major = n_cols if csc else n_rows
            if indptr.shape != (n_major + 1,) or indptr[-1] != data.size or indices.size != data.size:
                raise ValueError("indptr/indices/data lengths disagree")
            if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
                raise ValueError("indptr is not increasing from 0")
            if indices.size and indices.min() < 0:
                raise ValueError("negative indices")
            major = np.repeat(np.arange(n_major), np.diff(indptr))
            if csc:
                np.add.at(out, (indices, major), data)
            else:
                np.add.at(out, (major, indices), data)
        else:
            rows = part("row", np.int64)
            cols = part("col", np.int64)
            if rows.size != data.size or cols.size != data.size:
                raise ValueError("row/col/data lengths disagree")
            if data.size and min(rows.min(), cols.min()) < 0:
                raise ValueError("negative indices")
            np.add.at(out, (rows, cols), data)
        return out
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"{where}: corrupt sparse matrix {name} ({exc}); re-download the file") from exc
