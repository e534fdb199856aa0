"""The prepared-image cache: every PNG decoded once, resized, stored in one uint8 memory-mapped array.

Decoding 112,120 PNGs of 1024 px each epoch is what leaves GPUs idle on NIH; after ``cxr-bench prepare``
an image is a 64 KB slice of a memory map (at 256 px).

Layout of one cache (``<cache root>/<size>px-<conversion>-<resize>-<key16>/``)::

    images.npy      uint8 (N, H, W), standard .npy, opened with mmap; row i is ``index.csv`` row i
    index.csv       name, path, file_size, mtime_ns, orig_width, orig_height, orig_mode, status
    rejected.csv    image, path, reason: files that are missing, empty, not PNG, truncated or corrupt
    meta.json       key, format version, size, resize, conversion, counts; written LAST, atomically
    plan.json       what the build is making (key, names, chunking); lets an interrupted build resume
    done.jsonl      one line per finished chunk (the per-chunk done record; see below)

The *key* is the sha256 of the source identity (each listed image's name, byte size and mtime_ns, or
"missing"), the output size, resize method, conversion and :data:`FORMAT_VERSION`. Any change there gives
another key, hence another directory: a stale cache is never read, it is just no longer found.

Crash safety, at any moment of a ``kill -9``:

- Work is split into chunks of consecutive rows. A worker decodes a chunk, writes its bytes into
  ``images.npy`` with ``pwrite`` and ``fdatasync``s them, and only then does the parent append the chunk's
  line to ``done.jsonl`` (and fsync it). A chunk without its line is simply done again; a torn last line is
  ignored. Decoding is deterministic, so a resumed build is byte-identical to an uninterrupted one.
- ``meta.json`` is written atomically after everything else; :meth:`ImageCache.open` refuses a directory
  without it, so a half-built cache is never used as complete.
- A file lock serialises two ``prepare`` processes on the same key.

Rejected rows keep their slot (filled with zeros) so slot numbers never depend on which files failed;
:meth:`ImageCache.slots` maps them to -1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from filelock import FileLock
from PIL import Image

from ..errors import CacheError, ImageError
from ..utils.io import atomic_write_json, atomic_write_text, read_json
from ..utils.progress import progress as progress_bar
from .grayscale import get_conversion, gray_image, open_png

if TYPE_CHECKING:  # pragma: no cover
    from .release import NIHRelease

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_ENV = "CXR_BENCH_CACHE"
# Test hook: seconds a worker sleeps after each chunk, so a test can kill a build part-way.
SLEEP_ENV = "CXR_BENCH_PREPARE_CHUNK_SLEEP"
DEFAULT_CHUNK = 64

# Every Pillow filter here is antialiased when downsampling: its support widens with the scale factor.
RESIZE_FILTERS: dict[str, Image.Resampling] = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
}

IMAGES_FILE = "images.npy"
INDEX_FILE = "index.csv"
REJECTED_FILE = "rejected.csv"
META_FILE = "meta.json"
PLAN_FILE = "plan.json"
DONE_FILE = "done.jsonl"
LOCK_FILE = ".lock"


# ------------------------------------------------------------------------------------ one image
def resize_filter(name: str) -> Image.Resampling:
    try:
        return RESIZE_FILTERS[name]
    except KeyError:
        raise CacheError(f"unknown resize method {name!r}; known: {', '.join(RESIZE_FILTERS)}") from None


def load_resized(path: str | os.PathLike, size: int, *, resize: str = "lanczos",
                 conversion: str = "identity") -> tuple[np.ndarray, tuple[int, int, str]]:
    """Decode ``path`` (see :func:`~cxr_bench.data.grayscale.gray_image`), convert, resize to size x size.

    Returns the uint8 (size, size) array and the source's (width, height, mode). The conversion runs at
    source resolution, before resizing, so a tone curve sees the stored pixel values. A non-square source
    is stretched to the square (NIH images are all square). The cache and the direct-from-PNG dataset both
    call this, so both give identical pixels.
    """
    im = open_png(path)
    source = (im.width, im.height, im.mode)
    gray = gray_image(im, conversion, source=path)
    if gray.size != (size, size):
        gray = gray.resize((size, size), resize_filter(resize))
    return np.asarray(gray), source


# -------------------------------------------------------------------------------- cache location
def default_cache_root() -> Path:
    """``$CXR_BENCH_CACHE``, else ``~/.cache/cxr-bench`` (never inside the package)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cxr-bench"


