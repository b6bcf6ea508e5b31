"""Loading hand model files: our `.npz` and official MANO `.pkl`, safely, with errors a person can act on.

One loader for every variant (style anchor 3), in four parts:

- here: finding the file (a file, a MANO folder, the shipped model), the per-content cache, and the
  format dispatch; the `.npz` reader (`engine.safe_npz`: declared sizes checked before decompressing);
- `engine.hand_model.unpickler`: the restricted unpickler for official MANO `.pkl` files (inert
  stand-ins for numpy, chumpy and scipy.sparse objects; every other global refused, nothing runs);
- `engine.hand_model.pickled_arrays`: plain arrays from those stand-ins (numeric dtypes only, byte counts
  checked, derived sizes bounded before allocating);
- `engine.hand_model.validation`: field checks and the build of the immutable `HandModel`.

Size limits: a model file may hold at most `MAX_MODEL_BYTES` (file size, and for an `.npz` the arrays'
declared size too); MANO's files are about 4 MB. Every failure is a `ModelFileError` (`bad_model_file`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
from typing import Any

from engine import safe_npz
from engine.errors import InputError, ModelFileError
from engine.hand_model.constants import SIDES
from engine.hand_model.model import HandModel
from engine.hand_model.pickled_arrays import read_mano_pickle
from engine.hand_model.validation import build_hand_model

__all__ = ["HandModel", "build_hand_model", "default_model_path", "load_hand_model", "read_mano_pickle"]

log = logging.getLogger(__name__)

REPO_DIR = pathlib.Path(__file__).resolve().parents[2]
OPEN_HAND_DIR = REPO_DIR / "models" / "open_hand"

#: Bytes a hand model file (and an .npz's decompressed arrays) may hold: MANO's are ~4 MB, ours ~3 MB.
MAX_MODEL_BYTES = 256 * 2**20

# A pickle of a dict starts with PROTO (protocol >= 2), or MARK / EMPTY_DICT / GLOBAL (protocols 0-1).
_PICKLE_FIRST_BYTES = (b"\x80", b"(", b"}", b"c")


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
        size = file.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelFileError(
                f"{file.name} is {size:,} bytes, more than a hand model file ever holds ({MAX_MODEL_BYTES:,}; "
                "MANO's are about 4 MB): it is not a hand model")
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
        return safe_npz.load(data, max_bytes=MAX_MODEL_BYTES)
    except safe_npz.NpzError as exc:
        if exc.kind == "truncated":
            raise ModelFileError(f"truncated or corrupt file: {path.name}: {exc}; re-download or regenerate it") from None
        if "pickled object array" in str(exc):
            raise ModelFileError(f"{path.name}: {exc}; hand model .npz files hold plain arrays only") from None
        raise ModelFileError(f"cannot read {path.name} as a hand model .npz: {exc}") from None
