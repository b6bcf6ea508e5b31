"""Video frames kept in the decoder's planar YUV (`YuvImage`) and the reader that gives them (`read`, behind
`engine.video.iter_frames(..., planar=True)`): the capture's tracker only ever looks at crops, and converting
each crop instead of the whole frame leaves decoding a 720p frame at ~1.2 ms of CPU instead of OpenCV's ~2.9
(its reader converts every frame to BGR). `engine.hand_module.crops.warp` takes a `YuvImage` as it takes an
RGB frame."""

from __future__ import annotations

import functools
import logging
from typing import Iterator

import numpy as np

from engine import video
from engine.video import Frame, VideoInfo

log = logging.getLogger(__name__)

#: PyAV's names of the 8-bit planar YUV layouts kept as planes (`YuvImage`) -> (chroma subsampling x, y,
#: full range); any other layout (10-bit, RGB, packed) is converted to RGB frames by OpenCV as usual.
PLANAR_FORMATS = {"yuv420p": (2, 2, False), "yuvj420p": (2, 2, True), "yuv422p": (2, 1, False),
                  "yuvj422p": (2, 1, True), "yuv444p": (1, 1, False), "yuvj444p": (1, 1, True)}


@functools.lru_cache(maxsize=2)
def yuv_to_rgb(full_range: bool) -> np.ndarray:
    """(3, 4) float32: [R, G, B] = M @ [Y, U, V, 1] in 0-255 levels, ITU-R BT.601 (what OpenCV's FFmpeg reader
    applies whatever the stream's colour tags say); limited range (Y 16-235, U and V 16-240) or full range."""
    kr, kb = 0.299, 0.114
    kg = 1.0 - kr - kb
    m = np.array([[1.0, 0.0, 2 * (1 - kr)],
                  [1.0, -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg],
                  [1.0, 2 * (1 - kb), 0.0]])
    y0, ys, cs = (0.0, 1.0, 1.0) if full_range else (16.0, 255 / 219, 255 / 224)
    m = m * np.array([ys, cs, cs])
    out = np.concatenate([m, (-m @ np.array([y0, 128.0, 128.0]))[:, None]], axis=1).astype(np.float32)
    out.flags.writeable = False  # shared (cached)
    return out


class YuvImage:
    """A decoded video frame left in the decoder's 8-bit planar YUV: `y` (H, W), `u`, `v` (H / sy, W / sx)
    uint8 planes. It stands in for an RGB frame where only crops are taken (`engine.hand_module.crops.warp`
    converts the crop); `rgb()` converts the whole frame. Colours are `yuv_to_rgb`'s; a chroma sample covers
    its sx x sy block of pixels, as OpenCV's converter replicates it. Measured on the bundled 720p clip:
    within a level of OpenCV's frames (its 4:2:0 SIMD converter comes out ~1 level darker)."""

    ndim = 3
    dtype = np.dtype(np.uint8)

    def __init__(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, subsampling: tuple[int, int],
                 full_range: bool, keep=None):
        self.y, self.u, self.v = y, u, v
        self.subsampling = subsampling
        self.full_range = bool(full_range)
        self.shape = (y.shape[0], y.shape[1], 3)
        self._keep = keep  # the decoder's frame, whose buffers the planes view

    @classmethod
    def from_av(cls, frame) -> "YuvImage":
        """A PyAV VideoFrame in one of PLANAR_FORMATS -> its planes (views, no copy)."""
        sx, sy, full = PLANAR_FORMATS[frame.format.name]
        planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes]
        return cls(*planes, (sx, sy), full, keep=frame)

    def luma_from_chroma(self) -> np.ndarray:
        """(3, 3) chroma plane px -> frame px (pixel centres at integers): sample c covers sx c .. sx c + sx - 1."""
        sx, sy = self.subsampling
        return np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])

    def rgb(self) -> np.ndarray:
        """The whole frame as RGB uint8 (H, W, 3)."""
        import cv2

        sx, sy = self.subsampling
        h, w = self.y.shape
        u, v = (np.repeat(np.repeat(c, sy, 0), sx, 1)[:h, :w] for c in (self.u, self.v))
        return cv2.transform(cv2.merge([self.y, u, v]), yuv_to_rgb(self.full_range))


