"""Loading hand model files: our `.npz` and official MANO `.pkl`, safely, with errors a person can act on.

One loader for every variant (style anchor 3). Official MANO files are Python-2 pickles holding chumpy
`Ch` objects and `scipy.sparse.csc_matrix`; they are read with `_RestrictedUnpickler`, which only rebuilds
arrays: numpy's array/dtype/scalar reconstruction, scipy sparse matrices (rebuilt densely from their
pickled `data`/`indices`/`indptr` with numpy, no scipy code runs), chumpy objects (reduced to the plain array
in their pickled state, chumpy is never imported), Python's `set`/`object`, `copyreg._reconstructor` (for
those stand-ins only) and `_codecs.encode` (latin-1 text -> bytes, as Python 3 pickles bytes).
Every other global is refused with `ModelFileError` naming it, before anything is called: no code from a
model file ever runs.

Official layout and the MANO_LEFT fix: a pickle is "official MANO" when it has 778 vertices and any of
MANO's prior fields (`hands_components`, `hands_mean`, `hands_coeffs`, `bs_style`, `bs_type`). For an
official LEFT file the known defect of its shape directions is fixed on load (`shapedirs[:, 0, :] *= -1`,
see notes/smplx-mano.md) and `HandModel.fixes` records it. A pickle's side comes from its file name
(`LEFT`/`RIGHT`, as smplx does), else from the `side` argument.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import pathlib
import pickle
import zipfile
from typing import Any

import numpy as np

from engine.errors import InputError, ModelFileError
from engine.hand_model.constants import (
    MANO_N_VERTICES,
    MANO_PARENTS,
    MANO_TIP_VERTEX_IDS,
    N_JOINTS,
    N_POSE_CORRECTIVES,
    N_SHAPE,
    SIDES,
)

log = logging.getLogger(__name__)

REPO_DIR = pathlib.Path(__file__).resolve().parents[2]
OPEN_HAND_DIR = REPO_DIR / "models" / "open_hand"

# A pickle of a dict starts with PROTO (protocol >= 2), or MARK / EMPTY_DICT / GLOBAL (protocols 0-1).
_PICKLE_FIRST_BYTES = (b"\x80", b"(", b"}", b"c")

_PKL_PRIOR_FIELDS = ("hands_components", "hands_mean", "hands_coeffs", "bs_style", "bs_type")


@dataclasses.dataclass(frozen=True, eq=False)
class HandModel:
    """A MANO-format hand model. Arrays are float64 (faces int32, ids int64) and read-only.

    Shapes: V vertices, F faces, J = 16 joints.
        v_template (V, 3) rest mesh, meters; faces (F, 3) int32; J_regressor (J, V) dense;
        weights (V, J); parents (J,) int64 (= MANO_PARENTS); shapedirs (V, 3, 10);
        posedirs (V, 3, 135) (zeros when the model has no pose correctives);
        tip_vertex_ids (5,) thumb, index, middle, ring, pinky; joint_limits (J, 3, 2) radians or None
        (bounds on the axis-angle components of each local rotation, in the rest-pose axes).
    """

    name: str
    side: str
    path: str
    sha256: str
    v_template: np.ndarray
    faces: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    tip_vertex_ids: np.ndarray
    joint_limits: np.ndarray | None
    format: str = "npz"  # "npz" (ours) or "mano_pkl"
    joint_limit_axes: str = ""
    fixes: tuple[str, ...] = ()  # what the loader changed, e.g. the official MANO_LEFT shapedirs fix

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def has_pose_correctives(self) -> bool:
        return bool(np.any(self.posedirs != 0.0))

    @property
    def has_joint_limits(self) -> bool:
        return self.joint_limits is not None

    def shaped_vertices(self, beta: np.ndarray | None = None) -> np.ndarray:
        """Rest mesh for shape beta (10,) (None: zeros) -> (V, 3)."""
        if beta is None:
            return self.v_template.copy()
        return self.v_template + np.einsum("vcs,s->vc", self.shapedirs, np.asarray(beta, np.float64))

    def rest_joints(self, beta: np.ndarray | None = None) -> np.ndarray:
        """J(beta) = J_regressor @ (v_template + shapedirs . beta): (16, 3), meters."""
        return self.J_regressor @ self.shaped_vertices(beta)


def default_model_path(side: str = "right") -> pathlib.Path:
    """Path of the shipped open hand model for `side` ("right" or "left")."""
    _check_side(side)
    return OPEN_HAND_DIR / f"open_hand_{side}.npz"


def load_hand_model(path: str | os.PathLike | None = None, side: str | None = "right") -> HandModel:
    """Loads and validates a hand model.

    path: None (the shipped open model for `side`), an `.npz` (ours), an official MANO `.pkl` (restricted
    unpickler), or a folder holding `MANO_RIGHT.pkl` / `MANO_LEFT.pkl` or `open_hand_{right,left}.npz`
    (`side` picks; also `models/MANO_*.pkl` under the unpacked MANO download). For a single file the side
    comes from the file (npz `side` key; pkl file name), else from `side`; a file of the other side than
    an explicit `side` is used as it is, with a warning. side=None: whatever the file says (right when a
    folder or the default is meant). Results are cached per (file, content sha256, side); the returned model is immutable.
    Raises ModelFileError (missing, refused, broken or not a hand model).
    """
    asked = side
    side = side or "right"
    _check_side(side)
    if path is None:
        file = default_model_path(side)
        if not file.is_file():
            raise ModelFileError(
                f"the shipped open hand model {file} is missing: regenerate it with the script in "
                f"{OPEN_HAND_DIR} or pass the path of a hand model file"
            )
    else:
        file = _resolve(pathlib.Path(path).expanduser(), side)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read hand model {file}: {exc.strerror or exc}") from exc
    model = _load_cached(str(file.resolve()), hashlib.sha256(data).hexdigest(), side, data)
    if asked is not None and model.side != asked:
        log.warning("%s is a %s hand model, but a %s hand was asked for: using it as a %s hand (pass a folder "
                    "holding both sides to pick by side)", file.name, model.side, asked, model.side)
    return model


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise InputError(f"side must be 'right' or 'left', got {side!r}")


def _resolve(path: pathlib.Path, side: str) -> pathlib.Path:
    if path.is_dir():
        candidates = [
            path / f"MANO_{side.upper()}.pkl",
            path / f"open_hand_{side}.npz",
            path / "models" / f"MANO_{side.upper()}.pkl",  # the root of the unpacked MANO download
        ]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        names = " or ".join(str(c.relative_to(path)) for c in candidates)
        raise ModelFileError(f"folder {path} holds no {side} hand model: expected {names} in it")
    if not path.exists():
        raise ModelFileError(f"hand model file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"hand model path {path} is not a file")
    return path


_CACHE: dict[tuple[str, str, str], HandModel] = {}
_CACHE_SIZE = 16


def _load_cached(file: str, sha256: str, side: str, data: bytes) -> HandModel:
    """Parses and validates once per (path, content, side); the model is immutable, so sharing is safe."""
    key = (file, sha256, side)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _parse(pathlib.Path(file), sha256, side, data)
    return _CACHE[key]


def _parse(path: pathlib.Path, sha256: str, side: str, data: bytes) -> HandModel:
    if len(data) == 0:
        raise ModelFileError(f"{path.name} is empty (0 bytes): re-download or regenerate it")
    if data[:4] == b"PK\x03\x04" or data[:2] == b"PK":
        fields = _read_npz(data, path)
        fmt = "npz"
    elif data[:6] == b"\x93NUMPY":
        raise ModelFileError(
            f"{path.name} is a single numpy array (.npy), not a hand model: expected a MANO .pkl or a "
            "hand model .npz with v_template, f, J_regressor, weights, kintree_table, shapedirs"
        )
    elif data[:1] in _PICKLE_FIRST_BYTES:
        fields = read_mano_pickle(data, path.name)
        fmt = "mano_pkl"
    else:
        raise ModelFileError(
            f"{path.name} is neither a pickle (.pkl) nor an .npz archive (it starts with {data[:8]!r}): "
            "expected an official MANO .pkl or a hand model .npz"
        )
    return build_hand_model(fields, path=path, sha256=sha256, fmt=fmt, side=side)


# --------------------------------------------------------------------------------------------------
# npz


def _read_npz(data: bytes, path: pathlib.Path) -> dict[str, Any]:
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        fields = {}
        for key in archive.files:
            try:
                fields[key] = archive[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise ModelFileError(
                        f"{path.name}: field {key!r} is a pickled object array; hand model .npz files hold "
                        "plain arrays only (refusing to unpickle it)"
                    ) from exc
                raise
        return fields
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zipfile.LargeZipFile) as exc:
        if isinstance(exc, zipfile.BadZipFile) or "truncat" in str(exc).lower() or isinstance(exc, EOFError):
            raise ModelFileError(
                f"truncated or corrupt file: {path.name} is not a complete .npz archive ({exc}); "
                "re-download or regenerate it"
            ) from exc
        raise ModelFileError(f"cannot read {path.name} as .npz: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Restricted unpickler


class _LockedClass(type):
    """Metaclass of the stand-in classes: a pickle cannot rewrite their attributes (BUILD on a class)."""

    def __setattr__(cls, name, value):
        raise pickle.UnpicklingError(f"refusing to set attribute {name!r} on {cls.__name__}")


class _Stub(metaclass=_LockedClass):
    """Stand-in for a pickled chumpy / scipy.sparse object: keeps its pickled state, runs nothing."""

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


class _ChumpyStub(_Stub):
    origin = "chumpy"


class _SparseStub(_Stub):
    origin = "scipy.sparse"


def _stub_class(base: type, module: str, name: str) -> type:
    return _LockedClass(name, (base,), {"origin": f"{module}.{name}", "__module__": __name__})


def _safe_reconstructor(cls, base, state):
    """copyreg._reconstructor restricted to our stand-ins (protocol 0/1 pickles of new-style objects)."""
    if isinstance(cls, type) and issubclass(cls, _Stub) and base is object and state is None:
        return cls()
    raise pickle.UnpicklingError(f"copy_reg._reconstructor is only allowed for array objects, got {cls!r}")


def _safe_codecs_encode(text, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as Python 3 pickles (protocol < 3) use it for bytes: latin-1 text -> bytes only."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed to rebuild latin-1 bytes")
    return text.encode("latin-1", errors="strict")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray

    allowed = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "ndarray")] = np.ndarray
        allowed[(module, "dtype")] = np.dtype
    return allowed


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


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` hands out array-rebuilding callables and inert stand-ins only."""

    def __init__(self, file, display_name: str):
        super().__init__(file, encoding="latin1")
        self._name = display_name
        self._numpy = _numpy_globals()
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in self._numpy:
            return self._numpy[key]
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _safe_codecs_encode
        if module in ("__builtin__", "builtins") and name == "object":
            return object
        if module in ("__builtin__", "builtins") and name in ("set", "frozenset"):
            return set if name == "set" else frozenset
        if module == "chumpy" or module.startswith("chumpy."):
            if key not in self._stubs:
                self._stubs[key] = _stub_class(_ChumpyStub, module, name)
            return self._stubs[key]
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            if key not in self._stubs:
                self._stubs[key] = _stub_class(_SparseStub, module, name)
            return self._stubs[key]
        raise ModelFileError(
            f"refusing to load {self._name}: it references {_python3_name(module, name)}, which a hand "
            "model never needs; the file may be malicious (nothing from it was run)"
        )

    def persistent_load(self, pid):
        raise ModelFileError(f"refusing to load {self._name}: it uses persistent ids, which a hand model never needs")


