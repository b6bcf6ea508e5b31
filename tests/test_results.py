"""engine.results: the capture result / edits files per DESIGN.md, atomic writes, validation."""

import os

import numpy as np
import pytest

from engine import results
from engine.errors import InputError, OutputError
from capture_fixtures import fake_result


def test_round_trip_loads_without_pickle(tmp_path):
    d = fake_result(T=2, N=5)
    p = results.write_result(tmp_path / "r.npz", d)
    assert p.exists()
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask  # an ordinary file, not mkstemp's 0600
    with np.load(p, allow_pickle=False) as z:
        assert set(results.RESULT_SHAPES) <= set(z.files)
        for k in z.files:
            assert z[k].dtype != object
        assert z["source"].dtype.kind == "U" and z["hand_side"].dtype.kind == "U"
        assert int(z["format_version"]) == 2
        assert z["hand_model"].shape == (2,) and z["hand_model_sha256"].shape == (2,)
    r = results.read_result(p)
    assert results.validate_result(r) == (2, 5)
    np.testing.assert_array_equal(r["valid"], d["valid"])
    np.testing.assert_array_equal(r["theta"], d["theta"])  # float64 kept bit for bit
    assert r["theta"].shape == (2, 5, 16, 4) and r["joints_3d"].shape == (2, 5, 21, 3)
    # invalid frames carry no made-up values
    assert np.isnan(r["theta"][:, 2]).all() and np.isnan(r["root"][:, 2]).all()
    # extra keys are allowed
    d["frame_decoded"] = np.ones(5, bool)
    results.write_result(tmp_path / "r2.npz", d)


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    d = fake_result()
    p = tmp_path / "r.npz"
    results.write_result(p, d)
    before = p.read_bytes()

    write_array, written = np.lib.format.write_array, []

    def boom(*a, **k):  # interrupted with part of the file written
        written.append(write_array(*a, **k))
        if len(written) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(KeyboardInterrupt):
        results.write_result(p, fake_result(seed=3))
    assert p.read_bytes() == before  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["r.npz"]  # no temp file left


def test_format_1_files_are_read_as_format_2(tmp_path):
    """Format 1 held one hand_model entry (track 0's): tracks of track 0's side keep its sha256, a track
    of the other side gets none (re-tailor then needs to be told the model)."""
    d = fake_result(T=2, N=5)
    d.update(format_version=np.asarray(1), hand_model=np.asarray("/models/MANO_RIGHT.pkl"),
             hand_model_sha256=np.asarray("ab" * 32))
    np.savez(tmp_path / "v1.npz", **d)
    r = results.read_result(tmp_path / "v1.npz")
    assert int(r["format_version"]) == 2
    assert r["hand_model"].tolist() == ["/models/MANO_RIGHT.pkl"] * 2
    assert r["hand_model_sha256"].tolist() == ["ab" * 32, ""]
    results.write_result(tmp_path / "v2.npz", r)  # and written back as format 2
    with np.load(tmp_path / "v2.npz") as z:
        assert int(z["format_version"]) == 2 and z["hand_model"].shape == (2,)


def test_readers_refuse_newer_versions(tmp_path):
    d = fake_result()
    d["format_version"] = np.asarray(results.FORMAT_VERSION + 1)
    np.savez(tmp_path / "new.npz", **d)
    with pytest.raises(InputError, match="newer than this engine"):
        results.read_result(tmp_path / "new.npz")


def test_validation_names_the_problem(tmp_path):
    d = fake_result()
    bad = dict(d, theta=d["theta"][:, :, :15])
    with pytest.raises(InputError, match="'theta' has shape"):
        results.validate_result(bad)
    bad = dict(d)
    del bad["joints_3d"]
    with pytest.raises(InputError, match="lacks joints_3d"):
        results.validate_result(bad)
    bad = dict(d, camera_model=np.asarray("fisheye"))
    with pytest.raises(InputError, match="camera_model"):
        results.validate_result(bad)
    root = d["root"].copy()
    root[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        results.validate_result(dict(d, root=root))
    with pytest.raises(InputError, match="not be written|must be"):
        results.write_result(tmp_path / "x.npz", dict(d, valid=np.ones((1, 6)), hand_side=np.asarray(["middle"])))
    assert not (tmp_path / "x.npz").exists()


def test_readers_refuse_garbage_and_pickles(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a numpy .npz archive"):
        results.read_result(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(InputError, match="object arrays"):
        results.read_result(tmp_path / "obj.npz")
    with pytest.raises(InputError, match="does not exist"):
        results.read_result(tmp_path / "missing.npz")


def test_unwritable_output_paths(tmp_path):
    d = fake_result()
    with pytest.raises(OutputError, match="does not exist"):
        results.write_result(tmp_path / "no" / "such" / "dir" / "r.npz", d)
    with pytest.raises(OutputError, match="is a folder"):
        results.check_output_path(tmp_path)
    with pytest.raises(OutputError, match=r"\.npz"):
        results.check_output_path(tmp_path / "r.txt")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(OutputError, match="permission"):
            results.write_result(ro / "r.npz", d)


def test_non_ascii_and_spaces_in_paths(tmp_path):
    folder = tmp_path / "mes captures ✋ 手"
    folder.mkdir()
    p = results.write_result(folder / "résultat 1.npz", fake_result())
    assert results.read_result(p)["theta"].shape == (1, 6, 16, 4)


def test_edits_round_trip_and_checks(tmp_path):
    r = fake_result(T=2, N=4, invalid=())
    e = results.empty_edits(r)
    e["lock_theta"][0, 1, 3] = True
    e["lock_root"][1, 2] = True
    p = results.write_edits(tmp_path / "edits.npz", e, r)
    back = results.read_edits(p, r)
    assert back["lock_theta"].dtype == bool and back["lock_theta"][0, 1, 3]
    np.testing.assert_array_equal(back["theta"], e["theta"])
    # mismatched capture
    with pytest.raises(InputError, match="another capture"):
        results.validate_edits(e, fake_result(T=1, N=4))
    # locked NaN
    e2 = dict(e, root=e["root"].copy())
    e2["root"][1, 2] = np.nan
    with pytest.raises(InputError, match="locked 'root'"):
        results.validate_edits(e2)
    # a lock mask that is not boolean
    with pytest.raises(InputError, match="boolean"):
        results.validate_edits(dict(e, lock_beta=e["lock_beta"].astype(np.int8)))
    e3 = dict(e, format_version=np.asarray(9))
    with pytest.raises(InputError, match="newer"):
        results.validate_edits(e3)
