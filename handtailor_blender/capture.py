"""Capture and re-tailor as plain functions: engine client -> result -> rig -> keys -> camera.

The modal operators drive these step by step (the UI stays responsive); the headless entry point
(`python -m handtailor_blender`) and the tests call them synchronously. Nothing in the scene changes until a
complete result file has been read and checked, and a failure while applying it removes what was created,
so a failed capture leaves the scene as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import tempfile
import time

import bpy
import numpy as np

from . import camera, keys, poses, rig
from .io import engine_client
from .io.engine_client import EngineClient, EngineFailure
from .io.results import (MANO_JOINT_NAMES, ResultFileError, read_model, read_result, resolve_model_path,
                         write_edits)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CaptureSettings:
    """The engine's capture options (engine protocol `capture` args) plus the add-on's own."""

    source: str
    output: str = ""
    frame_start: int | None = None
    frame_end: int | None = None
    stride: int = 1
    hands: int = 2
    intrinsics: list | None = None
    hand_model: str | None = None
    iterations: int = 30
    smoothing: float | None = None  # None: the engine's default
    per_frame_shape: bool = False  # default: one identity (shape and size) per hand track
    mirrored: bool = False
    batch_size: int = 64
    overlay: str | None = None
    interpolation: str = "LINEAR"
    correctives: bool = True
    fps: float | None = None  # frame rate for footage without one (image folders): the scene's (scene_fps)

    def engine_args(self) -> dict:
        args = dict(source=self.source, output=self.output, frame_start=self.frame_start,
                    frame_end=self.frame_end, stride=self.stride, hands=self.hands, intrinsics=self.intrinsics,
                    hand_model=self.hand_model, iterations=self.iterations, smoothing=self.smoothing,
                    mirrored=self.mirrored, overlay=self.overlay, batch_size=self.batch_size)
        if self.per_frame_shape:
            args["per_frame_shape"] = True
        if self.fps is not None:
            args["fps"] = float(self.fps)
        return args


def scene_fps(scene) -> float:
    """The scene's frame rate (fps / fps_base): what an image folder captured into it is timed at."""
    return float(scene.render.fps) / float(scene.render.fps_base or 1.0)


@dataclasses.dataclass
class EngineConfig:
    python: str = ""
    root: str = ""
    hang_timeout: float = 120.0
    hello_timeout: float = 60.0


def addon_dir() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent


def locate(config: EngineConfig) -> tuple[str, str]:
    return engine_client.find_engine(config.python, config.root, start=addon_dir())


def output_dir() -> pathlib.Path:
    """Where results go: `//handtailor/` beside a saved .blend, else a temp folder."""
    if bpy.data.filepath:
        return pathlib.Path(bpy.path.abspath("//handtailor"))
    return pathlib.Path(tempfile.gettempdir()) / "handtailor"


def default_output(source: str) -> str:
    stem = pathlib.Path(source.rstrip("/\\")).stem or "capture"
    return str(output_dir() / f"{stem}_{time.strftime('%Y%m%d_%H%M%S')}.npz")


def start_engine(config: EngineConfig) -> EngineClient:
    """Launches the engine without waiting (the caller polls the hello job)."""
    python, root = locate(config)
    return EngineClient(engine_client.engine_command(python), cwd=root)


def run_job(client: EngineClient, cmd: str, args: dict, config: EngineConfig, on_progress=None,
            timeout: float | None = None) -> dict:
    """Synchronous: hello (once, protocol checked) then `cmd`; returns the result dict; EngineFailure otherwise."""
    if not client.hello:
        client.hello = engine_client.check_hello(client.request("hello", {}, hang_timeout=config.hello_timeout).wait(
            timeout=config.hello_timeout + 5))
    return client.request(cmd, args, hang_timeout=config.hang_timeout).wait(timeout=timeout, on_progress=on_progress)


# ---------------------------------------------------------------------------------------- applying


def _rig_name(side: str, t: int, sides) -> str:
    same = [i for i, s in enumerate(sides) if s == side]
    return f"HandTailor_{side}" + (f"_{same.index(t)}" if len(same) > 1 and same.index(t) else "")


