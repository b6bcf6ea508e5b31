"""`python -m engine model info|render`, the facts it reports, and engine.render's rasterizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.hand_model import load_hand_model
from engine.hand_model import cli as model_cli
from engine import render

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "engine", "model", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_info_json_on_the_shipped_model():
    proc = _run("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    for key in ("name", "side", "n_vertices", "n_faces", "n_joints", "n_keypoints", "n_shape", "hand_length_m",
                "watertight", "sha256", "path", "format", "has_pose_correctives", "has_joint_limits",
                "hand_length_m_beta1_plus2", "hand_length_m_beta1_minus2"):
        assert key in info, key
    assert (info["n_joints"], info["n_keypoints"], info["n_shape"]) == (16, 21, 10)
    assert info["side"] == "right" and info["format"] == "npz" and info["watertight"] is True
    assert 1000 <= info["n_vertices"] <= 4000
    assert 0.17 <= info["hand_length_m"] <= 0.21
    assert info["hand_length_m_beta1_plus2"] >= 1.10 * info["hand_length_m"]
    assert info["hand_length_m_beta1_minus2"] <= 0.90 * info["hand_length_m"]
    assert len(info["sha256"]) == 64


def test_info_text_and_left_side(capsys):
    assert model_cli.main(["info", "--side", "left"]) == 0
    out = capsys.readouterr().out
    assert "left hand" in out and "watertight" in out and "hand length" in out


def test_info_imports_neither_jax_nor_torch():
    code = ("import sys, io, contextlib; from engine.hand_model.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['info', '--json'])\n"
            "heavy = [m for m in ('jax', 'torch', 'smplx', 'cv2') if m in sys.modules]\n"
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_info_on_a_broken_file_exits_nonzero(tmp_path):
    bad = tmp_path / "MANO_RIGHT.pkl"
    bad.write_bytes(b"\x80\x02}q\x00(X\x01\x00")  # cut short
    proc = _run("info", str(bad), "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "truncated file" in proc.stderr and "bad_model_file" in proc.stderr


def test_watertight():
    tetra = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    assert model_cli.is_watertight(tetra)
    assert not model_cli.is_watertight(tetra[:3])  # open
    flipped = tetra.copy()
    flipped[0] = flipped[0, ::-1]
    assert not model_cli.is_watertight(flipped)  # inconsistent orientation


def test_poses_respect_the_joint_limits():
    model = load_hand_model()
    lim = model.joint_limits
    fist = model_cli.pose_axis_angle(model, "fist")
    assert np.all(fist[1:] >= lim[1:, :, 0] - 1e-12) and np.all(fist[1:] <= lim[1:, :, 1] + 1e-12)
    assert np.all(np.linalg.norm(fist[1:], axis=1) > 0.3)  # every finger joint flexed
    rand = model_cli.pose_axis_angle(model, "random", np.random.default_rng(1))
    assert np.all(rand[1:] >= lim[1:, :, 0]) and np.all(rand[1:] <= lim[1:, :, 1])
    assert np.all(model_cli.pose_axis_angle(model, "flat") == 0)


@pytest.mark.parametrize("pose", ["flat", "fist", "random"])
def test_render_writes_a_picture_of_a_hand(tmp_path, pose):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("torch")
    out = tmp_path / f"{pose}.png"
    assert model_cli.main(["render", "--pose", pose, "--seed", "2", "--beta", "1,-0.5", "--out", str(out),
                           "--size", "160"]) == 0
    image = cv2.imread(str(out))
    assert image.shape == (160, 160, 3)
    gray = image.astype(int).sum(axis=2)
    background = gray[:, :1]  # a vertical gradient; the hand keeps a margin from the edges
    covered = np.mean(np.abs(gray - background) > 30)
    assert 0.08 < covered < 0.8  # a hand fills part of the picture


def test_render_mesh_fills_culls_and_blends():
    image = np.zeros((40, 40, 3), np.uint8)
    verts = np.array([[5.0, 5.0, 1.0], [5.0, 35.0, 1.0], [35.0, 5.0, 1.0]])  # outward normal -z: faces us
    front = np.array([[0, 1, 2]])
    # (u, v, depth) is right-handed: (v1 - v0) x (v2 - v0) has z < 0 for this order
    assert render.face_normals(verts, front)[0, 2] < 0
    out = render.render_mesh(image, verts, front, color=(200, 100, 50))
    assert out[10, 10].tolist() != [0, 0, 0] and out[38, 38].tolist() == [0, 0, 0]
    assert image.sum() == 0  # input untouched
    back = render.render_mesh(image, verts, front[:, ::-1], color=(200, 100, 50))
    assert back.sum() == 0  # back face culled
    half = render.render_mesh(np.full((40, 40, 3), 100, np.uint8), verts, front, color=(200, 200, 200), alpha=0.5,
                              ambient=1.0)
    assert abs(int(half[10, 10, 0]) - 150) <= 1 and half[38, 38, 0] == 100


def test_render_mesh_on_a_video_frame():
    """Capture overlays: the shipped ~6k-face hand drawn on a 1280x720 frame covers the hand's pixels only.
    (Speed is a benchmark matter, never a test assertion.)"""
    model = load_hand_model()
    v = model.v_template - model.v_template.mean(axis=0)
    px = np.empty_like(v)
    px[:, 0] = 640 + v[:, 0] * 2000
    px[:, 1] = 360 + v[:, 2] * 2000
    px[:, 2] = 0.5 + v[:, 1]
    frame = np.full((720, 1280, 3), 90, np.uint8)
    out = render.render_mesh(frame, px, model.faces, alpha=0.5, vertices_3d=v)
    changed = np.any(out != frame, axis=-1)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 1000
    assert xs.min() >= np.floor(px[:, 0].min()) - 1 and xs.max() <= np.ceil(px[:, 0].max()) + 1
    assert ys.min() >= np.floor(px[:, 1].min()) - 1 and ys.max() <= np.ceil(px[:, 1].max()) + 1
    assert (frame == 90).all()  # the input frame is left as it was


def test_draw_skeleton_marks_pixels():
    kp = np.stack([np.linspace(5, 55, 21), np.linspace(5, 55, 21)], axis=1)
    out = render.draw_skeleton(np.zeros((60, 60, 3), np.uint8), kp)
    assert out.sum() > 0
    hidden = render.draw_skeleton(np.zeros((60, 60, 3), np.uint8), kp, confidence=np.zeros(21), min_confidence=0.5)
    assert hidden.sum() == 0
