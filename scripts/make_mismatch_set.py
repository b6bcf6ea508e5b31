"""A synthetic ground-truth set whose hands do NOT come from the fitting model (issue 14's mismatch set).

    PYTHONPATH=$PWD .venv/bin/python scripts/make_mismatch_set.py OUT_DIR [--n 300] [--seed 0]
    PYTHONPATH=$PWD .venv/bin/python -m engine eval OUT_DIR --json [--both] [--iterations 10,20,50,100] [--fit-3d]

Writes OUT_DIR/annotations_normalized.json (the ground-truth format of ../shared/data/README.md: 3D joints in
the camera frame, K, 2D = their projection) and OUT_DIR/detections.json (engine.stored_detections): simulated
keypoint-stage outputs, so `eval` runs the hand module and the tailor exactly as on real captures, without the
image network (there are no images). Every record has K (perspective); `--both` adds the weak-perspective run.

Hands: 21-keypoint skeletons built from published hand anthropometry, not from any hand model's shape space:
* hand length (distal wrist crease to the middle fingertip) ~ N(0.186, 0.010) m: ANSUR II (Gordon C.C. et al.,
  2012 Anthropometric Survey of U.S. Army Personnel, 2014): means 19.4 cm (men), 18.0 cm (women), sd ~0.9 cm;
* segment lengths as fractions of hand length, Buchholz B., Armstrong T.J., Goldstein S.A., "Anthropometric
  data for describing the kinematics of the human hand", Ergonomics 35(3):261-273, 1992 (Table 3):
  thumb metacarpal / proximal / distal 0.251 / 0.196 / 0.158; index metacarpal .374, proximal .265,
  middle .143, distal .097; middle .373 / .277 / .170 / .108; ring .336 / .259 / .165 / .107; little .295 /
  .206 / .117 / .093 (`BUCHHOLZ`), each varied per person (sd 4 %, plus a shared finger-length factor, sd 3 %);
  the wrist keypoint -> middle MCP is then 1 - (its three phalanges) = 0.445 of hand length;
* MCP joint centres on an arc (index 2.5 %, ring 3 %, little 8 % of hand length proximal of the middle MCP;
  index -> little MCP span 0.35 of hand length, from the hand breadth at the metacarpals, ANSUR II ~0.45 of
  hand length, less ~10 mm of soft tissue and bone on each side), the ring and little metacarpals cupping
  palmar in a fist (up to 3 / 6 mm), thumb CMC 0.15 hand lengths distal, 0.12 radial and 0.06 palmar of the
  wrist keypoint; the fingers converge towards the thumb as they flex;
* poses from a mix of classes (open, relaxed, half-curl, fist with the thumb across the fingers or alongside,
  pointing, two fingers, thumbs-up, pinch, random), every angle inside the active ranges of motion (`RANGES`:
  Hume M.C. et al., J. Hand Surg. Am. 15(2):240-243, 1990; thumb after the AAOS 1965 tables), DIP flexion
  0.4-0.9 of PIP flexion (coupled as in real fingers, not exactly 2/3); the thumb metacarpal rests 40 deg
  radial and 30 deg palmar of the middle finger (palmar: towards the palm side, as a real thumb);
* global orientation: any view within 75 degrees of palm-towards-camera, back-of-hand and side views included;
  wrist 0.3-0.8 m from the camera (1280 x 720, f = 900-1400 px), anywhere in the image; right and left hands.

Keypoint-stage imitation (MediaPipe-like, calibrated to what was measured on ../shared/data/gt-sample, see
`scripts/experiments/mismatch_calibration.py`, and in models/iknet/PROVENANCE.md). The network is modelled as
seeing a "perceived" hand (`perceive`): the true proportions, every joint angle off by a shared error (sd 3-6
deg, `PERCEIVED_SD_DEG`), the orientation off by ~4 deg. Both outputs come from that one hand, so their errors
agree in the image plane, as a real network's do (gt-sample, MediaPipe: cosine between the 2D error and the
projected, similarity-aligned world-landmark error -0.23..+0.47, mean +0.15; here ~+0.28):
* 2D: the perceived hand's projection plus a per-hand offset (sd 0.8 % of the hand's pixel size) and
  per-keypoint error (sd 1.2 %, 1.5x at the fingertips, 2x on keypoints occluded in a fist): mean error ~4.5-5 %
  of the hand's size (MediaPipe on the gt-sample hands: 3.3-6.2 %, one small rendered hand 10 %);
* d: c f (z_j - z_0) / z_9 of the perceived hand with c uniform in [0.05, 0.55] (MediaPipe's d is flattened)
  plus noise;
* world landmarks (the hand module's depth source): the perceived hand relative to its centre, plus what 2D
  cannot show: an out-of-plane tilt (sd 12 deg), depth flattened by a factor in [0.6, 1.0], a scale in [0.7,
  1.05], a depth error per finger (sd 8 mm) and per-keypoint jitter (sd 4 mm): rigid-aligned error ~13 mm,
  similarity-aligned ~12 mm (MediaPipe on gt-sample: 11-24 / 11-21 mm).
With these the hand module's 2D error is ~1.5x the keypoints' (real data: 1.2-1.6x).
Shapes: K = 21 keypoints.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

# Buchholz et al. 1992, segment length / hand length: (metacarpal, proximal, middle, distal); thumb (mc, prox, dist)
BUCHHOLZ = {
    "thumb": (0.251, 0.196, 0.158),
    "index": (0.374, 0.265, 0.143, 0.097),
    "middle": (0.373, 0.277, 0.170, 0.108),
    "ring": (0.336, 0.259, 0.165, 0.107),
    "little": (0.295, 0.206, 0.117, 0.093),
}
FINGERS = ("index", "middle", "ring", "little")
FIRST_KEYPOINT = {"thumb": 1, "index": 5, "middle": 9, "ring": 13, "little": 17}
# MCP placement: proximal offset from the middle MCP (fraction of hand length), lateral (fraction of the
# index -> little span, + = radial), palmar offset (fraction of hand length); finger splay at rest (deg, + radial)
MCP_PROXIMAL = {"index": 0.025, "middle": 0.0, "ring": 0.03, "little": 0.08}
MCP_LATERAL = {"index": 0.36, "middle": 0.0, "ring": -0.30, "little": -0.64}
MCP_PALMAR = {"index": 0.01, "middle": 0.0, "ring": 0.005, "little": 0.015}
SPLAY_DEG = {"index": 7.0, "middle": 0.0, "ring": -7.0, "little": -15.0}
SPAN = 0.35
THUMB_CMC = (0.15, 0.12, -0.06)  # (distal, radial, dorsal) fractions of hand length
IMAGE_SIZE = (1280, 720)

# pose classes: per finger (MCP, PIP) flexion in degrees (DIP follows PIP), thumb (CMC flex, CMC abd, MCP, IP)
POSES = {
    "open": (dict.fromkeys(FINGERS, (0, 5)), (0, 10, 5, 5)),
    "relaxed": (dict.fromkeys(FINGERS, (25, 35)), (10, 25, 15, 15)),
    "half_curl": (dict.fromkeys(FINGERS, (45, 60)), (20, 30, 25, 25)),
    "fist_thumb_across": (dict.fromkeys(FINGERS, (85, 100)), (45, 15, 45, 45)),
    "fist_thumb_side": (dict.fromkeys(FINGERS, (85, 100)), (5, 5, 20, 10)),
    "point": (dict(index=(0, 5), middle=(85, 100), ring=(85, 100), little=(85, 100)), (40, 15, 40, 35)),
    "two": (dict(index=(0, 5), middle=(0, 5), ring=(85, 100), little=(85, 100)), (40, 15, 45, 40)),
    "thumbs_up": (dict.fromkeys(FINGERS, (85, 100)), (-5, 35, 0, 0)),
    "pinch": (dict(index=(45, 40), middle=(20, 25), ring=(20, 30), little=(20, 30)), (25, 40, 20, 30)),
    "random": None,
}
# Anatomical ranges (deg; Hume M.C. et al., J. Hand Surg. Am. 15(2):240-243, 1990, active range of motion;
# thumb after the AAOS "Joint Motion: Method of Measuring and Recording", 1965): every sampled and every
# perceived pose stays inside them. Thumb angles are this script's own (cmc_flex across the palm and cmc_abd
# palmar, both from its rest 40 deg radial / 30 deg palmar; rot about the metacarpal).
RANGES = {
    "finger": dict(mcp=(-10, 90), pip=(0, 110), dip=(-5, 90), abd=(-20, 20)),
    "little": dict(mcp=(-15, 90), pip=(0, 110), dip=(-5, 90), abd=(-25, 20)),
    "thumb": dict(cmc_flex=(-15, 45), cmc_abd=(-10, 40), mcp=(-10, 60), ip=(-15, 80), rot=(-10, 25)),
}
# The keypoint network's shared error of each angle (deg, sd): the "perceived" hand both its 2D keypoints and
# its world landmarks come from (see `perceive`).
PERCEIVED_SD_DEG = dict(mcp=5.0, pip=6.0, dip=5.0, abd=3.0, thumb=5.0)
GLOBAL_SD_DEG = 4.0  # the perceived hand's orientation error (shared by 2D and world landmarks)
PIXEL_SD = 0.012  # per-keypoint 2D noise, fraction of the hand's pixel size
OFFSET_SD = 0.008  # whole-hand 2D offset, fraction of the hand's pixel size
TILT_SD_DEG = 12.0  # world landmarks: out-of-plane tilt the 2D cannot show
FINGER_DEPTH_SD_M = 0.008  # world landmarks: a finger's depth off as a whole
JITTER_SD_M = 0.004  # world landmarks: per-keypoint 3D jitter
POSE_WEIGHTS = {"open": 1, "relaxed": 1.5, "half_curl": 1.5, "fist_thumb_across": 1.5, "fist_thumb_side": 1,
                "point": 1, "two": 1, "thumbs_up": 1, "pinch": 1, "random": 1.5}


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix of `angle` radians about unit `axis` (3,) -> (3, 3)."""
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _unit(v):
    return v / np.linalg.norm(v)


