"""The scene camera that matches the footage, and THE one OpenCV -> Blender conversion.

OpenCV camera frame: x right, y down, z forward. A Blender camera looks down its local -Z with +Y up, so
camera-local = diag(1, -1, -1) @ OpenCV (`OPENCV_TO_CAMERA_LOCAL`). The HandTailor camera sits at the world
origin looking along +Y with +Z up (rotation X 90 deg), so the hand appears in front of it in a Blender-ish
orientation; everything the add-on places goes through `opencv_to_world_matrix(camera)`.
"""

from __future__ import annotations

import math

import numpy as np

OPENCV_TO_CAMERA_LOCAL = np.diag([1.0, -1.0, -1.0])
CAMERA_NAME = "HandTailor Camera"
SENSOR_WIDTH_MM = 36.0


def default_camera_matrix() -> np.ndarray:
    """(4, 4) world matrix of the HandTailor camera: at the origin, looking along +Y, +Z up."""
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    M = np.eye(4)
    M[1:3, 1:3] = [[c, -s], [s, c]]
    return M


def opencv_to_world_matrix(camera_matrix_world) -> np.ndarray:
    """(4, 4): OpenCV camera-frame points -> Blender world, for a camera with this world matrix."""
    A = np.eye(4)
    A[:3, :3] = OPENCV_TO_CAMERA_LOCAL
    return np.asarray(camera_matrix_world, np.float64) @ A


def lens_settings(K: np.ndarray, image_size: tuple[int, int]) -> dict:
    """Blender camera data settings for intrinsics K (3, 3) and (width, height) px: focal length in mm on a
    36 mm horizontal sensor, principal point as lens shift (in units of the larger image side)."""
    w, h = image_size
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    side = float(max(w, h))
    return dict(
        sensor_fit="HORIZONTAL",
        sensor_width=SENSOR_WIDTH_MM,
        lens=float(fx) * SENSOR_WIDTH_MM / float(w),
        shift_x=(w / 2.0 - float(cx)) / side,
        shift_y=(float(cy) - h / 2.0) / side,
        pixel_aspect=(float(fy) / float(fx)),
    )


def ensure_camera(scene, K: np.ndarray, image_size: tuple[int, int], clip=None):
    """Creates or updates the scene's HandTailor camera from K; sets resolution and the clip background."""
    import bpy

    cam_obj = bpy.data.objects.get(CAMERA_NAME)
    if cam_obj is None or cam_obj.type != "CAMERA":
        cam_data = bpy.data.cameras.new(CAMERA_NAME)
        cam_obj = bpy.data.objects.new(CAMERA_NAME, cam_data)
        cam_obj.matrix_world = [list(r) for r in default_camera_matrix()]
    if cam_obj.name not in scene.collection.all_objects:
        scene.collection.objects.link(cam_obj)
    cam = cam_obj.data
    s = lens_settings(np.asarray(K, np.float64), image_size)
    cam.type = "PERSP"
    cam.sensor_fit = s["sensor_fit"]
    cam.sensor_width = s["sensor_width"]
    cam.lens = s["lens"]
    cam.shift_x = s["shift_x"]
    cam.shift_y = s["shift_y"]
    cam.clip_start = 0.01
    cam.clip_end = 100.0
    render = scene.render
    render.resolution_x, render.resolution_y = int(image_size[0]), int(image_size[1])
    render.resolution_percentage = 100
    # non-square pixels (fx != fy): Blender's pixel aspect stretches x relative to y
    if abs(s["pixel_aspect"] - 1.0) > 1e-6:
        render.pixel_aspect_x, render.pixel_aspect_y = 1.0, float(s["pixel_aspect"])
    else:
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    if clip is not None:
        cam.show_background_images = True
        bg = next((b for b in cam.background_images if b.source == "MOVIE_CLIP"), None)
        if bg is None:
            bg = cam.background_images.new()
            bg.source = "MOVIE_CLIP"
        bg.clip = clip
        bg.use_camera_clip = False
        bg.alpha = 1.0
    scene.camera = cam_obj
    return cam_obj


def set_scene_timing(scene, fps: float, frame_start: int, frame_end: int) -> None:
    """Scene fps (integer fps + fps_base for 29.97 and the like) and frame range."""
    base_fps = max(1, round(fps))
    scene.render.fps = base_fps
    scene.render.fps_base = base_fps / fps
    scene.frame_start = int(frame_start)
    scene.frame_end = max(int(frame_end), int(frame_start))
