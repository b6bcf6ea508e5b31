"""Panels draw without a UI (a recording layout): every property they show exists, every operator too."""

import types

import pytest

bpy = pytest.importorskip("bpy")


class Layout:
    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        if name in ("column", "row", "box", "split"):
            return lambda *a, **k: Layout(self.log)
        if name == "prop":
            def prop(data, attr, **k):
                assert attr in data.bl_rna.properties, attr
                self.log.append(("prop", attr))
            return prop
        if name == "operator":
            def operator(idname, **k):
                mod, op = idname.split(".")
                assert op in dir(getattr(bpy.ops, mod)), idname
                self.log.append(("op", idname))
            return operator
        if name in ("label", "separator", "progress"):
            return lambda *a, **k: self.log.append((name, k.get("text")))
        if name in ("active", "enabled"):
            return True
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name == "log":
            object.__setattr__(self, name, value)


@pytest.mark.parametrize("running", [False, True])
def test_panels_draw(addon, running):
    from handtailor_blender import panels

    scene = bpy.context.scene
    ht = scene.handtailor
    ht.running = running
    ht.camera_mode = "MANUAL"
    ctx = types.SimpleNamespace(scene=scene)
    log = []
    panels.draw_capture(Layout(log), ctx)
    panels.draw_retailor(Layout(log), ctx)
    ops = {x[1] for x in log if x[0] == "op"}
    assert {"handtailor.retailor", "handtailor.export_fbx", "handtailor.restore_take"} <= ops
    assert ("handtailor.capture" in ops) != running
    prefs = addon
    prefs.last_check = "Engine 0.1\nline two"
    prefs.hand_model = "MANO"
    log = []
    type(prefs).draw(types.SimpleNamespace(layout=Layout(log), last_check=prefs.last_check,
                                           hand_model=prefs.hand_model, bl_rna=prefs.bl_rna), bpy.context)
    assert ("op", "handtailor.check_engine") in log
