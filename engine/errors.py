"""Errors a person can act on.

Every error the engine reports to a user is an `EngineError` with a stable `code` (the protocol sends it,
the add-on and scripts match on it) and a message that names the problem and what to do about it.
"""


class EngineError(Exception):
    """Base class: `code` is stable, the message is for people."""

    code = "engine_error"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InputError(EngineError):
    """Bad input from the user: a missing or unreadable file, wrong option values."""

    code = "bad_input"


class ModelFileError(EngineError):
    """A hand model file that is refused (unsafe pickle) or broken (wrong fields, truncated)."""

    code = "bad_model_file"


class HandModelMismatch(EngineError):
    """No hand model at hand is the one a capture result was fitted with (path and sha256 disagree)."""

    code = "hand_model_mismatch"


class NoHandError(EngineError):
    """The footage holds no detectable hand."""

    code = "no_hand"


class OutputError(EngineError):
    """The output path cannot be written."""

    code = "unwritable_output"


class Cancelled(EngineError):
    """A job was cancelled by the user."""

    code = "cancelled"


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C (temp files removed, nothing half-published); the
    command exits 143 (128 + the signal) instead of 130."""