def read(info: VideoInfo, start: int, end: int | None, stride: int) -> Iterator[Frame]:
    """`engine.video`'s OpenCV reader with frames left in planar YUV (`YuvImage`), decoded by PyAV on one
    thread (a capture's segments each decode on a thread of their own). Frame numbers are OpenCV's: counted
    from the first frame (after a seek, beyond `video.SEEK_BEYOND` as OpenCV's reader, from the first frame's
    timestamp at the frame rate `probe` read), and each frame's timestamp must agree with its count. Everything
    else goes to OpenCV's reader (RGB frames) from the next frame wanted: PyAV not installed, a rotated video,
    a layout outside PLANAR_FORMATS, a frame of another size, a timestamp missing or out of step (a frame that
    did not decode, a variable frame rate), any decoding error (OpenCV's reader marks damaged frames and seeks
    past them), a stream that ends before its announced last frame."""
    try:
        import av
    except ImportError:
        av = None
    container = None
    if av is not None and not info.rotation:
        try:
            container = av.open(info.source)
        except (av.error.FFmpegError, OSError, UnicodeError):
            container = None
    if container is None:
        yield from video._iter_video(info, start, end, stride)
        return
    index = start  # the next frame number to produce (where OpenCV's reader takes over)
    try:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        # damaged data stops this reader (OpenCV's marks it) instead of being concealed into a valid frame
        stream.codec_context.options = {"err_detect": "explode"}
        t0 = None  # the first frame's timestamp: frame numbers are counted from it, at probe's frame rate
        sought = start > video.SEEK_BEYOND
        if sought:
            t0 = next(container.decode(stream)).pts
            if t0 is None:
                raise LookupError("the first frame has no timestamp")
            container.seek(t0 + int(start / info.fps / stream.time_base), stream=stream, backward=True)
        count = 0
        for frame in container.decode(stream):
            if frame.pts is None:
                break
            t0 = frame.pts if t0 is None else t0
            number = int(round(float((frame.pts - t0) * stream.time_base) * info.fps))
            if sought:
                if number > start:  # the seek landed past the start
                    break
                count, sought = number, False
            elif number != count:  # a frame that did not decode, or a variable frame rate
                break
            if end is not None and count > end:
                index = None
                break
            if count >= start and (count - start) % stride == 0:
                if frame.format.name not in PLANAR_FORMATS or (frame.height, frame.width) != (info.height, info.width):
                    break
                yield Frame(count, YuvImage.from_av(frame))
                index = count + stride
            count += 1
        else:  # the stream is over, unless it ended before its announced last frame (damage OpenCV's reader may skip)
            index = index if 0 < info.frame_count and index < info.frame_count else None
    except (av.error.FFmpegError, LookupError, StopIteration) as exc:
        log.info("PyAV stopped at frame %s of %s (%s): OpenCV's reader goes on", index, info.source, exc)
    finally:
        container.close()
    if index is not None and (end is None or index <= end):
        yield from video._iter_video(info, index, end, stride)


def decode_from(info: VideoInfo, frame: int) -> int:
    """The footage frame a reader starting at `frame` decodes from: 0 up to `video.SEEK_BEYOND` (it reads on from
    the start), else the keyframe a seek lands on (PyAV, one packet read: ~5 ms); `frame` itself where that
    cannot be told (image folders, no PyAV, a stream without timestamps)."""
    if info.kind != "video" or frame <= 0:
        return max(0, frame)
    if frame <= video.SEEK_BEYOND:
        return 0
    try:
        import av

        with av.open(info.source) as container:
            stream = container.streams.video[0]
            first = next(container.demux(stream)).pts
            if first is None or not info.fps:
                return frame
            container.seek(first + int(frame / info.fps / stream.time_base), stream=stream, backward=True)
            pts = next(container.demux(stream)).pts
            if pts is None:
                return frame
            return int(min(frame, max(0, round(float((pts - first) * stream.time_base) * info.fps))))
    except Exception as exc:  # noqa: BLE001 - an estimate only (no PyAV, an unreadable or odd stream)
        log.debug("no keyframe position for frame %d of %s: %s", frame, info.source, exc)
        return frame