def _fallback_model_dir(config: EngineConfig | None) -> str | None:
    try:
        _, root = locate(config or EngineConfig())
    except EngineFailure:
        return None
    return str(pathlib.Path(root) / "models" / "open_hand")


def load_rig_model(path: str, side: str, config: EngineConfig | None = None):
    """read_model, with MANO .pkl files converted once by the engine into a cached .npz."""
    if not path.endswith(".pkl"):
        return read_model(path, side)
    import hashlib

    src = pathlib.Path(path)
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{side}".encode()).hexdigest()[:16]
    cached = output_dir() / "models" / f"{src.stem}_{side}_{key}.npz"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        python, root = locate(config or EngineConfig())
        engine_client.convert_model(python, root, str(src), side, str(cached))
    return read_model(cached, side)


def apply_result(scene, result_path: str, *, clip=None, interpolation: str = "LINEAR", correctives: bool = True,
                 config: EngineConfig | None = None, hand_model: str | None = None) -> list:
    """Rig + keys + camera for a capture result; returns the armature objects (one per track).

    All-or-nothing: the result and the models are read and checked before the scene is touched, and a
    failure while building removes everything this call created."""
    result = read_result(result_path)
    fallback = _fallback_model_dir(config)
    models = [load_rig_model(resolve_model_path(result.hand_model[t], side, hand_model, fallback,
                                                sha256=result.hand_model_sha256[t]), side, config)
              for t, side in enumerate(result.hand_side)]
    if not result.valid.any():
        raise ResultFileError(f"{result_path}: no frame holds a hand; nothing to key")
    before = {kind: set(getattr(bpy.data, kind)) for kind in ("objects", "actions", "armatures", "meshes",
                                                                "cameras", "shape_keys")}
    try:
        cam = camera.ensure_camera(scene, result.K, result.image_size, clip)
        offset = keys.frame_offset_for(clip)
        camera.set_scene_timing(scene, result.fps, offset + int(result.frame_index[0]),
                                offset + int(result.frame_index[-1]))
        to_world = camera.opencv_to_world_matrix(np.array(cam.matrix_world))
        arms = []
        for t, (side, model) in enumerate(zip(result.hand_side, models)):
            if not result.valid[t].any():
                continue
            name = _rig_name(side, t, result.hand_side)
            arm = bpy.data.objects.get(name)
            if arm is None or arm.type != "ARMATURE" or arm.get("ht_model") != model.path:
                arm, mesh = rig.build_rig(model, name if arm is None else name + "_new", scene.collection,
                                          correctives=correctives)
            else:
                mesh = rig.find_mesh(arm)
            keys.key_take(arm, mesh, model, result, t, frame_offset=offset, interpolation=interpolation,
                          to_world=to_world)
            arm["ht_track"] = t
            arms.append(arm)
        scene.frame_set(scene.frame_start)
        return arms
    except BaseException:
        for kind, old in before.items():
            coll = getattr(bpy.data, kind)
            for block in list(coll):
                if block not in old and kind != "shape_keys":
                    coll.remove(block)
        raise


def capture(scene, settings: CaptureSettings, config: EngineConfig, *, clip=None, on_progress=None,
            timeout: float | None = None) -> tuple[str, list]:
    """Synchronous capture (headless path): engine -> result file -> rig/keys/camera."""
    if not settings.output:
        settings.output = default_output(settings.source)
    if settings.fps is None:
        settings.fps = scene_fps(scene)
    pathlib.Path(settings.output).parent.mkdir(parents=True, exist_ok=True)
    client = start_engine(config)
    try:
        res = run_job(client, "capture", settings.engine_args(), config, on_progress=on_progress, timeout=timeout)
    finally:
        client.close()
    result_path = (res.get("files") or {}).get("result") or settings.output
    arms = apply_result(scene, result_path, clip=clip, interpolation=settings.interpolation,
                        correctives=settings.correctives, config=config, hand_model=settings.hand_model)
    return result_path, arms


# ----------------------------------------------------------------------------------------- retailor


