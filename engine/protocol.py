"""The engine protocol: JSON lines between the Blender add-on (client) and `python -m engine serve`.

Transport
    One JSON object per line, UTF-8 (this engine writes ASCII-only JSON), over the engine child's stdin
    (requests) and stdout (replies). stderr is the engine's log, for people. Bulk data never travels as
    JSON numbers: jobs write `.npz` / `.mp4` files and replies carry their paths. A request line may hold
    at most MAX_LINE_BYTES (1 MiB): a longer one gets an error reply (bad_request, "id": null) as soon as
    it passes the limit, and is discarded up to its newline.

Paths
    Relative paths in args are resolved against the engine's base folder, which hello reports as
    "base_dir" (`serve --base DIR`; default: the folder the engine was started in). An output may not name
    an input (e.g. capture's "overlay" the "source"), and an existing file is replaced only by an output
    of the same kind (a capture result by a result; an overlay video only by the overlay of the result it
    was written with): otherwise the job is refused with unwritable_output before it starts.

Requests
    {"id": str, "cmd": str, "args": {...}}        `args` may be omitted when a command takes none.

Replies (each carries the request's "id")
    {"id": .., "type": "progress", "done": int, "total": int, "message": str}   any number, jobs only
    {"id": .., "type": "result", "result": {...}}                               exactly one per request, or
    {"id": .., "type": "error", "code": str, "message": str}                    exactly one, instead
    A line that cannot be parsed, or has no usable id, gets an error reply with "id": null.

Commands
    hello    -> result {"protocol": 1, "engine_version": str, "python": str, "versions": {package: version},
                        "capabilities": ["capture", "retailor", "export_model", "cancel", "shutdown"],
                        "base_dir": path, "max_jobs": int}
                A client refuses an engine whose "protocol" differs from the one it speaks.
    capture  args {"source": path, "output": path.npz, "frame_start": int|null, "frame_end": int|null
                   (inclusive), "stride": 1, "hands": 1|2, "intrinsics": [fx,fy,cx,cy(,k1,k2,p1,p2,k3)]|null,
                   "hand_model": path|null, "iterations": 30, "smoothing": float,
                   "per_frame_shape": bool (optional, default false: one identity, beta and hand_scale, per
                   track), "hand_length": number|null (optional: the actor's hand length in meters, wrist
                   crease to middle fingertip; null: the population mean), "steady_shape": bool (deprecated,
                   ignored: one identity per track is the default), "mirrored": bool, "overlay": path|null, "batch_size": int,
                   "backbone": "mediapipe"|"hourglass" (optional, default "mediapipe"),
                   "hourglass_weights": path|null (optional; needed by "hourglass", else bad_model_file),
                   "fps": number|null (optional: the frame rate of footage that has none, e.g. an image
                   folder; the add-on sends its scene's; null: 24; a video's own rate always wins)}
             -> result {"files": {"result": path, "overlay": path|null}, "frames": int,
                        "valid_frames": [int per track], "hand_side": [str per track],
                        "corrupt_frames": [footage frame numbers that could not be decoded]}
    retailor args {"result": path, "edits": path, "output": path, "frame_start": int|null,
                   "frame_end": int|null, "joints": [MANO joint names]|null, "iterations": int,
                   "falloff": int|null (optional: frames an edit reaches on each side, fading out; frames
                   beyond are not touched; null: the engine's default, 10),
                   "hand_model": path|null (where to look for the capture's hand model when it is no longer
                   at the path the result records; used only when its sha256 matches the result's)}
             -> result {"files": {"result": path}}
                Every track is refit with the model it was fitted with (the result's hand_model /
                hand_model_sha256); when none at hand matches: error hand_model_mismatch, nothing written.
    export_model args {"source": path|null (a hand model file or a folder; null: the shipped model),
                   "side": "right"|"left", "output": path.npz}
             -> result {"files": {"model": path}, "name": str, "side": str, "sha256": str (of the source
                        file), "format": "npz"|"mano_pkl"}
                Writes the model as plain arrays (.npz, no pickle: v_template, f, J_regressor, weights,
                kintree_table, shapedirs, posedirs, tip_vertex_ids, name, side, source_sha256), read by
                the add-on: a MANO .pkl is only ever opened by the engine's restricted unpickler.
    cancel   args {"target": id} -> result {"cancelled": bool}; the target job (when still running) ends
                   within a second with error code "cancelled" and leaves no file behind.
    shutdown -> result {}; running jobs end with "cancelled", then the engine exits 0.
    capture, retailor and export_model run as jobs in child processes (so that a cancel can stop even a JAX compile);
    the engine answers other requests while they run. At most "max_jobs" jobs run at once (`serve
    --max-jobs N`, default 2); another job request gets the error "busy". SIGTERM ends the engine like
    shutdown (running jobs cancelled, their partial files removed).

Error codes (stable; clients match on them)
    bad_request       malformed line, missing/extra/mistyped field, duplicate id
    unknown_command   "cmd" is not one of the commands above
    bad_input         footage / result / edits file missing or unreadable, bad option values
    bad_model_file    hand model file refused or broken
    hand_model_mismatch  no hand model at hand is the one the result was fitted with (retailor)
    no_hand           no hand found in the footage
    unwritable_output the output path cannot be written (or names an input, or a file it may not replace)
    busy              max_jobs jobs are running already; wait for one or cancel one
    cancelled         the job was cancelled
    internal          a bug: the message says what happened; the log (stderr) has the traceback
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

PROTOCOL_VERSION = 1
COMMANDS = ("hello", "capture", "retailor", "export_model", "cancel", "shutdown")
JOB_COMMANDS = ("capture", "retailor", "export_model")
CAPABILITIES = ["capture", "retailor", "export_model", "cancel", "shutdown"]
ERROR_CODES = (
    "bad_request",
    "unknown_command",
    "bad_input",
    "bad_model_file",
    "hand_model_mismatch",
    "no_hand",
    "unwritable_output",
    "busy",
    "cancelled",
    "internal",
)
MAX_LINE_BYTES = 1 << 20


class ProtocolError(Exception):
    """A request that cannot be served as sent; `code` is one of ERROR_CODES, `id` the request id if known."""

    def __init__(self, code: str, message: str, id: str | None = None):
        super().__init__(message)
        assert code in ERROR_CODES, code
        self.code = code
        self.id = id


@dataclasses.dataclass(frozen=True)
class Request:
    id: str
    cmd: str
    args: dict


# name -> (accepted types, default, required). `None` in types means JSON null is accepted.
_INT = (int,)
_NUM = (int, float)
_STR = (str,)
ARG_SPECS: dict[str, dict[str, tuple]] = {
    "hello": {},
    "shutdown": {},
    "cancel": {"target": (_STR, None, True)},
    "capture": {
        "source": (_STR, None, True),
        "output": (_STR, None, True),
        "frame_start": (_INT + (None,), None, False),
        "frame_end": (_INT + (None,), None, False),
        "stride": (_INT, 1, False),
        "hands": (_INT, 1, False),
        "intrinsics": ((list, None), None, False),
        "hand_model": (_STR + (None,), None, False),
        "iterations": (_INT + (None,), None, False),
        "smoothing": (_NUM + (None,), None, False),
        "steady_shape": ((bool,), False, False),
        "per_frame_shape": ((bool,), False, False),
        "hand_length": (_NUM + (None,), None, False),
        "mirrored": ((bool,), False, False),
        "overlay": (_STR + (None,), None, False),
        "batch_size": (_INT + (None,), None, False),
        "backbone": (_STR, "mediapipe", False),
        "hourglass_weights": (_STR + (None,), None, False),
        "fps": (_NUM + (None,), None, False),
    },
    "retailor": {
        "result": (_STR, None, True),
        "edits": (_STR, None, True),
        "output": (_STR, None, True),
        "frame_start": (_INT + (None,), None, False),
        "frame_end": (_INT + (None,), None, False),
        "joints": ((list, None), None, False),
        "iterations": (_INT + (None,), None, False),
        "hand_model": (_STR + (None,), None, False),
        "falloff": (_INT + (None,), None, False),
    },
    "export_model": {
        "source": (_STR + (None,), None, False),
        "side": (_STR, None, True),
        "output": (_STR, None, True),
    },
}


def _type_name(types: tuple) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean", list: "list", None: "null"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _accepts(value: Any, types: tuple) -> bool:
    if value is None:
        return None in types
    if isinstance(value, bool):  # JSON true/false are not integers here
        return bool in types
    if isinstance(value, float) and float in types:
        return math.isfinite(value)
    return any(t is not None and t is not bool and isinstance(value, t) for t in types)


def validate_args(cmd: str, args: dict, id: str | None = None) -> dict:
    """Checks a command's args against ARG_SPECS; returns them with defaults filled in."""
    spec = ARG_SPECS[cmd]
    unknown = sorted(set(args) - set(spec))
    if unknown:
        raise ProtocolError("bad_request", f"{cmd}: unknown argument(s) {unknown}; known: {sorted(spec)}", id)
    out = {}
    for name, (types, default, required) in spec.items():
        if name not in args:
            if required:
                raise ProtocolError("bad_request", f"{cmd}: missing argument {name!r}", id)
            out[name] = default
            continue
        value = args[name]
        if not _accepts(value, types):
            raise ProtocolError("bad_request", f"{cmd}: argument {name!r} must be {_type_name(types)} (got {value!r})", id)
        out[name] = value
    if cmd == "capture":
        if out["intrinsics"] is not None:
            k = out["intrinsics"]
            if len(k) not in (4, 9) or not all(_accepts(v, _NUM) for v in k):
                raise ProtocolError("bad_request", "capture: intrinsics must be [fx,fy,cx,cy] or [fx,fy,cx,cy,k1,k2,p1,p2,k3] numbers", id)
        if out["hands"] not in (1, 2):
            raise ProtocolError("bad_request", f"capture: hands must be 1 or 2 (got {out['hands']})", id)
        from engine.hand_module import BACKBONES

        if out["backbone"] not in BACKBONES:
            raise ProtocolError("bad_request", f"capture: backbone must be one of {list(BACKBONES)} (got {out['backbone']!r})", id)
    if cmd == "export_model" and out["side"] not in ("right", "left"):
        raise ProtocolError("bad_request", f"export_model: side must be \"right\" or \"left\" (got {out['side']!r})", id)
    if cmd == "retailor" and out["falloff"] is not None and out["falloff"] < 0:
        raise ProtocolError("bad_request", f"retailor: falloff must be a number of frames >= 0 (got {out['falloff']})", id)
    if cmd == "capture" and out["hand_length"] is not None and not 0.05 <= out["hand_length"] <= 0.4:
        raise ProtocolError("bad_request", f"capture: hand_length must be meters in [0.05, 0.4] (got {out['hand_length']})", id)
    if cmd == "retailor" and out["joints"] is not None and not all(isinstance(j, str) for j in out["joints"]):
        raise ProtocolError("bad_request", "retailor: joints must be a list of MANO joint names", id)
    return out


