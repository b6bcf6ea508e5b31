"""Operators against a stand-in engine: capture, Check engine, and failure injection (engine missing,
killed mid-capture, hanging, reporting an error): a clear message, Blender keeps running, the scene and
its keys are untouched."""

import types

import numpy as np
import pytest

import blender_helpers as helpers
from blender_helpers import assert_same, snapshot_keys

bpy = pytest.importorskip("bpy")

from handtailor_blender import keys  # noqa: E402


@pytest.fixture
def footage():
    """The bundled sample clip (the stand-in engine never reads it; Blender loads it as the background)."""
    path = helpers.pathlib.Path(__file__).resolve().parents[2] / "samples" / "dex-retargeting_human_hand_video.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture
def result_file(tmp_path, models_dir):
    d, right, left = models_dir
    return helpers.make_result(tmp_path / "captured.npz", [right, left], N=12, hand_model=str(d))


def set_source(path):
    ht = bpy.context.scene.handtailor
    ht.source_mode = "FILE"
    ht.filepath = str(path)


def test_capture_operator(fake_engine, footage, result_file):
    fake_engine("ok", result_file)
    set_source(footage)
    assert bpy.ops.handtailor.capture("EXEC_DEFAULT") == {"FINISHED"}
    scene = bpy.context.scene
    arms = sorted(o.name for o in scene.objects if o.type == "ARMATURE")
    assert arms == ["HandTailor_left", "HandTailor_right"]
    assert scene.render.fps == 30 and (scene.frame_start, scene.frame_end) == (1, 12)
    cam = scene.camera
    assert cam is not None and cam.data.background_images[0].clip is not None
    act = scene.objects["HandTailor_right"].animation_data.action
    frames, _ = keys.read_keys(keys.fcurves_of(act).find("location", index=0))
    assert set(frames) <= set(range(1, 13)) - {4} and len(frames) < 11  # reduced; none on the invalid frame
    assert 0 < act["ht_keys_after"] < act["ht_keys_before"]
    vis = keys.fcurves_of(act).find('["ht_visible"]')
    assert [vis.evaluate(f) for f in (3, 4, 5)] == [1.0, 0.0, 1.0]  # frame 4 (row 3) was not tracked
    assert [m.frame for m in scene.timeline_markers if m.name.startswith(act.name)] == [4]
    mesh = next(c for c in scene.objects["HandTailor_right"].children if c.type == "MESH")
    scene.frame_set(4)
    assert mesh.evaluated_get(bpy.context.evaluated_depsgraph_get()).hide_render
    assert scene.handtailor.last_result.endswith(".npz")


def test_capture_choices(fake_engine, footage, result_file):
    """One side only, a start frame, Euler channels, every frame keyed (tolerance 0)."""
    fake_engine("ok", result_file)
    set_source(footage)
    ht = bpy.context.scene.handtailor
    ht.side, ht.start_frame, ht.rotation_mode = "left", 101, "XYZ"
    ht.tolerance_deg = ht.tolerance_mm = 0.0
    assert bpy.ops.handtailor.capture("EXEC_DEFAULT") == {"FINISHED"}
    scene = bpy.context.scene
    assert [o.name for o in scene.objects if o.type == "ARMATURE"] == ["HandTailor_left"]
    assert (scene.frame_start, scene.frame_end) == (101, 112)
    arm = scene.objects["HandTailor_left"]
    fcs = keys.fcurves_of(arm.animation_data.action)
    frames, _ = keys.read_keys(fcs.find('pose.bones["index1.L"].rotation_euler', index=0))
    np.testing.assert_array_equal(frames, [101, 102, 103] + list(range(105, 113)))
    assert fcs.find('pose.bones["index1.L"].rotation_quaternion') is None
    assert all(pb.rotation_mode == "XYZ" for pb in arm.pose.bones)


def test_frame_ranges_are_timeline_frames(addon, footage):
    """The range is typed in timeline frames: footage frame 0 sits on the start frame (1: Blender's first
    frame; or a movie clip's own Start Frame), and a range before the footage says where it starts."""
    from handtailor_blender import ops_capture

    ht = bpy.context.scene.handtailor
    set_source(footage)
    ht.use_frame_range, ht.frame_start, ht.frame_end = True, 5, 10
    settings, _ = ops_capture.capture_settings(bpy.context)
    assert (settings.frame_start, settings.frame_end, settings.start_frame) == (4, 9, 1)
    ht.start_frame, ht.frame_start, ht.frame_end = 101, 105, 110
    settings, _ = ops_capture.capture_settings(bpy.context)
    assert (settings.frame_start, settings.frame_end, settings.start_frame) == (4, 9, 101)
    ht.source_mode, ht.clip = "CLIP", bpy.data.movieclips.load(str(footage))
    ht.clip.frame_start = 50
    ht.frame_start, ht.frame_end = 50, 60
    settings, clip = ops_capture.capture_settings(bpy.context)
    assert (settings.frame_start, settings.frame_end) == (0, 10) and clip == ht.clip
    ht.frame_start = 40
    with pytest.raises(ValueError, match="starts at timeline frame 50"):
        ops_capture.capture_settings(bpy.context)


