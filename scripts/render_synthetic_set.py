"""Renders a synthetic hand set with exact ground truth (Cycles through bpy) for `python -m engine eval`.

    .venv/bin/python scripts/render_synthetic_set.py OUT_DIR --count 200 [--size 256] [--samples 16]
        [--seed 0] [--sides both|right|left] [--hand-model PATH] [--threads 1] [--denoise]

What one image holds: the shipped hand model (or --hand-model) in a random pose drawn inside the model's
joint limits, a random shape (beta ~ N(0, 0.8^2), clipped to +-2), a random global orientation (fingers roughly
up, palm or back towards the camera, in-plane roll +-90 deg, tilt up to ~45 deg), a skin-like material of a
random tone, one or two lights, a procedural background (noise / colour textures only, nothing downloaded)
and a pinhole camera of random focal length (0.9-1.5 x the image size) with the principal point at the
centre. The hand is placed so that its keypoints span 45-75% of the image side, every keypoint at least 4% of
the side inside the image (the forearm stub may leave it). Right and left hands alternate
(even index right, odd left) for `--sides both`.

Output (the format of `../shared/data/README.md`): `OUT_DIR/NNNNNN_{right,left}.png`, a per-image label
`OUT_DIR/labels/NNNNNN.json`, and `OUT_DIR/annotations_normalized.json` (rewritten every few images and at
the end from the labels). `visible` marks keypoints inside the image (not occlusion).

Deterministic: image i uses `np.random.default_rng([seed, i])`, so a set is the same whatever was rendered
before. Resumable: an image whose png and label both exist is skipped; rerun the same command after an
interruption. The scene is built once and only its data changes per image. Meant to be run outside the test
suite (hundreds of images take many minutes on 2 cores): run it under `nice`, e.g.
`nice -n 19 .venv/bin/python scripts/render_synthetic_set.py /tmp/synth --count 200`.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time

import numpy as np

LOG = logging.getLogger("render_synthetic_set")

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SKIN_TONES = np.array([  # linear-ish sRGB base colours, light to dark
    [0.95, 0.76, 0.65], [0.90, 0.68, 0.55], [0.80, 0.57, 0.44], [0.68, 0.46, 0.33],
    [0.55, 0.36, 0.25], [0.40, 0.26, 0.18], [0.28, 0.18, 0.12],
])


# ----------------------------------------------------------------------------------------------- sampling
def _axis_angle_to_quat(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 4) quaternion (w, x, y, z)."""
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    safe = np.where(angle > 1e-12, angle, 1.0)
    axis = np.where(angle > 1e-12, aa / safe, 0.0)
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


def _rotmat_to_quat(r: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (4,) quaternion (w, x, y, z)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(r).as_quat()
    return np.array([w, x, y, z])


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, np.float64)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()


def canonical_orientation(rest_keypoints: np.ndarray, palm_to_camera: bool) -> np.ndarray:
    """Rotation taking the rest hand to fingers-up (-y in the camera frame), palm or back facing the camera.

    Args:
        rest_keypoints: (21, 3) keypoints of the rest pose (model axes).
        palm_to_camera: which side faces the camera (for a left model the flip is absorbed by the random choice).
    Returns:
        (3, 3) rotation, camera-from-model.
    """
    d = rest_keypoints[9] - rest_keypoints[0]
    d = d / np.linalg.norm(d)
    n = np.cross(rest_keypoints[5] - rest_keypoints[0], rest_keypoints[17] - rest_keypoints[0])
    n = n - d * (n @ d)
    n = n / np.linalg.norm(n)
    src = np.stack([d, n, np.cross(d, n)], axis=1)  # columns, right-handed
    up = np.array([0.0, -1.0, 0.0])
    normal = np.array([0.0, 0.0, -1.0 if palm_to_camera else 1.0])
    dst = np.stack([up, normal, np.cross(up, normal)], axis=1)
    return dst @ src.T


