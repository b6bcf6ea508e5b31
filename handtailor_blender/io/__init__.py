"""The add-on's format layer: engine protocol client and .npz readers/writers. No bpy here.

Everything in this package runs under any Python with numpy (Blender's bundled one included) and is
tested with plain pytest.
"""
