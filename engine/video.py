"""Footage decoding: video files (any codec OpenCV reads) and folders of images, streamed frame by frame.

Nothing here holds a whole clip in memory: `iter_frames` yields one frame at a time, `iter_batches` groups
them into lists of at most `batch_size` frames (and at most `max_batch_bytes` of pixels, so 8K footage
does not blow up a batch). Frames are RGB uint8 `(H, W, 3)`; with `planar=True` (the capture's tracker, which
only looks at crops) a video's frames stay in the decoder's 8-bit planar YUV (`engine.video_planar`, decoded by
PyAV) and each crop is converted to RGB on its own: the full-frame conversion was the larger part of decoding.

- Frame numbers are 0-based footage frame numbers; a range is `frame_start..frame_end` inclusive with a
  `stride`.
- Portrait phone video: the container's rotation (display matrix, `CAP_PROP_ORIENTATION_META`) is applied
  here, explicitly (OpenCV's own auto-rotation is switched off so the behaviour does not depend on its
  defaults): frames come out upright and `VideoInfo.width/height` are the upright size.
- A frame that cannot be decoded in the middle of the footage is yielded as `Frame(index, None, reason)`:
  the capture marks it invalid and reports it. A long damaged stretch does not end the stream: after
  `SEEK_AFTER_FAILURES` failed reads in a row the reader seeks ahead to where frames decode again (doubling
  steps, then bisecting back: a few seeks however long the stretch), marks the frames in between corrupt
  and reads on. Failures after the last frame that decodes, up to the announced frame count, are the end of
  the stream (containers often over-announce their frame count), not corrupt frames.
- Image folders: files with an image extension, sorted by name with numbers compared as numbers
  (`frame_2.png` before `frame_10.png`); an unreadable image or one whose size differs from the first is a
  corrupt frame. EXIF orientation is applied by OpenCV.
- Frame rate: a video's own (from its container). Footage without one (image folders, a single image, a
  video whose container has none) gets the `fps` given to `probe`, by default `DEFAULT_FPS` = 24: Blender's
  default scene rate, so a capture keyed into a default scene keeps its timing. The add-on passes its
  scene's rate (protocol `capture` arg `fps`), the CLI `--fps`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
from typing import TYPE_CHECKING, Iterator

import numpy as np

from engine.errors import InputError

if TYPE_CHECKING:
    from engine import video_planar

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm", ".exr", ".hdr"}
)
#: `probe` tries this many reads for a first decodable frame.
MAX_CONSECUTIVE_FAILURES = 32
#: After this many failed reads in a row, reading seeks past the damage (`_resync`): a demuxer that lost its
#: place in damaged data may never find it again by reading on (seen with AVI), while a seek uses the index.
SEEK_AFTER_FAILURES = 8
#: Frame rate of footage that has none (image folders): Blender's default scene rate (see the docstring).
DEFAULT_FPS = 24.0
#: Highest frame rate accepted for `fps` (high-speed cameras reach 1000).
MAX_FPS = 1000.0
#: A reader starting beyond this frame seeks to it; nearer the start it decodes from the first frame.
SEEK_BEYOND = 64
#: Default cap on the pixels one batch may hold (bytes of RGB uint8).
DEFAULT_MAX_BATCH_BYTES = 512 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a source is: `width`, `height` are the upright frame size in pixels (after rotation)."""

    source: str
    kind: str  # "video" | "images"
    width: int
    height: int
    fps: float
    frame_count: int  # as announced by the container (may be approximate for some videos); exact for images
    rotation: int = 0  # degrees clockwise applied to the decoded frames (0, 90, 180, 270)
    codec: str = ""


@dataclasses.dataclass
class Frame:
    """One footage frame: `image` RGB uint8 (H, W, 3) (a `video_planar.YuvImage` when read with planar=True), or None
    with `error` when it could not be decoded."""

    index: int
    image: np.ndarray | video_planar.YuvImage | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.image is not None


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _imread_rgb(path: pathlib.Path) -> np.ndarray | None:
    """Reads an image as RGB uint8 (H, W, 3); None when it cannot be decoded. Works with any path text."""
    import cv2

    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if buf.size == 0:
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        return None
    if img.dtype != np.uint8:  # 16-bit PNG/TIFF
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(float(np.iinfo(img.dtype).max), 1.0))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _rotation_code(rotation: int):
    import cv2

    return {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}.get(rotation)


