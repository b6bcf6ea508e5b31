"""`python -m engine batch`: many clips, each through `engine.capture.run_capture`, on local worker processes
or as Ray tasks.

    python -m engine batch INPUT... -o OUTDIR [--workers N] [--ray local|ADDRESS] [--resume] [--overlay]
                           [capture options: --frames, --hands, --intrinsics, --iterations, ... as `capture`]

INPUT: video files, image folders (one clip each) or text files (.txt) listing them, one per line (blank
lines and lines starting with # are skipped; relative paths are relative to the list's folder).

One code path for both pools: the parent makes each clip's `CaptureOptions` (the capture options' one
definition and conversion, engine/cli_args.py), submits `run_clip(job, queue)` and collects
`concurrent.futures.Future`s. A pool (engine/batch_workers.py) is only where the task runs: `LocalWorkers`
(processes, spawn; `--workers`, default: the cores) or `RayWorkers` (`--ray local` starts a private Ray
instance, `--ray ADDRESS` joins a cluster; default: the cluster's CPUs).
Each task limits torch, OpenMP, OpenCV and XLA to the capture's `--threads` (default 1), so N workers do not
oversubscribe the cores.

Outputs, named `<stem>-<8 hex of sha256(absolute source path)>` (two clips with the same name in different
folders never collide; a rerun finds the same names):
    OUTDIR/<name>.npz            capture result (engine/results.py)
    OUTDIR/<name>.overlay.mp4    with --overlay
    OUTDIR/manifest.jsonl        one line per input and run, appended and fsynced as each clip finishes:
        {"source", "status": "ok"|"error"|"skipped", "result", "overlay", "error", "seconds",
         "options_sha256", "source_sha256", "frames"}
      source is absolute; result/overlay are relative to OUTDIR (null when absent); error is null or
      {"code", "message"} with a protocol error code (engine.protocol.ERROR_CODES); source_sha256 hashes the
      footage (a video's bytes; an image folder's file names and bytes); options_sha256 the capture options
      that shape the result (not the clip's own source/output/overlay paths, nor the thread count; a
      --hand-model counts by its path, not its bytes).

Workers write into OUTDIR/.batch-partial/<name>/; the parent moves a finished clip's files into OUTDIR and
then appends its line. Ctrl-C (or SIGTERM) stops the workers and removes .batch-partial: an interrupted
batch leaves complete results and lines only. `--resume` skips every clip whose latest ok/skipped line has
the same source_sha256 and options_sha256 and whose files exist (a `skipped` line; nothing recomputed).

Exit code: 0 when every clip is ok or skipped, 1 when some failed (their lines say why), 2 for a bad
command line or OUTDIR, 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import pathlib
import queue as queue_mod
import re
import shutil
import signal
import sys

from engine.batch_workers import LocalWorkers, RayWorkers, import_ray, source_sha256
from engine.errors import InputError, OutputError, Terminated

MANIFEST = "manifest.jsonl"
PARTIAL = ".batch-partial"
EXIT_SOME_FAILED = 1
LIST_SUFFIXES = (".txt",)
# CaptureOptions fields that do not shape the result: per-clip paths, and the thread count
NOT_HASHED = ("source", "output", "overlay", "threads")


# ------------------------------------------------------------------------------------------------ inputs


def expand_inputs(inputs: list[str]) -> list[pathlib.Path]:
    """INPUT arguments -> absolute clip paths, in order, each once; a .txt file lists clips one per line."""
    out: list[pathlib.Path] = []
    for text in inputs:
        p = pathlib.Path(text).expanduser()
        if p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read the clip list {str(p)!r}: {exc}. Give a UTF-8 text file, one clip a line.") from None
            out += [p.parent / s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
        else:
            out.append(p)
    seen, clips = set(), []
    for p in out:
        a = pathlib.Path(os.path.abspath(p))
        if a not in seen:
            seen.add(a)
            clips.append(a)
    if not clips:
        raise InputError("no clips to capture: give video files, image folders or a .txt list of them.")
    return clips


def output_name(source: pathlib.Path) -> str:
    """`<stem>-<8 hex>`: readable, and distinct for distinct absolute paths (same stem, other folder)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.stem if source.suffix else source.name).strip("._") or "clip"
    return f"{stem[:60]}-{hashlib.sha256(str(source).encode('utf-8')).hexdigest()[:8]}"


