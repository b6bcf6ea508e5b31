"""Capture result / edits files (DESIGN.md "Capture result") and hand model files, numpy only.

The engine has its own writer/reader (engine/results.py); this is the add-on's independent reader, so the
add-on never imports the engine. Letters: T tracks, N frames, J=16 joints, K=21 keypoints, V vertices.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
import zipfile
import zlib

import numpy as np

FORMAT_VERSION = 2  # 2: hand_model / hand_model_sha256 per track (1: one entry, track 0's)
NUM_JOINTS = 16
NUM_BETAS = 10

MANO_JOINT_NAMES = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)
MANO_PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], dtype=np.int64)
# Model tip_vertex_ids order, and the MANO joint each tip hangs from.
TIP_NAMES = ("thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip")
TIP_PARENTS = np.array([15, 3, 6, 12, 9], dtype=np.int64)


class ResultFileError(Exception):
    """A result, edits or model file that cannot be used; the message says which field and why."""


@dataclasses.dataclass(frozen=True)
class CaptureResult:
    """One capture result file, checked. Arrays are float64 unless noted."""

    path: str
    source: str
    image_size: tuple[int, int]
    fps: float
    frame_index: np.ndarray  # (N,) int64
    camera_model: str
    K: np.ndarray  # (3, 3)
    distortion: np.ndarray  # (5,)
    hand_model: tuple[str, ...]  # (T,) the model file each track was fitted with ("" : not recorded)
    hand_model_sha256: tuple[str, ...]  # (T,) its content's sha256 ("" : not recorded)
    hand_side: tuple[str, ...]  # (T,)
    valid: np.ndarray  # (T, N) bool
    theta: np.ndarray  # (T, N, 16, 4)
    beta: np.ndarray  # (T, N, 10)
    root: np.ndarray  # (T, N, 3)
    hand_scale: np.ndarray  # (T, N)
    confidence: np.ndarray  # (T, N, 21)
    keypoints_2d: np.ndarray  # (T, N, 21, 2)
    joints_3d: np.ndarray  # (T, N, 21, 3)

    @property
    def num_tracks(self) -> int:
        return len(self.hand_side)

    @property
    def num_frames(self) -> int:
        return int(self.frame_index.shape[0])


def _str(arr) -> str:
    return str(np.asarray(arr).reshape(()).item())


def _per_track_models(data, sides: tuple[str, ...], path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(hand_model, hand_model_sha256) per track. Format 1 held track 0's entry only: a track of the other
    side gets no file (a folder entry still serves both sides) and no sha256."""
    names = np.asarray(data["hand_model"]) if "hand_model" in data.files else np.asarray("")
    shas = np.asarray(data["hand_model_sha256"]) if "hand_model_sha256" in data.files else np.asarray("")
    if names.ndim == 0:
        entry, sha = _str(names), _str(shas)
        folder = bool(entry) and pathlib.Path(entry).is_dir()
        first = sides[0] if sides else ""
        return (tuple(entry if (s == first or folder) else "" for s in sides),
                tuple(sha if s == first else "" for s in sides))
    names, shas = tuple(str(x) for x in names.reshape(-1)), tuple(str(x) for x in shas.reshape(-1))
    if len(names) != len(sides) or len(shas) != len(sides):
        raise ResultFileError(f"{path}: hand_model and hand_model_sha256 must hold one entry per track ({len(sides)})")
    return names, shas


def _need(data, key: str, path) -> np.ndarray:
    if key not in data.files:
        raise ResultFileError(f"{path}: field {key!r} is missing; this is not a HandTailor capture result")
    return data[key]


def _shape(name: str, arr: np.ndarray, shape: tuple, path) -> np.ndarray:
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ResultFileError(f"{path}: field {name!r} has shape {arr.shape}, expected {want}")
    return arr


# What numpy and zipfile raise for a truncated or damaged archive (a member read lazily can fail late).
_DAMAGED = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)


def read_result(path) -> CaptureResult:
    """Loads and checks a capture result `.npz` (format_version <= 2); raises ResultFileError."""
    path = os.fspath(path)
    try:
        return _read_result(path)
    except FileNotFoundError:
        raise ResultFileError(f"{path}: no such capture result file") from None
    except _DAMAGED as exc:
        raise ResultFileError(
            f"{path}: the capture result is damaged or truncated ({type(exc).__name__}: {exc}); capture again, "
            "or restore the file if it was copied or downloaded incompletely") from None


