"""What a job may write: never one of its inputs, and never over a file that is not an earlier output of the
same kind. Used by the engine server (before a job starts) and by capture / retailor themselves.

- An output path equal to an input path (the same file, also through links or another spelling) is
  refused: `capture --overlay` naming the footage, `retailor -o` naming the edits or the result file.
- An existing file may be replaced only by an output of the same kind:
  * "result" (capture and retailor outputs): a HandTailor capture result, recognized from the names of
    its `.npz` members (nothing is decompressed);
  * "model" (export_model's output): a hand model `.npz` (from its member names);
  * "overlay" (capture's overlay video): the overlay recorded by the capture result being replaced
    beside it (`overlay_sha256` in that result: the sha256 of the video it was written with). Any other
    existing video (footage, an unrelated clip, an overlay of another result) is kept.
- `resolve(path, base)`: the server resolves relative paths against a stated base (`serve --base`,
  reported by `hello` as `base_dir`), never against wherever the engine happens to run.
- `Staged`: a job's finished outputs wait in temp files beside their destinations and are published
  together when the whole job has finished (one rename each, with Ctrl-C / SIGTERM held off for those
  few renames); a job that stops earlier removes its temp files and leaves the earlier outputs as they were.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import threading
import zipfile
from typing import Mapping

from engine.errors import OutputError

#: Member names every capture result holds (format 1 and later), as `.npy` members of the archive.
_RESULT_MEMBERS = ("format_version.npy", "frame_index.npy", "valid.npy", "theta.npy")
#: Member names every hand model .npz holds (engine.hand_model.validation's required fields).
_MODEL_MEMBERS = ("v_template.npy", "f.npy", "J_regressor.npy", "weights.npy", "kintree_table.npy", "shapedirs.npy")
#: The result key recording the overlay video written with it (sha256 of the file, hex).
OVERLAY_SHA_KEY = "overlay_sha256"


def resolve(path: str | os.PathLike | None, base: str | os.PathLike) -> str | None:
    """`path` made absolute against `base` (a `~` is expanded first); None stays None."""
    if path is None or str(path) == "":
        return path
    p = pathlib.Path(path).expanduser()
    return str(p if p.is_absolute() else pathlib.Path(base) / p)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when the two paths name one file (the same path, or links to one file)."""
    pa, pb = pathlib.Path(a).expanduser().absolute(), pathlib.Path(b).expanduser().absolute()
    if os.path.normcase(os.path.normpath(pa)) == os.path.normcase(os.path.normpath(pb)):
        return True
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return False


def check_not_inputs(outputs: Mapping[str, str | None], inputs: Mapping[str, str | None]) -> None:
    """Refuses an output that names an input file. outputs / inputs: {option name: path or None}."""
    for out_name, out in outputs.items():
        if not out:
            continue
        for in_name, inp in inputs.items():
            if inp and same_file(out, inp):
                raise OutputError(
                    f"{out_name} {str(out)!r} is the {in_name}: an output never replaces an input. "
                    f"Choose another file name for the {out_name}.")


def _has_members(path: str | os.PathLike, members: tuple[str, ...]) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return all(m in names for m in members)


def is_capture_result(path: str | os.PathLike) -> bool:
    """True for an `.npz` holding a HandTailor capture result's arrays (checked from the member names)."""
    return _has_members(path, _RESULT_MEMBERS)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recorded_overlay_sha(result_path: str | os.PathLike) -> str | None:
    """The overlay sha256 a capture result records (None: none recorded, or not a readable result)."""
    from engine import safe_npz

    if not is_capture_result(result_path):
        return None
    try:
        arrays = safe_npz.load(result_path, max_bytes=1 << 30, keys=(OVERLAY_SHA_KEY,))
    except safe_npz.NpzError:
        return None
    value = arrays.get(OVERLAY_SHA_KEY)
    if value is None or value.shape != () or value.dtype.kind != "U":
        return None
    return str(value)


def check_replaceable(path: str | os.PathLike, kind: str, *, result_path: str | os.PathLike | None = None) -> None:
    """Refuses to write `path` when a file is there that is not an earlier output of this `kind`.

    kind: "result", "model" or "overlay" (then `result_path` is the result written with it). Raises OutputError."""
    p = pathlib.Path(path)
    if not p.exists() or p.is_dir():
        return  # nothing to lose (a folder is refused by the writers with their own message)
    if kind == "result":
        if is_capture_result(p):
            return
        raise OutputError(
            f"{str(p)!r} exists and is not a HandTailor capture result: refusing to replace it. "
            "Choose another output file name, or move that file away.")
    if kind == "model":
        if _has_members(p, _MODEL_MEMBERS):
            return
        raise OutputError(
            f"{str(p)!r} exists and is not a hand model .npz: refusing to replace it. "
            "Choose another output file name, or move that file away.")
    if kind == "overlay":
        recorded = recorded_overlay_sha(result_path) if result_path else None
        if recorded is not None and recorded == file_sha256(p):
            return
        raise OutputError(
            f"overlay {str(p)!r} exists and is not the overlay video of the capture result it goes with: "
            "refusing to replace it. Choose another file name for the overlay, or move that file away.")
    raise ValueError(f"unknown output kind {kind!r}")


class Staged:
    """Finished outputs of a job in temp files beside their destinations (see the module docstring)."""

    def __init__(self):
        self.files: list[tuple[pathlib.Path, pathlib.Path]] = []

    def add(self, temp: str | os.PathLike, final: str | os.PathLike) -> None:
        self.files.append((pathlib.Path(temp), pathlib.Path(final)))

    def publish(self) -> None:
        """Renames every temp file onto its destination, in the order added."""
        held = threading.current_thread() is threading.main_thread()
        if held:  # an interrupt between two renames would publish half a job
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for temp, final in self.files:
                os.replace(temp, final)
            self.files = []
        finally:
            if held:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def discard(self) -> None:
        for temp, _ in self.files:
            try:
                temp.unlink()
            except OSError:
                pass
        self.files = []


def check_capture_paths(options):
    """A capture's (result path, overlay path or None) for its CaptureOptions, absolute, refused before any
    work when they cannot be written, name an input, or would replace a file that is not an earlier output
    of their kind."""
    from engine import results as results_io

    output, overlay = options.output, options.overlay
    out_path = results_io.check_output_path(output)
    overlay_path = None
    if overlay:
        overlay_path = results_io.check_output_path(overlay, suffix=pathlib.Path(overlay).suffix.lower() or ".mp4")
        if overlay_path.suffix.lower() not in (".mp4", ".mov", ".avi", ".mkv"):
            raise OutputError(f"overlay {str(overlay_path)!r} must be a video file name (.mp4).")
        if same_file(overlay_path, out_path):
            raise OutputError("the overlay and the result must be different files.")
    check_not_inputs({"output": str(out_path), "overlay": overlay_path and str(overlay_path)},
                     {"footage": options.source, "hand model": options.hand_model,
                      "hourglass weights": options.hourglass_weights})
    check_replaceable(out_path, "result")
    if overlay_path:
        check_replaceable(overlay_path, "overlay", result_path=out_path)
    return out_path, overlay_path
