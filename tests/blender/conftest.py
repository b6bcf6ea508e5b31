import pathlib
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).parent))

FAKE_ENGINE_ROOT = pathlib.Path(__file__).parent / "fake_engine"


@pytest.fixture
def blank(tmp_path, monkeypatch):
    """A clean Blender: factory settings, empty scene. Python's temp folder is the test's own: an unsaved
    .blend's results (and their keys files) go to the temp folder's `handtailor/`, which the suite must not
    leave behind in the user's."""
    bpy = pytest.importorskip("bpy")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy


@pytest.fixture
def addon(blank):
    """The add-on enabled the way Blender does it (preferences exist), disabled afterwards."""
    import os

    import addon_utils

    import handtailor_blender

    # the package is already imported by the tests: without a load time addon_utils takes it as changed on
    # disk and reloads every module, leaving the tests' imported classes (EngineFailure ...) stale
    handtailor_blender.__time__ = os.path.getmtime(handtailor_blender.__file__)
    addon_utils.enable("handtailor_blender", default_set=True, handle_error=None)
    prefs = blank.context.preferences.addons["handtailor_blender"].preferences
    yield prefs
    addon_utils.disable("handtailor_blender", default_set=True)


@pytest.fixture
def fake_engine(addon, monkeypatch):
    """Points the add-on at the misbehaving stand-in engine; returns a mode setter."""
    import sys as _sys

    addon.engine_python = _sys.executable
    addon.engine_root = str(FAKE_ENGINE_ROOT)
    addon.hang_timeout = 2.0

    def set_mode(mode, result=None):
        monkeypatch.setenv("FAKE_ENGINE_MODE", mode)
        if result is not None:
            monkeypatch.setenv("FAKE_ENGINE_RESULT", str(result))
    set_mode("ok")
    return set_mode


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    import blender_helpers as helpers
    from handtailor_blender.io.results import read_model

    d = tmp_path_factory.mktemp("models")
    right = read_model(helpers.make_model(d / "open_hand_right.npz", "right"))
    left = read_model(helpers.make_model(d / "open_hand_left.npz", "left"))
    return d, right, left


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/blender" in str(item.fspath):
            item.add_marker(pytest.mark.blender)
