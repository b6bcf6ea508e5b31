"""Footage decoding: video files (any codec OpenCV reads) and folders of images, streamed frame by frame.

Nothing here holds a whole clip in memory: `iter_frames` yields one frame at a time, `iter_batches` groups
them into lists of at most `batch_size` frames (and at most `max_batch_bytes` of pixels, so 8K footage
does not blow up a batch). Frames are RGB uint8 `(H, W, 3)`.

- Frame numbers are 0-based footage frame numbers; a range is `frame_start..frame_end` inclusive with a
  `stride`.
- Portrait phone video: the container's rotation (display matrix, `CAP_PROP_ORIENTATION_META`) is applied
  here, explicitly (OpenCV's own auto-rotation is switched off so the behaviour does not depend on its
  defaults): frames come out upright and `VideoInfo.width/height` are the upright size.
- A frame that cannot be decoded in the middle of the footage is yielded as `Frame(index, None, reason)`:
  the capture marks it invalid and reports it. Failures after the last decodable frame are the end of the
  stream (containers often over-announce their frame count), not corrupt frames.
- Image folders: files with an image extension, sorted by name with numbers compared as numbers
  (`frame_2.png` before `frame_10.png`); an unreadable image or one whose size differs from the first is a
  corrupt frame. EXIF orientation is applied by OpenCV.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import queue
import re
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")

import numpy as np

from engine.errors import InputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm", ".exr", ".hdr"}
)
#: After this many failed reads in a row the stream is considered finished.
MAX_CONSECUTIVE_FAILURES = 32
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
    """One footage frame: `image` RGB uint8 (H, W, 3), or None with `error` when it could not be decoded."""

    index: int
    image: np.ndarray | None
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


def probe(source: str | os.PathLike) -> VideoInfo:
    """Opens `source` (a video file, a folder of images or one image) and describes it; raises InputError.

    Reads the first frame, so a video that opens but holds no decodable frame is refused here.
    """
    import cv2

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
        return VideoInfo(str(path), "images", first.shape[1], first.shape[0], 0.0, len(files))
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        img = _imread_rgb(path)
        if img is not None:
            return VideoInfo(str(path), "images", img.shape[1], img.shape[0], 0.0, 1)
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
        if not ok:
            raise InputError(
                f"{str(path)!r} contains no video frames that can be decoded (announced frame count: {count}). "
                "The file is empty or damaged; export or download it again."
            )
    finally:
        cap.release()
    if rotation in (90, 270):
        w, h = h, w
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = 0.0
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
) -> Iterator[Frame]:
    """Yields `Frame`s of `source` in order: indices start, start+stride, ... <= end (inclusive).

    Streams: one decoded frame at a time. Undecodable frames in the middle come out as Frame(i, None, why).
    """
    info = source if isinstance(source, VideoInfo) else probe(source)
    start, end, stride = resolve_range(info, frame_start, frame_end, stride)
    if info.kind == "images":
        yield from _iter_images(info, start, end, stride)
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
    try:
        index = 0
        if start > 0:
            if start > 64 and cap.set(cv2.CAP_PROP_POS_FRAMES, start) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == start:
                index = start
            else:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                while index < start and cap.grab():
                    index += 1
                if index < start:
                    return
        pending: list[int] = []  # failed reads not yet known to be mid-stream (corrupt) rather than the end
        while end is None or index <= end:
            wanted = (index - start) % stride == 0
            ok = cap.grab()
            image = None
            if ok and wanted:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    if rot is not None:
                        bgr = cv2.rotate(bgr, rot)
                    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                else:
                    ok = False
            if not ok:
                pending.append(index)
                if len(pending) >= MAX_CONSECUTIVE_FAILURES or (info.frame_count > 0 and index >= info.frame_count):
                    break
                index += 1
                continue
            for bad in pending:
                if (bad - start) % stride == 0:
                    log.warning("frame %d of %s cannot be decoded: skipped", bad, info.source)
                    yield Frame(bad, None, "frame cannot be decoded (damaged data)")
            pending.clear()
            if wanted:
                if image.shape[:2] != (info.height, info.width):
                    yield Frame(index, None, f"frame is {image.shape[1]}x{image.shape[0]}, expected {info.width}x{info.height}")
                else:
                    yield Frame(index, image)
            index += 1
        if pending and info.frame_count > 0 and pending[0] < info.frame_count - 1:
            log.warning(
                "%s ended at frame %d although it announces %d frames", info.source, pending[0], info.frame_count
            )
    finally:
        cap.release()


def iter_batches(
    source: str | os.PathLike | VideoInfo,
    batch_size: int,
    frame_start: int | None = None,
    frame_end: int | None = None,
    stride: int = 1,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Iterator[list[Frame]]:
    """Groups `iter_frames` into lists of <= batch_size frames holding <= max_batch_bytes of pixels (>= 1 frame)."""
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1 (got {batch_size}).")
    info = source if isinstance(source, VideoInfo) else probe(source)
    per_frame = max(1, info.width * info.height * 3)
    cap = max(1, min(int(batch_size), int(max_batch_bytes) // per_frame))
    batch: list[Frame] = []
    for frame in iter_frames(info, frame_start, frame_end, stride):
        batch.append(frame)
        if len(batch) >= cap:
            yield batch
            batch = []
    if batch:
        yield batch


def prefetch(iterator: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Runs `iterator` in a background thread, `depth` items ahead (decoding overlaps the networks: OpenCV
    and torch release the GIL). Exceptions come out where the item would have; closing the generator
    stops the thread. Memory: up to depth + 1 items alive at once."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def worker():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(("error", exc))

    thread = threading.Thread(target=worker, name="decode-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
