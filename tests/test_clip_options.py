"""The options issue 15 added or changed: one identity per track by default (--per-frame-shape asks for the
old per-frame shape; --steady-shape still parses and changes nothing), --hand-length, and re-tailor's falloff
(CLI, protocol), each refused with a clear message when out of range."""

import pytest

from engine import capture, protocol, retailor
from engine.cli_args import capture_options, capture_parser
from engine.errors import InputError
from engine.tailor.local import DEFAULT_FALLOFF, falloff_weights


def _options(*argv):
    return capture_options(capture_parser("capture").parse_args(["clip.mp4", "-o", "r.npz", *argv]))


def test_capture_identity_options():
    assert not _options().per_frame_shape and _options().hand_length is None
    assert not _options("--steady-shape").per_frame_shape  # deprecated: the default now
    o = _options("--per-frame-shape", "--hand-length", "0.2")
    assert o.per_frame_shape and o.hand_length == 0.2
    with pytest.raises(InputError, match="contradict"):
        capture.CaptureOptions("a.mp4", "a.npz", steady_shape=True, per_frame_shape=True)
    with pytest.raises(InputError, match="hand length"):
        capture.CaptureOptions("a.mp4", "a.npz", hand_length=1.8)
    args = protocol.validate_args("capture", {"source": "a", "output": "b.npz", "per_frame_shape": True,
                                              "hand_length": 0.19, "steady_shape": False})
    assert capture.CaptureOptions.from_protocol(args).per_frame_shape
    with pytest.raises(protocol.ProtocolError, match="hand_length"):
        protocol.validate_args("capture", {"source": "a", "output": "b.npz", "hand_length": 19})


def test_retailor_falloff_option():
    assert retailor.check_falloff(None) == DEFAULT_FALLOFF == 10
    assert retailor.check_falloff(0) == 0
    for bad in (-1, 2.5, True):
        with pytest.raises(InputError, match="falloff"):
            retailor.check_falloff(bad)
    assert protocol.validate_args("retailor", {"result": "a", "edits": "b", "output": "c", "falloff": 4})["falloff"] == 4
    with pytest.raises(protocol.ProtocolError, match="falloff"):
        protocol.validate_args("retailor", {"result": "a", "edits": "b", "output": "c", "falloff": -2})
    assert retailor.RetailorOptions.from_protocol({"result": "a", "edits": "b", "output": "c", "falloff": 4}).falloff == 4


def test_falloff_weights_are_a_raised_cosine():
    import numpy as np

    changed = np.zeros(30, bool)
    changed[10:13] = True
    w = falloff_weights(changed, 4)
    assert np.all(w[10:13] == 1) and np.all(w[:5] == 0) and np.all(w[18:] == 0)
    np.testing.assert_allclose(w[9::-1][:5], 0.5 * (1 + np.cos(np.pi * np.arange(1, 6) / 5)))
    assert np.all(falloff_weights(np.zeros(5, bool), 4) == 0)