def take_rigs(result_path: str) -> list:
    """Armatures whose active take comes from this result file."""
    out = []
    for obj in bpy.data.objects:
        ad = obj.animation_data
        if obj.type == "ARMATURE" and ad and ad.action and ad.action.get("ht_result") == result_path:
            out.append(obj)
    return out


@dataclasses.dataclass
class RetailorPlan:
    result_path: str
    edits_path: str
    output_path: str
    rigs: list  # [(arm, take dict, current table, locks dict)]
    args: dict
    n_edited: int


def _rig_model(arm):
    return read_model(arm["ht_model"], arm["ht_side"])


def prepare_retailor(scene, arm, *, frame_range: tuple[int, int] | None = None, joints: list[str] | None = None,
                     iterations: int = 30, hand_model: str | None = None, falloff: int | None = None) -> RetailorPlan:
    """Collects the edited keys of the rig's take (and its sibling hands from the same capture) into an
    EDITS.npz and the engine's retailor args. Locks accumulate over re-tailors: once edited, a key stays
    locked. `hand_model` (the preferences' model) is where the engine looks for the capture's hand model
    when it is no longer at the path the result records (used only when its content matches). `falloff`:
    frames an edit reaches on each side (None: the engine's default)."""
    ad = arm.animation_data
    if not ad or not ad.action or not ad.action.get("ht_result"):
        raise ResultFileError(f"{arm.name} has no HandTailor take to re-tailor: capture first")
    result_path = ad.action["ht_result"]
    result = read_result(result_path)
    to_world = keys.to_world_matrix(scene)
    theta, beta = result.theta.copy(), result.beta.copy()
    root, scale = result.root.copy(), result.hand_scale.copy()
    T, N = result.valid.shape
    lock_theta = np.zeros((T, N, 16), bool)
    lock_beta = np.zeros((T, N), bool)
    lock_root = np.zeros((T, N), bool)
    lock_scale = np.zeros((T, N), bool)
    # tracks with no rig in the scene are kept as they are
    covered = np.zeros(T, bool)
    rigs = []
    n_edited = 0
    for other in take_rigs(result_path):
        take = keys.load_take_file(other.animation_data.action["ht_take_file"])
        t = int(take["track"])
        covered[t] = True
        rows = take["rows"]
        cur, present = keys.current_table(other, take["frames"], take["table"])
        edited = {k: present[k] & (cur[k] != take["table"][k]) for k in cur}
        # the object's location and scale are one transform: editing either locks root and hand_scale
        obj_edit = edited["obj_loc"].any(-1) | edited["obj_scale"].any(-1)
        locks = dict(lock_theta=take["lock_theta"] | edited["bone_rot"].any(-1),
                     lock_beta=take["lock_beta"] | edited["beta"].any(-1),
                     lock_root=take["lock_root"] | obj_edit,
                     lock_hand_scale=take["lock_hand_scale"] | obj_edit)
        n_edited += int(sum(v.sum() for k, v in edited.items()))
        model = _rig_model(other)
        B = rig.bone_rest_rotations(other)[:16]
        cur_theta = poses.model_quats(cur["bone_rot"].astype(np.float64), B)
        cur_beta = cur["beta"].astype(np.float64)
        cur_scale = cur["obj_scale"][:, 0].astype(np.float64)
        lb, ls, lr = locks["lock_beta"], locks["lock_hand_scale"], locks["lock_root"]
        beta_used = np.where(lb[:, None], cur_beta, result.beta[t, rows])
        scale_used = np.where(ls, cur_scale, result.hand_scale[t, rows])
        cur_root = poses.root_from_object(cur["obj_loc"].astype(np.float64), scale_used, beta_used, model.J0,
                                          model.Jdirs, to_world)
        lt = locks["lock_theta"]
        theta[t, rows] = np.where(lt[..., None], cur_theta, result.theta[t, rows])
        beta[t, rows] = beta_used
        scale[t, rows] = scale_used
        root[t, rows] = np.where(lr[:, None], cur_root, result.root[t, rows])
        lock_theta[t, rows] = lt
        lock_beta[t, rows] = lb
        lock_root[t, rows] = lr
        lock_scale[t, rows] = ls
        rigs.append((other, take, cur, locks))
    for t in np.nonzero(~covered)[0]:
        lock_theta[t], lock_beta[t], lock_root[t], lock_scale[t] = True, True, True, True
    stem = pathlib.Path(result_path)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    edits_path = str(stem.with_name(f"{stem.stem}.edits_{stamp}.npz"))
    output_path = str(stem.with_name(f"{stem.stem.split('.retailor')[0]}.retailor_{stamp}.npz"))
    write_edits(edits_path, np.nan_to_num(theta), np.nan_to_num(beta), np.nan_to_num(root), np.nan_to_num(scale),
                lock_theta, lock_beta, lock_root, lock_scale)
    fs, fe = frame_range if frame_range else (None, None)
    args = dict(result=result_path, edits=edits_path, output=output_path, frame_start=fs, frame_end=fe,
                joints=joints, iterations=iterations, hand_model=hand_model, falloff=falloff)
    return RetailorPlan(result_path, edits_path, output_path, rigs, args, n_edited)


