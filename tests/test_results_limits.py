"""Result and edits files that try to break the engine (issue 17): compression bombs (the declared sizes are
checked before anything is decompressed) and edits whose values cannot be used (refused up front, naming
the edits file, before any refit)."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest

from capture_fixtures import fake_result
from engine import cli, results
from engine.errors import InputError
from reliability_helpers import deflate_bomb_npz, run_measured

# What the reader may use for a bomb's refusal (python + numpy start at ~40 MiB); each bomb is 1 GiB.
PEAK_LIMIT_MB = 200

_READ = (
    "import sys\n"
    "from engine.errors import InputError\n"
    "from engine.results import read_result, read_edits\n"
    "try:\n"
    "    (read_edits if sys.argv[2] == 'edits' else read_result)(sys.argv[1])\n"
    "except InputError as exc:\n"
    "    print(f'[{exc.code}] {exc}', file=sys.stderr)\n"
    "    sys.exit(2)\n"
)


def read_in_child(path, kind="result"):
    return run_measured([sys.executable, "-c", _READ, str(path), kind])


# --------------------------------------------------------------------------- risk: compression bombs


def test_bomb_in_an_extra_key_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "bomb.npz"
    deflate_bomb_npz(path, "junk", (2**30,), np.uint8, fake_result())  # 1 MB on disk, 1 GiB declared
    assert path.stat().st_size < 2 * 2**20
    child = read_in_child(path)
    assert child.returncode == 2, child.stderr[-2000:]
    assert child.peak_mb < PEAK_LIMIT_MB, child.peak_mb
    assert "[bad_input]" in child.stderr and "'junk'" in child.stderr


def test_bomb_in_theta_disagreeing_with_the_frame_count(tmp_path):
    path = tmp_path / "bomb.npz"
    deflate_bomb_npz(path, "theta", (1, 2**21, 16, 4), np.float64, fake_result())  # 1 GiB, N = 6 elsewhere
    child = read_in_child(path)
    assert child.returncode == 2, child.stderr[-2000:]
    assert child.peak_mb < PEAK_LIMIT_MB, child.peak_mb
    assert "'theta' has shape (1, 2097152, 16, 4)" in child.stderr


def test_bomb_in_an_edits_file(tmp_path):
    e = results.empty_edits(fake_result())
    path = tmp_path / "edits.npz"
    deflate_bomb_npz(path, "lock_theta", (1, 2**26, 16), np.bool_, e)  # 1 GiB of mask
    child = read_in_child(path, "edits")
    assert child.returncode == 2, child.stderr[-2000:]
    assert child.peak_mb < PEAK_LIMIT_MB, child.peak_mb
    assert "lock_theta" in child.stderr


def _forged_header_npz(path, arrays: dict, key: str, shape: tuple, dtype) -> None:
    """An .npz whose member `key` has a .npy header declaring `shape` and a zip entry claiming that many
    bytes, with no data behind them (the reader must refuse it from the header alone)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.asarray(value), allow_pickle=False)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        with zf.open(f"{key}.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(fh, header)


def test_a_consistent_file_above_the_size_limit_is_refused_from_its_headers(tmp_path):
    # every per-frame array agrees on N = 3,000,000 frames x 2 tracks: ~6.6 GB declared, nothing behind it
    d = fake_result()
    T, N = 2, 3_000_000
    path = tmp_path / "huge.npz"
    small = {k: v for k, v in d.items() if "N" not in results.RESULT_SHAPES.get(k, ()) and k != "hand_side"}
    small["hand_side"] = np.asarray(["right", "left"])
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in small.items():
            with zf.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.asarray(value), allow_pickle=False)
        for name, template in results.RESULT_SHAPES.items():
            if "N" in template:
                shape = tuple({"T": T, "N": N}.get(s, s) for s in template)
                dtype = np.asarray(d[name]).dtype
                with zf.open(f"{name}.npy", "w") as fh:
                    np.lib.format.write_array_header_1_0(
                        fh, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    with pytest.raises(InputError, match=r"declare [0-9,]+ bytes in all"):
        results.read_result(path)


def test_truncated_member_data_is_named(tmp_path):
    path = tmp_path / "cut.npz"
    _forged_header_npz(path, {k: v for k, v in fake_result().items() if k != "theta"}, "theta", (1, 6, 16, 4), np.float64)
    with pytest.raises(InputError, match="truncated"):
        results.read_result(path)


def test_ordinary_results_still_read(tmp_path):
    d = fake_result(T=2, N=50)
    d["frame_decoded"] = np.ones(50, bool)
    p = results.write_result(tmp_path / "r.npz", d)
    r = results.read_result(p)
    np.testing.assert_array_equal(r["theta"], d["theta"])
    assert r["frame_decoded"].all()


# --------------------------------------------------------------------------- defect 10: edits values


@pytest.fixture
def written(tmp_path):
    r = fake_result(N=6, invalid=())
    rp = results.write_result(tmp_path / "result.npz", r)
    return r, rp


def _edits(r, changes: dict):
    e = results.empty_edits(r)
    for (key, lock, index), value in changes.items():
        e[key][index] = value
        e[lock][index] = True
    return e


BAD_EDITS = {
    "non_unit_quaternion": ({("theta", "lock_theta", (0, 2, 5)): [10.0, 0, 0, 0]}, "lock_theta.*unit"),
    "huge_hand_scale": ({("hand_scale", "lock_hand_scale", (0, 1)): 1e300}, "hand_scale.*between"),
    "tiny_hand_scale": ({("hand_scale", "lock_hand_scale", (0, 1)): 1e-9}, "hand_scale.*between"),
    "far_root": ({("root", "lock_root", (0, 3)): [0, 0, 1e300]}, "root.*within"),
    "wild_beta": ({("beta", "lock_beta", (0, 0)): np.full(10, 1e6)}, "beta.*within"),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_unusable_edits_are_refused_up_front_naming_the_edits_file(tmp_path, written, case):
    r, rp = written
    changes, words = BAD_EDITS[case]
    ep = tmp_path / "my edits.npz"
    np.savez(ep, **_edits(r, changes))  # as a tool might write it, without the engine's checks
    with pytest.raises(InputError, match=words) as info:
        results.read_edits(ep, r)
    assert str(ep) in str(info.value)


@pytest.mark.parametrize("case", ["non_unit_quaternion", "huge_hand_scale"])
def test_retailor_blames_the_edits_not_the_output(tmp_path, written, capsys, case):
    r, rp = written
    ep = tmp_path / "edits.npz"
    np.savez(ep, **_edits(r, BAD_EDITS[case][0]))
    out = tmp_path / "new.npz"
    assert cli.main(["retailor", str(rp), "--edits", str(ep), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"edits file {str(ep)!r}" in err and "being written" not in err
    assert not out.exists()


def test_usable_edits_pass(tmp_path, written):
    r, rp = written
    q = np.array([np.cos(0.3), 0.0, np.sin(0.3), 0.0])
    e = _edits(r, {("theta", "lock_theta", (0, 2, 5)): q, ("hand_scale", "lock_hand_scale", (0, 1)): 0.8,
                     ("root", "lock_root", (0, 3)): [0.1, -0.2, 0.7], ("beta", "lock_beta", (0, 0)): np.full(10, 2.0)})
    ep = results.write_edits(tmp_path / "e.npz", e, r)
    assert results.read_edits(ep, r)["lock_theta"][0, 2, 5]