def sample_proportions(rng) -> dict:
    """One person's hand: hand length (m) and segment fractions (anthropometric means x individual factors)."""
    length = rng.normal(0.186, 0.010)
    finger_factor = rng.normal(1.0, 0.03)
    seg = {f: tuple(v * rng.normal(1.0, 0.04) * (finger_factor if i > 0 else 1.0) for i, v in enumerate(vals))
           for f, vals in BUCHHOLZ.items()}
    return dict(length=length, segments=seg, span=SPAN * rng.normal(1.0, 0.05),
                cmc=np.array(THUMB_CMC) * rng.normal(1.0, 0.06, 3))


def _clip_pose(out: dict) -> dict:
    """Keeps a pose inside the anatomical ranges (`RANGES`, Hume et al. 1990; thumb: AAOS 1965, Kapandji 1986)."""
    for f in FINGERS:
        a = out[f]
        for k in ("mcp", "pip", "dip", "abd"):
            lo, hi = RANGES["little" if (f == "little" and k in ("mcp", "abd")) else "finger"][k]
            a[k] = float(np.clip(a[k], lo, hi))
    for k, (lo, hi) in RANGES["thumb"].items():
        out["thumb"][k] = float(np.clip(out["thumb"][k], lo, hi))
    return out


def sample_pose(rng) -> tuple[str, dict]:
    """A pose class and its angles (degrees): per finger mcp, pip, dip, abd; thumb cmc_flex, cmc_abd, mcp, ip, rot.
    Every angle is inside the anatomical ranges (`RANGES`); DIP flexion is 0.4-0.9 of PIP flexion."""
    names = list(POSE_WEIGHTS)
    p = np.array([POSE_WEIGHTS[n] for n in names], float)
    name = names[rng.choice(len(names), p=p / p.sum())]
    out = {}
    if name == "random":
        for f in FINGERS:
            pip = rng.uniform(0, 105)
            out[f] = dict(mcp=rng.uniform(-10, 90), pip=pip, dip=pip * rng.uniform(0.4, 0.9), abd=rng.uniform(-12, 12))
        out["thumb"] = dict(cmc_flex=rng.uniform(-10, 40), cmc_abd=rng.uniform(0, 30), mcp=rng.uniform(-5, 55),
                            ip=rng.uniform(-10, 75), rot=rng.uniform(-10, 20))
        return name, _clip_pose(out)
    fingers, thumb = POSES[name]
    for f in FINGERS:
        mcp, pip = fingers[f]
        pip = pip + rng.normal(0, 8)
        out[f] = dict(mcp=mcp + rng.normal(0, 8), pip=pip, dip=max(pip, 0.0) * rng.uniform(0.4, 0.9),
                      abd=rng.normal(0, 4))
    c_f, c_a, t_m, t_i = thumb
    out["thumb"] = dict(cmc_flex=c_f + rng.normal(0, 6), cmc_abd=c_a + rng.normal(0, 6), mcp=t_m + rng.normal(0, 8),
                        ip=t_i + rng.normal(0, 10), rot=rng.normal(5, 5))
    return name, _clip_pose(out)


