"""The fit over the footage: the posed mesh (shaded, semi-transparent) and the keypoints drawn on each frame.

`write_overlay(path, result, models)` decodes the result's footage again (streaming, batch by batch),
poses each valid track's mesh with `engine.hand_model.torch_layer.HandLayer`, projects it with the
result's K (`engine.camera.project_perspective`: both camera models store a pinhole K under which
`K @ joints_3d` lands on the fit) and draws it with `engine.render.render_mesh`, then the detected
keypoints with `render.draw_skeleton`. Frames wider than OVERLAY_MAX_SIDE are scaled down. The video is
written to a temp file beside the destination and renamed at the end (nothing half-written is left).

`python -m engine.overlay RESULT.npz -o OUT.mp4` renders the overlay of an existing result.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
from typing import Callable

import numpy as np

from engine.errors import Cancelled, OutputError
from engine import results as results_io
from engine import video

log = logging.getLogger("engine.overlay")

OVERLAY_MAX_SIDE = 1920
MESH_ALPHA = 0.55
SIDE_COLORS = {"right": (80, 160, 255), "left": (255, 150, 60)}  # contrast with skin: the fit is judged at a glance


class MeshPoser:
    """Poses the mesh of each side's model: (theta (B,16,4), beta (B,10), root (B,3), hand_scale (B,)) -> (B,V,3)."""

    def __init__(self, models: dict):
        import torch

        from engine.hand_model.torch_layer import HandLayer

        self.torch = torch
        self.layers = {s: HandLayer(m, dtype=torch.float64).eval() for s, m in models.items()}
        self.faces = {s: np.asarray(m.faces, np.int64) for s, m in models.items()}

    def vertices(self, side: str, theta, beta, root, hand_scale) -> np.ndarray:
        t = self.torch
        with t.no_grad():
            v, _, _ = self.layers[side](t.as_tensor(np.asarray(theta, np.float64)), t.as_tensor(np.asarray(beta, np.float64)),
                                        t.as_tensor(np.asarray(root, np.float64)), t.as_tensor(np.asarray(hand_scale, np.float64)))
        return v.numpy()


def draw_frame(image: np.ndarray, K: np.ndarray, hands: list[dict], scale=(1.0, 1.0)) -> np.ndarray:
    """Draws hands over one RGB frame (already resized by scale = (sx, sy)); returns the new image.

    hands: dicts with vertices (V,3) camera frame, faces (F,3), side, keypoints_2d (21,2) px of the
    original frame (NaN allowed), confidence (21,).
    """
    from engine import camera, render

    sx, sy = scale
    Ks = np.array(K, np.float64)
    Ks[0] *= sx
    Ks[1] *= sy
    img = image
    for h in hands:
        v3 = h["vertices"]
        if v3 is not None:
            uv = camera.project_perspective(np.concatenate([v3[:, :2], np.maximum(v3[:, 2:], 1e-4)], axis=1), Ks)
            img = render.render_mesh(img, np.concatenate([uv, v3[:, 2:3]], axis=1), h["faces"],
                                     color=SIDE_COLORS.get(h["side"], (220, 220, 220)), alpha=MESH_ALPHA, vertices_3d=v3)
        kp = np.asarray(h["keypoints_2d"], np.float64) * np.array([sx, sy])
        if np.isfinite(kp).any():
            img = render.draw_skeleton(img, kp, confidence=h["confidence"], min_confidence=0.2,
                                       thickness=max(1, int(round(2 * sx))), radius=max(2, int(round(3 * sx))))
    return img