def source_identity(paths: Mapping[str, Path | None]) -> list[list[Any]]:
    """``[name, file_size, mtime_ns]`` per image (``[name, None, None]`` when the file is missing)."""
    out: list[list[Any]] = []
    for name, path in paths.items():
        if path is None:
            out.append([name, None, None])
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            out.append([name, None, None])
        else:
            out.append([name, st.st_size, st.st_mtime_ns])
    return out


def cache_key(identity: Sequence[Sequence[Any]], size: int, resize: str, conversion: str) -> str:
    blob = json.dumps({"format_version": FORMAT_VERSION, "size": size, "resize": resize,
                       "conversion": conversion, "sources": identity}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------------------- reader
@dataclass(eq=False)
class ImageCache:
    """A finished cache, opened read-only. ``array[i]`` is the image ``names[i]``.

    Picklable cheaply (DataLoader workers under spawn): the memory map is reopened, never copied.
    """

    dir: Path
    meta: dict[str, Any]
    index: pd.DataFrame
    rejected: list[tuple[str, str]]

    def __post_init__(self) -> None:
        self._array: np.ndarray | None = None
        self.names: tuple[str, ...] = tuple(self.index["name"])
        self._slot = {n: i for i, n in enumerate(self.names)}
        self.valid = (self.index["status"] == "ok").to_numpy()
        self._reasons = dict(self.rejected)

    @classmethod
    def open(cls, directory: str | os.PathLike) -> ImageCache:
        """Open a complete cache; :class:`CacheError` if it is unfinished, of another format, or damaged."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise CacheError(f"{directory} is not a complete image cache (no {META_FILE}); run "
                             "`cxr-bench prepare` again to finish or rebuild it")
        meta = read_json(meta_path)
        if meta.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"{meta_path}: cache format {meta.get('format_version')} is not the current "
                             f"{FORMAT_VERSION}; run `cxr-bench prepare` to rebuild it")
        index = pd.read_csv(directory / INDEX_FILE, dtype={"name": str, "path": str, "orig_mode": str,
                                                           "status": str}, keep_default_na=False)
        rejected_df = pd.read_csv(directory / REJECTED_FILE, dtype=str, keep_default_na=False)
        for path, df, needed in ((INDEX_FILE, index, {"name", "status"}),
                                 (REJECTED_FILE, rejected_df, {"image", "reason"})):
            if not needed <= set(df.columns):
                raise CacheError(f"{directory / path} does not match this cache format (columns "
                                 f"{sorted(df.columns)}); delete {directory} and prepare again")
        cache = cls(directory, meta, index, list(zip(rejected_df["image"], rejected_df["reason"])))
        shape = tuple(cache.array.shape)
        if shape != (len(index), meta["size"], meta["size"]) or cache.array.dtype != np.uint8:
            raise CacheError(f"{directory / IMAGES_FILE}: shape {shape} does not match {INDEX_FILE} "
                             f"({len(index)} rows, {meta['size']} px); delete {directory} and prepare again")
        return cache

    @property
    def array(self) -> np.ndarray:
        """uint8 (N, H, W), memory-mapped read-only."""
        if self._array is None:
            self._array = np.load(self.dir / IMAGES_FILE, mmap_mode="r")
        return self._array

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def conversion(self) -> str:
        return self.meta["conversion"]

    @property
    def resize(self) -> str:
        return self.meta["resize"]

    def __len__(self) -> int:
        return len(self.names)

    def reason(self, name: str) -> str | None:
        """Why ``name`` has no image in this cache (None if it has one)."""
        if name in self._reasons:
            return self._reasons[name]
        return None if name in self._slot else "not part of this cache"

    def index_of(self, name: str) -> int:
        """Row of ``name`` in :attr:`array`; :class:`CacheError` if it was rejected or never listed."""
        slot = self._slot.get(name)
        if slot is None or not self.valid[slot]:
            raise CacheError(f"image {name} is not available in cache {self.dir}: {self.reason(name)}")
        return slot

    def slots(self, names: Iterable[str]) -> np.ndarray:
        """int64 rows of ``names`` in :attr:`array`, -1 where the image is rejected or absent."""
        get = self._slot.get
        out = np.fromiter((get(n, -1) for n in names), dtype=np.int64)
        bad = out >= 0
        out[bad] = np.where(self.valid[out[bad]], out[bad], -1)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        return state


# ---------------------------------------------------------------------------------------- builder
def prepare_cache(release: NIHRelease | str | os.PathLike | None, size: int = 256, *,
                  names: Sequence[str] | None = None, resize: str = "lanczos",
                  conversion: str = "identity", cache_dir: str | os.PathLike | None = None,
                  workers: int | None = None, progress: bool | None = None,
                  chunk_size: int = DEFAULT_CHUNK) -> ImageCache:
    """Build (or find, or finish) the cache of ``release``'s images; see the module docstring.

    ``release`` may be an :class:`~cxr_bench.data.release.NIHRelease` or a data root (None: the bundled
    sample). ``names`` restricts the cache to those images (default: every image of the metadata, in
    metadata order). ``cache_dir`` is the cache *root* (default :func:`default_cache_root`); the cache
    itself is a subdirectory named by its key. Missing and undecodable images are listed in
    ``rejected.csv`` and :attr:`ImageCache.rejected`, logged, and skipped.
    """
    if release is None or isinstance(release, (str, os.PathLike)):
        from .release import NIHRelease

        release = NIHRelease.open(release)
    wanted = list(release.metadata["image"]) if names is None else list(names)
    on_disk = release.image_paths()
    paths = {name: on_disk.get(name) for name in wanted}
    return build_cache(paths, size, resize=resize, conversion=conversion, cache_dir=cache_dir,
                       workers=workers, progress=progress, chunk_size=chunk_size,
                       source_root=str(release.root))


def build_cache(paths: Mapping[str, Path | None], size: int, *, resize: str = "lanczos",
                conversion: str = "identity", cache_dir: str | os.PathLike | None = None,
                workers: int | None = None, progress: bool | None = None,
                chunk_size: int = DEFAULT_CHUNK, source_root: str = "") -> ImageCache:
    """The cache of ``paths`` (image name -> PNG path, None for a listed image with no file).

    The engine of :func:`prepare_cache`; benchmarks call it directly on a list of files.
    """
    if size < 1:
        raise CacheError(f"image size must be positive, got {size}")
    if chunk_size < 1:
        raise CacheError(f"chunk size must be positive, got {chunk_size}")
    resize_filter(resize)
    get_conversion(conversion)
    identity = source_identity(paths)
    key = cache_key(identity, size, resize, conversion)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    directory = root / f"{size}px-{conversion}-{resize}-{key[:16]}"
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / LOCK_FILE)):
        if (directory / META_FILE).is_file():
            try:
                cache = ImageCache.open(directory)
            except (CacheError, OSError, ValueError, KeyError) as e:
                log.warning("image cache %s is damaged (%s); finishing it again", directory, e)
                (directory / META_FILE).unlink()
            else:
                if cache.key == key:
                    log.info("image cache %s is complete (%d images)", directory, len(cache))
                    return cache
        return _Builder(directory, key, identity, paths, size, resize, conversion, chunk_size,
                        source_root).run(_n_workers(workers), progress)


def _n_workers(workers: int | None) -> int:
    if workers is not None:
        if workers < 0:
            raise CacheError(f"workers must be >= 0, got {workers}")
        return max(workers, 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


class _Builder:
    """One build of one cache directory (under its lock)."""

    def __init__(self, directory: Path, key: str, identity: list[list[Any]], paths: Mapping[str, Path | None],
                 size: int, resize: str, conversion: str, chunk_size: int, source_root: str) -> None:
        self.dir = directory
        self.key = key
        self.size = size
        self.resize = resize
        self.conversion = conversion
        self.source_root = source_root
        self.stats = {row[0]: row for row in identity}
        self.missing = [n for n, p in paths.items() if p is None or self.stats[n][1] is None]
        missing = set(self.missing)
        self.present = [(n, str(p)) for n, p in paths.items() if n not in missing]
        self.plan = {"key": key, "format_version": FORMAT_VERSION, "size": size, "resize": resize,
                     "conversion": conversion, "names": [n for n, _ in self.present],
                     "chunk_size": chunk_size}

    # -------------------------------------------------------------------------------------- driver
    def run(self, workers: int, progress: bool | None) -> ImageCache:
        t0 = time.perf_counter()
        done = self._start_or_resume()
        chunk_size = self.plan["chunk_size"]
        n = len(self.present)
        chunks = [(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]
        todo = [c for c in range(len(chunks)) if c not in done]
        offset = _npy_data_offset(self.dir / IMAGES_FILE)
        if done:
            log.info("resuming image cache %s: %d of %d chunks already done", self.dir, len(done), len(chunks))
        args = [(c, chunks[c][0], self.present[chunks[c][0]:chunks[c][1]]) for c in todo]
        job = _ChunkJob(str(self.dir / IMAGES_FILE), offset, self.size, self.resize, self.conversion)
        left = sum(chunks[c][1] - chunks[c][0] for c in todo)
        with open(self.dir / DONE_FILE, "a", encoding="utf-8") as journal, \
                progress_bar(total=n, initial=n - left, desc="prepare", unit="img", enabled=progress) as bar:
            for result in _run_chunks(job, args, workers):
                done[result["chunk"]] = result
                journal.write(json.dumps(result, separators=(",", ":")) + "\n")
                journal.flush()
                os.fsync(journal.fileno())
                bar.update(len(result["images"]))
        return self._finish(done, time.perf_counter() - t0, workers)

    def _start_or_resume(self) -> dict[int, dict[str, Any]]:
        plan_path = self.dir / PLAN_FILE
        images = self.dir / IMAGES_FILE
        if plan_path.is_file() and images.is_file():
            try:
                same = read_json(plan_path) == self.plan
            except (OSError, ValueError):
                same = False
            if same:
                return _read_journal(self.dir / DONE_FILE)
        # Fresh start: nothing here can be trusted (another format, another plan, or a torn start).
        for child in self.dir.iterdir():
            if child.name == LOCK_FILE:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        n = len(self.present)
        # A sparse file of the final size; chunks are written into it in place.
        np.lib.format.open_memmap(images, mode="w+", dtype=np.uint8, shape=(n, self.size, self.size))
        (self.dir / DONE_FILE).touch()
        atomic_write_json(plan_path, self.plan)
        return {}

    def _finish(self, done: dict[int, dict[str, Any]], seconds: float, workers: int) -> ImageCache:
        sources: dict[int, list[Any]] = {}
        failed: dict[int, str] = {}
        for result in done.values():
            for slot, src in zip(range(result["start"], result["start"] + len(result["images"])),
                                 result["images"]):
                if isinstance(src, str):
                    failed[slot] = src
                else:
                    sources[slot] = src
        index = io.StringIO()
        w = csv.writer(index, lineterminator="\n")
        w.writerow(["name", "path", "file_size", "mtime_ns", "orig_width", "orig_height", "orig_mode",
                    "status"])
        rejected: list[tuple[str, str, str]] = [(n, "", "missing: no file under the data root")
                                                for n in self.missing]
        for slot, (name, path) in enumerate(self.present):
            _, file_size, mtime_ns = self.stats[name]
            if slot in failed:
                rejected.append((name, path, failed[slot]))
                w.writerow([name, path, file_size, mtime_ns, 0, 0, "", "rejected"])
            else:
                width, height, mode = sources[slot]
                w.writerow([name, path, file_size, mtime_ns, width, height, mode, "ok"])
        rej = io.StringIO()
        rw = csv.writer(rej, lineterminator="\n")
        rw.writerow(["image", "path", "reason"])
        rw.writerows(rejected)
        atomic_write_text(self.dir / INDEX_FILE, index.getvalue())
        atomic_write_text(self.dir / REJECTED_FILE, rej.getvalue())
        for name, path, reason in rejected:
            log.warning("image %s rejected: %s", path or name, reason)
        if rejected:
            log.warning("%d image(s) rejected; list in %s", len(rejected), self.dir / REJECTED_FILE)
        n_ok = len(self.present) - len(failed)
        atomic_write_json(self.dir / META_FILE, {
            "key": self.key, "format_version": FORMAT_VERSION, "size": self.size, "resize": self.resize,
            "conversion": self.conversion, "n_images": len(self.present), "n_ok": n_ok,
            "n_rejected": len(rejected), "n_missing": len(self.missing), "source_root": self.source_root,
            "chunk_size": self.plan["chunk_size"], "workers": workers, "build_seconds": round(seconds, 3),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        log.info("image cache %s: %d images (%d rejected) in %.1f s", self.dir, n_ok, len(rejected), seconds)
        return ImageCache.open(self.dir)


# ---------------------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class _ChunkJob:
    npy_path: str
    offset: int
    size: int
    resize: str
    conversion: str

    def __call__(self, arg: tuple[int, int, list[tuple[str, str]]]) -> dict[str, Any]:
        """Decode one chunk, write it at its place in the .npy, make it durable, report per-image results."""
        chunk, start, items = arg
        block = np.zeros((len(items), self.size, self.size), dtype=np.uint8)
        images: list[Any] = []
        for j, (_, path) in enumerate(items):
            try:
                block[j], (width, height, mode) = load_resized(path, self.size, resize=self.resize,
                                                               conversion=self.conversion)
            except ImageError as e:
                images.append(str(e).removeprefix(f"{path}: "))
            else:
                images.append([width, height, mode])
        fd = os.open(self.npy_path, os.O_WRONLY)
        try:
            data = memoryview(block).cast("B")
            pos = self.offset + start * self.size * self.size
            while data:
                written = os.pwrite(fd, data, pos)
                data, pos = data[written:], pos + written
            os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
        finally:
            os.close(fd)
        delay = float(os.environ.get(SLEEP_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        return {"chunk": chunk, "start": start, "images": images}


def _run_chunks(job: Callable[[Any], dict[str, Any]], args: list[Any], workers: int):
    """Yield chunk results as they finish; in-process for one worker (no pool start-up, no pickling)."""
    if workers <= 1 or len(args) <= 1:
        for a in args:
            yield job(a)
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(args)))
    try:
        pending = set()
        it = iter(args)
        # Bounded in-flight work: results stream back in completion order, memory stays flat.
        for a in it:
            pending.add(pool.submit(job, a))
            if len(pending) >= 4 * workers:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                yield f.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(job, nxt))
    finally:
        # On Ctrl-C (or any error) drop the queued chunks instead of finishing them: they are redone on resume.
        pool.shutdown(wait=True, cancel_futures=True)


def _npy_data_offset(path: Path) -> int:
    """Byte offset of the array data in a .npy file (after its header)."""
    return int(np.load(path, mmap_mode="r").offset)


def _read_journal(path: Path) -> dict[int, dict[str, Any]]:
    """Finished chunks from ``done.jsonl``; a line torn by a kill is cut off (that chunk is redone)."""
    done: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return done
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if len(complete) != len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(len(complete))
    for line in complete.decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            done[int(rec["chunk"])] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return done