def test_clip_camera_needs_a_solve(fake_engine, footage, result_file):
    """'Clip camera' on a clip without a camera solve refuses (it would be Blender's default 24 mm lens)."""
    fake_engine("ok", result_file)
    ht = bpy.context.scene.handtailor
    ht.source_mode, ht.camera_mode = "CLIP", "SOLVE"
    ht.clip = bpy.data.movieclips.load(str(footage))
    with pytest.raises(RuntimeError, match="no camera solve"):
        bpy.ops.handtailor.capture("EXEC_DEFAULT")
    assert not bpy.data.objects


def test_check_engine(fake_engine, addon):
    assert bpy.ops.handtailor.check_engine() == {"FINISHED"}
    assert "fake" in addon.last_check and "numpy" in addon.last_check


def test_engine_missing(addon, footage):
    addon.engine_python = "/nonexistent/venv/bin/python"
    addon.engine_root = str(helpers.pathlib.Path(__file__).parent / "fake_engine")
    set_source(footage)
    with pytest.raises(RuntimeError, match="does not exist or cannot run"):
        bpy.ops.handtailor.capture("EXEC_DEFAULT")
    assert not bpy.data.objects and not bpy.data.actions
    addon.engine_python = ""
    addon.engine_root = "/nonexistent/root"
    with pytest.raises(RuntimeError, match="holds no engine"):
        bpy.ops.handtailor.check_engine()
    assert "Engine problem" in addon.last_check


@pytest.mark.parametrize("mode,message", [("crash", "engine_died"), ("hang", "engine_hung"),
                                          ("error", "no hand found")])
def test_engine_failure_keeps_scene(fake_engine, footage, result_file, mode, message):
    fake_engine("ok", result_file)
    set_source(footage)
    assert bpy.ops.handtailor.capture("EXEC_DEFAULT") == {"FINISHED"}
    before = snapshot_keys()
    names = {k: set(getattr(bpy.data, k).keys()) for k in ("objects", "actions", "meshes")}
    fake_engine(mode)
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.handtailor.capture("EXEC_DEFAULT")
    assert_same(snapshot_keys(), before)
    assert {k: set(getattr(bpy.data, k).keys()) for k in names} == names
    assert "failed" in bpy.context.scene.handtailor.status


def test_modal_capture_and_escape(fake_engine, footage, result_file):
    """The modal path, driven by hand (the bpy module has no event loop): timer events until done; a
    second run is cancelled with Esc."""
    from handtailor_blender.engine_modal import EngineModal
    from handtailor_blender.ops_capture import HANDTAILOR_OT_capture

    fake_engine("ok", result_file)
    set_source(footage)
    wm = types.SimpleNamespace(event_timer_add=lambda *a, **k: object(), event_timer_remove=lambda t: None,
                               progress_begin=lambda a, b: None, progress_update=lambda v: None,
                               progress_end=lambda: None, modal_handler_add=lambda op: None)
    ctx = types.SimpleNamespace(scene=bpy.context.scene, window_manager=wm, window=None, workspace=None,
                                preferences=bpy.context.preferences,
                                screen=None)
    reports = []

    def run(escape_when=None):
        """TIMER events, each once the engine has sent something new, until the operator ends; ESC as
        soon as escape_when(op) holds."""
        op = types.SimpleNamespace(report=lambda kind, msg: reports.append((kind, msg)))
        for name in ("prepare", "finish", "_fail", "_cleanup", "modal", "invoke"):
            setattr(op, name, types.MethodType(getattr(HANDTAILOR_OT_capture, name), op))
        op.cmd = "capture"
        assert op.invoke(ctx, None) == {"RUNNING_MODAL"}
        assert bpy.context.scene.handtailor.running
        for _ in range(1000):
            if escape_when is not None and escape_when(op):
                return op.modal(ctx, types.SimpleNamespace(type="ESC"))
            state = op.modal(ctx, types.SimpleNamespace(type="TIMER"))
            if state != {"PASS_THROUGH"}:
                return state
            op.client._wait_event(1.0)
        raise AssertionError(f"the operator never ended: {reports}")

    state = run()
    assert state == {"FINISHED"}, reports
    assert not bpy.context.scene.handtailor.running and not EngineModal._running
    before = snapshot_keys()
    fake_engine("hang")
    state = run(escape_when=lambda op: op.phase == "work" and op.job.done >= 1)
    assert state == {"CANCELLED"} and "cancelled" in bpy.context.scene.handtailor.status
    assert_same(snapshot_keys(), before)
