"""engine.video's planar frames (`iter_frames(planar=True)`, the capture tracker's reader): PyAV's planes stand
in for OpenCV's RGB frames, with the same frame numbers, the same pixels up to a level or two, the same crops;
everything it does not handle falls back to OpenCV's reader. Clips are written here (PyAV's encoders) or are the
bundled sample."""

from __future__ import annotations

import pathlib
import sys

import av
import cv2
import numpy as np
import pytest

from capture_fixtures import frame_level, pattern_frame, set_mp4_rotation, write_video
from engine import video, video_planar
from engine.hand_module import crops

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "dex-retargeting_human_hand_video.mp4"


def textured_frame(i: int, w: int, h: int) -> np.ndarray:
    """RGB: smooth colour gradients, a bright bar moving along the top, `pattern_frame`'s level square (the order)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([40 + 150 * x / w, 60 + 120 * y / h, 200 - 120 * (x + y) / (w + h)], -1)
    img[: h // 4, (8 * i) % w : (8 * i) % w + 6] = (230, 210, 180)
    img[h // 2 - 8 : h // 2 + 8, w // 2 - 8 : w // 2 + 8] = (i * 16) % 256
    return img.astype(np.uint8)


def write_av(path, n: int, codec: str, pix_fmt: str, w: int = 96, h: int = 64, fps: int = 10,
             options: dict | None = None) -> pathlib.Path:
    """An n-frame clip of `textured_frame`s encoded by PyAV (`codec`, `pix_fmt`, encoder `options`)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(textured_frame(i, w, h), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return pathlib.Path(path)


def rgb(frame: video.Frame) -> np.ndarray:
    return frame.image.rgb() if isinstance(frame.image, video_planar.YuvImage) else frame.image


def compare(src, start=None, end=None, stride=1, same_validity: bool = True) -> tuple[list, list]:
    """(OpenCV's frames, planar frames) of the same range; same numbers (and validity)."""
    a = list(video.iter_frames(src, start, end, stride))
    b = list(video.iter_frames(src, start, end, stride, planar=True))
    assert [f.index for f in b] == [f.index for f in a]
    if same_validity:
        assert [f.ok for f in b] == [f.ok for f in a]
    return a, b


def assert_close_pixels(a: np.ndarray, b: np.ndarray, mean: float = 1.5, worst: int = 8) -> None:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert d.mean() <= mean and d.max() <= worst, (d.mean(), d.max())


@pytest.mark.parametrize("start,end,stride", [(None, 12, 1), (3, 40, 5), (150, 160, 1), (600, None, 3)],
                         ids=["head", "stride", "sought", "tail"])
def test_the_sample_clips_planar_frames_are_opencvs_frames(start, end, stride):
    """4:2:0 H.264, limited range: numbers as OpenCV's (a start beyond SEEK_BEYOND seeks), pixels within a level
    or so (OpenCV's 4:2:0 converter reads ~1 level darker) and the colour matrix's mean bias below 1.5."""
    a, b = compare(SAMPLE, start, end, stride)
    assert b and all(isinstance(f.image, video_planar.YuvImage) for f in b)
    assert b[0].image.shape == (720, 1280, 3) and b[0].image.subsampling == (2, 2) and not b[0].image.full_range
    for fa, fb in zip(a, b):
        assert_close_pixels(fa.image, fb.image.rgb())


@pytest.mark.parametrize("codec,pix_fmt,suffix", [
    ("libx264", "yuv420p", "mp4"), ("libx264", "yuv422p", "mp4"), ("libx264", "yuv444p", "mkv"),
    ("mjpeg", "yuvj420p", "avi"), ("mjpeg", "yuvj444p", "avi")])
def test_every_planar_layout_matches_opencv(tmp_path, codec, pix_fmt, suffix):
    """Each 8-bit layout (subsampling, limited or full range; B-frames in the H.264 ones): same frames and
    numbers as OpenCV's reader, from the start and after a seek."""
    src = write_av(tmp_path / f"clip.{suffix}", 90, codec, pix_fmt)
    for start, end in ((None, None), (70, 85)):
        a, b = compare(src, start, end)
        assert len(b) == (90 if start is None else 16)
        assert all(isinstance(f.image, video_planar.YuvImage) for f in b)
        assert b[0].image.full_range == pix_fmt.startswith("yuvj")
        for fa, fb in zip(a, b):
            assert_close_pixels(fa.image, fb.image.rgb())
            assert frame_level(fb.image.rgb()) == pytest.approx((fa.index * 16) % 256, abs=6)


def test_crops_of_planar_frames_are_the_rgb_frames_crops():
    """crops.warp on a YuvImage (each plane warped, the crop converted) against the same crop of OpenCV's RGB
    frame: a rotated hand-sized ROI (edge-replicated) and a letterbox reaching past the frame (black border)."""
    a, b = compare(SAMPLE, 300, 300)
    rgb_frame, planes = a[0].image, b[0].image
    roi = crops.Roi(700.0, 420.0, 380.0, 0.6)
    assert_close_pixels(crops.warp(rgb_frame, roi, 224), crops.warp(planes, roi, 224), mean=1.5, worst=12)
    box = crops.letterbox_roi(1280, 720)
    ca, cb = crops.warp(rgb_frame, box, 192, border="constant"), crops.warp(planes, box, 192, border="constant")
    assert_close_pixels(ca, cb, mean=1.5, worst=12)
    assert cb[:40].max() <= 1 and cb[-40:].max() <= 1  # the letterbox's bands are black


@pytest.mark.parametrize("codec,pix_fmt,suffix", [("libx264", "yuv420p10le", "mkv"), ("ffv1", "bgr0", "mkv")])
def test_other_layouts_come_from_opencv(tmp_path, codec, pix_fmt, suffix):
    """10-bit YUV and RGB video are not kept as planes: OpenCV's RGB frames, numbered as ever."""
    src = write_av(tmp_path / f"clip.{suffix}", 20, codec, pix_fmt)
    a, b = compare(src)
    assert len(b) == 20 and all(isinstance(f.image, np.ndarray) for f in b)
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.image, fb.image)


