"""The built extension zip validates, installs into a temporary repository, enables, and unregisters
cleanly; the add-on package never imports the engine's heavy dependencies."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

bpy = pytest.importorskip("bpy")

REPO = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN = {"torch", "jax", "jaxlib", "smplx", "cv2", "engine", "scipy", "optax"}


def test_addon_imports_no_heavy_modules():
    for path in (REPO / "handtailor_blender").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] not in FORBIDDEN, f"{path}: imports {n}"
    assert not (REPO / "handtailor_blender" / "blender_manifest.toml").exists()  # one version source
    assert "bl_info" not in (REPO / "handtailor_blender" / "__init__.py").read_text()


def _snapshot():
    return dict(
        types={n for n in dir(bpy.types) if n.startswith("HANDTAILOR")},
        scene_prop=hasattr(bpy.types.Scene, "handtailor"),
        handlers={n: len(getattr(bpy.app.handlers, n)) for n in dir(bpy.app.handlers)
                  if isinstance(getattr(bpy.app.handlers, n), list)},
        ops=set(dir(bpy.ops.handtailor)),
    )


def test_zip_builds_validates_installs_enables(blank, tmp_path):
    import addon_utils

    out = subprocess.run([sys.executable, str(REPO / "build_addon.py"), "--output-dir", str(tmp_path / "dist")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    zip_path = pathlib.Path(out.stdout.strip().splitlines()[-1])
    assert zip_path.is_file() and zip_path.name == "handtailor-0.1.0.zip"
    before = _snapshot()
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    repo = bpy.context.preferences.extensions.repos.new(name="ht_test", module="ht_test",
                                                        custom_directory=str(repo_dir), source="USER")
    try:
        ext = pathlib.Path(bpy.__file__).parents[2] / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
        inst = subprocess.run([sys.executable, str(ext), "install-files", str(zip_path), "--local-dir",
                               str(repo_dir)], capture_output=True, text=True)
        assert inst.returncode == 0, inst.stdout + inst.stderr
        assert (repo_dir / "handtailor" / "__init__.py").is_file()
        mod = addon_utils.enable("bl_ext.ht_test.handtailor", default_set=True, handle_error=None)
        assert mod is not None
        assert hasattr(bpy.types.Scene, "handtailor")
        assert hasattr(bpy.types, "HANDTAILOR_OT_capture") and "capture" in dir(bpy.ops.handtailor)
        assert bpy.context.scene.handtailor.iterations == 30  # the panel's default (issue 15: 30 iterations)
        prefs = bpy.context.preferences.addons["bl_ext.ht_test.handtailor"].preferences
        assert prefs.hand_model == "OPEN"
        # installed outside the repository, with nothing set, it still finds the engine it was built beside
        installed = sys.modules["bl_ext.ht_test.handtailor.capture"]
        if not any(os.environ.get(v) for v in ("HANDTAILOR_ENGINE_PYTHON", "HANDTAILOR_ENGINE_ROOT")):
            assert installed.locate(installed.EngineConfig())[1] == str(REPO)
        addon_utils.disable("bl_ext.ht_test.handtailor", default_set=True)
        after = _snapshot()
        assert after == before
    finally:
        bpy.context.preferences.extensions.repos.remove(repo)


def test_register_unregister_in_place(blank):
    import handtailor_blender

    before = _snapshot()
    for _ in range(2):
        handtailor_blender.register()
        assert bpy.context.scene.handtailor.hands == "2"
        handtailor_blender.unregister()
        assert _snapshot() == before