def options_sha256(options) -> str:
    """sha256 of the CaptureOptions that shape a result (paths and threads left out; overlay as yes/no)."""
    d = {k: v for k, v in dataclasses.asdict(options).items() if k not in NOT_HASHED}
    d["overlay"] = bool(options.overlay)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------- manifest


class Manifest:
    """OUTDIR/manifest.jsonl, locked for one batch at a time; `previous` holds the lines already there."""

    def __init__(self, outdir: pathlib.Path, resume: bool):
        self.path = outdir / MANIFEST
        if not resume and self.path.is_file() and self.path.stat().st_size > 0:
            raise OutputError(f"{str(outdir)!r} already holds a batch ({MANIFEST}): pass --resume to continue it "
                              "(finished clips are skipped), or choose another -o folder.")
        try:
            self._fh = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {str(self.path)!r}: {exc.strerror or exc}.") from None
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise OutputError(f"another batch is writing to {str(outdir)!r}; wait for it or choose another -o folder.") from None
        self._fh.seek(0)
        text = self._fh.read()
        self.previous = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):  # a line torn by a power cut is ignored (and recomputed)
                self.previous.append(json.loads(line))
        if text and not text.endswith("\n"):
            self._fh.write("\n")

    def append(self, line: dict) -> None:
        self._fh.write(json.dumps(line) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


@contextlib.contextmanager
def _uninterrupted():
    """Holds Ctrl-C / SIGTERM back while a clip's files and line are published (delivered right after)."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ------------------------------------------------------------------------------------------------- batch


@dataclasses.dataclass
class Clip:
    index: int
    source: pathlib.Path
    name: str
    options: object  # CaptureOptions, writing into the clip's partial folder
    result: str  # final file names, relative to OUTDIR
    overlay: str | None


def _line(clip: Clip, status: str, options_hash: str, *, result=None, overlay=None, error=None, seconds=0.0,
          source_hash=None, frames=None) -> dict:
    return {"source": str(clip.source), "status": status, "result": result, "overlay": overlay, "error": error,
            "seconds": round(float(seconds), 3), "options_sha256": options_hash, "source_sha256": source_hash,
            "frames": frames}


def _reusable(clip: Clip, options_hash: str, previous: list[dict], outdir: pathlib.Path) -> dict | None:
    """The latest ok/skipped line of this source path with these options, if its files exist and the
    footage still has the recorded content (hashed only then); else None."""
    for line in reversed(previous):
        if line.get("source") == str(clip.source) and line.get("options_sha256") == options_hash:
            if line.get("status") not in ("ok", "skipped"):
                return None
            files = [line.get("result")] + ([line.get("overlay")] if clip.overlay else [])
            if not all(f and (outdir / f).is_file() for f in files):
                return None
            return line if source_sha256(clip.source) == line.get("source_sha256") else None
    return None


def run_batch(clips: list[Clip], options_hash: str, outdir: pathlib.Path, pool, manifest: Manifest,
              threads: int, bar, report) -> dict:
    """Submits the clips (at most pool.workers at a time), publishes each finished clip and appends its line.

    When a worker process dies, every clip running in the pool then fails with it; each is retried once,
    alone (one clip at a time while any retry is pending or running), so the clip that kills its worker
    fails and the others finish."""
    counts = {"ok": 0, "error": 0}
    pending = list(reversed(clips))  # next clip last
    running: dict[cf.Future, Clip] = {}
    retried: set[int] = set()
    fraction: dict[int, float] = {}
    frames = [0]
    finished = 0.0

    def finish(clip: Clip, out: dict) -> None:
        if out["status"] == "ok":
            with _uninterrupted():
                files = out["files"]
                if files.get("overlay"):
                    os.replace(files["overlay"], outdir / clip.overlay)
                os.replace(files["result"], outdir / clip.result)
                shutil.rmtree(pathlib.Path(files["result"]).parent, ignore_errors=True)
                line = _line(clip, "ok", options_hash, result=clip.result, seconds=out["seconds"], frames=out["frames"],
                             overlay=clip.overlay if files.get("overlay") else None, source_hash=out["source_sha256"])
                manifest.append(line)
            frames[0] += out["frames"]
        else:
            line = _line(clip, "error", options_hash, error={"code": out["code"], "message": out["message"]},
                         seconds=out.get("seconds", 0.0))
            manifest.append(line)
        counts[line["status"]] += 1
        report(line)
        bar.set_postfix_str(f"{frames[0]} frames, {counts['error']} failed")

    while pending or running:
        isolate = any(c.index in retried for c in [*running.values(), *pending[-1:]])
        while pending and len(running) < (1 if isolate else pool.workers):
            clip = pending.pop()
            running[pool.submit({"index": clip.index, "options": clip.options, "threads": threads})] = clip
            isolate = isolate or clip.index in retried
        done, _ = cf.wait(running, timeout=0.25, return_when=cf.FIRST_COMPLETED)
        _drain(pool.queue, fraction)
        for fut in done:
            clip = running.pop(fut)
            fraction.pop(clip.index, None)
            try:
                out = fut.result()
            except Exception as exc:  # noqa: BLE001 - the pool failed this clip: a dead worker, a Ray failure
                died = pool.worker_died(exc)
                if died and clip.index not in retried:
                    retried.add(clip.index)
                    pending.append(clip)
                    bar.write(f"retry   {clip.source}: a worker process died while it ran; retrying it alone", file=sys.stderr)
                    continue
                what = "its worker process died (a crash, or out of memory)" if died else \
                    f"{type(exc).__name__}: {exc}".splitlines()[0]
                out = {"status": "error", "code": "internal", "message": what}
            finish(clip, out)
            finished += 1
        bar.update(round(finished + sum(fraction.values()), 2) - bar.n)
    return counts


def _drain(q, fraction: dict) -> None:
    while True:
        try:
            index, frac = q.get_nowait()
        except (queue_mod.Empty, EOFError, OSError):
            return
        fraction[index] = min(float(frac), 0.99)


# --------------------------------------------------------------------------------------------------- CLI


def build_parser(prog: str) -> argparse.ArgumentParser:
    from engine import cli_args

    p = argparse.ArgumentParser(prog=prog, description="Capture many clips: one result per clip and a manifest, on "
                                "local worker processes or a Ray cluster.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, image folder, or .txt file listing them")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the results and manifest.jsonl")
    p.add_argument("--workers", type=int, help="clips captured at once (default: the cores; with --ray: the cluster's CPUs)")
    p.add_argument("--ray", metavar="local|ADDRESS", help="run the clips as Ray tasks: 'local' starts a private Ray "
                   "instance, an address (host:6379, ray://host:10001, auto) joins a cluster (needs the [cluster] extra)")
    p.add_argument("--resume", action="store_true", help="continue the batch in OUTDIR: skip clips already captured "
                   "from the same footage with the same options")
    p.add_argument("--overlay", action="store_true", help="also write OUTDIR/<clip>.overlay.mp4 (the fitted mesh over the footage)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    cli_args.add_capture_options(p.add_argument_group("capture options (as for `python -m engine capture`)"))
    return p


def main(argv: list[str], prog: str = "python -m engine batch") -> int:
    from tqdm import tqdm

    from engine import cli_args

    args = build_parser(prog).parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1 (got {args.workers}).")
    if args.ray:
        import_ray()  # before any work: say how to install it
    outdir = pathlib.Path(os.path.abspath(pathlib.Path(args.output).expanduser()))
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"-o {str(outdir)!r} is a file; give a folder for the results.")
    sources = expand_inputs(args.inputs)
    # one tracking segment per clip unless asked: the batch's workers already use the cores
    base = cli_args.capture_options(argparse.Namespace(**{**vars(args), "source": "", "output": "", "overlay": None,
                                                          "segments": args.segments or 1}))
    options_hash = options_sha256(dataclasses.replace(base, overlay="x" if args.overlay else None))
    threads = base.threads or max(1, (os.cpu_count() or 1) // (args.workers or 1))
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {str(outdir)!r}: {exc.strerror or exc}.") from None
    manifest = Manifest(outdir, args.resume)
    partial = outdir / PARTIAL
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed batch; the lock says none is running
    clips = []
    for i, src in enumerate(sources):
        name = output_name(src)
        opts = dataclasses.replace(base, source=str(src), output=str(partial / name / "result.npz"),
                                   overlay=str(partial / name / "overlay.mp4") if args.overlay else None)
        clips.append(Clip(i, src, name, opts, f"{name}.npz", f"{name}.overlay.mp4" if args.overlay else None))

    tty = sys.stderr.isatty()
    bar = tqdm(total=len(clips), unit="clip", desc="batch", file=sys.stderr, disable=args.quiet, smoothing=0.1,
               mininterval=0.2 if tty else 10.0,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} clips [{elapsed}<{remaining}{postfix}]")

    def report(line: dict) -> None:
        what = line["result"] if line["status"] != "error" else f"[{line['error']['code']}] {line['error']['message']}"
        tqdm.write(f"{line['status']:<7} {line['source']}: {what}", file=sys.stderr)

    skipped, todo = 0, []
    for clip in clips:
        prev = _reusable(clip, options_hash, manifest.previous, outdir) if args.resume else None
        if prev is None:
            todo.append(clip)
            continue
        line = _line(clip, "skipped", options_hash, result=prev["result"], overlay=prev.get("overlay"),
                     source_hash=prev["source_sha256"], frames=prev.get("frames"))
        manifest.append(line)
        report(line)
        skipped += 1
        bar.update(1)

    def terminate(signum, frame):
        raise Terminated

    old_term = signal.signal(signal.SIGTERM, terminate)
    pool = None
    try:
        counts = {"ok": 0, "error": 0}
        if todo:
            pool = (RayWorkers(args.ray, args.workers, threads) if args.ray else
                    LocalWorkers(min(args.workers or os.cpu_count() or 1, len(todo)), threads))
            counts = run_batch(todo, options_hash, outdir, pool, manifest, threads, bar, report)
            pool.close()
            pool = None
    except BaseException as exc:  # Ctrl-C, SIGTERM or a failure of the pool itself: stop, leave no partial files
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.stop()
        shutil.rmtree(partial, ignore_errors=True)
        bar.close()
        if isinstance(exc, KeyboardInterrupt):  # said once, here (not again as a bare "interrupted")
            stopped = "terminated" if isinstance(exc, Terminated) else "interrupted"
            print(f"{prog}: {stopped}; the finished clips are in {str(manifest.path)!r}: rerun with --resume "
                  "to continue", file=sys.stderr)
            return 143 if isinstance(exc, Terminated) else 130
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
        bar.close()
        manifest.close()
    shutil.rmtree(partial, ignore_errors=True)
    print(f"{prog}: {counts['ok']} ok, {skipped} skipped, {counts['error']} failed of {len(clips)} clips; "
          f"manifest {manifest.path}", file=sys.stderr)
    return EXIT_SOME_FAILED if counts["error"] else 0
