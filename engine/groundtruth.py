"""The ground-truth format (`annotations_normalized.json`): the one reader, for `eval` and for training.

A JSON list, one record per hand instance, paths relative to the file's folder: `image`, `hand`
("left"/"right"), `K` (3x3 or null), `joints_3d_m` (21x3 m, OpenCV camera frame, or null), `joints_2d_px`
(21x2 px or null), `visible` (21 booleans or null); keypoint order of engine.hand_model. Where 2D is null but
3D and K exist, the 2D ground truth is the projection of the 3D joints.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import numpy as np

from engine.camera import project_perspective
from engine.errors import InputError

ANNOTATIONS = "annotations_normalized.json"


@dataclass
class Record:
    """One ground-truth hand instance."""

    image: pathlib.Path
    hand: str
    K: np.ndarray | None  # (3, 3)
    joints_3d: np.ndarray | None  # (21, 3) m, camera frame
    joints_2d: np.ndarray | None  # (21, 2) px (given, or the projection of joints_3d with K)
    visible: np.ndarray  # (21,) bool (all true when the set has none)
    index: int = 0


def load_annotations(folder: pathlib.Path) -> list[Record]:
    """Reads `folder/annotations_normalized.json` into Records (raises InputError on a malformed file)."""
    folder = pathlib.Path(folder)
    path = folder / ANNOTATIONS
    if not path.is_file():
        raise InputError(f"{path} not found: `eval` needs a folder holding annotations_normalized.json "
                         "(format: shared/data/README.md)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(raw).__name__}")
    records = []
    for i, r in enumerate(raw):
        try:
            hand = r["hand"]
            if hand not in ("left", "right"):
                raise ValueError(f"hand must be 'left' or 'right', not {hand!r}")
            K = None if r.get("K") is None else np.asarray(r["K"], np.float64).reshape(3, 3)
            j3 = None if r.get("joints_3d_m") is None else np.asarray(r["joints_3d_m"], np.float64).reshape(21, 3)
            j2 = None if r.get("joints_2d_px") is None else np.asarray(r["joints_2d_px"], np.float64).reshape(21, 2)
            vis = np.ones(21, bool) if r.get("visible") is None else np.asarray(r["visible"], bool).reshape(21)
            image = folder / r["image"]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: record {i} is malformed ({exc})") from exc
        if j2 is None and j3 is not None and K is not None:
            j2 = project_perspective(j3, K)
        records.append(Record(image, hand, K, j3, j2, vis, i))
    return records