def _check_exists(source: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(source)
    if not path.exists():
        raise InputError(f"footage not found: {str(path)!r} does not exist. Check the path (and quote it if it has spaces).")
    return path


def _open_capture(path: pathlib.Path):
    import cv2

    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {str(path)!r}: permission denied. Make the file readable.")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(
            f"{str(path)!r} is not a video OpenCV can read (unknown format, damaged or empty file). "
            "Give a video file (mp4, mov, avi, mkv...) or a folder of images; re-encode it with "
            "`ffmpeg -i IN -c:v libx264 OUT.mp4` if it plays elsewhere."
        )
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    return cap


def _capture_rotation(cap) -> int:
    import cv2

    try:
        meta = cap.get(cv2.CAP_PROP_ORIENTATION_META)
    except cv2.error:
        return 0
    rot = int(round(float(meta or 0.0))) % 360
    return rot if rot in (90, 180, 270) else 0


def check_fps(fps: float | None) -> float:
    """The frame rate for footage without one: `fps` checked (None: DEFAULT_FPS). Raises InputError."""
    if fps is None:
        return DEFAULT_FPS
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"--fps must be a number of frames per second (got {fps!r}).") from None
    if not (np.isfinite(value) and 0 < value <= MAX_FPS):
        raise InputError(f"--fps must be a frame rate above 0 and at most {MAX_FPS:g} frames per second (got {fps!r}).")
    return value


def probe(source: str | os.PathLike, fps: float | None = None) -> VideoInfo:
    """Opens `source` (a video file, a folder of images or one image) and describes it; raises InputError.

    fps: the frame rate of footage that has none (image folders; a video whose container has none);
    None: DEFAULT_FPS. A video's own frame rate always wins. Reads the first frame, so a video that opens
    but holds no decodable frame is refused here.
    """
    import cv2

    fallback_fps = check_fps(fps)
    path = _check_exists(source)
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise InputError(
                f"the folder {str(path)!r} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS)[:6])}...). "
                "Point at a folder of frames or at a video file."
            )
        first = None
        for f in files[:MAX_CONSECUTIVE_FAILURES]:
            first = _imread_rgb(f)
            if first is not None:
                break
        if first is None:
            raise InputError(f"none of the first images in {str(path)!r} could be decoded; they are damaged or not images.")
        return VideoInfo(str(path), "images", first.shape[1], first.shape[0], fallback_fps, len(files))
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        img = _imread_rgb(path)
        if img is not None:
            return VideoInfo(str(path), "images", img.shape[1], img.shape[0], fallback_fps, 1)
    if path.stat().st_size == 0:
        raise InputError(f"{str(path)!r} is an empty file (0 bytes), not a video. Export the footage again.")
    cap = _open_capture(path)
    try:
        rotation = _capture_rotation(cap)
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
        codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") if fourcc else ""
        ok = False
        for _ in range(MAX_CONSECUTIVE_FAILURES):
            ok, frame = cap.read()
            if ok:
                h, w = frame.shape[:2]
                break
            if not cap.grab() and count <= 0:
                break
        if not ok and count > MAX_CONSECUTIVE_FAILURES:  # a damaged start: seek to where frames decode
            resume = _resync(cap, 0, count - 1)
            if resume is not None and _seek(cap, resume):
                ok, frame = cap.read()
                if ok:
                    h, w = frame.shape[:2]
        if not ok:
            raise InputError(
                f"{str(path)!r} contains no video frames that can be decoded (announced frame count: {count}). "
                "The file is empty or damaged; export or download it again."
            )
    finally:
        cap.release()
    if rotation in (90, 270):
        w, h = h, w
    if not np.isfinite(fps) or fps <= 0 or fps > MAX_FPS:
        log.warning("%s announces no usable frame rate (%r): using %g fps", path, fps, fallback_fps)
        fps = fallback_fps
    return VideoInfo(str(path), "video", int(w), int(h), fps, max(count, 0), rotation, codec)


