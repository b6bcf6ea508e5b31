"""Hostile hand model files (issue 17, defects 1 and 6): forged array pointers, size bombs, deep nesting.

Every case runs `python -m engine model info FILE` in a child process, so that a crash (segfault) or a
runaway allocation shows up as the child's exit status and peak memory, not as a dead test run. Each must
end with exit 2 and `bad_model_file`, nothing allocated beyond a small bound, no traceback."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import scipy.sparse

from engine.errors import ModelFileError
from engine.hand_model import load_hand_model
from engine.hand_model.loading import read_mano_pickle
from reliability_helpers import engine, run_measured
from test_hand_model_loading import fake_chumpy, random_mano_fields

# Far above what `model info` needs for the shipped model (about 40 MiB) and far below every bomb here.
PEAK_LIMIT_MB = 300

# The 74-byte file of the issue: {"v_template": [ndarray((1,), dtype('O'), buffer=b"AAAAAAAA")]}.
FORGED_POINTER = (b"\x80\x02}X\x0a\x00\x00\x00v_template]cnumpy\nndarray\n(K\x01\x85cnumpy\ndtype\nX\x01\x00\x00\x00O"
                  b"\x85RC\x08AAAAAAAAtRas.")


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _dtype(spec: str, state: bytes = b"") -> bytes:
    """dtype(spec, False, True) [+ BUILD state]."""
    out = _global("numpy", "dtype") + _text(spec) + b"\x89\x88\x87R"
    return out + (state + b"b" if state else b"")


def _array(dtype: bytes, shape: tuple, raw: bytes) -> bytes:
    """numpy's own pickle of an array: _reconstruct(ndarray, (0,), b'b') then BUILD (1, shape, dtype, False, raw)."""
    shape_ops = b"(" + b"".join(b"J" + struct.pack("<i", s) for s in shape) + b"t"
    return (_global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray") + b"K\x00\x85C\x01b\x87R"
            + b"(K\x01" + shape_ops + dtype + b"\x89B" + struct.pack("<I", len(raw)) + raw + b"tb")


def _model_dict(value: bytes, key: str = "v_template") -> bytes:
    return b"\x80\x02}" + _text(key) + value + b"s."


def _structured_object_dtype() -> bytes:
    """V8 whose one field is an object, with flags 0 (claiming it holds no object)."""
    fields = b"}" + _text("a") + _dtype("O") + b"K\x00\x86s"
    state = b"(K\x03" + _text("|") + b"N" + _text("a") + b"\x85" + fields + b"K\x08K\x01K\x00t"
    return _dtype("V8", state)


FORGED = {
    "issue_74_bytes": FORGED_POINTER,
    "ndarray_float_buffer": _model_dict(
        _global("numpy", "ndarray") + b"(K\x01\x85" + _dtype("f8") + b"C\x08AAAAAAAAtR"),
    "structured_object_field": _model_dict(_array(_structured_object_dtype(), (1,), b"AAAAAAAA")),
    "object_dtype_reconstruct": _model_dict(_array(_dtype("O"), (1,), b"AAAAAAAA")),
    "scalar_object": _model_dict(
        _global("numpy.core.multiarray", "scalar") + _dtype("O") + b"C\x08AAAAAAAA\x86R"),
}


def run_info(path):
    return run_measured(engine("model", "info", path, "--json"))


def assert_refused(child, *words):
    assert child.returncode == 2, (child.returncode, child.stderr[-2000:])
    assert child.peak_mb < PEAK_LIMIT_MB, child.peak_mb
    assert "bad_model_file" in child.stderr, child.stderr[-2000:]
    assert "Traceback" not in child.stderr, child.stderr[-2000:]
    for w in words:
        assert w in child.stderr, (w, child.stderr[-2000:])
    assert child.stdout == ""


# ------------------------------------------------------------------------------- defect 1: forged pointers


def test_the_issue_file_is_74_bytes():
    assert len(FORGED_POINTER) == 74


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_arrays_exit_2_with_bad_model_file(tmp_path, name):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(FORGED[name])
    assert_refused(run_info(path))


