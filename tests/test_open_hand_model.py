"""Checks of the shipped open hand model (models/open_hand/*.npz): format, geometry, rig, shapes.

numpy-only on purpose (no engine import): the model file is the contract.
"""
from __future__ import annotations

import hashlib
import importlib.util
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "open_hand"
RIGHT = MODEL_DIR / "open_hand_right.npz"
LEFT = MODEL_DIR / "open_hand_left.npz"
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
FINGER_JOINTS = {"thumb": (13, 14, 15), "index": (1, 2, 3), "middle": (4, 5, 6), "ring": (10, 11, 12),
                 "pinky": (7, 8, 9)}
TIP_ORDER = ("thumb", "index", "middle", "ring", "pinky")


def _load(path):
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def right():
    return _load(RIGHT)


@pytest.fixture(scope="module")
def left():
    return _load(LEFT)


# ------------------------------------------------------------------------------------------- helpers
def _rodrigues(r):
    """(..., 3) axis-angle -> (..., 3, 3)."""
    r = np.asarray(r, dtype=np.float64)
    a = np.linalg.norm(r, axis=-1, keepdims=True)
    k = r / np.maximum(a, 1e-12)
    K = np.zeros(r.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    a = a[..., None]
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def lbs(model, theta, beta=None):
    """MANO LBS (no pose correctives). theta (16,3) axis-angle -> (verts (V,3), joints (16,3))."""
    beta = np.zeros(10) if beta is None else beta
    v = model["v_template"] + model["shapedirs"] @ beta
    J = model["J_regressor"] @ v
    R = _rodrigues(theta)
    G = np.zeros((16, 4, 4))
    for j in range(16):
        T = np.eye(4)
        T[:3, :3] = R[j]
        T[:3, 3] = J[j] - (J[PARENTS[j]] if j else 0)
        G[j] = T if j == 0 else G[PARENTS[j]] @ T
    posed_j = G[:, :3, 3].copy()
    G[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    A = np.einsum("vj,jab->vab", model["weights"], G)
    return np.einsum("vab,vb->va", A[:, :3, :3], v) + A[:, :3, 3], posed_j


def volume(v, f):
    return np.einsum("fi,fi->f", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0


def face_normals(v, f):
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


def hand_length(model, beta=None):
    beta = np.zeros(10) if beta is None else beta
    v = model["v_template"] + model["shapedirs"] @ beta
    J = model["J_regressor"] @ v
    return float(np.linalg.norm(v[model["tip_vertex_ids"][2]] - J[0]))


def self_intersecting_pairs(v, f):
    """Number of pairs of non-adjacent triangles that intersect (grid broad phase, edge/triangle test)."""
    tri = v[f]
    lo, hi = tri.min(1), tri.max(1)
    cell = np.linalg.norm(tri[:, 1] - tri[:, 0], axis=1).max() * 1.01
    origin = v.min(0)
    clo = np.floor((lo - origin) / cell).astype(np.int64)
    chi = np.floor((hi - origin) / cell).astype(np.int64)
    dims = chi.max(0) + 2
    entries_t, entries_c = [], []
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                c = clo + np.array([dx, dy, dz])
                ok = np.all(c <= chi, axis=1)
                ids = np.nonzero(ok)[0]
                entries_t.append(ids)
                entries_c.append((c[ok, 0] * dims[1] + c[ok, 1]) * dims[2] + c[ok, 2])
    t = np.concatenate(entries_t)
    c = np.concatenate(entries_c)
    order = np.lexsort((t, c))
    t, c = t[order], c[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    ends = np.r_[starts[1:], len(c)]
    pa, pb = [], []
    for s, e in zip(starts, ends):
        if e - s > 1:
            ids = t[s:e]
            i, j = np.triu_indices(len(ids), 1)
            pa.append(ids[i])
            pb.append(ids[j])
    if not pa:
        return 0
    pairs = np.unique(np.stack([np.concatenate(pa), np.concatenate(pb)], 1), axis=0)
    a, b = pairs[:, 0], pairs[:, 1]
    share = (f[a][:, :, None] == f[b][:, None, :]).any((1, 2))
    overlap = np.all((lo[a] <= hi[b]) & (lo[b] <= hi[a]), axis=1)
    a, b = a[~share & overlap], b[~share & overlap]

    def edge_hits(ta, tb):  # any edge of triangles ta crossing triangle tb (Moller-Trumbore)
        hit = np.zeros(len(ta), dtype=bool)
        p0, p1, p2 = tb[:, 0], tb[:, 1], tb[:, 2]
        e1, e2 = p1 - p0, p2 - p0
        for k in range(3):
            o = ta[:, k]
            d = ta[:, (k + 1) % 3] - o
            pv = np.cross(d, e2)
            det = np.einsum("ij,ij->i", e1, pv)
            ok = np.abs(det) > 1e-18
            inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
            tv = o - p0
            u = np.einsum("ij,ij->i", tv, pv) * inv
            qv = np.cross(tv, e1)
            w = np.einsum("ij,ij->i", d, qv) * inv
            s = np.einsum("ij,ij->i", e2, qv) * inv
            hit |= ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (s >= 0) & (s <= 1)
        return hit

    hits = edge_hits(tri[a], tri[b]) | edge_hits(tri[b], tri[a])
    return int(hits.sum())


# ------------------------------------------------------------------------------------------- format
def test_format_and_dtypes(right, left):
    for m, side in ((right, "right"), (left, "left")):
        V = m["v_template"].shape[0]
        assert str(m["side"]) == side
        assert str(m["name"]) == f"open_hand_{side}"
        assert m["v_template"].shape == (V, 3) and m["v_template"].dtype == np.float64
        assert m["f"].dtype == np.int32 and m["f"].shape[1] == 3
        assert m["J_regressor"].shape == (16, V) and m["J_regressor"].dtype == np.float64
        assert m["weights"].shape == (V, 16)
        assert m["kintree_table"].shape == (2, 16) and m["kintree_table"].dtype == np.int64
        parents = m["kintree_table"][0].copy()
        assert parents[0] in (-1, 4294967295)
        parents[0] = -1
        np.testing.assert_array_equal(parents, PARENTS)
        np.testing.assert_array_equal(m["kintree_table"][1], np.arange(16))
        assert m["shapedirs"].shape == (V, 3, 10)
        assert m["posedirs"].shape == (V, 3, 135)
        assert m["tip_vertex_ids"].shape == (5,) and m["tip_vertex_ids"].dtype == np.int64
        assert m["joint_limits"].shape == (16, 3, 2)
        assert "Apache-2.0" in str(m["license"])
        assert "-x" in str(m["joint_limit_axes"])
        np.testing.assert_allclose(m["J_regressor"].sum(1), 1.0, atol=1e-12)
        assert (m["J_regressor"] >= 0).all()
        np.testing.assert_allclose(m["weights"].sum(1), 1.0, atol=1e-12)
        assert (m["weights"] >= 0).all()
        for k in ("v_template", "J_regressor", "weights", "shapedirs", "posedirs", "joint_limits"):
            assert np.isfinite(m[k]).all(), k


def test_files_are_reproducible_and_generator_matches():
    pytest.importorskip("skimage")
    spec = importlib.util.spec_from_file_location("make_open_hand", MODEL_DIR / "make_open_hand.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    model = gen.build()
    shipped = _load(RIGHT)
    assert sorted(model) == sorted(shipped)
    for k in model:
        a = np.asarray(model[k])
        if a.dtype.kind == "f":  # BLAS kernels may differ in the last bits between machines
            np.testing.assert_allclose(a, shipped[k], rtol=0, atol=1e-9, err_msg=k)
        else:
            np.testing.assert_array_equal(a, shipped[k], err_msg=k)


def test_npz_has_fixed_timestamps():
    import zipfile

    for path in (RIGHT, LEFT):
        with zipfile.ZipFile(path) as zf:
            assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert len(hashlib.sha256(path.read_bytes()).hexdigest()) == 64


# ------------------------------------------------------------------------------------------- mesh
@pytest.mark.parametrize("which", ["right", "left"])
def test_watertight_manifold(which, right, left):
    m = right if which == "right" else left
    v, f = m["v_template"], m["f"].astype(np.int64)
    assert 1000 <= len(v) <= 4000
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    und, counts = np.unique(np.sort(e, 1), axis=0, return_counts=True)
    assert (counts == 2).all(), "every edge must be shared by exactly two faces"
    # consistent orientation: every directed edge appears once
    assert len(np.unique(e, axis=0)) == len(e)
    assert len(v) - len(und) + len(f) == 2, "Euler characteristic must be 2"
    assert len(np.unique(f)) == len(v), "no unused vertices"
    assert volume(v, f) > 0, "normals must point outwards"
    assert (np.linalg.norm(face_normals(v, f), axis=1) > 1e-12).all(), "degenerate faces"


def test_no_self_intersection_at_rest(right):
    n = self_intersecting_pairs(right["v_template"], right["f"].astype(np.int64))
    assert n == 0


def test_left_mirrors_right(right, left):
    M = np.array([-1.0, 1.0, 1.0])
    np.testing.assert_array_equal(left["v_template"], right["v_template"] * M)
    np.testing.assert_array_equal(left["f"], right["f"][:, [0, 2, 1]])
    np.testing.assert_array_equal(left["shapedirs"], right["shapedirs"] * M[None, :, None])
    for k in ("J_regressor", "weights", "tip_vertex_ids", "kintree_table"):
        np.testing.assert_array_equal(left[k], right[k])
    lim_r, lim_l = right["joint_limits"], left["joint_limits"]
    np.testing.assert_array_equal(lim_l[:, 0], lim_r[:, 0])
    np.testing.assert_array_equal(lim_l[:, 1:, 0], -lim_r[:, 1:, 1])
    # the mirrored pose of the right hand is the same motion of the left hand
    theta = np.zeros((16, 3))
    theta[1:] = 0.5 * (lim_r[1:, :, 0] + lim_r[1:, :, 1]) + 0.3 * (lim_r[1:, :, 1] - lim_r[1:, :, 0])
    vr, _ = lbs(right, theta)
    vl, _ = lbs(left, theta * np.array([1.0, -1.0, -1.0]))
    np.testing.assert_allclose(vl, vr * M, atol=1e-12)


# ------------------------------------------------------------------------------------------- proportions
def test_rest_frame_orientation(right):
    v = right["v_template"]
    J = right["J_regressor"] @ v
    np.testing.assert_allclose(J[0], 0.0, atol=1e-9)
    tips = v[right["tip_vertex_ids"]]
    # fingers along -x, thumb on +z, pinky on -z, palm facing -y (thumb hangs palmar)
    assert (tips[1:, 0] < -0.13).all() and tips[2, 0] < -0.17
    assert J[13, 2] > 0.01 and J[7, 2] < -0.02 and J[1, 2] > J[4, 2] > J[10, 2] > J[7, 2]
    assert tips[0, 1] < 0


def test_hand_length_and_size_direction(right):
    L0 = hand_length(right)
    assert 0.17 <= L0 <= 0.21
    beta = np.zeros(10)
    for b in (2.0, -2.0):
        beta[0] = b
        change = hand_length(right, beta) / L0 - 1.0
        assert abs(change) >= 0.10 and np.sign(change) == np.sign(b)


def test_finger_proportions(right):
    v = right["v_template"]
    J = right["J_regressor"] @ v
    tips = v[right["tip_vertex_ids"]]
    seg = {}
    for i, name in enumerate(TIP_ORDER):
        a, b, c = FINGER_JOINTS[name]
        seg[name] = np.array([np.linalg.norm(J[b] - J[a]), np.linalg.norm(J[c] - J[b]),
                              np.linalg.norm(tips[i] - J[c])])
    for name in ("index", "middle", "ring", "pinky"):
        p, m, d = seg[name]
        assert p > m > d * 0.95, name
        # Buchholz et al. 1992: middle / proximal 0.54-0.64, distal (to the tip) / proximal 0.37-0.45
        assert 0.5 < m / p < 0.75 and 0.33 < d / p < 0.65, (name, seg[name])
    total = {k: s.sum() for k, s in seg.items()}
    assert total["middle"] > total["ring"] > total["index"] > total["pinky"] or \
        total["middle"] > total["index"] >= total["ring"] * 0.97
    # palm length (wrist -> middle MCP) vs middle finger (MCP -> tip): Buchholz et al. 1992, 0.445 / 0.555
    assert 0.75 < np.linalg.norm(J[4] - J[0]) / total["middle"] < 0.85


def test_thumb_placement(right):
    v = right["v_template"]
    J = right["J_regressor"] @ v
    cmc, mcp = J[13], J[14]
    assert np.linalg.norm(cmc - J[0]) < 0.05 and cmc[2] > 0.01  # near the wrist, radial side
    d_thumb = (mcp - cmc) / np.linalg.norm(mcp - cmc)
    d_mid = (J[5] - J[4]) / np.linalg.norm(J[5] - J[4])
    ang = np.degrees(np.arccos(np.clip(d_thumb @ d_mid, -1, 1)))
    assert 30 < ang < 65, ang
    assert d_thumb[2] > 0.4  # points away from the fingers, towards +z


def test_tip_vertices_are_fingertips(right):
    v = right["v_template"]
    J = right["J_regressor"] @ v
    for i, name in enumerate(TIP_ORDER):
        dip = J[FINGER_JOINTS[name][2]]
        d = dip - J[FINGER_JOINTS[name][1]]
        d /= np.linalg.norm(d)
        tip = v[right["tip_vertex_ids"][i]]
        near = right["weights"][:, FINGER_JOINTS[name][2]] > 0.5
        assert (tip - dip) @ d >= ((v[near] - dip) @ d).max() - 0.0025, name
        assert right["weights"][right["tip_vertex_ids"][i], FINGER_JOINTS[name][2]] > 0.9


# ------------------------------------------------------------------------------------------- shape
def test_shape_space_stays_plausible(right):
    v0, f = right["v_template"], right["f"].astype(np.int64)
    n0 = face_normals(v0, f)
    L0 = hand_length(right)
    norms = np.linalg.norm(right["shapedirs"], axis=(0, 1))
    assert (norms > 0).all()
    for k in range(10):
        for b in (-2.0, 2.0):
            beta = np.zeros(10)
            beta[k] = b
            v = v0 + right["shapedirs"] @ beta
            n = face_normals(v, f)
            cos = np.einsum("ij,ij->i", n, n0) / (np.linalg.norm(n, axis=1) * np.linalg.norm(n0, axis=1))
            assert (cos > 0.5).all(), (k, b, cos.min())
            L = hand_length(right, beta)
            assert 0.8 * L0 < L < 1.2 * L0
            assert 0.14 < L < 0.24


@pytest.mark.parametrize("k,b", [(1, -2.0), (9, 2.0), (3, 2.0)])
def test_no_self_intersection_at_extreme_shapes(right, k, b):
    beta = np.zeros(10)
    beta[k] = b
    v = right["v_template"] + right["shapedirs"] @ beta
    assert self_intersecting_pairs(v, right["f"].astype(np.int64)) == 0


def test_shape_directions_ordered_and_joints_follow(right):
    v0 = right["v_template"]
    S = right["shapedirs"]
    # size first: the largest displacement
    mag = np.sqrt((S ** 2).sum((0, 1)))
    assert mag[0] == mag.max()
    # joints move with shape (the regressor follows the surface)
    J0 = right["J_regressor"] @ v0
    J1 = right["J_regressor"] @ (v0 + S[:, :, 0])
    np.testing.assert_allclose(J1[1:], J0[1:] * 1.055, atol=1e-3)
    # every direction moves the joints as the generator's skeleton for +1 sd of that parameter
    spec = importlib.util.spec_from_file_location("make_open_hand", MODEL_DIR / "make_open_hand.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for k in range(10):
        p = np.zeros(10)
        p[k] = 1.0
        J_shape = right["J_regressor"] @ (v0 + S[:, :, k])
        J_skel = gen.skeleton(p)["joints"] @ gen.DESIGN_TO_MANO.T
        np.testing.assert_allclose(J_shape, J_skel, atol=2e-4, err_msg=str(k))
    # random plausible shapes
    rng = np.random.default_rng(0)
    for beta in np.clip(rng.standard_normal((20, 10)), -2, 2):
        L = hand_length(right, beta)
        assert 0.15 < L < 0.23


# ------------------------------------------------------------------------------------------- skinning
def _flexion_axes(model):
    """Per-joint flexion axes (16,3) parsed from the model's joint_limit_axes description."""
    axes = np.zeros((16, 3))
    names = ["wrist", "index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1", "pinky2",
             "pinky3", "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3"]
    for line in str(model["joint_limit_axes"]).splitlines():
        line = line.strip()
        head = line.split(":")[0]
        if head in names and "flex [" in line:
            vec = line.split("flex [")[1].split("]")[0]
            axes[names.index(head)] = [float(x) for x in vec.split(",")]
    return axes


def finger_volume(v, f, w_f, apex):
    """Volume enclosed by the faces mostly skinned to one finger and the cone to `apex` (its base joint)."""
    sel = w_f[f].mean(1) > 0.5
    a, b, c = v[f[sel, 0]] - apex, v[f[sel, 1]] - apex, v[f[sel, 2]] - apex
    return np.einsum("fi,fi->f", a, np.cross(b, c)).sum() / 6.0


@pytest.mark.parametrize("finger", ["index", "middle", "ring", "pinky", "thumb"])
def test_ninety_degree_flexion_keeps_volume(right, finger):
    v0, f = right["v_template"], right["f"].astype(np.int64)
    ids = FINGER_JOINTS[finger]
    axes = _flexion_axes(right)
    assert np.allclose(np.linalg.norm(axes[1:], axis=1), 1.0, atol=2e-3)
    theta = np.zeros((16, 3))
    # 90 deg at every finger joint; the thumb: CMC 40 deg (near its maximum), MCP and IP 90 deg
    for j in ids:
        angle = 90.0 if (finger != "thumb" or j != 13) else 40.0
        theta[j] = axes[j] * np.radians(angle)
    vp, posed_j = lbs(right, theta)
    J0 = right["J_regressor"] @ v0
    w_f = right["weights"][:, list(ids)].sum(1)
    base = J0[ids[0]]
    fv0, fv1 = finger_volume(v0, f, w_f, base), finger_volume(vp, f, w_f, base)
    assert fv0 > 5e-6
    change = fv1 / fv0 - 1
    # the thumb's share includes the thenar mass, which the CMC rotation folds against the palm
    assert abs(change) < (0.15 if finger == "thumb" else 0.10), change
    assert abs(volume(vp, f) / volume(v0, f) - 1) < 0.04  # whole hand
    # no vertex moves implausibly: each stays near where the rigid motion of its main bone puts it
    main = right["weights"].argmax(1)
    Rw = _rodrigues(theta)
    G = np.zeros((16, 3, 3))
    for j in range(16):
        G[j] = Rw[j] if j == 0 else G[PARENTS[j]] @ Rw[j]
    rigid = np.einsum("vab,vb->va", G[main], v0 - J0[main]) + posed_j[main]
    assert np.linalg.norm(vp - rigid, axis=1).max() < 0.02
    moved = np.linalg.norm(vp - v0, axis=1)
    assert (moved[w_f < 1e-6] < 1e-12).all()


def test_fist_volume(right):
    v0, f = right["v_template"], right["f"].astype(np.int64)
    theta = np.zeros((16, 3))
    for j in range(1, 13):
        theta[j] = [0.0, 0.0, np.radians(80)]
    vp, _ = lbs(right, theta)
    assert abs(volume(vp, f) / volume(v0, f) - 1) < 0.10


# ------------------------------------------------------------------------------------------- limits
def test_joint_limits_table(right):
    lim = np.degrees(right["joint_limits"])
    assert (lim[:, :, 0] < lim[:, :, 1]).all()
    np.testing.assert_allclose(lim[0, :, 0], -180)
    np.testing.assert_allclose(lim[0, :, 1], 180)
    for name in ("index", "middle", "ring", "pinky"):
        mcp, pip, dip = FINGER_JOINTS[name]
        # flexion is about +z for the right hand
        assert -25 <= lim[mcp, 2, 0] <= -5 and 85 <= lim[mcp, 2, 1] <= 95, name
        assert -5 <= lim[pip, 2, 0] <= 0 and 100 <= lim[pip, 2, 1] <= 120, name
        assert -10 <= lim[dip, 2, 0] <= 0 and 80 <= lim[dip, 2, 1] <= 95, name
        assert lim[mcp, 1, 1] >= 15 and lim[mcp, 1, 0] <= -15  # abduction about ~y
        assert (np.abs(lim[pip:dip + 1, 1]) <= 20).all()  # little abduction / twist distally
    # sampled poses stay plausible hands: no vertex flies off, volume holds
    rng = np.random.default_rng(1)
    v0, f = right["v_template"], right["f"].astype(np.int64)
    for _ in range(5):
        theta = rng.uniform(right["joint_limits"][:, :, 0], right["joint_limits"][:, :, 1])
        theta[0] = 0
        vp, _ = lbs(right, theta)
        assert abs(volume(vp, f) / volume(v0, f) - 1) < 0.15
        assert np.linalg.norm(vp, axis=1).max() < 0.25
