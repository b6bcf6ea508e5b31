"""Small test footage and capture results made in Python (cv2.VideoWriter + a byte patch; no ffmpeg)."""

from __future__ import annotations

import pathlib
import struct

import cv2
import numpy as np


def pattern_frame(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    """BGR frame: a red square at the top-left corner and a grey level that encodes `i` (for order checks)."""
    f = np.full((h, w, 3), 40, np.uint8)
    f[: h // 5, : w // 5] = (0, 0, 255)
    f[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4] = (i * 16) % 256
    return f


def frame_level(rgb: np.ndarray) -> float:
    h, w = rgb.shape[:2]
    return float(rgb[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].mean())


def write_video(path, n: int, w: int = 64, h: int = 48, fourcc: str = "MJPG", fps: float = 10.0, frames=None) -> pathlib.Path:
    path = pathlib.Path(path)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert wr.isOpened(), f"cannot write {path}"
    for i in range(n):
        wr.write(pattern_frame(i, w, h) if frames is None else frames[i])
    wr.release()
    return path


def corrupt_mjpeg_frames(path, frame_ids) -> None:
    """Zeroes the JPEG data of the given frames of an MJPG .avi (the decoder then refuses them)."""
    data = bytearray(pathlib.Path(path).read_bytes())
    starts, p = [], 0
    while True:
        p = data.find(b"\xff\xd8\xff", p)
        if p < 0:
            break
        starts.append(p)
        p += 3
    for i in frame_ids:
        s = starts[i]
        e = data.find(b"\xff\xd9", s)  # the frame's EOI marker
        data[s:e] = b"\x00" * (e - s)
    pathlib.Path(path).write_bytes(bytes(data))


def _boxes(buf, start, end):
    i = start
    while i < end:
        size, typ = struct.unpack(">I4s", buf[i : i + 8])
        hdr = 8
        if size == 1:
            size = struct.unpack(">Q", buf[i + 8 : i + 16])[0]
            hdr = 16
        elif size == 0:
            size = end - i
        yield typ, i, hdr, size
        i += size


def set_mp4_rotation(path, degrees: int) -> None:
    """Writes a phone-style rotation (display matrix of the video track's tkhd) into an .mp4, in place."""
    data = bytearray(pathlib.Path(path).read_bytes())
    c, s = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    matrix = struct.pack(">9i", c << 16, s << 16, 0, -s << 16, c << 16, 0, 0, 0, 1 << 30)

    def walk(start, end):
        for typ, i, hdr, size in _boxes(data, start, end):
            if typ in (b"moov", b"trak"):
                walk(i + hdr, i + size)
            elif typ == b"tkhd":
                version = data[i + hdr]
                off = i + hdr + 4 + (32 if version == 1 else 20) + 16
                data[off : off + 36] = matrix

    walk(0, len(data))
    pathlib.Path(path).write_bytes(bytes(data))


def fake_result(T: int = 1, N: int = 6, invalid=(2,), seed: int = 0) -> dict:
    """A structurally valid capture result with random unit quaternions (not a fit of anything)."""
    rng = np.random.default_rng(seed)
    valid = np.ones((T, N), bool)
    for i in invalid:
        valid[:, i] = False
    theta = rng.normal(size=(T, N, 16, 4))
    theta /= np.linalg.norm(theta, axis=-1, keepdims=True)
    d = {
        "format_version": np.asarray(2),
        "source": np.asarray("/footage/clip.mp4"),
        "image_size": np.asarray([1280, 720]),
        "fps": np.asarray(30.0),
        "frame_index": np.arange(N) * 2 + 10,
        "camera_model": np.asarray("weak_perspective"),
        "K": np.array([[1280.0, 0, 640], [0, 1280, 360], [0, 0, 1]]),
        "distortion": np.zeros(5),
        "hand_side": np.asarray(["right", "left"][:T] if T <= 2 else ["right"] * T),
        "valid": valid,
        "theta": theta,
        "beta": rng.normal(size=(T, N, 10)) * 0.1,
        "root": rng.normal(size=(T, N, 3)) * 0.05 + [0, 0, 0.6],
        "hand_scale": np.ones((T, N)),
        "projection_scale": np.full((T, N), 2000.0),
        "keypoints_2d": rng.uniform(0, 700, size=(T, N, 21, 2)),
        "confidence": rng.uniform(0.5, 1, size=(T, N, 21)),
        "joints_3d": rng.normal(size=(T, N, 21, 3)) * 0.05 + [0, 0, 0.6],
    }
    d["hand_model"] = np.asarray([f"open_hand_{s}" for s in d["hand_side"].tolist()])
    d["hand_model_sha256"] = np.asarray(["0" * 64] * T)
    for k in ("theta", "beta", "root", "hand_scale", "joints_3d"):
        d[k] = np.array(d[k], np.float64)
        d[k][~valid] = np.nan
    return d


# ------------------------------------------------------------------------------ fake pipeline parts


def fake_observation(track_id, side, center=(32.0, 24.0), presence=0.95, size=10.0):
    """A HandObservation-like object: a small hand-shaped 21-point layout around `center`."""
    from types import SimpleNamespace

    ang = np.linspace(-0.8, 0.8, 5)
    pts = [np.zeros(2)]
    for a in ang:
        for r in (0.4, 0.6, 0.8, 1.0):
            pts.append(np.array([np.sin(a), -np.cos(a)]) * r)
    uv = np.asarray(center) + size * np.stack(pts)
    uvd = np.concatenate([uv, np.zeros((21, 1))], axis=1).astype(np.float32)
    return SimpleNamespace(
        track_id=track_id, side=side, side_score=0.9, presence=presence, keypoints_uvd=uvd,
        confidence=np.full(21, presence, np.float32), world_landmarks=np.zeros((21, 3), np.float32),
        roi=(center[0], center[1], 2 * size, 0.0),
    )


class ScriptedTracker:
    """Stands in for HandTracker: `script(frame_number, image) -> list of observations`.

    The frame number is read back from the pattern the test videos carry (see pattern_frame).
    """

    def __init__(self, script):
        self.script = script
        self.frame_shapes = []

    def process_batch(self, frames):
        out = []
        for img in frames:
            self.frame_shapes.append(img.shape)
            out.append(self.script(int(round(frame_level(img) / 16)), img))
        return out


def fake_fit_init(arrays, model, camera_model, K, steady_shape, hand_length=None):
    """Rest pose, the wrist 0.5 m in front of the camera: no networks."""
    n = arrays["keypoints_uvd"].shape[0]
    theta = np.zeros((n, 16, 4))
    theta[..., 0] = 1.0
    root = np.zeros((n, 3))
    root[:, 2] = 0.5
    return {"theta": theta, "beta": np.zeros((n, 10)), "root": root, "hand_scale": np.ones(n),
            "projection_scale": np.full(n, 1000.0)}


def fake_tailor_fit(model, theta0, beta0, root0, kp, conf, valid, K, locks, config, hand_scale0=None, projection_scale0=None,
                    theta_start=None, min_batch=1):
    """Passes the initialization through (no JAX), like a zero-iteration fit (from theta_start where given)."""
    valid = np.asarray(valid, bool)
    joints = np.tile(np.asarray(root0)[:, None, :], (1, 21, 1))
    return {"theta": theta0 if theta_start is None else theta_start, "beta": beta0, "root": root0, "hand_scale": hand_scale0,
            "projection_scale": projection_scale0, "joints_3d": joints, "fitted": valid & np.isfinite(theta0).all(axis=(1, 2)),
            "K": K, "energies": {}}


def use_fake_fit(monkeypatch):
    from engine import capture, tailor

    monkeypatch.setattr(capture, "fit_init", fake_fit_init)
    monkeypatch.setattr(tailor, "fit", fake_tailor_fit)


def model_result(N: int = 6, invalid=(4,), seed: int = 1, smoothing: float = 0.0, model=None) -> dict:
    """A weak-perspective result whose 2D keypoints are `model` (default: the open right hand), posed and
    projected exactly."""
    from engine import camera
    from engine.hand_model import load_hand_model
    from engine.tailor.posing import model_keypoints

    rng = np.random.default_rng(seed)
    model = load_hand_model(None, side="right") if model is None else model
    aa = rng.normal(scale=0.15, size=(N, 16, 3))
    aa[:, 0] = [np.pi, 0.0, 0.0] + rng.normal(scale=0.1, size=(N, 3))  # palm toward the camera
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    theta = np.concatenate([np.cos(angle / 2), np.sin(angle / 2) * aa / np.maximum(angle, 1e-12)], axis=-1)
    beta = np.zeros((N, 10))
    root = np.tile([0.02, 0.01, 0.6], (N, 1)) + rng.normal(scale=0.005, size=(N, 3))
    hs = np.ones(N)
    K = camera.nominal_K((640, 480))
    joints = model_keypoints(model, theta, beta, root, hs)
    kp = camera.project_perspective(joints, K)
    valid = np.ones((1, N), bool)
    valid[:, list(invalid)] = False
    d = {
        "format_version": np.asarray(2), "source": np.asarray("synthetic.mp4"), "image_size": np.asarray([640, 480]),
        "fps": np.asarray(30.0), "frame_index": np.arange(N), "camera_model": np.asarray("weak_perspective"),
        "K": K, "distortion": np.zeros(5), "hand_model": np.asarray([str(model.path)]),
        "hand_model_sha256": np.asarray([model.sha256]), "hand_side": np.asarray([model.side]), "valid": valid,
        "theta": theta[None], "beta": beta[None], "root": root[None], "hand_scale": hs[None],
        "projection_scale": (K[0, 0] / root[:, 2])[None], "keypoints_2d": kp[None], "confidence": np.ones((1, N, 21)),
        "joints_3d": joints[None], "tailor_iterations": np.asarray(20), "tailor_smoothing": np.asarray(smoothing),
    }
    for k in ("theta", "beta", "root", "hand_scale", "projection_scale", "joints_3d"):
        d[k] = np.array(d[k], np.float64)
        d[k][~valid] = np.nan
    d["keypoints_2d"][~valid] = np.nan
    d["confidence"][~valid] = 0.0
    return d
