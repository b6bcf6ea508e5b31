"""engine.video on damaged footage (issue 17, defect 4) and image folders' frame rate (defect 5).

The clips are made here: a 500-frame video written with OpenCV whose middle 20% of bytes is replaced by
random bytes (a stretch of ~100 frames that no longer decodes, longer than the 32 failed reads after
which the stream used to be taken as finished)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from capture_fixtures import frame_level, pattern_frame, write_video
from engine import video
from engine.errors import InputError


def corrupt_middle(path, fraction: float = 0.2, seed: int = 0) -> None:
    """Replaces the middle `fraction` of the file's bytes with random bytes, in place."""
    data = bytearray(path.read_bytes())
    a = int(len(data) * (0.5 - fraction / 2))
    b = int(len(data) * (0.5 + fraction / 2))
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module", params=[("mp4v", "mp4"), ("MJPG", "avi")], ids=["mp4v", "mjpeg"])
def damaged_clip(request, tmp_path_factory):
    fourcc, ext = request.param
    path = write_video(tmp_path_factory.mktemp("gap") / f"clip.{ext}", 500, fourcc=fourcc)
    corrupt_middle(path)
    return path


def test_a_long_corrupt_stretch_does_not_end_the_stream(damaged_clip):
    frames = list(video.iter_frames(damaged_clip, 200, 420, 2))
    assert [f.index for f in frames] == list(range(200, 421, 2))  # every selected frame, to the last
    bad = [f.index for f in frames if not f.ok]
    good_after = [f for f in frames if f.ok and f.index > max(bad, default=0)]
    assert bad, "the damaged stretch must show as corrupt frames"
    assert good_after and good_after[-1].index == 420
    for f in good_after:  # frames after the gap are the right frames (the seek landed where it says)
        assert frame_level(f.image) == pytest.approx((f.index * 16) % 256, abs=6)
    assert all(f.error for f in frames if not f.ok)


def test_damage_before_the_range_start(damaged_clip):
    frames = list(video.iter_frames(damaged_clip, 380, 499, 1))
    assert frames[0].index == 380 and frames[-1].index == 499
    assert sum(f.ok for f in frames) >= 100


def test_the_real_end_is_still_the_end(tmp_path):
    path = write_video(tmp_path / "clip.avi", 60)
    data = path.read_bytes()
    # damage the last 40% (the stream really ends in damage): no frame after it decodes
    cut = int(len(data) * 0.6)
    path.write_bytes(data[:cut] + bytes(len(data) - cut))
    frames = list(video.iter_frames(path))
    assert frames and frames[-1].ok  # trailing failures are the end of the stream, not corrupt frames


# ------------------------------------------------------------------------ defect 5: image folders' rate


def _folder(tmp_path, n=3):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(n):
        cv2.imwrite(str(d / f"{i:04d}.png"), pattern_frame(i))
    return d


def test_image_folders_get_a_frame_rate(tmp_path):
    d = _folder(tmp_path)
    assert video.probe(d).fps == video.DEFAULT_FPS == 24.0
    assert video.probe(d, fps=29.97).fps == pytest.approx(29.97)
    assert video.probe(d / "0000.png", fps=50).fps == 50.0


def test_a_video_keeps_its_own_rate(tmp_path):
    clip = write_video(tmp_path / "clip.avi", 3, fps=10.0)
    assert video.probe(clip, fps=50).fps == pytest.approx(10.0)


@pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf"), 10_000])
def test_bad_frame_rates_are_named(tmp_path, fps):
    with pytest.raises(InputError, match="fps"):
        video.probe(_folder(tmp_path), fps=fps)


def test_damage_at_the_start(tmp_path):
    path = write_video(tmp_path / "clip.mp4", 200, fourcc="mp4v")
    data = bytearray(path.read_bytes())
    first = data.find(b"mdat") + 4 + 200  # the frames' data (the index, moov, is at the end): damage ~25%
    stop = first + (len(data) - first) // 4
    data[first:stop] = np.random.default_rng(1).integers(0, 256, stop - first, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    info = video.probe(path)
    frames = list(video.iter_frames(info))
    assert frames[-1].index == 199 and frames[-1].ok
    assert frame_level(frames[-1].image) == pytest.approx((199 * 16) % 256, abs=6)
    assert not all(f.ok for f in frames[:40])