def apply_retailor(scene, plan: RetailorPlan, new_result_path: str) -> list:
    """Rewrites the keys the re-tailor changed (the refit result's values differ from the take's result);
    locked keys and every key of an unchanged value keep their values bit for bit (their quaternion signs
    too: a changed key takes the sign of its neighbour). The previous take is kept as a backup action
    (`restore_backup` brings it back)."""
    new = read_result(new_result_path)
    old = read_result(plan.result_path)
    to_world = keys.to_world_matrix(scene)
    prepared = []
    for arm, take, cur, locks in plan.rigs:  # compute everything before touching the scene
        t = int(take["track"])
        rows = take["rows"]
        if not new.valid[t, rows].all():
            raise ResultFileError(f"{new_result_path}: track {t} lost frames the take has keys on")
        model = _rig_model(arm)
        table = keys.channel_table(arm, model, new.theta[t, rows], new.beta[t, rows], new.root[t, rows],
                                   new.hand_scale[t, rows], new.confidence[t, rows].mean(-1), to_world)
        keep = _kept_keys(new, old, t, rows, locks)  # locked or not changed by the engine: current keys exactly
        for key, mask in keep.items():
            if key != "locks":
                table[key][mask] = cur[key][mask]
        q, kq = table["bone_rot"], keep["bone_rot"][..., 0]
        for n in range(1, len(q)):  # continuity for the changed keys only
            flip = (np.sum(q[n].astype(np.float64) * q[n - 1], -1) < 0) & ~kq[n]
            q[n][flip] *= -1
        prepared.append((arm, take, table, keep))
    out = []
    for arm, take, table, keep in prepared:
        backup_take(arm)
        obj_action = arm.animation_data.action
        key_action = bpy.data.actions[obj_action["ht_shape_action"]]
        obj_curves, key_curves = keys.fcurves_of(obj_action), keys.fcurves_of(key_action)
        frames = take["frames"]
        for target, path, index, group, key, col in keys.channel_specs(arm["ht_side"]):
            curves = obj_curves if target == "OBJECT" else key_curves
            fc = curves.find(path, index=index)
            sel = (slice(None),) + col
            values = table[key][sel]
            lock = keep[key][sel]
            if fc is None:
                fc = keys._new_fcurve(curves, path, index, group)
                keys.set_keys(fc, frames, values, obj_action.get("ht_interpolation", "LINEAR"))
            else:
                keys.rewrite_values(fc, frames, values, ~lock)
        take_file = pathlib.Path(obj_action["ht_take_file"])
        new_take = take_file.with_name(take_file.name.replace(".keys.npz", "") + f".r{int(time.time() * 1000)}.keys.npz")
        keys.save_take_file(new_take, frames, take["rows"], table, keep["locks"], new_result_path, int(take["track"]))
        for action in (obj_action, key_action):
            action["ht_take_file"] = str(new_take)
            action["ht_result"] = new_result_path
        out.append(arm)
    scene.frame_set(scene.frame_current)
    return out


