"""engine.video: decoding, ranges, rotation, corrupt frames, clear errors."""

import cv2
import numpy as np
import pytest

from engine import video
from engine.prefetch import prefetch
from engine.errors import InputError
from capture_fixtures import corrupt_mjpeg_frames, frame_level, pattern_frame, set_mp4_rotation, write_video


def levels(frames):
    return [round(frame_level(f.image) / 16) for f in frames]


def test_video_file_all_frames_in_order(tmp_path):
    src = write_video(tmp_path / "clip.avi", 12)
    info = video.probe(src)
    assert (info.kind, info.width, info.height, info.frame_count, info.rotation) == ("video", 64, 48, 12, 0)
    assert info.fps == pytest.approx(10.0)
    frames = list(video.iter_frames(src))
    assert [f.index for f in frames] == list(range(12))
    assert all(f.ok and f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert levels(frames) == list(range(12))
    # RGB: the top-left square is red
    assert tuple(frames[0].image[2, 2]) == pytest.approx((255, 0, 0), abs=8)


def test_frame_range_and_stride(tmp_path):
    src = write_video(tmp_path / "clip.avi", 12)
    frames = list(video.iter_frames(src, 3, 9, 3))
    assert [f.index for f in frames] == [3, 6, 9]
    assert levels(frames) == [3, 6, 9]
    assert video.expected_frames(video.probe(src), 3, 9, 3) == 3
    assert [f.index for f in video.iter_frames(src, 10, None, 1)] == [10, 11]
    with pytest.raises(InputError, match="footage has 12 frames"):
        list(video.iter_frames(src, 20, None))
    with pytest.raises(InputError, match="stride"):
        list(video.iter_frames(src, 0, None, 0))
    with pytest.raises(InputError, match="empty"):
        list(video.iter_frames(src, 5, 2))


def test_long_seek_is_frame_accurate(tmp_path):
    src = write_video(tmp_path / "long.avi", 80)
    frames = list(video.iter_frames(src, 70, 72))
    assert [f.index for f in frames] == [70, 71, 72]
    assert levels(frames) == [(i * 16 % 256) // 16 for i in (70, 71, 72)]


def test_batches_stream_and_respect_the_byte_cap(tmp_path):
    src = write_video(tmp_path / "clip.avi", 10)
    sizes = [len(b) for b in video.iter_batches(src, 4)]
    assert sizes == [4, 4, 2]
    sizes = [len(b) for b in video.iter_batches(src, 4, max_batch_bytes=64 * 48 * 3 * 3)]
    assert sizes == [3, 3, 3, 1]


def test_image_folder_natural_order_and_corrupt_image(tmp_path):
    folder = tmp_path / "frames dir ü"
    folder.mkdir()
    for i in (1, 2, 10):
        cv2.imwrite(str(folder / f"f_{i}.png"), pattern_frame(i))
    (folder / "f_5.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored")
    info = video.probe(folder)
    assert (info.kind, info.frame_count, info.width, info.height) == ("images", 4, 64, 48)
    frames = list(video.iter_frames(folder))
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.ok for f in frames] == [True, True, False, True]
    assert "f_5.png" in frames[2].error
    assert round(frame_level(frames[3].image) / 16) == 10


def test_corrupt_frames_in_the_middle_are_reported_not_fatal(tmp_path):
    src = write_video(tmp_path / "clip.avi", 12)
    corrupt_mjpeg_frames(src, [4, 5])
    frames = list(video.iter_frames(src))
    assert [f.index for f in frames] == list(range(12))
    assert [f.index for f in frames if not f.ok] == [4, 5]
    assert all(f.error for f in frames if not f.ok)
    assert levels([f for f in frames if f.ok]) == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]


def test_portrait_phone_video_with_rotation_metadata(tmp_path):
    src = write_video(tmp_path / "phone.mp4", 4, w=64, h=48, fourcc="mp4v")
    set_mp4_rotation(src, 90)
    info = video.probe(src)
    assert info.rotation == 90
    assert (info.width, info.height) == (48, 64)
    frames = list(video.iter_frames(src))
    assert len(frames) == 4 and all(f.image.shape == (64, 48, 3) for f in frames)
    # rotated 90 degrees clockwise: the red top-left corner is now top-right
    red = np.argwhere((frames[0].image[..., 0] > 200) & (frames[0].image[..., 2] < 80))
    assert red[:, 0].mean() < 10 and red[:, 1].mean() > 38


@pytest.mark.parametrize("name", ["with space.avi", "vidéo ✋ 手.avi"])
def test_paths_with_spaces_and_non_ascii(tmp_path, name):
    src = write_video(tmp_path / name, 3)
    assert [f.index for f in video.iter_frames(src)] == [0, 1, 2]


def test_8k_frames(tmp_path):
    frame = np.zeros((4320, 7680, 3), np.uint8)
    cv2.circle(frame, (3840, 2160), 400, (255, 255, 255), -1)
    src = write_video(tmp_path / "8k.avi", 1, w=7680, h=4320, frames=[frame])
    info = video.probe(src)
    assert (info.width, info.height) == (7680, 4320)
    batches = list(video.iter_batches(src, 64))
    assert len(batches) == 1 and batches[0][0].image.shape == (4320, 7680, 3)
    # the byte cap keeps 8K batches small
    per = 7680 * 4320 * 3
    assert max(1, video.DEFAULT_MAX_BATCH_BYTES // per) < 64


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        video.probe(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video")
    with pytest.raises(InputError, match="not a video"):
        video.probe(p)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        video.probe(empty)


def test_zero_frames(tmp_path):
    src = write_video(tmp_path / "zero.avi", 0)
    with pytest.raises(InputError, match="no video frames"):
        video.probe(src)


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="holds no images"):
        video.probe(tmp_path)


def test_prefetch_yields_in_order_and_passes_errors(tmp_path):
    src = write_video(tmp_path / "clip.avi", 10)
    batches = list(prefetch(video.iter_batches(src, 3)))
    assert [f.index for b in batches for f in b] == list(range(10))

    def broken():
        yield 1
        raise InputError("boom")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(InputError, match="boom"):
        next(it)
    # closing early stops the worker
    gen = prefetch(iter(range(1000)))
    assert next(gen) == 0
    gen.close()
