"""The capture result and the re-tailor edits files (`.npz`), exactly DESIGN.md's table, format_version 2.

Writing is atomic: the arrays go to a temporary file in the destination folder, are flushed to disk and
then `os.replace`d onto the destination, so a reader (or a cancelled job) never sees a half-written file.
Every file loads with `numpy.load(path, allow_pickle=False)`: no object arrays, strings are fixed-width
unicode. Readers refuse a `format_version` newer than `FORMAT_VERSION`.

Version 2 records the hand model per track: `hand_model` (T,) (the model file's path) and
`hand_model_sha256` (T,) (its content hash), so re-tailor refits every track with the model it was fitted
with. Version 1 files held one () entry, track 0's: `read_result` upgrades them (`upgrade_v1`).

Result arrays (T hand tracks, N frames):
    format_version (), source (), image_size (2,), fps (), frame_index (N,), camera_model (),
    K (3,3), distortion (5,), hand_model (T,), hand_model_sha256 (T,), hand_side (T,), valid (T,N),
    theta (T,N,16,4), beta (T,N,10), root (T,N,3), hand_scale (T,N), projection_scale (T,N),
    keypoints_2d (T,N,21,2), confidence (T,N,21), joints_3d (T,N,21,3)
Meaning of the identity (issue 15): by default a track is one hand. `beta` is one shape per track, repeated
on every valid frame, and `hand_scale` one value per track: the hand's size relative to the model's metric
size at that beta, about the wrist (Eq. 12 / 17's s* no longer changes it: a hand does not grow). The hand's
distance carries what its pixel size does: the root depth (perspective) or `projection_scale` (weak
perspective, the root then at depth f / projection_scale). The metric size is `hand_scale` times the model's
hand length at beta: the population's mean hand length unless the capture was given the actor's (monocular
footage shows size / distance, never size alone). A capture with `per_frame_shape` keeps the older meaning:
beta per frame and hand_scale = s* per frame.
Extra keys written by this engine (readers may ignore them): engine_version (), frame_decoded (N,) bool
(False where the footage frame could not be decoded), tailor_iterations (), tailor_smoothing () (the
temporal weight; re-tailor reuses both), per_frame_shape () bool (False: one identity per track),
steady_shape () bool (its negation, for older readers).
Invalid frames (valid False) carry NaN in theta, beta, root, hand_scale, projection_scale and joints_3d:
never made-up values. keypoints_2d / confidence keep whatever the detector saw (NaN / 0 where nothing).

Edits (`EDITS.npz`): theta, beta, root, hand_scale (same shapes as the result) and boolean masks
lock_theta (T,N,16), lock_beta (T,N), lock_root (T,N), lock_hand_scale (T,N); optional format_version and
frame_index (checked against the result when present). Locked values are kept bit for bit, so they must be
usable as they are: finite, theta unit quaternions (within 1e-3), hand_scale in [0.01, 100], root within
1 km of the camera, beta within +-10 (the rig's shape-key range); an edits file that breaks this is refused
before any refit, naming the edits file.

Reading checks the declared sizes first (engine.safe_npz: the `.npy` headers, before anything is
decompressed): the per-frame arrays must agree on T and N, the other arrays may not outweigh them by more
than `EXTRA_BYTES`, and a file may declare at most `MAX_FILE_BYTES` in all. A compression bomb (1 MB that
inflates to 1 GiB) is so refused without being inflated.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import types
import zipfile
from typing import Mapping

import numpy as np

from engine import safe_npz
from engine.errors import InputError, OutputError

FORMAT_VERSION = 2
CAMERA_MODELS = ("perspective", "weak_perspective")
HAND_SIDES = ("left", "right")

# key -> shape template (letters T, N are the file's track and frame counts)
RESULT_SHAPES: dict[str, tuple] = {
    "format_version": (),
    "source": (),
    "image_size": (2,),
    "fps": (),
    "frame_index": ("N",),
    "camera_model": (),
    "K": (3, 3),
    "distortion": (5,),
    "hand_model": ("T",),
    "hand_model_sha256": ("T",),
    "hand_side": ("T",),
    "valid": ("T", "N"),
    "theta": ("T", "N", 16, 4),
    "beta": ("T", "N", 10),
    "root": ("T", "N", 3),
    "hand_scale": ("T", "N"),
    "projection_scale": ("T", "N"),
    "keypoints_2d": ("T", "N", 21, 2),
    "confidence": ("T", "N", 21),
    "joints_3d": ("T", "N", 21, 3),
}
STRING_KEYS = ("source", "camera_model", "hand_model", "hand_model_sha256", "hand_side")
# per-frame fitted values: NaN on invalid frames, finite on valid ones
FITTED_KEYS = ("theta", "beta", "root", "hand_scale", "joints_3d")
FLOAT64_KEYS = ("fps", "K", "distortion", "theta", "beta", "root", "hand_scale", "projection_scale")
FLOAT32_KEYS = ("keypoints_2d", "confidence", "joints_3d")

EDIT_VALUE_KEYS = ("theta", "beta", "root", "hand_scale")
EDIT_LOCK_SHAPES = {
    "lock_theta": ("T", "N", 16),
    "lock_beta": ("T", "N"),
    "lock_root": ("T", "N"),
    "lock_hand_scale": ("T", "N"),
}
EDIT_LOCK_FOR = {"theta": "lock_theta", "beta": "lock_beta", "root": "lock_root", "hand_scale": "lock_hand_scale"}


# ---------------------------------------------------------------------------------------------- writing


def check_output_path(path: str | os.PathLike, suffix: str = ".npz") -> pathlib.Path:
    """Refuses an output path that cannot be written, before any work is done; returns it absolute.

    Raises OutputError naming the problem (missing folder, a folder given as file, no permission).
    """
    if path is None or str(path) == "":
        raise OutputError("no output path given: pass -o RESULT.npz.")
    p = pathlib.Path(path).expanduser().absolute()
    if p.is_dir():
        raise OutputError(f"output {str(p)!r} is a folder; give a file name like {str(p / ('result' + (suffix or '.npz')))!r}.")
    if suffix and p.suffix.lower() != suffix:
        raise OutputError(f"output {str(p)!r} must end in {suffix}.")
    parent = p.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {str(p)!r}: the folder {str(parent)!r} does not exist. Create it or choose another output path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {str(p)!r}: no permission to write in {str(parent)!r}. Choose a folder you can write to.")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"cannot write {str(p)!r}: the existing file is read-only. Remove it or choose another output path.")
    return p


def atomic_savez(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], compress: bool = True, *,
                 publish: bool = True) -> pathlib.Path:
    """Writes `arrays` to `path` (.npz) atomically: temp file in the same folder, fsync, os.replace.

    publish=False: stops before the rename and returns the finished temp file (`.{stem}.*.tmp.npz` beside
    `path`): a job with several outputs publishes them together (engine.outputs.Staged)."""
    p = check_output_path(path, suffix=pathlib.Path(path).suffix.lower() or ".npz")
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            raise ValueError(f"refusing to write object array {k!r}")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".tmp.npz", dir=str(p.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_npz(fh, arrays, compress)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode(p))  # mkstemp makes 0600; a result is an ordinary file
        if not publish:
            return pathlib.Path(tmp)
        os.replace(tmp, p)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise OutputError(f"cannot write {str(p)!r}: {exc.strerror or exc}. Check free space and permissions.") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return p


def _write_npz(fh, arrays: Mapping[str, np.ndarray], compress: bool) -> None:
    """np.savez's file (a zip of `name.npy` members), deflated at level 1 when `compress`: np.savez_compressed's
    level 6 took 55-62 ms for a 621-frame result against 23 ms, for a file 4% smaller (424 vs 440 KB), at
    the end of every capture (issue 18)."""
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(fh, "w", mode, compresslevel=1 if compress else None) as z:
        for name, value in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)


def _file_mode(path: pathlib.Path) -> int:
    """The existing file's permissions, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def upgrade_v1(d: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A format 1 result as format 2: its one hand_model / hand_model_sha256 entry was track 0's model.

    Tracks of track 0's side get that entry. A track of the other side gets track 0's path but an empty
    sha256 (format 1 did not record which model it was fitted with: re-tailor says so)."""
    out = dict(d)
    if "hand_model" not in d or np.asarray(d["hand_model"]).ndim != 0:
        return out
    sides = np.asarray(d.get("hand_side", np.zeros(0, np.str_))).reshape(-1)
    same = sides == (sides[0] if sides.size else "")
    path = str(np.asarray(d["hand_model"]))
    sha = str(np.asarray(d.get("hand_model_sha256", "")))
    out["hand_model"] = np.asarray([path] * sides.size, np.str_).reshape(sides.size)
    out["hand_model_sha256"] = np.asarray([sha if s else "" for s in same], np.str_).reshape(sides.size)
    out["format_version"] = np.asarray(FORMAT_VERSION, np.int64)
    return out


def _normalize_result(data: Mapping[str, object]) -> dict[str, np.ndarray]:
    data = upgrade_v1(data)
    out: dict[str, np.ndarray] = {}
    for k, v in data.items():
        a = np.asarray(v)
        if k in STRING_KEYS:
            a = np.asarray(a, dtype=np.str_)
        elif k in FLOAT64_KEYS:
            a = a.astype(np.float64)
        elif k in FLOAT32_KEYS:
            a = a.astype(np.float32)
        elif k in ("valid", "frame_decoded"):
            a = a.astype(bool)
        elif k in ("format_version",):
            a = a.astype(np.int64)
        elif k in ("image_size", "frame_index"):
            a = a.astype(np.int64)
        out[k] = a
    out.setdefault("format_version", np.asarray(FORMAT_VERSION, np.int64))
    return out


def write_result(path: str | os.PathLike, data: Mapping[str, object], *, publish: bool = True) -> pathlib.Path:
    """Validates `data` (DESIGN.md's result table) and writes it atomically; returns the path written
    (publish=False: the finished temp file, see atomic_savez)."""
    arrays = _normalize_result(data)
    validate_result(arrays, what="the result being written")
    return atomic_savez(path, arrays, publish=publish)


def write_edits(path: str | os.PathLike, edits: Mapping[str, object], result: Mapping[str, np.ndarray] | None = None) -> pathlib.Path:
    """Validates an edits dict (optionally against its result) and writes it atomically."""
    arrays = {k: np.asarray(v) for k, v in edits.items()}
    for k in EDIT_VALUE_KEYS:
        if k in arrays:
            arrays[k] = arrays[k].astype(np.float64)
    for k in EDIT_LOCK_SHAPES:
        if k in arrays:
            arrays[k] = arrays[k].astype(bool)
    arrays.setdefault("format_version", np.asarray(FORMAT_VERSION, np.int64))
    validate_edits(arrays, result)
    return atomic_savez(path, arrays)


# ---------------------------------------------------------------------------------------------- reading


def _load_npz(path: str | os.PathLike, what: str, templates: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    p = pathlib.Path(path)
    if not p.exists():
        raise InputError(f"{what} {str(p)!r} does not exist. Check the path.")
    if p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a folder, not an .npz file.")
    if not zipfile.is_zipfile(p):
        raise InputError(f"{what} {str(p)!r} is not a numpy .npz archive (damaged, truncated or another kind of file).")
    named = f"{what} {str(p)!r}"
    try:
        return safe_npz.load(p, max_bytes=MAX_FILE_BYTES,
                             check=lambda members: check_declared_sizes(members, templates, named))
    except safe_npz.NpzError as exc:
        if "pickled object array" in str(exc):
            raise InputError(f"{named} holds object arrays (pickled data), which are refused.") from None
        if exc.kind == "truncated":
            raise InputError(f"{named} cannot be read: it is truncated or damaged ({exc}).") from None
        raise InputError(f"{named} is refused: {exc}.") from None


# ------------------------------------------------------------------------------ declared sizes (issue 17)

#: Bytes a result or edits file may declare in all: a result holds ~1.1 KB per hand per frame, so 4 GiB is
#: ~3.8 million hand-frames (two hands for 8.8 hours at 60 fps).
MAX_FILE_BYTES = 4 * 2**30
#: Bytes the arrays outside the per-frame table (K, strings, extra keys of other tools) may declare beyond
#: the table's own size.
EXTRA_BYTES = 16 * 2**20

EDITS_SHAPES: dict[str, tuple] = {
    "frame_index": ("N",),
    **{k: RESULT_SHAPES[k] for k in EDIT_VALUE_KEYS},
    **EDIT_LOCK_SHAPES,
}


def check_declared_sizes(members: Mapping[str, "safe_npz.Member"], templates: Mapping[str, tuple], what: str) -> None:
    """Before anything is decompressed: the per-frame arrays (templates with N) must agree on T and N, and
    the other arrays may not outweigh them by more than EXTRA_BYTES. Raises InputError naming the array."""
    dims: dict[str, int] = {}
    framed = 0
    for key, template in templates.items():
        if "N" in template and key in members:
            shape = members[key].shape
            _match_shape(key, types.SimpleNamespace(shape=shape, ndim=len(shape)), template, dims, what)
            framed += members[key].nbytes
    rest = [m for k, m in members.items() if not (k in templates and "N" in templates[k])]
    if sum(m.nbytes for m in rest) > framed + EXTRA_BYTES:
        big = max(rest, key=lambda m: m.nbytes)
        raise InputError(
            f"{what}: {big.key!r} declares shape {big.shape} ({big.nbytes:,} bytes), far more than the per-frame "
            f"arrays it belongs with ({framed:,} bytes); refused before decompressing anything (a damaged or "
            "hostile file)")


def _check_version(d: Mapping[str, np.ndarray], what: str, required: bool) -> None:
    if "format_version" not in d:
        if required:
            raise InputError(f"{what} has no format_version: it is not a HandTailor file.")
        return
    v = np.asarray(d["format_version"])
    if v.shape != () or not np.issubdtype(v.dtype, np.integer):
        raise InputError(f"{what}: format_version must be an integer scalar (got {v.dtype} {v.shape}).")
    if int(v) > FORMAT_VERSION:
        raise InputError(
            f"{what} has format_version {int(v)}, newer than this engine reads ({FORMAT_VERSION}). "
            "Update HandTailor to read it."
        )
    if int(v) < 1:
        raise InputError(f"{what} has an invalid format_version {int(v)}.")


def _match_shape(name: str, arr: np.ndarray, template: tuple, dims: dict, what: str) -> None:
    if arr.ndim != len(template):
        raise InputError(f"{what}: {name!r} has shape {arr.shape}, expected {_fmt(template)}.")
    for got, want in zip(arr.shape, template):
        if isinstance(want, str):
            if dims.setdefault(want, got) != got:
                raise InputError(f"{what}: {name!r} has shape {arr.shape}, expected {_fmt(template, dims)} ({want}={dims[want]}).")
        elif got != want:
            raise InputError(f"{what}: {name!r} has shape {arr.shape}, expected {_fmt(template)}.")


def _fmt(template: tuple, dims: dict | None = None) -> str:
    return "(" + ",".join(str((dims or {}).get(t, t)) for t in template) + ")"


def validate_result(d: Mapping[str, np.ndarray], what: str = "capture result") -> tuple[int, int]:
    """Checks keys, shapes, dtypes and values of a result dict; returns (T, N). Raises InputError."""
    _check_version(d, what, required=True)
    missing = [k for k in RESULT_SHAPES if k not in d]
    if missing:
        raise InputError(f"{what} lacks {', '.join(missing)}: it is not a complete HandTailor capture result.")
    dims: dict[str, int] = {}
    for k, template in RESULT_SHAPES.items():
        a = np.asarray(d[k])
        if a.dtype == object:
            raise InputError(f"{what}: {k!r} is an object array; strings must be fixed-width unicode.")
        _match_shape(k, a, template, dims, what)
        if k in STRING_KEYS and a.dtype.kind != "U":
            raise InputError(f"{what}: {k!r} must be a unicode string array (got {a.dtype}).")
        if k in FLOAT64_KEYS + FLOAT32_KEYS and a.dtype.kind != "f":
            raise InputError(f"{what}: {k!r} must be floating point (got {a.dtype}).")
    T, N = dims.get("T", 0), dims.get("N", 0)
    if str(d["camera_model"]) not in CAMERA_MODELS:
        raise InputError(f"{what}: camera_model {str(d['camera_model'])!r} is not one of {CAMERA_MODELS}.")
    bad_sides = [s for s in np.asarray(d["hand_side"]).tolist() if s not in HAND_SIDES]
    if bad_sides:
        raise InputError(f"{what}: hand_side {bad_sides} must be 'left' or 'right'.")
    if np.asarray(d["valid"]).dtype != bool:
        raise InputError(f"{what}: 'valid' must be boolean.")
    fi = np.asarray(d["frame_index"])
    if not np.issubdtype(fi.dtype, np.integer) or (fi.size and (fi.min() < 0 or np.any(np.diff(fi) <= 0))):
        raise InputError(f"{what}: frame_index must be increasing non-negative integers.")
    size = np.asarray(d["image_size"])
    if not np.issubdtype(size.dtype, np.integer) or np.any(size <= 0):
        raise InputError(f"{what}: image_size must be two positive integers (width, height).")
    if not np.all(np.isfinite(np.asarray(d["K"]))):
        raise InputError(f"{what}: K holds non-finite values.")
    valid = np.asarray(d["valid"], bool)
    for k in FITTED_KEYS:
        a = np.asarray(d[k])
        good = a[valid]
        if good.size and not np.all(np.isfinite(good)):
            raise InputError(f"{what}: {k!r} holds NaN/inf on frames marked valid.")
    if valid.any():
        norms = np.linalg.norm(np.asarray(d["theta"])[valid], axis=-1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            raise InputError(f"{what}: theta holds quaternions that are not unit length on valid frames.")
    return T, N


def read_result(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads and validates a capture result (format 1 upgraded to 2); raises InputError naming what is wrong."""
    d = _load_npz(path, "capture result", RESULT_SHAPES)
    _check_version(d, f"capture result {str(path)!r}", required=True)
    d = upgrade_v1(d)
    validate_result(d, what=f"capture result {str(path)!r}")
    return d


def validate_edits(edits: Mapping[str, np.ndarray], result: Mapping[str, np.ndarray] | None = None, what: str = "edits") -> tuple[int, int]:
    """Checks an edits dict (and against `result` when given); returns (T, N). Raises InputError."""
    _check_version(edits, what, required=False)
    missing = [k for k in (*EDIT_VALUE_KEYS, *EDIT_LOCK_SHAPES) if k not in edits]
    if missing:
        raise InputError(f"{what} lacks {', '.join(missing)} (see DESIGN.md: values plus lock_* masks).")
    dims: dict[str, int] = {}
    for k in EDIT_VALUE_KEYS:
        a = np.asarray(edits[k])
        if a.dtype.kind != "f":
            raise InputError(f"{what}: {k!r} must be floating point (got {a.dtype}).")
        _match_shape(k, a, RESULT_SHAPES[k], dims, what)
    for k, template in EDIT_LOCK_SHAPES.items():
        a = np.asarray(edits[k])
        if a.dtype != bool:
            raise InputError(f"{what}: {k!r} must be a boolean mask (got {a.dtype}).")
        _match_shape(k, a, template, dims, what)
    T, N = dims["T"], dims["N"]
    check_edit_values(edits, what)
    if result is not None:
        rT, rN = np.asarray(result["valid"]).shape
        if (T, N) != (rT, rN):
            raise InputError(f"{what} are for {T} tracks x {N} frames but the result has {rT} x {rN}: they belong to another capture.")
        if "frame_index" in edits and not np.array_equal(np.asarray(edits["frame_index"]), np.asarray(result["frame_index"])):
            raise InputError(f"{what}: frame_index differs from the result's; the edits belong to another capture.")
    return T, N


def read_edits(path: str | os.PathLike, result: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Loads and validates an edits file (against its result when given)."""
    d = _load_npz(path, "edits file", EDITS_SHAPES)
    validate_edits(d, result, what=f"edits file {str(path)!r}")
    return d


def empty_edits(result: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Edits that lock nothing, holding the result's values: a starting point for tools and tests."""
    T, N = np.asarray(result["valid"]).shape
    e = {k: np.array(result[k], np.float64) for k in EDIT_VALUE_KEYS}
    e.update({k: np.zeros(tuple({"T": T, "N": N}.get(s, s) for s in t), bool) for k, t in EDIT_LOCK_SHAPES.items()})
    e["format_version"] = np.asarray(FORMAT_VERSION, np.int64)
    e["frame_index"] = np.asarray(result["frame_index"], np.int64)
    return e


# ------------------------------------------------------------------------------- edit values (issue 17)

#: Locked quaternions must be unit length within this (as results require of theta).
QUATERNION_TOLERANCE = 1e-3
#: hand_scale is the hand's size relative to the model's metric size.
HAND_SCALE_RANGE = (0.01, 100.0)
#: meters from the camera, per coordinate.
ROOT_LIMIT_M = 1000.0
#: the rig's shape-key slider range (handtailor_blender/rig.py).
BETA_LIMIT = 10.0


def _where(mask: np.ndarray, names: tuple[str, ...] = ("track", "frame", "joint")) -> str:
    first = np.argwhere(mask)[0]
    return ", ".join(f"{n} {int(i)}" for n, i in zip(names, first))


def check_edit_values(edits: Mapping[str, np.ndarray], what: str = "edits") -> None:
    """Locked edit values must be usable as they are (the re-tailor keeps them bit for bit): finite, theta
    unit quaternions, hand_scale, root and beta in range (constants above). Raises InputError naming `what`
    (the edits file), the array, the first bad entry and the rule."""
    locks = {k: np.asarray(edits[EDIT_LOCK_FOR[k]], bool) for k in EDIT_VALUE_KEYS}
    values = {k: np.asarray(edits[k], np.float64) for k in EDIT_VALUE_KEYS}
    for k in EDIT_VALUE_KEYS:
        bad = locks[k] & ~np.isfinite(values[k]).reshape(locks[k].shape + (-1,)).all(-1)
        if bad.any():
            raise InputError(f"{what}: locked {k!r} entries hold NaN/inf ({_where(bad)}); lock only values you set.")
    norm = np.linalg.norm(values["theta"], axis=-1)
    bad = locks["theta"] & (np.abs(norm - 1.0) > QUATERNION_TOLERANCE)
    if bad.any():
        t, n, j = np.argwhere(bad)[0]
        raise InputError(
            f"{what}: locked theta (lock_theta) at {_where(bad)} is {values['theta'][t, n, j].tolist()} (length "
            f"{norm[t, n, j]:.6g}); quaternions must be unit length (within {QUATERNION_TOLERANCE:g}): normalize them.")
    lo, hi = HAND_SCALE_RANGE
    hs = values["hand_scale"]
    bad = locks["hand_scale"] & ~((hs >= lo) & (hs <= hi))
    if bad.any():
        t, n = np.argwhere(bad)[0]
        raise InputError(f"{what}: locked hand_scale at {_where(bad)} is {hs[t, n]:.6g}; it must be between {lo:g} "
                         f"and {hi:g} (the hand's size relative to the hand model).")
    bad = locks["root"] & (np.abs(values["root"]) > ROOT_LIMIT_M).any(-1)
    if bad.any():
        t, n = np.argwhere(bad)[0]
        raise InputError(f"{what}: locked root at {_where(bad)} is {values['root'][t, n].tolist()} m; each coordinate "
                         f"must be within +-{ROOT_LIMIT_M:g} m of the camera.")
    bad = locks["beta"] & (np.abs(values["beta"]) > BETA_LIMIT).any(-1)
    if bad.any():
        t, n = np.argwhere(bad)[0]
        raise InputError(f"{what}: locked beta at {_where(bad)} is {values['beta'][t, n].tolist()}; shape values "
                         f"must be within +-{BETA_LIMIT:g} (the rig's shape-key range).")
