"""engine.hand_model loading: npz, official-layout MANO pickles (fake chumpy), the restricted unpickler,
validation messages, the MANO_LEFT fix, and `model info` refusing a malicious file."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse

from engine.errors import ModelFileError
from engine.hand_model import (
    FINGER_KEYPOINTS,
    KEYPOINT_NAMES,
    MANO_JOINT_NAMES,
    MANO_PARENTS,
    MANO_TO_KEYPOINT,
    TIP_NAMES,
    load_hand_model,
)
from engine.hand_model.loading import HandModel, read_mano_pickle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_mano_fields(n_vertices: int = 50, seed: int = 0, n_shape: int = 10) -> dict:
    """A random model in MANO's layout: positive normalized weights/regressor, MANO's kinematic tree."""
    rng = np.random.default_rng(seed)
    weights = rng.random((n_vertices, 16)) ** 3
    weights /= weights.sum(axis=1, keepdims=True)
    regressor = rng.random((16, n_vertices)) * (rng.random((16, n_vertices)) < 0.3)
    regressor[:, 0] += 1e-3
    regressor /= regressor.sum(axis=1, keepdims=True)
    ids = np.arange(n_vertices)
    faces = np.stack([ids, (ids + 1) % n_vertices, (ids + 7) % n_vertices], axis=1)
    kintree = np.stack([np.r_[2**32 - 1, MANO_PARENTS[1:]], np.arange(16)]).astype(np.int64)
    return dict(
        v_template=rng.normal(size=(n_vertices, 3)) * 0.05,
        f=faces.astype(np.uint32),
        J_regressor=regressor,
        weights=weights,
        kintree_table=kintree,
        shapedirs=rng.normal(size=(n_vertices, 3, n_shape)) * 0.005,
        posedirs=rng.normal(size=(n_vertices, 3, 135)) * 0.002,
    )


# ------------------------------------------------------------------------------------------------
# constants


def test_constants_match_the_contract():
    assert len(MANO_JOINT_NAMES) == 16 and MANO_JOINT_NAMES[13] == "thumb1"
    assert MANO_PARENTS.tolist() == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    assert MANO_TO_KEYPOINT.tolist() == [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
    assert FINGER_KEYPOINTS.shape == (5, 4) and FINGER_KEYPOINTS[1].tolist() == [8, 7, 6, 5]
    assert len(KEYPOINT_NAMES) == 21 and TIP_NAMES[0] == "thumb_tip"
    names16 = list(MANO_JOINT_NAMES) + list(TIP_NAMES)
    # every keypoint name is its MANO joint / tip: same finger, same order base-to-tip
    for k, src in enumerate(MANO_TO_KEYPOINT):
        assert KEYPOINT_NAMES[k].split("_")[0] == names16[src].rstrip("123").split("_")[0]
    with pytest.raises(ValueError):
        MANO_PARENTS[0] = 3  # read-only: one truth


# ------------------------------------------------------------------------------------------------
# npz


def test_npz_roundtrip_and_cache(tmp_path):
    fields = random_mano_fields()
    fields.update(tip_vertex_ids=np.array([1, 2, 3, 4, 5]), name="tiny", side="left",
                  joint_limits=np.stack([-np.ones((16, 3)), np.ones((16, 3))], axis=-1))
    path = tmp_path / "tiny.npz"
    np.savez(path, **fields)
    model = load_hand_model(path)
    assert isinstance(model, HandModel)
    assert (model.name, model.side, model.format) == ("tiny", "left", "npz")
    assert model.v_template.shape == (50, 3) and model.v_template.dtype == np.float64
    assert model.faces.dtype == np.int32 and model.faces.shape == (50, 3)
    assert model.J_regressor.shape == (16, 50) and model.weights.shape == (50, 16)
    assert model.shapedirs.shape == (50, 3, 10) and model.posedirs.shape == (50, 3, 135)
    assert model.parents.tolist() == MANO_PARENTS.tolist()
    assert model.joint_limits.shape == (16, 3, 2)
    assert len(model.sha256) == 64
    assert model.rest_joints().shape == (16, 3)
    assert load_hand_model(str(path)) is model  # cached
    with pytest.raises(ValueError):
        model.v_template[0, 0] = 1.0


def test_folder_picks_side(tmp_path):
    fields = random_mano_fields()
    fields["tip_vertex_ids"] = np.arange(5)
    np.savez(tmp_path / "open_hand_left.npz", **fields)
    assert load_hand_model(tmp_path, side="left").side == "left"
    with pytest.raises(ModelFileError, match="MANO_RIGHT.pkl or open_hand_right.npz or models/MANO_RIGHT.pkl"):
        load_hand_model(tmp_path, side="right")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.pop("weights"), "missing field\\(s\\) weights"),
        (lambda f: f.update(weights=f["weights"][:, :15]), "'weights' has shape \\(50, 15\\), expected \\(50, 16\\)"),
        (lambda f: f.update(shapedirs=f["shapedirs"][:, :, :4]), "'shapedirs' has shape \\(50, 3, 4\\), expected \\(50, 3, 10\\)"),
        (lambda f: f.update(J_regressor=f["J_regressor"][:, :40]), "'J_regressor' has shape \\(16, 40\\), expected \\(16, 50\\)"),
        (lambda f: f.update(f=f["f"] + 100), "'f' indexes vertex"),
        (lambda f: f["kintree_table"].__setitem__((0, 5), 0), "kinematic tree"),
        (lambda f: f.update(posedirs=np.zeros((50, 3, 100))), "'posedirs' has shape \\(50, 3, 100\\), expected \\(50, 3, 135\\)"),
        (lambda f: f.pop("tip_vertex_ids"), "missing field 'tip_vertex_ids'"),
    ],
)
def test_validation_names_the_problem(tmp_path, mutate, message):
    fields = random_mano_fields()
    fields["tip_vertex_ids"] = np.arange(5)
    mutate(fields)
    np.savez(tmp_path / "m.npz", **fields)
    with pytest.raises(ModelFileError, match=message):
        load_hand_model(tmp_path / "m.npz")


def test_smpl_body_model_is_named(tmp_path):
    fields = dict(v_template=np.zeros((6890, 3)), kintree_table=np.zeros((2, 24), np.int64), f=np.zeros((3, 3), np.int32))
    np.savez(tmp_path / "basicModel_neutral.npz", **fields)
    with pytest.raises(ModelFileError, match=r"SMPL body model \(6890 vertices, 24 joints\), not MANO"):
        load_hand_model(tmp_path / "basicModel_neutral.npz")


def test_truncated_and_foreign_files(tmp_path):
    fields = random_mano_fields()
    fields["tip_vertex_ids"] = np.arange(5)
    np.savez(tmp_path / "m.npz", **fields)
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_hand_model(tmp_path / "cut.npz")
    (tmp_path / "notes.txt").write_text("hello, I am not a hand model\n")
    with pytest.raises(ModelFileError, match="neither a pickle"):
        load_hand_model(tmp_path / "notes.txt")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_hand_model(tmp_path / "empty.pkl")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_hand_model(tmp_path / "nope.pkl")
    np.savez(tmp_path / "obj.npz", v_template=np.array([object()], dtype=object))
    with pytest.raises(ModelFileError, match="pickled object array"):
        load_hand_model(tmp_path / "obj.npz")


# ------------------------------------------------------------------------------------------------
# Official MANO layout, written with fake chumpy classes


@contextlib.contextmanager
def fake_chumpy():
    """Temporary `chumpy`, `chumpy.ch`, `chumpy.ch_ops` modules whose classes pickle like chumpy's
    (`Ch.__getstate__` is the instance `__dict__` minus its weak caches), so the stream carries the
    real global names chumpy.ch.Ch / chumpy.ch_ops.add."""
    pkg = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")
    ops = types.ModuleType("chumpy.ch_ops")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = set()
            self._itr = None
            self._make_dense = False
            self._make_sparse = False
            self._depends_on_deps = {}

        def __getstate__(self):
            return dict(self.__dict__)

    class add:  # noqa: N801 - chumpy's name
        def __init__(self, a, b):
            self.a, self.b = a, b
            self._dirty_vars = {"a", "b"}

        def __getstate__(self):
            return dict(self.__dict__)

    class Select:  # an expression our loader cannot evaluate without chumpy
        def __init__(self, a):
            self.a, self.idxs = a, np.arange(3)

        def __getstate__(self):
            return dict(self.__dict__)

    Select.__module__, Select.__qualname__ = "chumpy.ch_ops", "Select"
    ops.Select = Select
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    add.__module__, add.__qualname__ = "chumpy.ch_ops", "add"
    ch.Ch, ops.add, pkg.ch, pkg.ch_ops = Ch, add, ch, ops
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch", "chumpy.ch_ops")}
    sys.modules.update({"chumpy": pkg, "chumpy.ch": ch, "chumpy.ch_ops": ops})
    try:
        yield ch, ops
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def official_mano_pickle(seed: int = 0, protocol: int = 2) -> tuple[bytes, dict]:
    """Bytes of a pickle in the official MANO layout (778 vertices) and the plain arrays it holds."""
    fields = random_mano_fields(n_vertices=778, seed=seed)
    rng = np.random.default_rng(seed + 1)
    with fake_chumpy() as (ch, ops):
        half = fields["v_template"] / 2
        data = {
            "v_template": ops.add(ch.Ch(half), ch.Ch(fields["v_template"] - half)),  # an expression
            "shapedirs": ch.Ch(fields["shapedirs"]),
            "posedirs": fields["posedirs"],
            "J": ch.Ch(fields["J_regressor"] @ fields["v_template"]),
            "J_regressor": scipy.sparse.csc_matrix(fields["J_regressor"]),
            "kintree_table": fields["kintree_table"],
            "weights": ch.Ch(fields["weights"]),
            "f": fields["f"],
            "hands_components": rng.normal(size=(45, 45)),
            "hands_mean": rng.normal(size=45),
            "hands_coeffs": rng.normal(size=(10, 45)),
            "bs_type": "lrotmin",
            "bs_style": "lbs",
        }
        blob = pickle.dumps(data, protocol=protocol)
    assert b"chumpy.ch" in blob and b"csc_matrix" in blob
    return blob, fields


@pytest.mark.parametrize("protocol", [0, 2])
def test_official_layout_pickle_loads(tmp_path, protocol):
    blob, fields = official_mano_pickle(protocol=protocol)
    raw = read_mano_pickle(blob, "MANO_RIGHT.pkl")
    np.testing.assert_allclose(raw["v_template"], fields["v_template"], atol=1e-15)
    np.testing.assert_array_equal(raw["J_regressor"], fields["J_regressor"])
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(blob)
    model = load_hand_model(tmp_path, side="right")
    assert (model.format, model.side, model.fixes) == ("mano_pkl", "right", ())
    np.testing.assert_array_equal(model.shapedirs, fields["shapedirs"])
    np.testing.assert_array_equal(model.weights, fields["weights"])
    assert model.tip_vertex_ids.tolist() == [745, 317, 444, 556, 673]
    assert model.has_pose_correctives


def test_unreducible_chumpy_expression_only_matters_where_used(tmp_path):
    fields = random_mano_fields(n_vertices=778, seed=2)
    fields["tip_vertex_ids"] = np.arange(5)
    with fake_chumpy() as (ch, ops):
        extra = dict(fields, J=ops.Select(ch.Ch(np.zeros(3))))
        ok = pickle.dumps(extra, protocol=2)
        bad = pickle.dumps(dict(fields, shapedirs=ops.Select(ch.Ch(fields["shapedirs"]))), protocol=2)
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(ok)
    assert load_hand_model(tmp_path / "MANO_RIGHT.pkl").n_vertices == 778
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(bad)
    with pytest.raises(ModelFileError, match="shapedirs: the pickled chumpy expression chumpy.ch_ops.Select cannot"):
        load_hand_model(tmp_path / "MANO_RIGHT.pkl")


def test_official_left_file_gets_the_shapedirs_fix(tmp_path):
    blob, fields = official_mano_pickle(seed=3)
    (tmp_path / "MANO_LEFT.pkl").write_bytes(blob)
    model = load_hand_model(tmp_path / "MANO_LEFT.pkl")
    assert model.side == "left" and len(model.fixes) == 1
    np.testing.assert_array_equal(model.shapedirs[:, 0], -fields["shapedirs"][:, 0])
    np.testing.assert_array_equal(model.shapedirs[:, 1:], fields["shapedirs"][:, 1:])


def test_official_layout_pickle_runs_through_smplx(tmp_path):
    torch = pytest.importorskip("torch")
    from engine.hand_model.torch_layer import HandLayer, axis_angle_to_quat

    blob, fields = official_mano_pickle(seed=5)
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(blob)
    model = load_hand_model(tmp_path / "MANO_RIGHT.pkl")
    layer = HandLayer(model, dtype=torch.float64)
    aa = torch.zeros(2, 16, 3, dtype=torch.float64)
    verts, kps, joints = layer(axis_angle_to_quat(aa), torch.zeros(2, 10, dtype=torch.float64))
    assert verts.shape == (2, 778, 3) and kps.shape == (2, 21, 3) and joints.shape == (2, 16, 3)
    rest = fields["v_template"] - fields["J_regressor"][0] @ fields["v_template"]
    np.testing.assert_allclose(verts[0].numpy(), rest, atol=1e-12)


def test_truncated_pickle(tmp_path):
    blob, _ = official_mano_pickle()
    with pytest.raises(ModelFileError, match="truncated file: MANO_RIGHT.pkl .*re-download it"):
        read_mano_pickle(blob[: len(blob) // 3], "MANO_RIGHT.pkl")


# ------------------------------------------------------------------------------------------------
# Malicious pickles: refused, nothing runs


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious(marker) -> dict[str, bytes]:
    command = f"touch {marker}"
    return {
        "os.system": b"cos\nsystem\n(S'" + command.encode() + b"'\ntR.",
        "posix.system": pickle.dumps({"v_template": np.zeros((3, 3)), "x": _Reduce(os.system, (command,))}, protocol=2),
        "subprocess.call": pickle.dumps(_Reduce(subprocess.call, (["touch", str(marker)],)), protocol=2),
        "builtins.eval": pickle.dumps(_Reduce(eval, (f"__import__('os').system({command!r})",)), protocol=4),
        "builtins.getattr": pickle.dumps(_Reduce(getattr, (np.ndarray, "view")), protocol=4),
    }


@pytest.mark.parametrize("name", ["os.system", "posix.system", "subprocess.call", "builtins.eval", "builtins.getattr"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, name):
    marker = tmp_path / "MARKER"
    blob = _malicious(marker)[name]
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(blob)
    with pytest.raises(ModelFileError, match=f"refusing to load MANO_RIGHT.pkl: it references {name}") as info:
        load_hand_model(path)
    assert "may be malicious" in str(info.value)
    assert info.value.code == "bad_model_file"
    assert not marker.exists()


def test_chumpy_stand_ins_cannot_be_rewritten():
    # BUILD on the class object itself must not plant attributes on our stand-in classes.
    blob = b"\x80\x02cchumpy.ch\nCh\nN}X\x0c\x00\x00\x00__setstate__cposix\nsystem\ns\x86b."
    with pytest.raises(ModelFileError, match="posix.system"):
        read_mano_pickle(blob, "x.pkl")
    blob = b"\x80\x02cchumpy.ch\nCh\nN}X\x01\x00\x00\x00yK\x01s\x86b."
    with pytest.raises(ModelFileError, match="corrupt file"):
        read_mano_pickle(blob, "x.pkl")


def test_cli_info_refuses_malicious_file(tmp_path):
    marker = tmp_path / "MARKER"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(_malicious(marker)["os.system"])
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "model", "info", str(bad), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "os.system" in proc.stderr and "refusing" in proc.stderr
    assert proc.stdout == ""
    assert not marker.exists()
