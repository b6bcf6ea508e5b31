"""HandTailor for Blender: capture hands from footage into a rigged, keyed hand (Blender extension).

The version lives in blender_manifest.toml only. This package imports bpy, numpy and the standard
library, never torch/jax/smplx/cv2 or the engine: the engine runs as a child process (io/engine_client.py).
"""

# Every submodule, each after the ones it imports: re-registering (F3 "Reload Scripts", a reinstall) reloads
# them all in this order, so no module keeps a stale reference to another.
MODULES = ("io.results", "io.engine_client", "poses", "anatomy", "reduce", "camera", "actions", "rig", "takes",
           "curves", "keys", "bone_maps", "retarget", "capture", "retailor", "retarget_scene", "preferences", "props",
           "engine_modal", "ops_engine", "ops_capture", "ops_retailor", "ops_export", "ops_retarget", "panels")

if "bpy" in locals():  # script reload
    import importlib
    import sys

    for _name in MODULES:
        _m = sys.modules.get(f"{__name__}.{_name}")
        if _m is not None:
            importlib.reload(_m)

import bpy

from . import ops_capture, ops_engine, ops_export, ops_retailor, ops_retarget, panels, preferences, props, takes

classes = (
    *preferences.classes,
    *props.classes,
    *ops_engine.classes,
    *ops_capture.classes,
    *ops_retailor.classes,
    *ops_export.classes,
    *ops_retarget.classes,
    *panels.classes,
)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    _register_classes()
    props.register_props()
    takes.register_handlers()


def unregister():
    takes.unregister_handlers()
    props.unregister_props()
    _unregister_classes()
