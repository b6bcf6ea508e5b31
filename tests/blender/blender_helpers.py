"""Ground truth for the add-on tests: a small MANO-format hand model, MANO LBS in numpy, result files
written exactly per DESIGN.md. (The engine's own layer is compared against this in test_reference.)"""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np

from handtailor_blender import poses
from handtailor_blender.io.results import MANO_PARENTS, TIP_PARENTS, write_npz_atomic

MANO_TO_KEYPOINT = np.array([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20])
_CUBE = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
_CUBE_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


def _joint_layout() -> tuple[np.ndarray, np.ndarray]:
    """(16, 3) joints, (5, 3) tips of a right hand, fingers along +x (meters)."""
    J = np.zeros((16, 3))
    tips = np.zeros((5, 3))
    # MANO order: index 1-3, middle 4-6, pinky 7-9, ring 10-12, thumb 13-15; tips thumb,index,middle,ring,pinky
    fingers = {"index": (1, (0.088, 0.004, 0.025), (1.0, 0.0, 0.05), 1),
               "middle": (4, (0.094, 0.005, 0.002), (1.0, 0.0, 0.0), 2),
               "pinky": (7, (0.078, 0.0, -0.04), (1.0, 0.0, -0.12), 4),
               "ring": (10, (0.088, 0.003, -0.019), (1.0, 0.0, -0.06), 3),
               "thumb": (13, (0.025, -0.012, 0.032), (0.6, -0.3, 0.75), 0)}
    for j0, base, d, tip in fingers.values():
        d = np.array(d) / np.linalg.norm(d)
        J[j0] = base
        J[j0 + 1] = J[j0] + 0.033 * d + np.array([0, -0.002, 0])
        J[j0 + 2] = J[j0 + 1] + 0.024 * d + np.array([0, -0.003, 0])
        tips[tip] = J[j0 + 2] + 0.021 * d
    return J, tips


def make_model(path, side: str = "right", seed: int = 0, posedirs: bool = True) -> pathlib.Path:
    """Writes a MANO-format .npz hand model: a cube per joint/tip, blended weights, random shape and
    pose-corrective directions."""
    rng = np.random.default_rng(seed)
    J, tips = _joint_layout()
    centers = np.concatenate([J, tips])  # (21, 3)
    verts = (centers[:, None, :] + 0.006 * _CUBE[None]).reshape(-1, 3)
    faces = np.concatenate([_CUBE_FACES + 8 * c for c in range(21)])
    V = verts.shape[0]
    jreg = np.zeros((16, V))
    for j in range(16):
        jreg[j, 8 * j:8 * j + 8] = 1 / 8
    W = np.zeros((V, 16))
    for c in range(21):
        rows = slice(8 * c, 8 * c + 8)
        j = c if c < 16 else int(TIP_PARENTS[c - 16])
        p = int(MANO_PARENTS[j])
        if p < 0:
            W[rows, j] = 1.0
        else:
            w = rng.uniform(0.55, 0.9, size=8)
            W[rows, j] = w
            W[rows, p] = 1 - w
    shapedirs = rng.normal(scale=0.002, size=(V, 3, 10))
    pd = rng.normal(scale=0.003, size=(V, 3, 135)) if posedirs else np.zeros((V, 3, 135))
    tip_ids = np.array([8 * (16 + k) for k in range(5)])
    if side == "left":
        mirror = np.array([-1.0, 1.0, 1.0])
        verts = verts * mirror
        shapedirs = shapedirs * mirror[None, :, None]
        pd = pd * mirror[None, :, None]
        faces = faces[:, ::-1]
    kintree = np.stack([np.where(MANO_PARENTS < 0, 4294967295, MANO_PARENTS), np.arange(16)])
    limits = np.zeros((16, 3, 2))
    limits[:, :, 0], limits[:, :, 1] = -0.6, 0.6
    limits[0] = [[-np.pi, np.pi]] * 3
    write_npz_atomic(path, dict(name=np.array(f"test_{side}"), side=np.array(side), v_template=verts,
                                f=faces.astype(np.int32), J_regressor=jreg, weights=W, kintree_table=kintree,
                                shapedirs=shapedirs, posedirs=pd, tip_vertex_ids=tip_ids, joint_limits=limits))
    return pathlib.Path(path)