def write_overlay(path, result: dict, models: dict, *, info=None, batch_size: int = 16,
                  progress: Callable[[int, int, str], None] | None = None,
                  should_stop: Callable[[], bool] | None = None, publish: bool = True) -> pathlib.Path:
    """Renders `result` over its footage into the video `path` (.mp4); returns the path written.

    result: a capture result dict (DESIGN.md); models: {side: HandModel} for its tracks' sides;
    info: the footage's VideoInfo (default: probe result["source"]). publish=False: the finished temp file
    (`.{stem}.{pid}.tmp.mp4` beside `path`) is returned instead of renamed (engine.outputs.Staged).
    """
    import cv2

    out_path = results_io.check_output_path(path, suffix=pathlib.Path(path).suffix.lower() or ".mp4")
    info = info or video.probe(str(result["source"]))
    w, h = int(result["image_size"][0]), int(result["image_size"][1])
    scale = min(1.0, OVERLAY_MAX_SIDE / max(w, h))
    ow, oh = max(2, int(round(w * scale)) // 2 * 2), max(2, int(round(h * scale)) // 2 * 2)
    sx, sy = ow / w, oh / h
    frame_index = np.asarray(result["frame_index"], np.int64)
    step = int(np.min(np.diff(frame_index))) if len(frame_index) > 1 else 1
    fps = float(result["fps"]) or 30.0
    fps = max(1.0, fps / max(step, 1))
    position = {int(f): n for n, f in enumerate(frame_index)}
    sides = [str(s) for s in np.asarray(result["hand_side"]).tolist()]
    poser = MeshPoser({s: models[s] for s in set(sides)})
    K = np.asarray(result["K"], np.float64)
    valid = np.asarray(result["valid"], bool)
    tmp = out_path.with_name(f".{out_path.stem}.{os.getpid()}.tmp{out_path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (ow, oh))
    if not writer.isOpened():
        writer.release()
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the overlay video {str(out_path)!r}: OpenCV could not open an mp4 writer there.")
    done = 0
    total = len(frame_index)
    try:
        for batch in video.iter_batches(info, batch_size, int(frame_index[0]), int(frame_index[-1]), step):
            if should_stop is not None and should_stop():
                raise Cancelled("overlay cancelled")
            batch = [f for f in batch if f.index in position]
            ns = [position[f.index] for f in batch]
            verts: dict[tuple[int, int], np.ndarray] = {}
            for t, side in enumerate(sides):
                sel = [n for n in ns if valid[t, n]]
                if sel:
                    v = poser.vertices(side, result["theta"][t, sel], result["beta"][t, sel], result["root"][t, sel],
                                       result["hand_scale"][t, sel])
                    verts.update({(t, n): vi for n, vi in zip(sel, v)})
            for f, n in zip(batch, ns):
                img = f.image if f.ok else np.zeros((h, w, 3), np.uint8)
                if (ow, oh) != (w, h):
                    img = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA)
                hands = [
                    dict(vertices=verts.get((t, n)), faces=poser.faces[side], side=side,
                         keypoints_2d=result["keypoints_2d"][t, n], confidence=result["confidence"][t, n])
                    for t, side in enumerate(sides)
                ]
                img = draw_frame(img, K, hands, scale=(sx, sy))
                if not f.ok:
                    cv2.putText(img, f"frame {f.index}: cannot be decoded", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 80, 80), 2)
                writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            done += len(batch)
            if progress is not None:
                progress(done, total, f"writing the overlay video: frame {done}/{total}")
        writer.release()
        if not publish:
            return tmp
        os.replace(tmp, out_path)
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def main(argv: list[str] | None = None, prog: str = "python -m engine.overlay") -> int:
    from engine.hand_model import load_hand_model

    p = argparse.ArgumentParser(prog=prog, description="Render a capture result over its footage (mesh + keypoints) into a video.")
    p.add_argument("result", help="capture result (.npz)")
    p.add_argument("-o", "--output", required=True, help="video to write (.mp4)")
    p.add_argument("--source", help="the footage, when it moved since the capture")
    p.add_argument("--hand-model", help="hand model file or MANO folder (default: the shipped open hand model)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    result = results_io.read_result(args.result)
    if args.source:
        result["source"] = np.asarray(args.source)
    models = {s: load_hand_model(args.hand_model, side=s) for s in set(np.asarray(result["hand_side"]).tolist())}
    out = write_overlay(args.output, result, models)
    print(f"{prog}: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from engine.cli import run_command

    sys.exit(run_command("engine.overlay", sys.argv[1:], prog="python -m engine.overlay"))
