"""Check engine: starts the engine once, reports its versions or the exact problem."""

from __future__ import annotations

import bpy

from . import capture
from .io import engine_client
from .io.engine_client import EngineFailure
from .preferences import engine_config, get_prefs


class HANDTAILOR_OT_check_engine(bpy.types.Operator):
    """Start the HandTailor engine once and report its versions"""

    bl_idname = "handtailor.check_engine"
    bl_label = "Check engine"

    def execute(self, context):
        config = engine_config(context)
        prefs = get_prefs(context)
        try:
            info = engine_client.check_engine(config.python, config.root, start=capture.addon_dir(),
                                              timeout=config.hello_timeout)
        except EngineFailure as exc:
            if prefs is not None:
                prefs.last_check = f"Engine problem: {exc}"
            self.report({"ERROR"}, f"HandTailor engine: {exc}")
            return {"CANCELLED"}
        versions = ", ".join(f"{k} {v}" for k, v in sorted((info.get("versions") or {}).items()))
        text = (f"Engine {info.get('engine_version', '?')} (protocol {info.get('protocol')}) on Python "
                f"{info.get('python', '?')}\n{info['python_path']}\n{versions}")
        if prefs is not None:
            prefs.last_check = text
        self.report({"INFO"}, text.replace("\n", " | "))
        return {"FINISHED"}


classes = (HANDTAILOR_OT_check_engine,)
