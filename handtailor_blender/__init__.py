"""HandTailor for Blender: capture hands from footage into a rigged, keyed hand (Blender extension).

The version lives in blender_manifest.toml only. This package imports bpy, numpy and the standard
library, never torch/jax/smplx/cv2 or the engine: the engine runs as a child process (io/engine_client.py).
"""

if "bpy" in locals():  # script reload
    import importlib

    for _m in (preferences, props, ops_engine, ops_capture, ops_retailor, ops_export, ops_retarget,  # noqa: F821
               panels):  # noqa: F821
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