def sample_scene(rng: np.random.Generator, model, rest_keypoints: np.ndarray, size: int) -> dict:
    """Draws everything random about one image (pose, shape, orientation, camera, look)."""
    limits = model.joint_limits
    theta_aa = np.zeros((16, 3))
    if limits is not None:
        lo, hi = limits[1:, :, 0], limits[1:, :, 1]
        lo = np.where(np.isfinite(lo), lo, -0.3)
        hi = np.where(np.isfinite(hi), hi, 0.3)
        theta_aa[1:] = lo + (hi - lo) * rng.beta(2.0, 2.0, size=lo.shape)
    else:  # no limits in the file: small random bends
        theta_aa[1:] = rng.normal(0.0, 0.25, size=(15, 3))
    r0 = canonical_orientation(rest_keypoints, palm_to_camera=bool(rng.random() < 0.5))
    roll = _rotation([0, 0, 1], rng.uniform(-np.pi / 2, np.pi / 2))
    tilt_axis = np.array([rng.normal(), rng.normal(), 0.0])
    tilt = _rotation(tilt_axis, rng.uniform(0.0, np.deg2rad(45)))
    r_global = roll @ tilt @ r0
    quats = _axis_angle_to_quat(theta_aa)
    quats[0] = _rotmat_to_quat(r_global)
    beta = np.clip(rng.normal(0.0, 0.8, size=10), -2.0, 2.0)
    focal = rng.uniform(0.9, 1.5) * size
    K = np.array([[focal, 0.0, size / 2.0], [0.0, focal, size / 2.0], [0.0, 0.0, 1.0]])
    return dict(
        theta=quats,
        beta=beta,
        K=K,
        span=rng.uniform(0.45, 0.75),  # hand extent as a fraction of the image side
        offset=rng.uniform(-0.12, 0.12, size=2) * size,
        skin=np.clip(SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1, 3), 0, 1),
        roughness=rng.uniform(0.35, 0.7),
        bg_colors=rng.uniform(0.0, 1.0, size=(2, 3)),
        bg_scale=rng.uniform(1.0, 12.0),
        bg_detail=rng.uniform(0.0, 8.0),
        bg_seed=rng.uniform(0, 1000),
        bg_strength=rng.uniform(0.3, 0.9),
        lights=[
            dict(pos=np.array([rng.uniform(-1, 1), rng.uniform(-1.2, 0.3), rng.uniform(-0.5, 0.6)]),
                 power=rng.uniform(3, 15), color=1.0 - rng.uniform(0, 0.15, 3))
            for _ in range(int(rng.integers(1, 3)))
        ],
    )


def place_hand(verts: np.ndarray, keypoints: np.ndarray, scene: dict, size: int, margin: float = 0.04):
    """Translates a posed hand (root at the origin) so that it sits at the drawn depth and offset, in view.

    Args:
        verts: (V, 3), keypoints: (21, 3) with the wrist at the origin.
    Returns:
        (verts (V, 3), keypoints (21, 3), uv (21, 2)) in the camera frame / pixels, or None if the hand
        cannot be framed (the caller redraws).
    """
    K = scene["K"]
    centre = keypoints.mean(axis=0)
    target_uv = np.array([K[0, 2], K[1, 2]]) + scene["offset"]
    extent = float(np.linalg.norm(keypoints.max(axis=0)[:2] - keypoints.min(axis=0)[:2]))  # image-plane size, m
    depth = max(0.15, K[0, 0] * extent / (scene["span"] * size))
    for _ in range(8):
        c = np.array([(target_uv[0] - K[0, 2]) * depth / K[0, 0], (target_uv[1] - K[1, 2]) * depth / K[1, 1], depth])
        shift = c - centre
        kp = keypoints + shift
        vs = verts + shift
        if (vs[:, 2] < 0.05).any():
            depth *= 1.25
            continue
        uv = kp @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        if (uv.min() >= margin * size) and (uv.max() <= size - margin * size):
            return vs, kp, uv
        depth *= 1.2
    return None