def _read_result(path: str) -> CaptureResult:
    data = np.load(path, allow_pickle=False)
    with data:
        version = int(_need(data, "format_version", path))
        if version > FORMAT_VERSION:
            raise ResultFileError(
                f"{path}: format_version {version} is newer than this add-on reads ({FORMAT_VERSION}); "
                "update the add-on")
        theta = np.asarray(_need(data, "theta", path), dtype=np.float64)
        if theta.ndim != 4:
            raise ResultFileError(f"{path}: field 'theta' has shape {theta.shape}, expected (T, N, 16, 4)")
        T, N = theta.shape[:2]
        _shape("theta", theta, (T, N, NUM_JOINTS, 4), path)
        sides = tuple(str(s) for s in np.asarray(_need(data, "hand_side", path)).reshape(-1))
        if len(sides) != T or any(s not in ("left", "right") for s in sides):
            raise ResultFileError(f"{path}: hand_side {sides} must hold 'left'/'right' for each of {T} tracks")
        models = _per_track_models(data, sides, path)
        size = np.asarray(_need(data, "image_size", path)).reshape(-1)
        if size.shape != (2,):
            raise ResultFileError(f"{path}: image_size must be (width, height)")
        res = CaptureResult(
            path=path,
            source=_str(_need(data, "source", path)),
            image_size=(int(size[0]), int(size[1])),
            fps=float(_need(data, "fps", path)),
            frame_index=_shape("frame_index", np.asarray(_need(data, "frame_index", path), np.int64), (N,), path),
            camera_model=_str(_need(data, "camera_model", path)),
            K=_shape("K", np.asarray(_need(data, "K", path), np.float64), (3, 3), path),
            distortion=np.asarray(data["distortion"], np.float64).reshape(-1) if "distortion" in data.files
            else np.zeros(5),
            hand_model=models[0],
            hand_model_sha256=models[1],
            hand_side=sides,
            valid=_shape("valid", np.asarray(_need(data, "valid", path), bool), (T, N), path),
            theta=theta,
            beta=_shape("beta", np.asarray(_need(data, "beta", path), np.float64), (T, N, NUM_BETAS), path),
            root=_shape("root", np.asarray(_need(data, "root", path), np.float64), (T, N, 3), path),
            hand_scale=_shape("hand_scale", np.asarray(_need(data, "hand_scale", path), np.float64), (T, N), path),
            confidence=_shape("confidence", np.asarray(_need(data, "confidence", path), np.float64),
                              (T, N, 21), path),
            keypoints_2d=_shape("keypoints_2d", np.asarray(_need(data, "keypoints_2d", path), np.float64),
                                (T, N, 21, 2), path),
            joints_3d=_shape("joints_3d", np.asarray(_need(data, "joints_3d", path), np.float64),
                             (T, N, 21, 3), path),
        )
    if res.camera_model not in ("perspective", "weak_perspective"):
        raise ResultFileError(f"{path}: camera_model {res.camera_model!r} is neither perspective nor weak_perspective")
    if res.fps <= 0 or not np.isfinite(res.fps):
        raise ResultFileError(f"{path}: fps {res.fps} is not a positive number")
    for name in ("theta", "beta", "root", "hand_scale"):
        arr = getattr(res, name)
        bad = ~np.isfinite(arr[res.valid])
        if bad.any():
            raise ResultFileError(f"{path}: field {name!r} holds NaN/inf on frames marked valid")
    return res


def write_npz_atomic(path, arrays: dict) -> None:
    """Writes `arrays` to `path` (.npz) through a temp file in the same folder + rename."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_edits(path, theta, beta, root, hand_scale, lock_theta, lock_beta, lock_root, lock_hand_scale) -> None:
    """Writes EDITS.npz (DESIGN.md): values (T,N,16,4), (T,N,10), (T,N,3), (T,N) and boolean lock masks
    (T,N,16), (T,N), (T,N), (T,N). Locked entries are kept bit for bit by the engine's retailor."""
    theta = np.asarray(theta, np.float64)
    T, N = theta.shape[:2]
    arrays = dict(
        format_version=np.array(FORMAT_VERSION),
        theta=theta,
        beta=np.asarray(beta, np.float64),
        root=np.asarray(root, np.float64),
        hand_scale=np.asarray(hand_scale, np.float64),
        lock_theta=np.asarray(lock_theta, bool),
        lock_beta=np.asarray(lock_beta, bool),
        lock_root=np.asarray(lock_root, bool),
        lock_hand_scale=np.asarray(lock_hand_scale, bool),
    )
    for name, shape in (("theta", (T, N, 16, 4)), ("beta", (T, N, 10)), ("root", (T, N, 3)),
                        ("hand_scale", (T, N)), ("lock_theta", (T, N, 16)), ("lock_beta", (T, N)),
                        ("lock_root", (T, N)), ("lock_hand_scale", (T, N))):
        if arrays[name].shape != shape:
            raise ValueError(f"edits field {name} has shape {arrays[name].shape}, expected {shape}")
    write_npz_atomic(path, arrays)