def test_object_dtype_is_named_in_the_message(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(FORGED["object_dtype_reconstruct"])
    with pytest.raises(ModelFileError, match="v_template.*dtype 'O'.*only plain numbers"):
        load_hand_model(path)


def test_forged_pointer_refused_by_capture_too(tmp_path):
    from capture_fixtures import write_video

    clip = write_video(tmp_path / "clip.avi", 3)
    model = tmp_path / "forged.pkl"
    model.write_bytes(FORGED_POINTER)
    child = run_measured(engine("capture", clip, "-o", tmp_path / "r.npz", "--hand-model", model, "--quiet"))
    assert child.returncode == 2, (child.returncode, child.stderr[-2000:])
    assert "bad_model_file" in child.stderr and "Traceback" not in child.stderr
    assert not (tmp_path / "r.npz").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_numpy_pickles_of_every_protocol_still_load(tmp_path, protocol):
    fields = random_mano_fields(n_vertices=778, seed=4)
    fields["J_regressor"] = np.asfortranarray(fields["J_regressor"])  # Fortran order round-trips too
    fields["hands_mean"] = np.float32(0.5)  # a numpy scalar
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(fields, protocol=protocol))
    model = load_hand_model(path)
    np.testing.assert_array_equal(model.J_regressor, fields["J_regressor"])
    np.testing.assert_array_equal(model.weights, fields["weights"])
    np.testing.assert_array_equal(model.faces, fields["f"].astype(np.int32))


# ------------------------------------------------------------------------------- defect 6: memory bounds


def test_declared_huge_template_refused_before_allocating(tmp_path):
    # a 1e8 x 3 template as a sparse matrix with one entry: a few KB on disk, 2.4 GB when made dense.
    fields = {k: v for k, v in random_mano_fields(n_vertices=20).items() if k != "posedirs"}
    fields["v_template"] = scipy.sparse.csc_matrix(([1.0], ([0], [0])), shape=(10**8, 3))
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(fields, protocol=2))
    assert path.stat().st_size < 16_000
    child = run_info(path)
    assert_refused(child, "300,000,000 values")
    assert child.peak_mb < 1024


def test_chumpy_broadcast_bomb(tmp_path):
    # add((12000, 1), (1, 12000)): 190 KB of operands, 1.15 GB of result.
    with fake_chumpy() as (ch, ops):
        bomb = ops.add(ch.Ch(np.zeros((12000, 1))), ch.Ch(np.zeros((1, 12000))))
        data = pickle.dumps({"v_template": bomb, "hands_mean": np.zeros(45)}, protocol=2)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(data)
    assert_refused(run_info(path), "144,000,000 values")


def test_huge_sparse_matrix(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    huge = scipy.sparse.csr_matrix(([1.0], ([0], [0])), shape=(10**6, 10**6))  # one entry: 8 TB when dense
    path.write_bytes(pickle.dumps({"J_regressor": huge}, protocol=2))
    child = run_info(path)
    assert_refused(child)
    assert "MemoryError" not in child.stderr


def test_lists_nested_100000_deep(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(_model_dict(b"(" * 100_000 + b"l" * 100_000))
    child = run_info(path)
    assert_refused(child, "nested")
    assert "RecursionError" not in child.stderr


def test_a_list_that_holds_itself(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(_model_dict(b"]q\x00h\x00a"))
    assert_refused(run_info(path), "nested")


def test_one_array_referenced_many_times(tmp_path):
    # pickle's memo makes 40,000 references to one 24 KB array cost 2 bytes each; as one array, 960 MB.
    block = np.zeros((1000, 3))
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": [block] * 40_000}, protocol=2))
    assert path.stat().st_size < 200_000
    assert_refused(run_info(path))


def test_model_npz_deflate_bomb(tmp_path):
    from reliability_helpers import deflate_bomb_npz

    fields = random_mano_fields()
    fields["tip_vertex_ids"] = np.arange(5)
    path = tmp_path / "bomb.npz"
    deflate_bomb_npz(path, "v_template", (44_739_243, 3), np.float64, fields)  # 1 GiB of zeros
    assert path.stat().st_size < 4 * 2**20
    assert_refused(run_info(path), "v_template")


def test_limits_leave_real_models_alone():
    """The shipped model loads well inside the limits (a MANO-sized file is ~4 MB)."""
    model = load_hand_model()
    assert model.n_vertices > 0


def test_read_mano_pickle_raises_only_model_file_errors():
    for blob in FORGED.values():
        with pytest.raises(ModelFileError):
            fields = read_mano_pickle(blob, "x.pkl")
            # a refused field is kept as unreadable; the model build then names it
            from engine.hand_model.loading import build_hand_model

            build_hand_model(fields)