def lbs(model, theta, beta, root, hand_scale):
    """MANO LBS (numpy): theta (16,4), beta (10,), root (3,), scale () -> verts (V,3), keypoints (21,3) in the
    camera frame: X = root + s * (X_lbs - J(beta)_0)."""
    v_shaped = model.v_template + model.shapedirs @ beta
    J = model.J_regressor @ v_shaped
    R = poses.quat_to_rotmat(theta)
    feat = (R[1:] - np.eye(3)).reshape(-1)
    v_posed = v_shaped + model.posedirs @ feat
    G = np.zeros((16, 4, 4))
    for i in range(16):
        L = np.eye(4)
        L[:3, :3] = R[i]
        p = int(model.parents[i])
        L[:3, 3] = J[i] - (J[p] if p >= 0 else 0)
        G[i] = L if p < 0 else G[p] @ L
    A = G.copy()
    A[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    T = np.einsum("vj,jab->vab", model.weights, A)
    verts = np.einsum("vab,vb->va", T[:, :3, :3], v_posed) + T[:, :3, 3]
    joints = G[:, :3, 3]
    kp = np.concatenate([joints, verts[model.tip_vertex_ids]])[MANO_TO_KEYPOINT]
    f = lambda X: root + hand_scale * (X - J[0])
    return f(verts), f(kp)


def random_theta(rng, N, scale=0.5):
    """(N, 16, 4) unit quaternions: random axis-angle of norm <= scale for fingers, larger for the wrist."""
    aa = rng.normal(scale=scale / 2, size=(N, 16, 3))
    aa[:, 0] = rng.normal(scale=1.0, size=(N, 3))
    ang = np.linalg.norm(aa, axis=-1, keepdims=True)
    q = np.concatenate([np.cos(ang / 2), np.sin(ang / 2) * aa / np.maximum(ang, 1e-12)], -1)
    q[rng.random((N, 16)) < 0.5] *= -1  # random signs: the add-on must make them continuous
    return q


def nominal_K(w, h):
    f = float(max(w, h))
    return np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])


def make_result(path, models: list, N=12, seed=1, invalid=(3,), fps=30.0, image_size=(640, 480),
                K=None, source="clip.mp4", hand_model="", smooth=True):
    """Writes a capture result .npz (DESIGN.md table) for tracks with these RigModels."""
    rng = np.random.default_rng(seed)
    T = len(models)
    K = nominal_K(*image_size) if K is None else K
    theta = np.zeros((T, N, 16, 4))
    beta = np.zeros((T, N, 10))
    root = np.zeros((T, N, 3))
    scale = np.zeros((T, N))
    for t in range(T):
        if smooth:  # a slow motion, so the keys look like a capture
            a = random_theta(rng, 2)
            s = np.linspace(0, 1, N)[:, None, None]
            q = poses.quat_normalize((1 - s) * a[0][None] * np.sign(np.sum(a[0] * a[1], -1))[None, :, None]
                                     + s * a[1][None])
            q[rng.random((N, 16)) < 0.3] *= -1
            theta[t] = q
        else:
            theta[t] = random_theta(rng, N)
        beta[t] = rng.normal(size=(N, 10))
        root[t] = np.array([0.08 * (t - 0.5), 0.02, 0.55]) + rng.normal(scale=0.01, size=(N, 3))
        scale[t] = rng.uniform(0.9, 1.1, size=N)
    valid = np.ones((T, N), bool)
    for n in invalid:
        valid[:, n] = False
    joints = np.zeros((T, N, 21, 3))
    for t in range(T):
        for n in range(N):
            joints[t, n] = lbs(models[t], theta[t, n], beta[t, n], root[t, n], scale[t, n])[1]
    proj = joints @ K.T
    kp2 = proj[..., :2] / proj[..., 2:]
    conf = rng.uniform(0.5, 1.0, size=(T, N, 21))
    for arr in (theta, beta, root, joints, kp2, conf):
        arr[~valid] = np.nan
    scale[~valid] = np.nan
    # a model file is recorded with its sha256 (of the file's bytes, as the engine does): the engine's re-tailor
    # uses a model only when it matches
    sha = hashlib.sha256(pathlib.Path(hand_model).read_bytes()).hexdigest() if hand_model and pathlib.Path(
        hand_model).is_file() else ""
    write_npz_atomic(path, dict(
        format_version=np.array(2), source=np.array(source), image_size=np.array(image_size),
        fps=np.array(fps), frame_index=np.arange(N) * 1, camera_model=np.array("perspective"), K=K,
        distortion=np.zeros(5), hand_model=np.array([hand_model] * T), hand_model_sha256=np.array([sha] * T),
        hand_side=np.array([m.side for m in models]), valid=valid, theta=theta, beta=beta, root=root,
        hand_scale=scale, projection_scale=np.full((T, N), np.nan), keypoints_2d=kp2, confidence=conf,
        joints_3d=joints))
    return pathlib.Path(path)


