"""HandTailor inference engine: hand model layer, hand module (torch), tailor (JAX), capture pipeline.

Never imports bpy: the Blender add-on talks to this package through `engine.protocol` only.
"""

__version__ = "0.1.0"
