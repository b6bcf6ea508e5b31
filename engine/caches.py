"""Where the engine keeps what it can always rebuild (compiled code): one folder per kind under the user's
cache folder, $XDG_CACHE_HOME/handtailor (else ~/.cache/handtailor). Deleting it is always safe."""

from __future__ import annotations

import os
import pathlib


def cache_folder(kind: str) -> pathlib.Path | None:
    """$XDG_CACHE_HOME/handtailor/<kind> (~/.cache/handtailor/<kind>), created; None where it cannot be (no
    home, a read-only disk): the caller then works without a cache."""
    try:
        base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
        path = base / "handtailor" / kind
        path.mkdir(parents=True, exist_ok=True)
        return path
    except (OSError, RuntimeError):
        return None