def resolve_range(info: VideoInfo, frame_start: int | None, frame_end: int | None, stride: int = 1) -> tuple[int, int | None, int]:
    """Checks a frame range against the footage; returns (start, end or None for "to the end", stride)."""
    if stride is None:
        stride = 1
    if int(stride) < 1:
        raise InputError(f"stride must be >= 1 (got {stride}).")
    start = 0 if frame_start is None else int(frame_start)
    if start < 0:
        raise InputError(f"frame range start must be >= 0 (got {start}); frames are numbered from 0.")
    end = None if frame_end is None else int(frame_end)
    if end is not None and end < start:
        raise InputError(f"frame range {start}:{end} is empty: the end (inclusive) is before the start.")
    if info.frame_count > 0 and start >= info.frame_count:
        raise InputError(
            f"frame range starts at {start} but the footage has {info.frame_count} frames (0..{info.frame_count - 1})."
        )
    return start, end, int(stride)


def expected_frames(info: VideoInfo, frame_start: int | None = None, frame_end: int | None = None, stride: int = 1) -> int:
    """How many frames `iter_frames` is expected to yield (from the announced count; 0 when unknown)."""
    start, end, stride = resolve_range(info, frame_start, frame_end, stride)
    last = info.frame_count - 1 if info.frame_count > 0 else None
    if end is not None:
        last = end if last is None else min(end, last)
    if last is None:
        return 0
    return max(0, (last - start) // stride + 1)


def iter_frames(
    source: str | os.PathLike | VideoInfo,
    frame_start: int | None = None,
    frame_end: int | None = None,
    stride: int = 1,
    *,
    planar: bool = False,
) -> Iterator[Frame]:
    """Yields `Frame`s of `source` in order: indices start, start+stride, ... <= end (inclusive).

    Streams: one decoded frame at a time. Undecodable frames in the middle come out as Frame(i, None, why).
    planar: a video's frames as `engine.video_planar.YuvImage`s where its layout allows (`video_planar.read`).
    """
    info = source if isinstance(source, VideoInfo) else probe(source)
    start, end, stride = resolve_range(info, frame_start, frame_end, stride)
    if info.kind == "images":
        yield from _iter_images(info, start, end, stride)
    elif planar:
        from engine import video_planar

        yield from video_planar.read(info, start, end, stride)
    else:
        yield from _iter_video(info, start, end, stride)


def _iter_images(info: VideoInfo, start: int, end: int | None, stride: int) -> Iterator[Frame]:
    path = pathlib.Path(info.source)
    files = [path] if path.is_file() else _image_files(path)
    last = len(files) - 1 if end is None else min(end, len(files) - 1)
    for i in range(start, last + 1, stride):
        img = _imread_rgb(files[i])
        if img is None:
            yield Frame(i, None, f"image {files[i].name!r} cannot be decoded")
        elif img.shape[:2] != (info.height, info.width):
            yield Frame(i, None, f"image {files[i].name!r} is {img.shape[1]}x{img.shape[0]}, the others {info.width}x{info.height}")
        else:
            yield Frame(i, img)


def _iter_video(info: VideoInfo, start: int, end: int | None, stride: int) -> Iterator[Frame]:
    import cv2

    cap = _open_capture(pathlib.Path(info.source))
    rot = _rotation_code(info.rotation)
    announced_last = info.frame_count - 1 if info.frame_count > 0 else None

    def wanted(i: int) -> bool:
        return i >= start and (i - start) % stride == 0 and (end is None or i <= end)

    def damaged(first: int, stop: int) -> Iterator[Frame]:
        """A run of failed reads [first, stop) with frames decoding after it: damage, not the end."""
        log.warning("frame(s) %d..%d of %s cannot be decoded: marked invalid", first, stop - 1, info.source)
        for bad in range(first, stop):
            if wanted(bad):
                yield Frame(bad, None, "frame cannot be decoded (damaged data)")

    def resume_after(failed: int) -> int | None:
        """Where frames decode again after the failed read at `failed` (None: the stream is over)."""
        if announced_last is None or failed >= announced_last:
            return None
        return _resync(cap, failed, announced_last)

    try:
        index = 0
        if start > SEEK_BEYOND and _seek(cap, start):
            index = start
        else:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        gap_from: int | None = None  # first frame of the current run of failed reads
        fails = 0
        while True:
            if end is not None and index > end:
                if gap_from is not None and resume_after(index - 1) is not None:
                    yield from damaged(gap_from, index)
                    gap_from = None
                break
            ok = cap.grab()
            image = None
            if ok and wanted(index):
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    if rot is not None:
                        bgr = cv2.rotate(bgr, rot)
                    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                else:
                    ok = False
            if not ok:
                gap_from = index if gap_from is None else gap_from
                fails += 1
                if announced_last is not None and index > announced_last:
                    break  # past the announced end: the stream is over
                if fails >= SEEK_AFTER_FAILURES:
                    # A long damaged stretch, or the end: seek past it to where frames decode again.
                    resume = resume_after(index)
                    if resume is None:
                        break
                    if end is not None and resume > end:  # the damage covers the rest of the range
                        yield from damaged(gap_from, end + 1)
                        gap_from = None
                        break
                    if not _seek(cap, resume):
                        break
                    index, fails = resume, 0
                    continue
                index += 1
                continue
            if gap_from is not None:
                yield from damaged(gap_from, index)
                gap_from, fails = None, 0
            if wanted(index):
                if image.shape[:2] != (info.height, info.width):
                    yield Frame(index, None, f"frame is {image.shape[1]}x{image.shape[0]}, expected {info.width}x{info.height}")
                else:
                    yield Frame(index, image)
            index += 1
        if gap_from is not None and announced_last is not None and gap_from < announced_last:
            log.warning("%s ended at frame %d although it announces %d frames", info.source, gap_from, info.frame_count)
    finally:
        cap.release()


def _seek(cap, position: int) -> bool:
    """Moves the capture to `position`; True when OpenCV says it is exactly there."""
    import cv2

    return bool(cap.set(cv2.CAP_PROP_POS_FRAMES, position)) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == position


def _decodes_at(cap, position: int) -> bool:
    """Seeks to `position` and decodes one frame there (the capture is left after it)."""
    import cv2

    return _seek(cap, position) and cap.grab() and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == position + 1


def _resync(cap, failed: int, last: int) -> int | None:
    """The first frame after `failed` (a frame in a run of failed reads) that decodes when sought, up to
    `last`; None when none does. Steps ahead doubling from MAX_CONSECUTIVE_FAILURES, then bisects back to
    the gap's end: O(log gap) seeks, however long the damaged stretch. When the doubling overshoots to
    `last` without finding one, a few evenly spaced frames before it are tried (containers over-announce
    their length, so the last announced frame may not exist while earlier ones decode)."""
    lo, step = failed, MAX_CONSECUTIVE_FAILURES
    hi = None
    while hi is None:
        p = min(lo + step, last)
        if _decodes_at(cap, p):
            hi = p
        elif p >= last:
            for q in np.linspace(lo, last, 10)[1:-1].astype(int):
                if q > lo and _decodes_at(cap, int(q)):
                    hi = int(q)
                    break
            else:
                return None
        else:
            lo, step = p, step * 2
    while hi - lo > 1:  # lo fails, hi decodes: find where the damage ends
        mid = (lo + hi) // 2
        if _decodes_at(cap, mid):
            hi = mid
        else:
            lo = mid
    return hi


def iter_batches(
    source: str | os.PathLike | VideoInfo,
    batch_size: int,
    frame_start: int | None = None,
    frame_end: int | None = None,
    stride: int = 1,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    *,
    planar: bool = False,
) -> Iterator[list[Frame]]:
    """Groups `iter_frames` into lists of <= batch_size frames holding <= max_batch_bytes of pixels (>= 1 frame)."""
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1 (got {batch_size}).")
    info = source if isinstance(source, VideoInfo) else probe(source)
    per_frame = max(1, info.width * info.height * 3)
    cap = max(1, min(int(batch_size), int(max_batch_bytes) // per_frame))
    batch: list[Frame] = []
    for frame in iter_frames(info, frame_start, frame_end, stride, planar=planar):
        batch.append(frame)
        if len(batch) >= cap:
            yield batch
            batch = []
    if batch:
        yield batch
