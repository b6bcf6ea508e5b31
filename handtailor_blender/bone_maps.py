"""Which character bone is which hand joint: bone-name presets, their detection, and user mappings (no bpy).

Presets (notes/retarget-bone-names.md; Rigify checked against the rig Rigify generates from its human
metarig under bpy 5.0; Mixamo, UE5 (hierarchy hand_r > index_metacarpal_r > index_01_r, thumb_01_r under
hand_r), VRM 1.0 and Auto-Rig Pro (c_index1.r = Mixamo's Index1 = VRM's IndexProximal, c_hand_fk.r) checked
against public mapping tables; no real ARP or UE file was at hand): each MANO joint gets candidate names, first
match wins; names match case-insensitively
after any namespace prefix (`mixamorig:`, `mixamorig1:` ...). Rigify's finger controls (`f_index.01.R`,
`thumb.01.R`) are what an animator keys; a rig exported without controls falls back to its `DEF-` bones.
Unreal: UE4 and UE5 share the phalanx names, UE5 adds metacarpals (not keyed; they stay at rest). VRM: 1.0
(`rightThumbMetacarpal/Proximal/Distal`) and 0.x (`rightThumbProximal/Intermediate/Distal`) differ for the
thumb only. Mixamo's finger 1 is the proximal phalanx (not the metacarpal).

A user mapping is a JSON file `{"name": ..., "bones": {"<joint>": "<bone>", ...}}` with joints named as in
MANO_JOINT_NAMES (side-free: the same mapping serves a take's right and left hand when the names carry the
side as `{side}` / `{Side}` / `{s}` / `{S}`, e.g. "{Side}HandIndex1" or "index_01_{s}").
"""

from __future__ import annotations

import json
import os
import pathlib

from .io.results import MANO_JOINT_NAMES

PRESETS = ("rigify", "mixamo", "ue4", "ue5", "arp", "vrm")
FINGER_JOINTS = tuple(range(1, 16))

_FINGER_WORDS = {"index": "Index", "middle": "Middle", "ring": "Ring", "pinky": "Pinky", "thumb": "Thumb"}
_VRM_PHALANX = ("Proximal", "Intermediate", "Distal")


def _tokens(side: str) -> dict:
    right = side == "right"
    return {"Side": "Right" if right else "Left", "side": "right" if right else "left",
            "S": "R" if right else "L", "s": "r" if right else "l"}


def _table(preset: str) -> dict[str, list[str]]:
    """{MANO joint name: [candidate name templates]} for a preset ({Side}/{side}/{S}/{s} = side tokens)."""
    t: dict[str, list[str]] = {}
    if preset == "mixamo":
        t["wrist"] = ["{Side}Hand"]
        for f, w in _FINGER_WORDS.items():
            for k in (1, 2, 3):
                t[f"{f}{k}"] = [f"{{Side}}Hand{w}{k}"]
    elif preset in ("ue4", "ue5"):
        t["wrist"] = ["hand_{s}"]
        for f in _FINGER_WORDS:
            for k in (1, 2, 3):
                t[f"{f}{k}"] = [f"{f}_0{k}_{{s}}"]
    elif preset == "rigify":
        t["wrist"] = ["hand_fk.{S}", "DEF-hand.{S}", "hand.{S}"]
        for f in _FINGER_WORDS:
            for k in (1, 2, 3):
                base = f"thumb.0{k}.{{S}}" if f == "thumb" else f"f_{f}.0{k}.{{S}}"
                t[f"{f}{k}"] = [base, "DEF-" + base]
    elif preset == "arp":
        t["wrist"] = ["c_hand_fk.{s}", "hand.{s}"]
        for f in _FINGER_WORDS:
            for k in (1, 2, 3):
                t[f"{f}{k}"] = [f"c_{f}{k}.{{s}}", f"{f}{k}.{{s}}"]  # controls, else the exported deform bones
    elif preset in ("vrm", "vrm0"):
        t["wrist"] = ["{side}Hand"]
        for f, w in _FINGER_WORDS.items():
            w = "Little" if f == "pinky" else w
            parts = (("Metacarpal", "Proximal", "Distal") if f == "thumb" and preset == "vrm"
                     else _VRM_PHALANX)
            for k, part in zip((1, 2, 3), parts):
                t[f"{f}{k}"] = [f"{{side}}{w}{part}"]
    else:
        raise ValueError(f"unknown retarget preset {preset!r}: one of auto, {', '.join(PRESETS)}")
    return t


def _norm(name: str) -> str:
    return name.rsplit(":", 1)[-1].lower()


def _lookup(bone_names) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in bone_names:
        out.setdefault(_norm(n), n)
        out.setdefault(n.lower(), n)
    return out


def _with_prefix(names, wanted: str) -> str | None:
    """The one bone named `<prefix><sep>wanted` (a studio prefix such as `rig_` or `Bip01 `), else None."""
    hits = [n for n in names if n.lower().endswith(wanted) and len(n) > len(wanted)
            and n[-len(wanted) - 1] in "_:-. "]
    return hits[0] if len(hits) == 1 else None