def perceive(rng, pose: dict) -> dict:
    """The pose as a keypoint network perceives it: every angle off by a shared error (`PERCEIVED_SD_DEG`),
    clipped to the anatomical ranges. Both the 2D keypoints and the world landmarks are made from this one
    perceived hand, so their errors agree where a real network's do (in the image plane)."""
    out = {f: {k: v + rng.normal(0, PERCEIVED_SD_DEG[k]) for k, v in pose[f].items()} for f in FINGERS}
    out["thumb"] = {k: v + rng.normal(0, PERCEIVED_SD_DEG["thumb"]) for k, v in pose["thumb"].items()}
    for f in FINGERS:  # a network's error in the PIP and DIP flexions goes together (a curl, not a kink)
        out[f]["dip"] = max(out[f]["dip"] + 0.5 * (out[f]["pip"] - pose[f]["pip"]), 0.0)
    return _clip_pose(out)


def skeleton(prop: dict, pose: dict) -> tuple[np.ndarray, np.ndarray]:
    """21 keypoints in the hand frame (u distal, w radial, n dorsal; right hand), meters, and per keypoint
    whether a fist hides it (for the 2D noise). (prop, pose) -> ((21, 3), (21,) bool)."""
    L = prop["length"]
    u, w, n = np.eye(3)
    kp = np.zeros((21, 3))
    hidden = np.zeros(21, bool)
    mid_mcp = (1.0 - sum(prop["segments"]["middle"][1:])) * L
    curl = np.mean([pose[f]["mcp"] + pose[f]["pip"] for f in FINGERS]) / 190.0  # 0 open .. 1 fist
    for f in FINGERS:
        seg = prop["segments"][f]
        cup = {"ring": 0.003, "little": 0.006}.get(f, 0.0) * max(curl, 0.0)
        base = (mid_mcp - MCP_PROXIMAL[f] * L) * u + MCP_LATERAL[f] * prop["span"] * L * w \
            - (MCP_PALMAR[f] * L + cup) * n
        a = pose[f]
        # fingers converge towards the thumb side as they flex (flexion axes not parallel)
        conv = {"index": 0.0, "middle": 3.0, "ring": 7.0, "little": 12.0}[f] * min(max(curl, 0), 1)
        d0 = _rot(n, np.radians(SPLAY_DEG[f] + a["abd"] + conv)) @ u
        k0 = FIRST_KEYPOINT[f]
        kp[k0] = base
        p, phi = base, 0.0
        for j, (length, flex) in enumerate(zip(seg[1:], (a["mcp"], a["pip"], a["dip"]))):
            phi += np.radians(flex)
            d = np.cos(phi) * d0 - np.sin(phi) * n
            p = p + length * L * d
            kp[k0 + j + 1] = p
        if a["pip"] > 60:
            hidden[k0 + 2 : k0 + 4] = True
    t = pose["thumb"]
    seg = prop["segments"]["thumb"]
    cmc = prop["cmc"][0] * L * u + prop["cmc"][1] * L * w + prop["cmc"][2] * L * n
    # metacarpal at rest: 40 deg radial from the middle finger, 30 deg palmar; CMC flexion turns it across the
    # palm (about n), CMC abduction lifts it palmar (about its in-plane normal)
    d_rest = _unit(_rot(n, np.radians(40.0)) @ u)
    d = _rot(n, -np.radians(t["cmc_flex"])) @ d_rest
    side = _unit(np.cross(d, n))
    d = _rot(side, -np.radians(30.0 + t["cmc_abd"])) @ d
    # flexion plane of the thumb's MCP / IP: pronated ~70 deg from the fingers', bending towards the palm centre
    bend = _unit(np.cos(np.radians(70 + t["rot"])) * (-n) + np.sin(np.radians(70 + t["rot"])) * (-w))
    bend = _unit(bend - np.dot(bend, d) * d)
    kp[1], p = cmc, cmc
    p = p + seg[0] * L * d
    kp[2] = p
    phi = 0.0
    for j, (length, flex) in enumerate(zip(seg[1:], (t["mcp"], t["ip"]))):
        phi += np.radians(flex)
        p = p + length * L * (np.cos(phi) * d + np.sin(phi) * bend)
        kp[3 + j] = p
    return kp, hidden


