"""`prefetch`: an iterator run ahead in a background thread (a capture decodes the next batch of frames while
the networks run on this one)."""

from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")


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
