"""Add-on preferences: where the engine is, which hand model, time limits."""

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from .capture import EngineConfig

ADDON_ID = __package__


class HANDTAILOR_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description="Python interpreter of the HandTailor engine's environment (empty: the project's .venv, "
                    "found automatically, or $HANDTAILOR_ENGINE_PYTHON)")
    engine_root: StringProperty(
        name="Engine folder", subtype="DIR_PATH",
        description="Folder holding the engine/ package (empty: found from the interpreter, the add-on's "
                    "location or $HANDTAILOR_ENGINE_ROOT)")
    hand_model: EnumProperty(
        name="Hand model",
        items=[("OPEN", "Open hand model", "The model shipped with HandTailor"),
               ("MANO", "MANO", "A folder holding MANO_RIGHT.pkl / MANO_LEFT.pkl you downloaded")],
        default="OPEN", description="The hand model the capture fits (the open model ships with HandTailor)")
    mano_dir: StringProperty(name="MANO folder", subtype="DIR_PATH",
                             description="Folder holding MANO_RIGHT.pkl and MANO_LEFT.pkl")
    hang_timeout: FloatProperty(name="Engine silence limit", default=120.0, min=1.0, max=3600.0, unit="TIME_ABSOLUTE",
                                description="Seconds without any message from the engine before it counts as hung")
    last_check: StringProperty(name="Last check", default="",
                               description="What the last 'Check engine' found")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        problem = engine_problem(context)
        if problem:
            box = col.box()
            box.label(text="The engine was not found:", icon="ERROR")
            box.label(text="set 'Engine folder' to your HandTailor folder (the one holding engine/ and .venv)")
        col.prop(self, "engine_python")
        col.prop(self, "engine_root")
        row = col.row()
        row.operator("handtailor.check_engine", icon="CHECKMARK")
        if self.last_check:
            for line in self.last_check.split("\n")[:8]:
                col.label(text=line)
        col.separator()
        col.prop(self, "hand_model")
        if self.hand_model == "MANO":
            col.prop(self, "mano_dir")
        col.prop(self, "hang_timeout")


def get_prefs(context=None):
    preferences = getattr(context, "preferences", None) or bpy.context.preferences
    addon = preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


_found = {}  # (python, root) -> problem text or "" (the panel asks on every redraw)


def engine_problem(context=None) -> str:
    """Why the engine cannot be found with the current preferences ("" when it can); looked up once per
    setting, so panels can ask on every redraw."""
    from . import capture
    from .io.engine_client import EngineFailure

    config = engine_config(context)
    key = (config.python, config.root)
    if key not in _found:
        try:
            capture.locate(config)
            _found[key] = ""
        except EngineFailure as exc:
            _found[key] = str(exc)
    return _found[key]


def engine_config(context=None) -> EngineConfig:
    prefs = get_prefs(context)
    if prefs is None:
        return EngineConfig()
    return EngineConfig(python=bpy.path.abspath(prefs.engine_python) if prefs.engine_python else "",
                        root=bpy.path.abspath(prefs.engine_root) if prefs.engine_root else "",
                        hang_timeout=prefs.hang_timeout)


def hand_model_path(context=None) -> str | None:
    prefs = get_prefs(context)
    if prefs is None or prefs.hand_model == "OPEN" or not prefs.mano_dir:
        return None
    return bpy.path.abspath(prefs.mano_dir)


classes = (HANDTAILOR_AP_preferences,)