# --------------------------------------------------------------------------- bpy-side helpers (lazy bpy)


def evaluated_verts_camera(mesh_obj, to_world):
    """(V, 3) evaluated (deformed) mesh in the OpenCV camera frame."""
    import bpy

    dg = bpy.context.evaluated_depsgraph_get()
    ev = mesh_obj.evaluated_get(dg)
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    co = co.reshape(-1, 3)
    Mw = np.array(mesh_obj.matrix_world)
    world = co @ Mw[:3, :3].T + Mw[:3, 3]
    inv = np.linalg.inv(to_world)
    return world @ inv[:3, :3].T + inv[:3, 3]


def projected_mesh_joints(scene, arm, mesh, model, beta):
    """(21, 2) px: the rig's posed joints (each bone's deform applied to J(beta)) and the evaluated tip
    vertices, in keypoint order, projected by Blender's camera (world_to_camera_view)."""
    import bpy
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    W, H = scene.render.resolution_x, scene.render.resolution_y
    from handtailor_blender import rig

    names = rig.bone_names(arm["ht_side"])
    dg = bpy.context.evaluated_depsgraph_get()
    Jb = model.J0 + np.einsum("jcb,b->jc", model.Jdirs, beta)
    Mw = np.array(arm.matrix_world)
    pts = []
    for j in range(16):
        pb = arm.pose.bones[names[j]]
        D = Mw @ np.array(pb.matrix) @ np.linalg.inv(np.array(arm.data.bones[names[j]].matrix_local))
        pts.append(D[:3, :3] @ Jb[j] + D[:3, 3])
    ev = mesh.evaluated_get(dg)
    me = ev.to_mesh()
    Mm = np.array(mesh.matrix_world)
    for vid in model.tip_vertex_ids:
        co = np.array(me.vertices[int(vid)].co)
        pts.append(Mm[:3, :3] @ co + Mm[:3, 3])
    ev.to_mesh_clear()
    uv = []
    for p in np.array(pts)[MANO_TO_KEYPOINT]:
        c = world_to_camera_view(scene, scene.camera, Vector(p))
        uv.append((c.x * W, (1 - c.y) * H))
    return np.array(uv)


def snapshot_keys():
    """{(action, data_path, index): co array} for every HandTailor action."""
    import bpy

    from handtailor_blender import keys

    out = {}
    for a in bpy.data.actions:
        curves = keys.fcurves_of(a)
        for fc in curves or ():
            n = len(fc.keyframe_points)
            co = np.empty(2 * n, np.float32)
            fc.keyframe_points.foreach_get("co", co)
            out[(a.name, fc.data_path, fc.array_index)] = co
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def engine_result(path, sides=("right", "left"), N=6, seed=3):
    """A result file whose theta samples the model's joint limits, posed by the engine's torch layer."""
    import torch

    from engine.hand_model import default_model_path, load_hand_model
    from engine.hand_model import torch_layer

    rng = np.random.default_rng(seed)
    T = len(sides)
    theta = np.zeros((T, N, 16, 4))
    beta = rng.normal(size=(T, N, 10))
    root = np.tile([0.0, 0.02, 0.5], (T, N, 1)) + rng.normal(scale=0.01, size=(T, N, 3))
    scale = rng.uniform(0.9, 1.1, size=(T, N))
    verts, joints = [], []
    for t, side in enumerate(sides):
        model = load_hand_model(None, side=side)
        lim = model.joint_limits if model.joint_limits is not None else np.full((16, 3, 2), [-0.5, 0.5])
        aa = rng.uniform(lim[..., 0], lim[..., 1], size=(N, 16, 3))
        aa[:, 0] = rng.normal(size=(N, 3))
        theta[t] = torch_layer.axis_angle_to_quat(torch.from_numpy(aa)).numpy()
        layer = torch_layer.HandLayer(model, dtype=torch.float64)
        with torch.no_grad():
            v, kp, _ = layer(torch.from_numpy(theta[t]), torch.from_numpy(beta[t]), torch.from_numpy(root[t]),
                             torch.from_numpy(scale[t]))
        verts.append(v.numpy())
        joints.append(kp.numpy())
    K = nominal_K(640, 480)
    joints = np.stack(joints)
    proj = joints @ K.T
    write_npz_atomic(path, dict(
        format_version=np.array(2), source=np.array("x.mp4"), image_size=np.array([640, 480]), fps=np.array(25.0),
        frame_index=np.arange(N), camera_model=np.array("perspective"), K=K, distortion=np.zeros(5),
        hand_model=np.array([str(default_model_path(s)) for s in sides]),
        hand_model_sha256=np.array([load_hand_model(None, side=s).sha256 for s in sides]),
        hand_side=np.array(list(sides)), valid=np.ones((T, N), bool), theta=theta, beta=beta, root=root,
        hand_scale=scale, projection_scale=np.full((T, N), np.nan), keypoints_2d=proj[..., :2] / proj[..., 2:],
        confidence=np.ones((T, N, 21)), joints_3d=joints))
    return np.stack(verts)


