"""Builds the Blender extension zip with Blender's own extension builder, then validates it.

    python build_addon.py [--output-dir dist] [--blender-ext PATH]

Stages `handtailor_blender/` with the top-level `blender_manifest.toml` into a temp folder (the manifest
is the extension's only version source), runs `blender_ext.py build` and `blender_ext.py validate`. The
builder is the one shipped in the `bpy` wheel (bpy/<ver>/scripts/addons_core/bl_pkg/cli/blender_ext.py) or
given with --blender-ext. Prints the zip's path.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import pathlib
import shutil
import subprocess
import sys
import tempfile

log = logging.getLogger("build_addon")
ROOT = pathlib.Path(__file__).resolve().parent


def find_blender_ext() -> pathlib.Path:
    """blender_ext.py from the installed bpy wheel (found without importing bpy)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations and not spec.origin:
        raise SystemExit("build_addon: the bpy module is not installed; pass --blender-ext PATH/blender_ext.py")
    locs = list(spec.submodule_search_locations or []) + ([str(pathlib.Path(spec.origin).parent)] if spec.origin
                                                           else [])
    for loc in locs:
        for base in (pathlib.Path(loc), *pathlib.Path(loc).parents[:4]):
            hits = sorted(base.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
            if hits:
                return hits[-1]
    raise SystemExit("build_addon: blender_ext.py not found inside the bpy wheel; pass --blender-ext")


def build(output_dir: pathlib.Path, blender_ext: pathlib.Path | None = None) -> pathlib.Path:
    blender_ext = blender_ext or find_blender_ext()
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="handtailor_build_") as tmp:
        stage = pathlib.Path(tmp) / "handtailor"
        shutil.copytree(ROOT / "handtailor_blender", stage,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.zip"))
        shutil.copy2(ROOT / "blender_manifest.toml", stage / "blender_manifest.toml")
        # where the engine lives on the machine that built the zip: an add-on installed from disk finds it
        (stage / "engine_root.txt").write_text(str(ROOT) + "\n")
        out = pathlib.Path(tmp) / "out"
        out.mkdir()
        subprocess.run([sys.executable, str(blender_ext), "build", "--source-dir", str(stage), "--output-dir",
                        str(out)], check=True, stdout=sys.stderr)
        zips = sorted(out.glob("*.zip"))
        if len(zips) != 1:
            raise SystemExit(f"build_addon: expected one zip from the builder, got {zips}")
        subprocess.run([sys.executable, str(blender_ext), "validate", str(zips[0])], check=True, stdout=sys.stderr)
        target = output_dir / zips[0].name
        shutil.copy2(zips[0], target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=pathlib.Path, default=ROOT / "dist")
    parser.add_argument("--blender-ext", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        path = build(args.output_dir, args.blender_ext)
    except subprocess.CalledProcessError as exc:
        log.error("the extension builder failed (%s)", exc)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