def decode_request(line: str | bytes) -> Request:
    """Parses one request line; raises ProtocolError (with the id when one could be read)."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError("bad_request", f"request line longer than {MAX_LINE_BYTES} bytes")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("bad_request", f"request is not UTF-8: {exc}") from None
    try:
        msg = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_request", f"not a JSON line: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_request", 'a request must be a JSON object {"id": .., "cmd": .., "args": {..}}')
    rid = msg.get("id")
    if not isinstance(rid, str) or not rid:
        raise ProtocolError("bad_request", 'a request needs a non-empty string "id"')
    extra = sorted(set(msg) - {"id", "cmd", "args"})
    if extra:
        raise ProtocolError("bad_request", f"unknown request field(s) {extra}", rid)
    cmd = msg.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError("bad_request", 'a request needs a string "cmd"', rid)
    if cmd not in COMMANDS:
        raise ProtocolError("unknown_command", f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}", rid)
    args = msg.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError("bad_request", '"args" must be a JSON object', rid)
    return Request(rid, cmd, validate_args(cmd, args, rid))


def encode(message: dict) -> str:
    """One reply line (no trailing newline), ASCII-only JSON; NaN/inf are refused."""
    return json.dumps(message, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def progress(id: str, done: int, total: int, message: str = "") -> dict:
    return {"id": id, "type": "progress", "done": int(done), "total": int(total), "message": str(message)}


def result(id: str | None, result: dict) -> dict:
    return {"id": id, "type": "result", "result": result}


def error(id: str | None, code: str, message: str) -> dict:
    if code not in ERROR_CODES:
        code = "internal"
    return {"id": id, "type": "error", "code": code, "message": str(message)}


def decode_reply(line: str) -> dict:
    """Client side: parses and checks one reply line; raises ValueError when it is not a valid reply."""
    msg = json.loads(line)
    if not isinstance(msg, dict) or "id" not in msg or msg.get("type") not in ("progress", "result", "error"):
        raise ValueError(f"not an engine reply: {line!r}")
    t = msg["type"]
    if t == "progress" and not (isinstance(msg.get("done"), int) and isinstance(msg.get("total"), int)):
        raise ValueError(f"progress reply without done/total: {line!r}")
    if t == "result" and not isinstance(msg.get("result"), dict):
        raise ValueError(f"result reply without a result object: {line!r}")
    if t == "error" and not (isinstance(msg.get("code"), str) and isinstance(msg.get("message"), str)):
        raise ValueError(f"error reply without code/message: {line!r}")
    return msg