# --------------------------------------------------------------------------- retarget fixtures


def curl_theta(model, N: int, seed: int = 0, identity_beta: bool = True):
    """(N, 16, 4) a hand closing and opening: every finger bends about its own flexion axis (each finger
    with its own phase and amplitude), with some splay and a turning wrist. Model-frame local rotations."""
    from handtailor_blender import anatomy

    rng = np.random.default_rng(seed)
    J0 = model.J0
    tips = model.v_template[model.tip_vertex_ids]
    F = anatomy.bone_frames(J0, anatomy.skeleton_ends(J0, tips), model.side)
    t = np.linspace(0, 2 * np.pi, N)
    aa = np.zeros((N, 16, 3))
    for f, (a, b, c) in enumerate(anatomy.FINGERS.values()):
        phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.7, 1.2)
        curl = amp * (0.5 - 0.5 * np.cos(t + phase))  # 0 .. amp rad
        for k, j in enumerate((a, b, c)):
            share = (0.6, 1.0, 0.7)[k] if f < 4 else (0.4, 0.6, 0.8)[k]
            aa[:, j] = (curl * share)[:, None] * F[j][:, 0]
            aa[:, j] += 0.08 * np.sin(2 * t + phase + k)[:, None] * F[j][:, 2]  # a little splay / twist
    aa[:, 0] = 0.4 * np.stack([np.sin(t), 0.5 * np.cos(t), 0.3 * np.sin(2 * t)], -1)
    ang = np.linalg.norm(aa, axis=-1, keepdims=True)
    return np.concatenate([np.cos(ang / 2), np.sin(ang / 2) * aa / np.maximum(ang, 1e-12)], -1)


def make_curl_result(path, models: list, N: int = 48, seed: int = 2, constant_identity: bool = True,
                     invalid=(), fps: float = 25.0, image_size=(640, 480)):
    """A capture result of curling hands (curl_theta); constant beta and hand_scale per track unless asked."""
    rng = np.random.default_rng(seed)
    T = len(models)
    K = nominal_K(*image_size)
    theta = np.stack([curl_theta(m, N, seed + t) for t, m in enumerate(models)])
    beta = np.zeros((T, N, 10))
    scale = np.ones((T, N))
    root = np.zeros((T, N, 3))
    for t in range(T):
        if constant_identity:
            beta[t] = rng.normal(size=10)[None]
            scale[t] = rng.uniform(0.95, 1.05)
        else:
            beta[t] = rng.normal(size=(N, 10))
            scale[t] = rng.uniform(0.9, 1.1, size=N)
        root[t] = np.array([0.09 * (t - 0.5), 0.02, 0.5]) + 0.02 * np.sin(np.linspace(0, 3, N))[:, None]
    valid = np.ones((T, N), bool)
    valid[:, list(invalid)] = False
    joints = np.zeros((T, N, 21, 3))
    for t in range(T):
        for n in range(N):
            joints[t, n] = lbs(models[t], theta[t, n], beta[t, n], root[t, n], scale[t, n])[1]
    proj = joints @ K.T
    kp2 = proj[..., :2] / proj[..., 2:]
    conf = np.full((T, N, 21), 0.9)
    for arr in (theta, beta, root, joints, kp2, conf):
        arr[~valid] = np.nan
    scale[~valid] = np.nan
    write_npz_atomic(path, dict(
        format_version=np.array(2), source=np.array("curl.mp4"), image_size=np.array(image_size), fps=np.array(fps),
        frame_index=np.arange(N), camera_model=np.array("perspective"), K=K, distortion=np.zeros(5),
        hand_model=np.array([m.path for m in models]), hand_model_sha256=np.array([""] * T),
        hand_side=np.array([m.side for m in models]), valid=valid, theta=theta, beta=beta, root=root,
        hand_scale=scale, projection_scale=np.full((T, N), np.nan), keypoints_2d=kp2, confidence=conf,
        joints_3d=joints))
    return pathlib.Path(path)