def test_a_rotated_phone_video_comes_from_opencv(tmp_path):
    src = write_video(tmp_path / "phone.mp4", 6, w=64, h=48, fourcc="mp4v")
    set_mp4_rotation(src, 90)
    a, b = compare(src)
    assert all(isinstance(f.image, np.ndarray) and f.image.shape == (64, 48, 3) for f in b)
    assert all(np.array_equal(fa.image, fb.image) for fa, fb in zip(a, b))


def test_damaged_frames_are_numbered_and_marked_as_opencvs_reader_does(tmp_path):
    """Zeroed JPEG data in the middle of an MJPEG clip: the planar reader hands over to OpenCV's reader, which
    marks the damaged frames; every frame keeps its number."""
    from capture_fixtures import corrupt_mjpeg_frames

    src = write_video(tmp_path / "clip.avi", 30)
    corrupt_mjpeg_frames(src, [12, 13])
    a, b = compare(src)
    assert [f.index for f in b if not f.ok] == [12, 13]
    assert [round(frame_level(rgb(f)) / 16) for f in b if f.ok] == [i % 16 for i in range(30) if i not in (12, 13)]


def test_without_pyav_frames_come_from_opencv(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    frames = list(video.iter_frames(SAMPLE, 0, 3, planar=True))
    assert [f.index for f in frames] == [0, 1, 2, 3] and all(isinstance(f.image, np.ndarray) for f in frames)


def test_planar_batches_hold_the_same_frames(tmp_path):
    src = write_video(tmp_path / "clip.avi", 10)
    batches = list(video.iter_batches(src, 4, planar=True))
    assert [[f.index for f in b] for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [round(frame_level(rgb(f)) / 16) for b in batches for f in b] == list(range(10))
    assert pattern_frame(0)[0, 0, 2] == 255 and tuple(rgb(batches[0][0])[2, 2]) == pytest.approx((255, 0, 0), abs=10)


@pytest.mark.parametrize("fourcc,ext", [("mp4v", "mp4"), ("MJPG", "avi")])
def test_a_long_corrupt_stretch_reads_as_with_opencvs_reader(tmp_path, fourcc, ext):
    """test_video_gaps' damaged clip (the middle 20% of the bytes random) read planar: OpenCV's reader takes
    over at the damage, so the same frame numbers and the same frames. It takes over with a seek, and a seek
    into damaged data can decode a frame or two that reading through it does not: such extra frames must be
    the right frames (their level); no frame OpenCV's reader gives is lost. (Both readers also give frames that
    the decoder concealed into garbage: that is OpenCV's FFmpeg, as before.)"""
    from test_video_gaps import corrupt_middle

    src = write_video(tmp_path / f"clip.{ext}", 500, fourcc=fourcc)
    corrupt_middle(src)
    for start, end, stride in ((0, 499, 1), (200, 420, 2)):
        a, b = compare(src, start, end, stride, same_validity=False)
        assert any(not f.ok for f in a) and b[-1].ok and b[-1].index == end
        for fa, fb in zip(a, b):
            if fa.ok:
                assert fb.ok and frame_level(rgb(fb)) == pytest.approx(frame_level(fa.image), abs=3), fa.index
            elif fb.ok:
                assert frame_level(rgb(fb)) == pytest.approx((fb.index * 16) % 256, abs=6), fb.index


def test_decode_from_names_where_a_reader_starts_decoding(tmp_path):
    """Where a reader starting at a frame begins to decode (what a later tracking segment pays to reach its
    start, `segments.split`): the start up to SEEK_BEYOND, else the keyframe before (one every 30 frames)."""
    src = write_av(tmp_path / "gop30.mp4", 150, "libx264", "yuv420p",
                   options={"x264-params": "keyint=30:min-keyint=30:scenecut=0"})
    info = video.probe(src)
    assert video.SEEK_BEYOND == 64
    frames = [0, 10, 64, 65, 89, 90, 91, 119, 149]
    assert [video_planar.decode_from(info, f) for f in frames] == [0, 0, 0, 60, 60, 90, 90, 90, 120]
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), textured_frame(i, 32, 24))
    assert video_planar.decode_from(video.probe(folder), 2) == 2  # images: each one read on its own