# ----------------------------------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class RigModel:
    """What the rig needs from a hand model file (numpy float64)."""

    path: str
    side: str
    v_template: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3) int
    J_regressor: np.ndarray  # (16, V)
    weights: np.ndarray  # (V, 16)
    parents: np.ndarray  # (16,)
    shapedirs: np.ndarray  # (V, 3, 10)
    posedirs: np.ndarray  # (V, 3, 135)
    tip_vertex_ids: np.ndarray  # (5,)

    @property
    def J0(self) -> np.ndarray:
        """(16, 3) rest joints at beta = 0."""
        return self.J_regressor @ self.v_template

    @property
    def Jdirs(self) -> np.ndarray:
        """(16, 3, 10): J(beta) = J0 + Jdirs . beta."""
        return np.einsum("jv,vcb->jcb", self.J_regressor, self.shapedirs)

    @property
    def has_posedirs(self) -> bool:
        return bool(np.any(self.posedirs != 0))


def resolve_model_path(hand_model: str, side: str, *fallbacks: str | None, sha256: str = "") -> str:
    """The model file of a track: an `.npz` the add-on reads, or a MANO `.pkl` (which the add-on has the
    engine convert, see capture.py).

    `hand_model` is the track's entry in the result: a file (that track's model, used as it is), a folder
    (holding open_hand_{side}.npz or MANO_{SIDE}.pkl) or empty. `fallbacks` (folders or files: the
    preferences' model, the shipped model's folder) are tried next, in order. With `sha256` (the result's
    record) only a file with that content is taken."""
    candidates = []
    for entry in (hand_model, *fallbacks):
        if not entry:
            continue
        p = pathlib.Path(entry)
        if p.is_dir():
            candidates += [p / f"open_hand_{side}.npz", p / f"MANO_{side.upper()}.npz", p / f"MANO_{side.upper()}.pkl"]
        else:
            candidates.append(p)
    other = []
    for c in candidates:
        if c.suffix in (".npz", ".pkl") and c.is_file():
            if not sha256 or _file_sha256(c) == sha256:
                return str(c)
            other.append(str(c))
    if other:
        raise ResultFileError(
            f"the {side} hand was captured with a hand model of sha256 {sha256[:12]}... ({hand_model or 'unnamed'}); "
            f"{', '.join(other)} holds another model. Point the HandTailor preferences at the model the capture used")
    raise ResultFileError(
        f"no {side} hand model file found (tried: {', '.join(str(c) for c in candidates) or 'nothing'}); "
        "set the hand model in the HandTailor preferences")


def _file_sha256(path: pathlib.Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_model(path, side: str | None = None) -> RigModel:
    """Loads a MANO-named `.npz` hand model (ours or a converted MANO); raises ResultFileError."""
    path = os.fspath(path)
    if path.endswith(".pkl"):
        raise ResultFileError(f"{path}: MANO .pkl files are not read inside Blender (pickles are only opened by "
                              "the engine's restricted loader); convert it with the engine first")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ResultFileError(f"{path}: not a readable .npz hand model ({exc})") from None
    with data:
        v = np.asarray(_need(data, "v_template", path), np.float64)
        V = v.shape[0]
        _shape("v_template", v, (V, 3), path)
        faces = _shape("f", np.asarray(_need(data, "f", path)).astype(np.int64), (None, 3), path)
        jreg = np.asarray(_need(data, "J_regressor", path), np.float64)
        _shape("J_regressor", jreg, (NUM_JOINTS, V), path)
        weights = _shape("weights", np.asarray(_need(data, "weights", path), np.float64), (V, NUM_JOINTS), path)
        kin = np.asarray(_need(data, "kintree_table", path)).astype(np.int64)
        _shape("kintree_table", kin, (2, NUM_JOINTS), path)
        parents = kin[0].copy()
        parents[0] = -1
        shapedirs = np.asarray(_need(data, "shapedirs", path), np.float64)
        _shape("shapedirs", shapedirs, (V, 3, None), path)
        shapedirs = shapedirs[:, :, :NUM_BETAS]
        if shapedirs.shape[2] < NUM_BETAS:
            shapedirs = np.concatenate([shapedirs, np.zeros((V, 3, NUM_BETAS - shapedirs.shape[2]))], axis=2)
        if "posedirs" in data.files:
            posedirs = _shape("posedirs", np.asarray(data["posedirs"], np.float64), (V, 3, 135), path)
        else:
            posedirs = np.zeros((V, 3, 135))
        tips = _shape("tip_vertex_ids", np.asarray(_need(data, "tip_vertex_ids", path)).astype(np.int64), (5,), path)
        file_side = _str(data["side"]) if "side" in data.files else (side or "right")
    if not np.array_equal(parents, MANO_PARENTS):
        raise ResultFileError(f"{path}: kintree_table parents {parents.tolist()} are not MANO's 16-joint tree")
    if side is not None and file_side != side:
        raise ResultFileError(f"{path}: this is a {file_side} hand model, the track needs a {side} one")
    return RigModel(path=path, side=file_side, v_template=v, faces=faces, J_regressor=jreg, weights=weights,
                    parents=parents, shapedirs=shapedirs, posedirs=posedirs, tip_vertex_ids=tips)
