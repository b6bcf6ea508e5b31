"""Reading `.npz` archives with every declared size checked before anything is decompressed.

`numpy.load` trusts an archive: a member's `.npy` header says how big the array is, and numpy allocates
that much and inflates into it. A 1 MB file can so declare (and really inflate to) 1 GiB. Here the headers
of all members are read first (a few hundred bytes each), the declared shapes and dtypes are handed to the
caller's check (which knows the format: a capture result, an edits file, a hand model) and to a byte limit,
and only then are the arrays read, each exactly as declared. Object arrays are refused (no pickle).

Used by `engine.results` (capture results and edits) and `engine.hand_model` (model `.npz` files); they
turn `NpzError` into their own error class with the file's name.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import zipfile
import zlib
from typing import Callable, Mapping

import numpy as np

#: An archive with more members than this is not one of ours (results have ~25 keys, models ~12).
MAX_MEMBERS = 1024
_NPY_HEADER_LIMIT = 10_000  # numpy's own default for max_header_size


class NpzError(Exception):
    """An archive refused or unreadable. `kind`: "not_npz", "truncated" or "refused"."""

    def __init__(self, message: str, kind: str = "refused"):
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class Member:
    """What a member's `.npy` header declares: key (member name without `.npy`), shape, dtype, bytes."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int
    fortran_order: bool
    stored: int  # bytes of array data the zip entry says it holds (less than nbytes: truncated)


def read_members(zf: zipfile.ZipFile) -> dict[str, Member]:
    """The declared shape and dtype of every member, from the `.npy` headers only. Raises NpzError."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise NpzError(f"it holds {len(infos)} members, more than an .npz of this kind ever has ({MAX_MEMBERS})")
    members: dict[str, Member] = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise NpzError(f"member {info.filename!r} is not a numpy array (.npy)")
        key = info.filename[: -len(".npy")]
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=_NPY_HEADER_LIMIT)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=_NPY_HEADER_LIMIT)
            else:  # 3.0 exists only for structured dtypes with non-latin-1 field names
                raise NpzError(f"member {key!r} uses .npy format {version}, which plain arrays never need")
            header_bytes = fh.tell()
        if dtype.hasobject:
            raise NpzError(f"member {key!r} is a pickled object array: refusing to unpickle it")
        nbytes = math.prod(shape) * dtype.itemsize
        members[key] = Member(key, tuple(int(s) for s in shape), dtype, nbytes, bool(fortran),
                              info.file_size - header_bytes)
    return members


def load(source: str | os.PathLike | bytes, *, max_bytes: int,
         check: Callable[[Mapping[str, Member]], None] | None = None,
         keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Reads the arrays of an `.npz` (a path or its bytes) once their declared sizes passed the checks.

    max_bytes: limit on the declared array data of the members read. check(members): the caller's format
    check on the declared shapes and dtypes of all members (raise to refuse). keys: read only these
    members (those present). Raises NpzError for anything wrong with the archive itself; exceptions
    raised by `check` pass through.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as zf:
            members = read_members(zf)
            if check is not None:
                check(members)
            if keys is not None:
                members = {k: m for k, m in members.items() if k in keys}
            total = sum(m.nbytes for m in members.values())
            if total > max_bytes:
                biggest = max(members.values(), key=lambda m: m.nbytes)
                raise NpzError(
                    f"its arrays declare {total:,} bytes in all ({biggest.key!r}: shape {biggest.shape}, "
                    f"{biggest.nbytes:,} bytes), more than the {max_bytes:,} this kind of file may hold; "
                    "nothing was decompressed")
            for m in members.values():
                if m.stored < m.nbytes:
                    raise NpzError(f"member {m.key!r} declares {m.nbytes:,} bytes of array data but holds "
                                   f"{max(m.stored, 0):,}: the file is truncated", "truncated")
            out = {}
            for key in members:
                with zf.open(f"{key}.npy") as fh:
                    out[key] = np.lib.format.read_array(fh, allow_pickle=False, max_header_size=_NPY_HEADER_LIMIT)
            return out
    except NpzError:
        raise
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise NpzError(f"it is not a complete .npz archive: truncated or damaged ({exc})", "truncated") from exc
    except (ValueError, OSError, NotImplementedError, RuntimeError, zipfile.LargeZipFile) as exc:
        text = str(exc)
        kind = "truncated" if "EOF" in text or "truncat" in text.lower() else "not_npz"
        raise NpzError(f"it is not a readable .npz archive ({text})", kind) from exc