# ------------------------------------------------------------------------------------------------- Blender
class BlenderScene:
    """One Cycles scene reused for every image: mesh, camera, lights, world, skin material."""

    def __init__(self, faces_by_side: dict, n_verts_by_side: dict, size: int, samples: int, threads: int, denoise: bool):
        import bpy

        self.bpy = bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        self.scene = scene
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_adaptive_sampling = False
        scene.cycles.use_denoising = bool(denoise)
        scene.cycles.max_bounces = 2
        scene.cycles.diffuse_bounces = 1
        scene.cycles.glossy_bounces = 1
        scene.cycles.transmission_bounces = 0
        scene.cycles.transparent_max_bounces = 0
        scene.cycles.caustics_reflective = False
        scene.cycles.caustics_refractive = False
        scene.render.threads_mode = "FIXED"
        scene.render.threads = max(1, threads)
        scene.render.resolution_x = size
        scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGB"
        scene.render.film_transparent = False
        scene.view_settings.view_transform = "AgX"  # soft highlights: no blown-out white hands
        self.size = size

        # meshes: one hand object per side, vertex positions updated per image
        # (Blender axes = OpenCV (x, -y, -z): the camera sits at the origin looking down -z, +y up)
        mat = bpy.data.materials.new("skin")
        if mat.node_tree is None:
            mat.use_nodes = True
        self.bsdf = mat.node_tree.nodes["Principled BSDF"]
        self.bsdf.inputs["Subsurface Weight"].default_value = 0.0
        self.meshes, self.objects = {}, {}
        for side, faces in faces_by_side.items():
            faces = np.asarray(faces, dtype=np.int32)
            mesh = bpy.data.meshes.new(f"hand_{side}")
            mesh.vertices.add(n_verts_by_side[side])
            mesh.loops.add(faces.size)
            mesh.polygons.add(len(faces))
            mesh.loops.foreach_set("vertex_index", faces.ravel())
            mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
            mesh.polygons.foreach_set("loop_total", np.full(len(faces), 3, dtype=np.int32))
            mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), dtype=bool))
            mesh.update()
            mesh.materials.append(mat)
            obj = bpy.data.objects.new(f"hand_{side}", mesh)
            scene.collection.objects.link(obj)
            self.meshes[side], self.objects[side] = mesh, obj

        cam_data = bpy.data.cameras.new("camera")
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.sensor_width = 36.0
        cam_data.clip_start = 0.01
        cam_data.clip_end = 100.0
        self.camera = bpy.data.objects.new("camera", cam_data)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera  # at the origin looking down -z, +y up: OpenCV (x, -y, -z)

        self.lights = []
        for i in range(2):
            ld = bpy.data.lights.new(f"light{i}", type="POINT")
            ld.shadow_soft_size = 0.2
            lo = bpy.data.objects.new(f"light{i}", ld)
            scene.collection.objects.link(lo)
            self.lights.append(lo)

        world = bpy.data.worlds.new("world")
        scene.world = world
        # no importance map of the background: baking it evaluates the noise at 1024x512 on every render
        # (about 10 s a frame here); the smooth background lights the hand fine without it
        world.cycles.sampling_method = "NONE"
        if world.node_tree is None:
            world.use_nodes = True
        nt = world.node_tree
        nt.nodes.clear()
        coord = nt.nodes.new("ShaderNodeTexCoord")
        self.noise = nt.nodes.new("ShaderNodeTexNoise")
        self.noise.noise_dimensions = "4D"
        ramp = nt.nodes.new("ShaderNodeValToRGB")
        self.ramp = ramp.color_ramp
        bg = nt.nodes.new("ShaderNodeBackground")
        self.bg = bg
        out = nt.nodes.new("ShaderNodeOutputWorld")
        nt.links.new(coord.outputs["Generated"], self.noise.inputs["Vector"])
        nt.links.new(self.noise.outputs["Fac"], ramp.inputs["Fac"])
        nt.links.new(ramp.outputs["Color"], bg.inputs["Color"])
        nt.links.new(bg.outputs["Background"], out.inputs["Surface"])

    def set_camera(self, K: np.ndarray) -> None:
        cam = self.camera.data
        w = h = self.size
        cam.lens = K[0, 0] * cam.sensor_width / w
        cam.shift_x = (w / 2.0 - K[0, 2]) / max(w, h)
        cam.shift_y = (K[1, 2] - h / 2.0) / max(w, h)

    def render(self, side: str, verts_cv: np.ndarray, scene: dict, path: pathlib.Path) -> None:
        """Renders one image of the `side` hand.

        Args:
            verts_cv: (V, 3) vertices in the OpenCV camera frame (m).
        """
        verts_bl = verts_cv * np.array([1.0, -1.0, -1.0])
        mesh = self.meshes[side]
        mesh.vertices.foreach_set("co", verts_bl.astype(np.float32).ravel())
        mesh.update()
        for s, obj in self.objects.items():
            obj.hide_render = s != side
        self.set_camera(scene["K"])
        self.bsdf.inputs["Base Color"].default_value = (*scene["skin"], 1.0)
        self.bsdf.inputs["Roughness"].default_value = scene["roughness"]
        for i, lo in enumerate(self.lights):
            if i < len(scene["lights"]):
                spec = scene["lights"][i]
                lo.hide_render = False
                lo.location = tuple(spec["pos"] * np.array([1.0, -1.0, -1.0]))
                lo.data.energy = spec["power"]
                lo.data.color = tuple(spec["color"])
            else:
                lo.hide_render = True
        self.noise.inputs["Scale"].default_value = scene["bg_scale"]
        self.noise.inputs["Detail"].default_value = scene["bg_detail"]
        self.noise.inputs["W"].default_value = scene["bg_seed"]
        self.ramp.elements[0].color = (*scene["bg_colors"][0], 1.0)
        self.ramp.elements[1].color = (*scene["bg_colors"][1], 1.0)
        self.bg.inputs["Strength"].default_value = scene["bg_strength"]
        self.scene.render.filepath = str(path)
        self.bpy.ops.render.render(write_still=True)


