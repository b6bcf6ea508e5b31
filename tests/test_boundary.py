"""The two worlds and their one boundary (DESIGN.md): the engine never imports bpy, the add-on never imports
the engine's packages, and the few facts the add-on must mirror across the boundary stay equal."""

import ast
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
ENGINE_ONLY = {"torch", "jax", "jaxlib", "smplx", "cv2", "optax", "safetensors", "scipy", "engine"}


def imported_roots(package: pathlib.Path):
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module.split(".")[0]


def test_engine_never_imports_bpy():
    bad = [f"{p.relative_to(REPO)}: {m}" for p, m in imported_roots(REPO / "engine") if m in ("bpy", "bpy_extras", "mathutils")]
    assert not bad, bad


def test_addon_never_imports_engine_packages():
    bad = [f"{p.relative_to(REPO)}: {m}" for p, m in imported_roots(REPO / "handtailor_blender") if m in ENGINE_ONLY]
    assert not bad, bad


def test_addon_mirrors_of_engine_constants_agree():
    # The add-on cannot import the engine (Blender's Python has no torch/jax); its copies are checked here.
    sys.path.insert(0, str(REPO))
    from engine import results as engine_results
    from engine.hand_model import MANO_JOINT_NAMES, MANO_PARENTS, TIP_NAMES
    from handtailor_blender.io import results as addon_results

    assert tuple(addon_results.MANO_JOINT_NAMES) == tuple(MANO_JOINT_NAMES)
    np.testing.assert_array_equal(addon_results.MANO_PARENTS, MANO_PARENTS)
    assert tuple(addon_results.TIP_NAMES) == tuple(TIP_NAMES)
    assert addon_results.FORMAT_VERSION == engine_results.FORMAT_VERSION