def resolve(templates: dict[str, list[str]], bone_names, side: str) -> dict[int, str]:
    """{MANO joint index: character bone} for name templates, matched against the character's bones: the
    exact name first (any case, any namespace), then a unique name that ends with it after a separator."""
    names = list(bone_names)
    look = _lookup(names)
    tok = _tokens(side)
    out = {}
    for j, joint in enumerate(MANO_JOINT_NAMES):
        cands = [tmpl.format(**tok) for tmpl in templates.get(joint, [])]
        hit = next((look[c.lower()] for c in cands if c.lower() in look), None)
        hit = hit or next((look[_norm(c)] for c in cands if _norm(c) in look), None)
        hit = hit or next((h for h in (_with_prefix(names, c.lower()) for c in cands) if h), None)
        if hit is not None:
            out[j] = hit
    return out


def preset_mapping(preset: str, bone_names, side: str) -> dict[int, str]:
    """{MANO joint index: bone} of a built-in preset on these bones (VRM: the version that matches more)."""
    if preset == "vrm":
        a, b = (resolve(_table(p), bone_names, side) for p in ("vrm", "vrm0"))
        return a if len(a) >= len(b) else b
    return resolve(_table(preset), bone_names, side)


def detect(bone_names, side: str) -> tuple[str, dict[int, str]]:
    """(preset, mapping) of the built-in preset matching the most finger bones; UE5 over UE4 when the rig
    has metacarpals. Raises ValueError when none matches at least 5 finger bones and the wrist."""
    names = list(bone_names)
    best = ("", {})
    for preset in PRESETS:
        m = preset_mapping(preset, names, side)
        if sum(j in m for j in FINGER_JOINTS) > sum(j in best[1] for j in FINGER_JOINTS):
            best = (preset, m)
    preset, m = best
    if preset in ("ue4", "ue5"):
        has_meta = f"index_metacarpal_{_tokens(side)['s']}" in _lookup(names)
        preset = "ue5" if has_meta else "ue4"
    if 0 not in m or sum(j in m for j in FINGER_JOINTS) < 5:
        raise ValueError(f"no known {side} hand in the character's bones (tried {', '.join(PRESETS)}): "
                         "choose the bones yourself (a mapping) or pick the preset")
    return preset, m


# ------------------------------------------------------------------------------------ user mappings


def save_mapping(path, name: str, bones: dict[str, str]) -> pathlib.Path:
    """Writes a user mapping {joint name: bone name template} as JSON; returns the path."""
    unknown = sorted(set(bones) - set(MANO_JOINT_NAMES))
    if unknown:
        raise ValueError(f"mapping names unknown joints {unknown}: use {', '.join(MANO_JOINT_NAMES)}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"name": name, "bones": {k: bones[k] for k in MANO_JOINT_NAMES if k in bones}},
                              indent=1))
    os.replace(tmp, path)
    return path


def load_mapping(path) -> tuple[str, dict[str, list[str]]]:
    """(name, templates) of a user mapping file; ValueError naming the problem."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such mapping file") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a HandTailor mapping ({exc})") from None
    bones = data.get("bones") if isinstance(data, dict) else None
    if not isinstance(bones, dict) or not all(isinstance(v, str) for v in bones.values()):
        raise ValueError(f"{path}: expected {{\"name\": ..., \"bones\": {{joint: bone name}}}}")
    unknown = sorted(set(bones) - set(MANO_JOINT_NAMES))
    if unknown:
        raise ValueError(f"{path}: unknown joints {unknown}: use {', '.join(MANO_JOINT_NAMES)}")
    return str(data.get("name") or pathlib.Path(path).stem), {k: [v] for k, v in bones.items()}


def side_template(bone: str, side: str) -> str:
    """A character bone name with its side written as a token, so one mapping serves both hands."""
    tok = _tokens(side)
    for key in ("Side", "side"):
        if tok[key] in bone:
            return bone.replace(tok[key], "{" + key + "}", 1)
    for key, sep in (("S", "."), ("s", "."), ("s", "_"), ("S", "_")):
        end = sep + tok[key]
        if bone.endswith(end):
            return bone[: -len(end)] + sep + "{" + key + "}"
    for key in ("S", "s"):  # a side letter between separators: CC_Base_R_Hand, Bip01 R Hand
        for sep in "_ .-":
            mid = sep + tok[key] + sep
            if mid in bone:
                return bone.replace(mid, sep + "{" + key + "}" + sep, 1)
    return bone


def guess_side(bones) -> str:
    """'right' or 'left': the side whose tokens more of these bone names carry."""
    score = {side: sum(side_template(b, side) != b for b in bones) for side in ("right", "left")}
    return "left" if score["left"] > score["right"] else "right"


def fill(templates: dict[str, list[str]], side: str) -> dict[str, str]:
    """{joint: bone name} of side-free templates written out for one side."""
    tok = _tokens(side)
    return {joint: names[0].format(**tok) for joint, names in templates.items() if names}