# ------------------------------------------------------------------------------------------------- driver
class Poser:
    """Poses one hand model through engine.hand_model's torch layer (the project's one LBS)."""

    def __init__(self, model):
        import torch

        from engine.hand_model.torch_layer import HandLayer

        self.torch = torch
        self.model = model
        self.layer = HandLayer(model, dtype=torch.float64).eval()

    def __call__(self, theta: np.ndarray, beta: np.ndarray):
        """(16, 4) quats, (10,) beta -> (verts (V, 3), keypoints (21, 3)) with the wrist at the origin."""
        t = self.torch
        with t.no_grad():
            v, kp, _ = self.layer(t.as_tensor(theta[None], dtype=t.float64), t.as_tensor(beta[None], dtype=t.float64),
                                  t.zeros(1, 3, dtype=t.float64), t.ones(1, dtype=t.float64))
        return v[0].numpy().astype(np.float64), kp[0].numpy().astype(np.float64)


def write_annotations(out_dir: pathlib.Path) -> int:
    """Gathers labels/*.json (sorted) into annotations_normalized.json; returns the record count."""
    records = []
    for p in sorted((out_dir / "labels").glob("*.json")):
        if (out_dir / json.loads(p.read_text())["image"]).exists():
            records.append(json.loads(p.read_text()))
    tmp = out_dir / "annotations_normalized.json.tmp"
    tmp.write_text(json.dumps(records))
    tmp.replace(out_dir / "annotations_normalized.json")
    return len(records)


def render_set(out_dir: pathlib.Path, count: int, size: int = 256, samples: int = 16, seed: int = 0,
               sides: str = "both", hand_model: str | None = None, threads: int = 1, denoise: bool = False,
               start: int = 0) -> dict:
    """Renders images start..start+count-1 into out_dir (skipping finished ones); returns timing stats."""
    import torch

    from engine.hand_model import load_hand_model

    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(exist_ok=True)
    side_list = ["right", "left"] if sides == "both" else [sides]
    posers, rests = {}, {}
    for side in side_list:
        model = load_hand_model(hand_model, side=side)
        posers[side] = Poser(model)
        _, rests[side] = posers[side](np.tile([1.0, 0, 0, 0], (16, 1)), np.zeros(10))
    faces = {s: np.asarray(p.model.faces) for s, p in posers.items()}
    n_verts = {s: len(p.model.v_template) for s, p in posers.items()}
    blender = None
    times = []
    done = skipped = 0
    for i in range(start, start + count):
        side = side_list[i % len(side_list)]
        name = f"{i:06d}_{side}.png"
        label_path = out_dir / "labels" / f"{i:06d}.json"
        if (out_dir / name).exists() and label_path.exists():
            skipped += 1
            continue
        rng = np.random.default_rng([seed, i])
        for _attempt in range(20):
            sc = sample_scene(rng, posers[side].model, rests[side], size)
            verts, kp = posers[side](sc["theta"], sc["beta"])
            placed = place_hand(verts, kp, sc, size)
            if placed is not None:
                break
        else:
            LOG.warning("image %d: could not frame the hand in 20 draws; skipped", i)
            continue
        verts_c, kp_c, uv = placed
        if blender is None:
            blender = BlenderScene(faces, n_verts, size, samples, threads, denoise)
        t0 = time.perf_counter()
        blender.render(side, verts_c, sc, out_dir / name)
        times.append(time.perf_counter() - t0)
        visible = ((uv >= 0) & (uv <= size)).all(axis=1)
        label = dict(image=name, hand=side, K=sc["K"].tolist(), joints_3d_m=kp_c.tolist(),
                     joints_2d_px=uv.tolist(), visible=visible.tolist(),
                     synthetic=dict(seed=seed, index=i, theta=sc["theta"].tolist(), beta=sc["beta"].tolist()))
        label_path.write_text(json.dumps(label))
        done += 1
        if done % 10 == 0:
            write_annotations(out_dir)
            LOG.info("%d rendered (%.2f s/image)", done, float(np.mean(times)))
    n = write_annotations(out_dir)
    return dict(rendered=done, skipped=skipped, records=n, seconds_per_image=float(np.mean(times)) if times else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=pathlib.Path)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--start", type=int, default=0, help="first image index (for splitting a set across runs)")
    ap.add_argument("--size", type=int, default=256, help="square image side in px")
    ap.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sides", choices=["both", "right", "left"], default="both")
    ap.add_argument("--hand-model", default=None, help="hand model file/folder (default: the shipped open model)")
    ap.add_argument("--threads", type=int, default=1, help="Cycles render threads")
    ap.add_argument("--denoise", action="store_true", help="OpenImageDenoise (off by default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    stats = render_set(args.out_dir, args.count, args.size, args.samples, args.seed, args.sides, args.hand_model,
                       args.threads, args.denoise, args.start)
    LOG.info("done: %s", stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
