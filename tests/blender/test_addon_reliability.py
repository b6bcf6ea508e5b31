"""The add-on's engine failures (issue 17): a damaged result file gets a clear ResultFileError (defect 11), and
the headless path refuses an engine speaking another protocol, as the UI path does (defect 9)."""

from __future__ import annotations

import io
import sys
import zipfile

import numpy as np
import pytest

# Names are looked up on the modules at call time: other tests reload the add-on's modules (re-register),
# which replaces the classes a from-import would have pinned.
from handtailor_blender.io import engine_client
from handtailor_blender.io import results as io_results


@pytest.fixture
def result_bytes(tmp_path, models_dir) -> bytes:
    """A whole capture result, compressed (as the engine writes them), 2 tracks x 40 frames."""
    import blender_helpers as helpers

    _, right, left = models_dir
    plain = helpers.make_result(tmp_path / "plain.npz", [right, left], N=40)
    with np.load(plain) as z:
        np.savez_compressed(tmp_path / "whole.npz", **{k: z[k] for k in z.files})
    return (tmp_path / "whole.npz").read_bytes()


def _damaged(result_bytes: bytes, how: str) -> bytes:
    data = bytearray(result_bytes)
    if how == "cut_half":
        return bytes(data[: len(data) // 2])
    if how == "cut_tail":  # the zip's central directory is gone
        return bytes(data[:-30])
    if how == "scrambled_member":  # theta's compressed bytes overwritten: deflate or CRC error on read
        with _zip(result_bytes) as zf:
            info = zf.getinfo("theta.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 16
        data[start : start + 200] = bytes((b * 7 + 13) % 256 for b in range(200))
        return bytes(data)
    if how == "bad_npy_header":  # a stored member whose .npy header is garbage
        with _zip(result_bytes) as src:
            arrays = {n: src.read(n) for n in src.namelist()}
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            for name, raw in arrays.items():
                zf.writestr(name, b"\x93NUMPY\x01\x00\x10\x00{'descr': ???}\n" if name == "theta.npy" else raw)
        return out.getvalue()
    raise ValueError(how)


def _zip(data: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(data))


@pytest.mark.parametrize("how", ["cut_half", "cut_tail", "scrambled_member", "bad_npy_header"])
def test_damaged_result_is_a_result_file_error(tmp_path, result_bytes, how):
    path = tmp_path / "take.npz"
    path.write_bytes(_damaged(result_bytes, how))
    with pytest.raises(io_results.ResultFileError) as info:
        io_results.read_result(path)
    message = str(info.value)
    assert str(path) in message
    assert "damaged" in message or "truncated" in message
    assert "capture again" in message or "export" in message


def test_whole_result_still_reads(tmp_path, result_bytes):
    path = tmp_path / "take.npz"
    path.write_bytes(result_bytes)
    assert io_results.read_result(path).theta.shape == (2, 40, 16, 4)


# ------------------------------------------------------------------------------- defect 9: protocol check

_PROTOCOL_99 = '''
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    if req["cmd"] == "hello":
        out = {"id": req["id"], "type": "result", "result": {"protocol": 99, "engine_version": "future"}}
    elif req["cmd"] == "shutdown":
        print(json.dumps({"id": req["id"], "type": "result", "result": {}}), flush=True)
        break
    else:  # it would happily run a job in a protocol the add-on does not speak
        open(req["args"]["output"], "w").write("written by a protocol-99 engine")
        out = {"id": req["id"], "type": "result", "result": {"files": {"result": req["args"]["output"]}}}
    print(json.dumps(out), flush=True)
'''


@pytest.fixture
def engine_99(tmp_path) -> str:
    root = tmp_path / "engine99"
    (root / "engine").mkdir(parents=True)
    (root / "engine" / "__init__.py").write_text("")
    (root / "engine" / "__main__.py").write_text(_PROTOCOL_99)
    return str(root)


def test_client_check_hello_is_one_rule():
    assert engine_client.check_hello({"protocol": engine_client.PROTOCOL_VERSION})["protocol"] == 1
    with pytest.raises(engine_client.EngineFailure, match="protocol 99") as info:
        engine_client.check_hello({"protocol": 99})
    assert info.value.code == "protocol_error"


def test_headless_run_job_refuses_another_protocol(tmp_path, engine_99):
    pytest.importorskip("bpy")
    from handtailor_blender import capture as addon_capture

    client = engine_client.EngineClient(engine_client.engine_command(sys.executable), cwd=engine_99)
    out = tmp_path / "take.npz"
    try:
        with pytest.raises(engine_client.EngineFailure, match="protocol 99") as info:
            addon_capture.run_job(client, "capture", {"source": "clip.mp4", "output": str(out)},
                                  addon_capture.EngineConfig())
    finally:
        client.close()
    assert info.value.code == "protocol_error"
    assert not out.exists()  # no job went to that engine


def test_start_refuses_another_protocol(engine_99):
    with pytest.raises(engine_client.EngineFailure, match="protocol 99") as info:
        engine_client.EngineClient.start(sys.executable, engine_99)
    assert info.value.code == "protocol_error"
