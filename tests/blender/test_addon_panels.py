"""Panels draw without a UI (a recording layout): every property they show exists, every operator too; every
property the add-on registers has a tooltip; the panel tells where the engine is missing."""

import types

import pytest

bpy = pytest.importorskip("bpy")


class Layout:
    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        if name in ("column", "row", "box", "split"):
            return lambda *a, **k: Layout(self.log)
        if name in ("prop", "prop_search"):
            def prop(data, attr, *a, **k):
                assert attr in data.bl_rna.properties, attr
                self.log.append(("prop", attr))
            return prop
        if name == "operator":
            def operator(idname, **k):
                mod, op = idname.split(".")
                assert op in dir(getattr(bpy.ops, mod)), idname
                self.log.append(("op", idname))
                return types.SimpleNamespace()
            return operator
        if name == "template_list":
            def template_list(listtype, _id, data, prop, active_data, active_prop, **k):
                assert hasattr(bpy.types, listtype) and prop in data.bl_rna.properties
                self.log.append(("list", prop))
            return template_list
        if name in ("label", "separator", "progress"):
            return lambda *a, **k: self.log.append((name, k.get("text")))
        if name in ("active", "enabled"):
            return True
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name == "log":
            object.__setattr__(self, name, value)


def _draw_all(scene):
    from handtailor_blender import panels

    ctx = types.SimpleNamespace(scene=scene, preferences=bpy.context.preferences)
    log = []
    panels.draw_capture(Layout(log), ctx)
    panels.draw_retailor(Layout(log), ctx)
    panels.draw_retarget(Layout(log), ctx)
    return log


@pytest.mark.parametrize("running", [False, True])
def test_panels_draw(addon, running):
    scene = bpy.context.scene
    ht = scene.handtailor
    ht.running = running
    ht.camera_mode = "MANUAL"
    ht.source_mode = "FILE"  # footage from a file: its timeline start frame is ours to set
    log = _draw_all(scene)
    ops = {x[1] for x in log if x[0] == "op"}
    assert {"handtailor.retailor", "handtailor.export_fbx", "handtailor.restore_take", "handtailor.retarget",
            "handtailor.retarget_fill"} <= ops
    assert ("handtailor.capture" in ops) != running
    props = {x[1] for x in log if x[0] == "prop"}
    assert {"side", "start_frame", "tolerance_deg", "tolerance_mm", "rotation_mode"} <= props
    assert "correctives" not in props  # the open model has no pose correctives
    addon.hand_model = "MANO"
    assert ("prop", "correctives") in _draw_all(scene)
    ht.retarget_map.add().joint = "wrist"
    assert ("list", "retarget_map") in _draw_all(scene)
    prefs = addon
    prefs.last_check = "Engine 0.1\nline two"
    log = []
    type(prefs).draw(types.SimpleNamespace(layout=Layout(log), last_check=prefs.last_check,
                                           hand_model=prefs.hand_model, bl_rna=prefs.bl_rna), bpy.context)
    assert ("op", "handtailor.check_engine") in log


def test_engine_hint_when_missing(addon, tmp_path, monkeypatch):
    """An add-on installed from disk with no engine folder set: the panel says so and links the preferences."""
    from handtailor_blender import capture, preferences

    monkeypatch.delenv("HANDTAILOR_ENGINE_PYTHON", raising=False)
    monkeypatch.delenv("HANDTAILOR_ENGINE_ROOT", raising=False)
    monkeypatch.setattr(capture, "addon_dir", lambda: tmp_path)  # as if installed outside the repository
    preferences._found.clear()
    log = _draw_all(bpy.context.scene)
    assert ("label", "HandTailor engine not found") in log and ("op", "preferences.addon_show") in log
    from conftest import REPO

    addon.engine_root = str(REPO)  # the preference fixes it
    assert ("label", "HandTailor engine not found") not in _draw_all(bpy.context.scene)
    # the folder the zip was built from is the last resort
    addon.engine_root = ""
    (tmp_path / capture.ENGINE_HINT).write_text(str(REPO))
    preferences._found.clear()
    assert capture.locate(capture.EngineConfig())[1] == str(REPO)


def test_every_property_has_a_tooltip(addon):
    """Every property of every class the add-on registers (settings, preferences, operators) has a description."""
    import handtailor_blender

    missing, seen = [], 0
    for cls in handtailor_blender.classes:
        rna = cls.bl_rna
        declared = {n for k in cls.__mro__ for n in getattr(k, "__annotations__", {})}
        for name in declared:
            if name not in rna.properties or name in ("filter_glob",):  # filter_glob: hidden file filter
                continue
            seen += 1
            if not rna.properties[name].description.strip():
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, missing
    assert seen >= 45  # the enumeration reached the settings, preferences and operator properties