def posed_points(arm, heads_of: dict, ends_of: dict, frames) -> tuple[np.ndarray, np.ndarray]:
    """World-space (F, 16, 3) joint heads and bone end points of an armature over frames, for MANO joints
    given as {joint: bone name} (head) and {joint: (bone name, 'head'|'tail')} (end). NaN where missing."""
    import bpy

    scene = bpy.context.scene
    H = np.full((len(frames), 16, 3), np.nan)
    E = np.full((len(frames), 16, 3), np.nan)
    for n, f in enumerate(frames):
        scene.frame_set(int(f))
        Mw = np.array(arm.matrix_world)
        for j, name in heads_of.items():
            H[n, j] = Mw[:3, :3] @ np.array(arm.pose.bones[name].head) + Mw[:3, 3]
        for j, (name, which) in ends_of.items():
            E[n, j] = Mw[:3, :3] @ np.array(getattr(arm.pose.bones[name], which)) + Mw[:3, 3]
    return H, E


def chain_ends(heads_of: dict, tip_of: dict | None = None) -> dict:
    """{joint: (bone, 'head'|'tail')}: each joint's bone points to the next joint's head, the last bone of a
    finger to its tip (tip_of {joint: bone whose head is the tip}) or its own tail."""
    from handtailor_blender import anatomy

    out = {}
    for j, name in heads_of.items():
        nxt = anatomy.NEXT.get(j)
        if nxt is not None and nxt in heads_of:
            out[j] = (heads_of[nxt], "head")
        elif tip_of and j in tip_of:
            out[j] = (tip_of[j], "head")
        else:
            out[j] = (name, "tail")
    return out


def signed_flexion(H: np.ndarray, E: np.ndarray, side: str) -> np.ndarray:
    """(F, 5) `anatomy.flexion` with a sign per joint (degrees; index, middle, pinky, ring, thumb): + where
    the segment turns toward the palm (about the flexion axis: the palm's lateral axis, the palm normal for
    the thumb), - where it turns the other way, which the unsigned flexion cannot tell. H, E: (F, 16, 3)."""
    from handtailor_blender import anatomy

    d = E - H
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    out = np.zeros((len(H), 5))
    for n in range(len(H)):
        lateral, forward, palmar = anatomy.palm_axes(H[n], side)
        s = anatomy.side_sign(side)
        for f, (name, (a, b, c)) in enumerate(anatomy.FINGERS.items()):
            axis = s * (palmar if name == "thumb" else lateral)
            segs = [d[n, a], d[n, b], d[n, c]] if name == "thumb" else [forward, d[n, a], d[n, b], d[n, c]]
            for p, q in zip(segs[:-1], segs[1:]):
                ang = np.degrees(np.arccos(np.clip(p @ q, -1.0, 1.0)))
                out[n, f] += ang if np.cross(p, q) @ axis >= 0 else -ang
    return out


def take_points(arm, frames):
    """World (F, 16, 3) joint heads and bone ends of a HandTailor rig over frames (tips from its tip bones)."""
    from handtailor_blender import rig
    from handtailor_blender.io.results import TIP_PARENTS

    names = rig.bone_names(arm["ht_side"])
    heads_of = {j: names[j] for j in range(16)}
    tip_of = {int(p): names[16 + k] for k, p in enumerate(TIP_PARENTS)}
    return posed_points(arm, heads_of, chain_ends(heads_of, tip_of), frames)


def take_flexion(arm, frames) -> np.ndarray:
    """(F, 5) per-finger flexion (degrees) of a HandTailor rig over frames."""
    from handtailor_blender import anatomy

    return anatomy.flexion(*take_points(arm, frames), arm["ht_side"])


def bone_x_share(arm, frames):
    """How much of the finger bones' rotation (from rest) is about their local X over frames: per bone (15,)
    and over all of them, as the energy of the rotation vector's x component / its whole energy."""
    import bpy

    from handtailor_blender import poses, rig

    names = rig.bone_names(arm["ht_side"])[1:16]
    scene = bpy.context.scene
    rv = np.zeros((len(frames), len(names), 3))
    for n, f in enumerate(frames):
        scene.frame_set(int(f))
        for i, name in enumerate(names):
            q = poses.rotmat_to_quat(np.array(arm.pose.bones[name].matrix_basis.to_3x3()))
            ang = 2 * np.arccos(np.clip(q[0], -1, 1))
            rv[n, i] = q[1:] / max(np.linalg.norm(q[1:]), 1e-12) * ang
    per_bone = (rv[..., 0] ** 2).sum(0) / np.maximum((rv ** 2).sum((0, 2)), 1e-12)
    return per_bone, float((rv[..., 0] ** 2).sum() / max((rv ** 2).sum(), 1e-12))