def _kept_keys(new, old, t: int, rows, locks: dict) -> dict:
    """Per channel table key, (M, ...) True where the current key stays: locked, or its engine values are
    the same in the refit result as in the take's result (a local re-tailor leaves most frames alone)."""
    same_theta = np.all(new.theta[t, rows] == old.theta[t, rows], -1)  # (M, 16)
    same_beta = np.all(new.beta[t, rows] == old.beta[t, rows], -1)
    same_root = np.all(new.root[t, rows] == old.root[t, rows], -1)
    same_scale = new.hand_scale[t, rows] == old.hand_scale[t, rows]
    frame = same_theta.all(-1) & same_beta & same_root & same_scale
    obj = same_root & same_beta & same_scale
    keep = {"bone_rot": locks["lock_theta"] | same_theta, "beta": locks["lock_beta"] | same_beta,
            "obj_loc": locks["lock_root"] | obj, "obj_scale": locks["lock_hand_scale"] | same_scale,
            "obj_rot": frame, "confidence": frame, "bone_loc": (locks["lock_theta"] | same_theta) & same_beta[:, None]}
    shapes = {"bone_rot": 4, "obj_loc": 3, "obj_scale": 3, "obj_rot": 4, "bone_loc": 3, "beta": 10}
    out = {k: np.repeat(v[..., None], shapes[k], -1) if k in shapes else v for k, v in keep.items()}
    out["locks"] = locks
    return out


def backup_take(arm):
    """Copies the rig's current take (both actions) to a backup; returns the backup object action."""
    obj_action = arm.animation_data.action
    key_action = bpy.data.actions[obj_action["ht_shape_action"]]
    n = sum(1 for a in bpy.data.actions if a.get("ht_backup_of") == obj_action.name) + 1
    b_obj = obj_action.copy()
    b_key = key_action.copy()
    b_obj.name = f"{obj_action.name}_backup{n:02d}"
    b_key.name = f"{key_action.name}_backup{n:02d}"
    for b, src in ((b_obj, obj_action), (b_key, key_action)):
        b["ht_backup"] = True
        b["ht_backup_of"] = src.name
        b.use_fake_user = True
    b_obj["ht_shape_action"] = b_key.name
    arm["ht_last_backup"] = b_obj.name
    return b_obj


def restore_backup(arm) -> bool:
    """Makes the rig's last backup take active again (headless undo); False when there is none."""
    name = arm.get("ht_last_backup")
    b_obj = bpy.data.actions.get(name) if name else None
    if b_obj is None:
        return False
    mesh = rig.find_mesh(arm)
    keys.assign_action(arm, b_obj)
    if mesh is not None:
        keys.assign_action(mesh.data.shape_keys, bpy.data.actions[b_obj["ht_shape_action"]])
    return True


def retailor(scene, arm, config: EngineConfig, *, frame_range=None, joints=None, iterations=30,
             on_progress=None, timeout=None, hand_model: str | None = None, falloff: int | None = None) -> list:
    """Synchronous re-tailor (headless path)."""
    plan = prepare_retailor(scene, arm, frame_range=frame_range, joints=joints, iterations=iterations,
                            hand_model=hand_model, falloff=falloff)
    client = start_engine(config)
    try:
        res = run_job(client, "retailor", plan.args, config, on_progress=on_progress, timeout=timeout)
    finally:
        client.close()
    return apply_retailor(scene, plan, (res.get("files") or {}).get("result") or plan.output_path)


def selected_joint_names(arm) -> list[str] | None:
    """MANO joint names of the selected pose bones (None when none is selected)."""
    names = []
    for j, bname in enumerate(rig.bone_names(arm["ht_side"])[:16]):
        pbone = arm.pose.bones[bname]
        # Blender 5.0 keeps the selection on the pose bone, 4.x on the bone
        sel = pbone.select if hasattr(pbone, "select") else arm.data.bones[bname].select
        if sel:
            names.append(MANO_JOINT_NAMES[j])
    return names or None