def _random_rotation(rng, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    return _rot(axis, np.radians(rng.uniform(0, max_deg)))


def _place(rng, kp: np.ndarray, side: str) -> tuple:
    """A random view and position of hand-frame keypoints (21, 3): -> (the hand-frame -> camera rotation,
    the camera-frame translation, K). The whole hand lies inside the image."""
    # hand frame -> camera (x right, y down, z forward): palm (-n) towards the camera (-z), fingers up (-y),
    # so a right hand's thumb (w) is on the image's right (+x); a proper rotation (det +1: no mirroring)
    base = np.stack([[0, -1, 0], [1, 0, 0], [0, 0, 1]], axis=1).astype(float)  # columns: images of u, w, n
    view = _random_rotation(rng, 75.0) @ _rot(np.array([0, 0, 1.0]), np.radians(rng.uniform(-60, 60)))
    if rng.uniform() < 0.2:  # back of the hand towards the camera
        view = view @ _rot(np.array([0, 1.0, 0]), np.pi)
    R = view @ base
    rel = kp @ R.T
    f = rng.uniform(900, 1400)
    W, H = IMAGE_SIZE
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
    z = rng.uniform(0.3, 0.8)
    centre = rel.mean(0)
    for _ in range(20):  # the whole hand inside the image
        uv0 = rng.uniform([0.2 * W, 0.2 * H], [0.8 * W, 0.8 * H])
        t = np.array([(uv0[0] - K[0, 2]) / f * z, (uv0[1] - K[1, 2]) / f * z, z]) - centre
        joints = rel + t
        uv = joints @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        if (uv.min(0) > 5).all() and (uv.max(0) < [W - 6, H - 6]).all() and (joints[:, 2] > 0.1).all():
            break
    return R, t, K


def _project(joints: np.ndarray, K: np.ndarray) -> np.ndarray:
    uv = joints @ K.T
    return uv[:, :2] / uv[:, 2:]


def make_hand(rng, side: str) -> dict:
    """One record: ground truth in the camera frame plus the simulated keypoint-stage output.

    The keypoint stage sees a "perceived" hand (`perceive`: the true proportions with every joint angle off by
    a few degrees, and a slightly wrong global orientation); its 2D keypoints are that hand's projection plus
    pixel noise, its world landmarks that hand in metric 3D plus the errors 2D cannot show (out-of-plane tilt,
    flattened depth, scale). So the two agree in the image plane, as a real network's outputs do."""
    prop = sample_proportions(rng)
    pose_name, pose = sample_pose(rng)
    kp, hidden = skeleton(prop, pose)
    seen = perceive(rng, pose)
    kp_seen, _ = skeleton(prop, seen)
    if side == "left":  # mirror: thumb on the other side
        kp, kp_seen = kp * [1, -1, 1], kp_seen * [1, -1, 1]
    R, t, K = _place(rng, kp, side)
    joints = kp @ R.T + t
    uv = _project(joints, K)
    # the perceived hand: the same wrist, its orientation off by a small rotation (sd GLOBAL_SD_DEG)
    wrist = joints[0]
    seen_cam = (kp_seen - kp_seen[0]) @ (_random_normal_rotation(rng, GLOBAL_SD_DEG) @ R).T + wrist
    uv_seen = _project(seen_cam, K)
    size = float(np.ptp(uv, axis=0).max())
    # 2D pixel noise on top: hand offset + per keypoint (tips 1.5x, hidden 2x)
    per = rng.normal(0, PIXEL_SD * size, (21, 2))
    per[[4, 8, 12, 16, 20]] *= 1.5
    per[hidden] *= 2.0
    uv_det = uv_seen + rng.normal(0, OFFSET_SD * size, 2)[None] + per
    f = K[0, 0]
    c = rng.uniform(0.05, 0.55)
    d = c * f * (seen_cam[:, 2] - seen_cam[0, 2]) / seen_cam[9, 2] + rng.normal(0, 0.05 * size, 21)
    world = world_landmarks(rng, seen_cam)
    hand = dict(side=side, presence=0.99, keypoints_uvd=np.concatenate([uv_det, d[:, None]], 1).round(4).tolist(),
                confidence=[0.99] * 21, world_landmarks=world.round(6).tolist())
    return dict(K=K, joints=joints, uv=uv, hand=hand, pose=pose_name, size_px=size, length=prop["length"])


def _random_normal_rotation(rng, sd_deg: float) -> np.ndarray:
    """A rotation about a uniformly random axis by an angle ~ N(0, sd_deg)."""
    return _rot(rng.normal(size=3), np.radians(rng.normal(0, sd_deg)))


def world_landmarks(rng, joints: np.ndarray) -> np.ndarray:
    """MediaPipe-like metric landmarks of the perceived hand: (21, 3) camera-frame joints -> (21, 3)
    hand-centred, camera axes, with the errors the image plane cannot show: an out-of-plane tilt (sd
    TILT_SD_DEG), depth flattened by a factor in [0.6, 1], a scale in [0.7, 1.05], depth noise per finger and
    a small 3D jitter per keypoint."""
    rel = joints - joints.mean(0)
    tilt_axis = np.array([*rng.normal(size=2), 0.0])  # in the image plane: the hand tilts out of it
    R = _rot(tilt_axis, np.radians(rng.normal(0, TILT_SD_DEG)))
    w = (rel * [1, 1, rng.uniform(0.6, 1.0)]) @ R.T * rng.uniform(0.7, 1.05)
    fingers = np.repeat(np.arange(5), 4)
    w[1:, 2] += rng.normal(0, FINGER_DEPTH_SD_M, 5)[fingers]  # a finger's depth off as a whole
    return w + rng.normal(0, JITTER_SD_M, (21, 3))


def error_agreement(uv_det, world, joints, uv, K) -> float:
    """How much a keypoint stage's 2D error and its world-landmark error agree: the cosine between the 2D error
    (21 x 2 px) and the error of the world landmarks, similarity-aligned to the true joints and projected.
    (uv_det (21, 2), world (21, 3), joints (21, 3) camera frame, uv (21, 2) their projection, K) -> [-1, 1]."""
    from engine import metrics

    aligned = metrics.procrustes_align(np.asarray(world)[None], np.asarray(joints)[None], scale=True)[0]
    e2, ew = np.asarray(uv_det) - uv, _project(aligned, K) - uv
    return float(np.sum(e2 * ew) / max(np.sqrt(np.sum(e2**2) * np.sum(ew**2)), 1e-12))


def make_set(out: pathlib.Path, n: int, seed: int) -> dict:
    """Writes the set; returns a summary (poses, 2D error of the simulated keypoints, world-landmark error)."""
    sys.path.insert(0, str(REPO))
    from engine import metrics
    from engine.stored_detections import DETECTIONS, save_detections

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    records, images, poses, e2, ew, epa, cos, rel_err = [], {}, {}, [], [], [], [], []
    for i in range(n):
        side = "right" if rng.uniform() < 0.6 else "left"
        h = make_hand(rng, side)
        name = f"mismatch_{i:05d}.png"  # no image file: the set is keypoint-level (detections.json)
        records.append(dict(image=name, hand=side, K=h["K"].round(6).tolist(), joints_3d_m=h["joints"].round(7).tolist(),
                            joints_2d_px=h["uv"].round(4).tolist(), visible=None))
        images[name] = {"size": list(IMAGE_SIZE), "hands": [h["hand"]]}
        poses[h["pose"]] = poses.get(h["pose"], 0) + 1
        det = np.asarray(h["hand"]["keypoints_uvd"])[:, :2]
        e2.append(np.linalg.norm(det - h["uv"], axis=1).mean())
        rel_err.append(e2[-1] / h["size_px"])
        wl = np.asarray(h["hand"]["world_landmarks"])
        ew.append(metrics.joint_errors_3d(wl[None], h["joints"][None], "rigid").mean())
        epa.append(metrics.pa_mpjpe(wl[None], h["joints"][None])[0])
        cos.append(error_agreement(det, wl, h["joints"], h["uv"], h["K"]))
    (out / "annotations_normalized.json").write_text(json.dumps(records))
    save_detections(out / DETECTIONS, images)
    summary = dict(n=n, seed=seed, poses=poses, keypoint_px_error_mean=round(float(np.mean(e2)), 2),
                   keypoint_error_of_hand_size=round(float(np.mean(rel_err)), 4),
                   world_rigid_error_mm_median=round(1000 * float(np.median(ew)), 1),
                   world_pa_error_mm_median=round(1000 * float(np.median(epa)), 1),
                   error_agreement_mean=round(float(np.mean(cos)), 3))
    (out / "PROVENANCE.md").write_text(
        "# Synthetic mismatch set (issue 14)\n\nMade by `scripts/make_mismatch_set.py` "
        f"(--n {n} --seed {seed}); hands from published anthropometry, not from any hand model: see that script's "
        "docstring for the sources and the simulated keypoint stage. No images: `detections.json` holds the "
        "keypoint-stage outputs that `python -m engine eval` reads.\n\n```\n" + json.dumps(summary, indent=1) + "\n```\n")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(json.dumps(make_set(args.out, args.n, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