def read_mano_pickle(data: bytes, display_name: str = "model.pkl") -> dict[str, Any]:
    """Unpickles an official MANO file with the restricted unpickler -> dict of plain numpy arrays/values.

    Raises ModelFileError for refused globals, truncated or corrupt data, or a pickle that is not a dict.
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), display_name).load()
    except ModelFileError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, RecursionError, UnicodeDecodeError) as exc:
        text = str(exc)
        if isinstance(exc, EOFError) or "truncated" in text:
            raise ModelFileError(
                f"truncated file: {display_name} ends early ({text or 'unexpected end of data'}); "
                "re-download it"
            ) from exc
        if isinstance(exc, pickle.UnpicklingError) and "invalid load key" in text:
            raise ModelFileError(
                f"{display_name} is neither a pickle (.pkl) nor an .npz archive ({text}): expected an "
                "official MANO .pkl or a hand model .npz"
            ) from exc
        raise ModelFileError(f"corrupt file: {display_name} could not be unpickled ({type(exc).__name__}: {text}); re-download it") from exc
    if not isinstance(obj, dict):
        raise ModelFileError(
            f"{display_name} holds a {type(obj).__name__}, not the dict of arrays of a MANO model file"
        )
    fields: dict[str, Any] = {}
    for key, value in obj.items():
        try:
            fields[str(key)] = _plain(value, f"{display_name}:{key}")
        except ModelFileError as exc:  # only an error if the model needs this field
            fields[str(key)] = _Unreadable(str(exc))
    return fields


class _Unreadable:
    """A pickled field that could not be rebuilt as an array; an error only when the model needs it."""

    def __init__(self, message: str):
        self.message = message


_BINARY_OPS = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
    "true_divide": np.true_divide,
    "power": np.power,
}


def _plain(value: Any, where: str) -> Any:
    """Replaces stand-ins by plain numpy arrays, recursively (lists, tuples, dicts)."""
    if isinstance(value, _ChumpyStub):
        return _reduce_chumpy(value, where)
    if isinstance(value, _SparseStub):
        return _densify_sparse(value, where)
    if isinstance(value, dict):
        return {k: _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where) for v in value)
    return value


def _reduce_chumpy(obj: _ChumpyStub, where: str) -> np.ndarray:
    """The plain array value of a pickled chumpy object (chumpy's `Ch.__getstate__` is its `__dict__`).

    A plain `Ch` keeps its value in `x`; a few simple chumpy expressions (elementwise ops, reshape,
    transpose, matrix-vector product) are evaluated with numpy from their operands.
    """
    state = obj._state
    name = type(obj).origin
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}
    if not isinstance(state, dict):
        raise ModelFileError(f"{where}: a pickled {name} object has no state to rebuild its array from")
    short = name.rsplit(".", 1)[-1]

    def operand(key):
        return np.asarray(_plain(state[key], where), dtype=np.float64)

    try:
        if short in _BINARY_OPS and "a" in state and "b" in state:
            return _BINARY_OPS[short](operand("a"), operand("b"))
        if short == "negative" and "x" in state:
            return -operand("x")
        if "x" in state and short in ("Ch", "ChHandle") or ("x" in state and not ({"a", "b"} & set(state))):
            return np.asarray(_plain(state["x"], where))
        if short == "Reshape" and "a" in state:
            return operand("a").reshape(state.get("newshape", -1))
        if short == "transpose" and "a" in state:
            return np.transpose(operand("a"), state.get("axes"))
        if short == "MatVecMult" and "mtx" in state and "vec" in state:
            mtx = _plain(state["mtx"], where)
            return (np.asarray(mtx, np.float64) @ operand("vec").ravel()).reshape(-1, 3)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{where}: cannot evaluate the pickled {name} expression: {exc}") from exc
    raise ModelFileError(
        f"{where}: the pickled chumpy expression {name} cannot be reduced to an array without running "
        "chumpy; save the model with plain arrays (e.g. np.asarray(value)) and load that file"
    )


def _densify_sparse(obj: _SparseStub, where: str) -> np.ndarray:
    """Rebuilds a pickled scipy.sparse CSC/CSR/COO matrix as a dense float64 array with numpy only."""
    state = obj._state
    name = type(obj).origin
    if isinstance(state, tuple) and len(state) == 2:
        state = {**(state[0] or {}), **(state[1] or {})}
    if not isinstance(state, dict):
        raise ModelFileError(f"{where}: a pickled {name} has no state to rebuild it from")
    shape = state.get("_shape", state.get("shape"))
    try:
        n_rows, n_cols = (int(s) for s in shape)
        out = np.zeros((n_rows, n_cols), dtype=np.float64)
        data = np.asarray(state["data"], dtype=np.float64)
        if "indptr" in state:
            indices = np.asarray(state["indices"], dtype=np.int64)
            indptr = np.asarray(state["indptr"], dtype=np.int64)
            csc = "csc" in name.rsplit(".", 1)[-1]
            n_major = n_cols if csc else n_rows
            if indptr.shape != (n_major + 1,) or indptr[-1] != data.size or indices.size != data.size:
                raise ValueError("indptr/indices/data lengths disagree")
            major = np.repeat(np.arange(n_major), np.diff(indptr))
            if csc:
                np.add.at(out, (indices, major), data)
            else:
                np.add.at(out, (major, indices), data)
        else:
            rows = np.asarray(state["row"], dtype=np.int64)
            cols = np.asarray(state["col"], dtype=np.int64)
            np.add.at(out, (rows, cols), data)
        return out
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"{where}: corrupt sparse matrix {name} ({exc}); re-download the file") from exc


# --------------------------------------------------------------------------------------------------
# Validation


def _other_model_message(n_vertices: int, n_joints: int | None) -> str | None:
    known = {
        6890: "an SMPL body model",
        10475: "an SMPL-X body model",
        5023: "a FLAME head model",
    }
    joints = {24: "an SMPL body model", 52: "an SMPL-H body model", 55: "an SMPL-X body model", 5: "a FLAME head model"}
    what = known.get(n_vertices) or (joints.get(n_joints) if n_joints is not None else None)
    if what is None:
        return None
    joint_text = f", {n_joints} joints" if n_joints is not None else ""
    return (
        f"this is {what} ({n_vertices} vertices{joint_text}), not MANO: point the engine at MANO_RIGHT.pkl / "
        "MANO_LEFT.pkl from the MANO download (mano.is.tue.mpg.de) or at a hand model .npz"
    )


def _as_float(fields: dict, key: str, name: str) -> np.ndarray:
    value = fields[key]
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any odd object: report it as a bad field
        raise ModelFileError(f"{name}: field {key!r} is not an array ({type(value).__name__})") from exc
    if array.dtype.kind not in "biuf":
        raise ModelFileError(f"{name}: field {key!r} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ModelFileError(f"{name}: field {key!r} holds NaN or infinite values; the file is corrupt")
    return array


def _expect_shape(array: np.ndarray, expected: tuple, key: str, name: str, meaning: str) -> None:
    if array.shape != expected:
        raise ModelFileError(
            f"{name}: field {key!r} has shape {tuple(array.shape)}, expected {expected} ({meaning})"
        )


def _text(value: Any, default: str = "") -> str:
    if value is None:
        return default
    array = np.asarray(value)
    if array.shape == () and array.dtype.kind in "US":
        return str(array.item().decode() if isinstance(array.item(), bytes) else array.item())
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    return default


def build_hand_model(
    fields: dict[str, Any],
    *,
    path: pathlib.Path | str = "",
    sha256: str = "",
    fmt: str = "npz",
    side: str = "right",
) -> HandModel:
    """Validates raw fields (MANO names) and builds a HandModel. Raises ModelFileError naming what is wrong."""
    path = pathlib.Path(path) if path else pathlib.Path("<memory>")
    name = path.name
    used = ("v_template", "f", "J_regressor", "weights", "kintree_table", "shapedirs", "posedirs",
            "tip_vertex_ids", "joint_limits", "name", "side", "joint_limit_axes")
    unreadable = {k: fields[k] for k in used if isinstance(fields.get(k), _Unreadable)}
    fields = {k: v for k, v in fields.items() if not isinstance(v, _Unreadable)}
    if "v_template" in fields:
        try:
            template_shape = np.shape(fields["v_template"])
        except Exception:  # noqa: BLE001
            template_shape = ()
        n_joints = None
        if "kintree_table" in fields:
            kt = np.shape(fields["kintree_table"])
            n_joints = kt[1] if len(kt) == 2 else None
        elif "J_regressor" in fields:
            n_joints = np.shape(fields["J_regressor"])[0] if len(np.shape(fields["J_regressor"])) == 2 else None
        if len(template_shape) == 2 and (template_shape[0] != MANO_N_VERTICES or n_joints != N_JOINTS):
            other = _other_model_message(template_shape[0], n_joints)
            if other:
                raise ModelFileError(f"{name}: {other}")

    if unreadable:
        raise ModelFileError(next(iter(unreadable.values())).message)
    required = ("v_template", "f", "J_regressor", "weights", "kintree_table", "shapedirs")
    missing = [k for k in required if k not in fields]
    if missing:
        present = ", ".join(sorted(fields)) or "nothing"
        raise ModelFileError(
            f"{name} is not a complete hand model: missing field(s) {', '.join(missing)} "
            f"(it holds {present}); expected a MANO .pkl or a hand model .npz"
        )

    v_template = _as_float(fields, "v_template", name)
    if v_template.ndim != 2 or v_template.shape[1] != 3 or v_template.shape[0] < 4:
        raise ModelFileError(f"{name}: field 'v_template' has shape {v_template.shape}, expected (V, 3) vertices")
    n_vertices = v_template.shape[0]

    faces_raw = np.asarray(fields["f"])
    if faces_raw.dtype.kind not in "iu" and not (
        faces_raw.dtype.kind == "f" and np.all(np.mod(faces_raw, 1) == 0)
    ):
        raise ModelFileError(f"{name}: field 'f' must hold integer vertex indices, got dtype {faces_raw.dtype}")
    if faces_raw.ndim != 2 or faces_raw.shape[1] != 3 or faces_raw.shape[0] == 0:
        raise ModelFileError(f"{name}: field 'f' has shape {faces_raw.shape}, expected (F, 3) triangles")
    if faces_raw.min() < 0 or faces_raw.max() >= n_vertices:
        raise ModelFileError(
            f"{name}: field 'f' indexes vertex {int(faces_raw.max())} (or {int(faces_raw.min())}) but the "
            f"template has {n_vertices} vertices (0..{n_vertices - 1})"
        )
    faces = faces_raw.astype(np.int32)

    J_regressor = _as_float(fields, "J_regressor", name)
    _expect_shape(J_regressor, (N_JOINTS, n_vertices), "J_regressor", name, "16 joints x V vertices")
    weights = _as_float(fields, "weights", name)
    _expect_shape(weights, (n_vertices, N_JOINTS), "weights", name, "V vertices x 16 joints")
    sums = weights.sum(axis=1)
    if np.max(np.abs(sums - 1.0)) > 1e-3:
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise ModelFileError(
            f"{name}: skinning weights of vertex {bad} sum to {sums[bad]:.4f}, expected 1 for every vertex"
        )

    kintree = np.asarray(fields["kintree_table"])
    if kintree.shape != (2, N_JOINTS):
        raise ModelFileError(f"{name}: field 'kintree_table' has shape {kintree.shape}, expected (2, 16)")
    parents = kintree[0].astype(np.int64)
    parents[0] = -1  # MANO stores 2**32-1 for the root
    if not np.array_equal(parents, MANO_PARENTS):
        raise ModelFileError(
            f"{name}: kinematic tree (kintree_table row 0) is {parents.tolist()}, expected MANO's "
            f"{MANO_PARENTS.tolist()}: the joints are in another order or this is not a MANO hand"
        )

    shapedirs = _as_float(fields, "shapedirs", name)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (n_vertices, 3) or shapedirs.shape[2] < N_SHAPE:
        raise ModelFileError(
            f"{name}: field 'shapedirs' has shape {shapedirs.shape}, expected ({n_vertices}, 3, 10) "
            "(V vertices x 3 x 10 shape directions)"
        )
    shapedirs = shapedirs[:, :, :N_SHAPE].copy()

    if "posedirs" in fields and fields["posedirs"] is not None and np.size(fields["posedirs"]) > 0:
        posedirs = _as_float(fields, "posedirs", name)
        if posedirs.shape == (n_vertices * 3, N_POSE_CORRECTIVES):
            posedirs = posedirs.reshape(n_vertices, 3, N_POSE_CORRECTIVES)
        _expect_shape(posedirs, (n_vertices, 3, N_POSE_CORRECTIVES), "posedirs", name,
                      "V vertices x 3 x 135 pose correctives")
    else:
        posedirs = np.zeros((n_vertices, 3, N_POSE_CORRECTIVES))

    if "tip_vertex_ids" in fields:
        tips = np.asarray(fields["tip_vertex_ids"])
        if tips.shape != (5,) or tips.dtype.kind not in "iu":
            raise ModelFileError(f"{name}: field 'tip_vertex_ids' has shape {tips.shape} dtype {tips.dtype}, expected (5,) integers")
    elif n_vertices == MANO_N_VERTICES:
        tips = MANO_TIP_VERTEX_IDS.copy()
    else:
        raise ModelFileError(
            f"{name}: missing field 'tip_vertex_ids' (5 fingertip vertex ids: thumb, index, middle, ring, "
            f"pinky); only the 778-vertex MANO mesh has known defaults, this mesh has {n_vertices}"
        )
    tips = tips.astype(np.int64)
    if tips.min() < 0 or tips.max() >= n_vertices:
        raise ModelFileError(f"{name}: 'tip_vertex_ids' {tips.tolist()} fall outside 0..{n_vertices - 1}")

    joint_limits = None
    if "joint_limits" in fields and fields["joint_limits"] is not None:
        joint_limits = _as_float(fields, "joint_limits", name)
        _expect_shape(joint_limits, (N_JOINTS, 3, 2), "joint_limits", name, "16 joints x 3 axes x (min, max) radians")
        if np.any(joint_limits[..., 0] > joint_limits[..., 1]):
            raise ModelFileError(f"{name}: 'joint_limits' has a minimum above its maximum")

    file_side = _text(fields.get("side"))
    if file_side:
        if file_side not in SIDES:
            raise ModelFileError(f"{name}: field 'side' is {file_side!r}, expected 'right' or 'left'")
        model_side = file_side
    elif "LEFT" in name.upper():
        model_side = "left"
    elif "RIGHT" in name.upper():
        model_side = "right"
    else:
        model_side = side

    fixes: list[str] = []
    official = fmt == "mano_pkl" and n_vertices == MANO_N_VERTICES and any(k in fields for k in _PKL_PRIOR_FIELDS)
    if official and model_side == "left":
        shapedirs[:, 0, :] *= -1.0
        fixes.append("official MANO_LEFT shapedirs: x component sign flipped (shapedirs[:, 0, :] *= -1)")
        log.info("%s: applied the official MANO_LEFT shapedirs fix", name)

    model_name = _text(fields.get("name")) or path.stem
    arrays = dict(
        v_template=v_template, faces=faces, J_regressor=J_regressor, weights=weights, parents=parents,
        shapedirs=shapedirs, posedirs=posedirs, tip_vertex_ids=tips, joint_limits=joint_limits,
    )
    for value in arrays.values():
        if value is not None:
            value.setflags(write=False)
    return HandModel(
        name=model_name,
        side=model_side,
        path=str(path),
        sha256=sha256,
        format=fmt,
        joint_limit_axes=_text(fields.get("joint_limit_axes")),
        fixes=tuple(fixes),
        **arrays,
    )
