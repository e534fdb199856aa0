"""The prepared-image cache: every PNG decoded once, resized, stored in one uint8 memory-mapped array.

Decoding 112,120 PNGs of 1024 px each epoch is what leaves GPUs idle on NIH; after ``cxr-bench prepare``
an image is a 64 KB slice of a memory map (at 256 px).

Layout of one cache (``<cache root>/<size>px-<conversion>-<resize>-<key16>/``)::

    images.npy      uint8 (N, H, W), standard .npy, opened with mmap; row i is ``index.csv`` row i
    index.csv       name, path, file_size, mtime_ns, orig_width, orig_height, orig_mode, status
    rejected.csv    image, path, reason: files that are missing, empty, not PNG, truncated or corrupt, and
                    ``.png`` links that dangle or loop
    meta.json       key, format version, size, resize, conversion, counts, checksums; written LAST, atomically
    plan.json       what the build is making (key, names, chunking); lets an interrupted build resume
    done.jsonl      one line per finished chunk (the per-chunk done record, with the chunk's checksum)

The *key* is the sha256 of the source identity (each listed image's name, byte size and mtime_ns, or
"missing"), the output size, resize method, conversion and :data:`FORMAT_VERSION`. Any change there gives
another key, hence another directory: a stale cache is never read, it is just no longer found.
:func:`cache_status` computes the key of a release without building anything (a stat per image).

Crash safety, at any moment of a ``kill -9``:

- Work is split into chunks of consecutive rows. A worker decodes a chunk, writes its bytes into
  ``images.npy`` with ``pwrite`` and ``fdatasync``s them, and only then does the parent append the chunk's
  line to ``done.jsonl`` (and fsync it). A chunk without its line is simply done again; a torn last line is
  ignored. Decoding is deterministic, so a resumed build is byte-identical to an uninterrupted one.
- ``meta.json`` is written atomically after everything else; :meth:`ImageCache.open` refuses a directory
  without it, so a half-built cache is never used as complete.
- A file lock serialises two ``prepare`` processes on the same key.

Integrity (nothing on disk is trusted): each chunk's bytes get a BLAKE2b-128 checksum when they are
written (about 0.7 GB/s on one core, i.e. 0.16 s for a 256-px cache of the bundled sample, 10 s for all of
NIH at 256 px); ``meta.json`` records them with the sha256 of ``index.csv`` and ``rejected.csv``.
:meth:`ImageCache.open` checks the file's exact size and header, the two CSVs and, by default, every chunk
when the array is at most :data:`QUICK_VERIFY_BYTES`, else a random sample of that many bytes
(``prepare --verify`` checks every chunk). A build or resume checks every chunk it keeps against its
journal checksum, so a damaged cache (truncated, overwritten, a CSV edited) is repaired by rebuilding
exactly the chunks that no longer match; the rest is kept. The journal's line is the one source of truth
for a chunk's digest (it is written, fsynced, when the chunk's bytes are): ``meta.json``'s copy must agree
with it, and a ``meta.json`` without checksums gets the journal's, never digests of whatever bytes are
there now (which would bless damaged pixels).

Rejected rows keep their slot (filled with zeros) so slot numbers never depend on which files failed;
:meth:`ImageCache.slots` maps them to -1.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from filelock import FileLock
from PIL import Image

from ..errors import CacheError, ImageError, errno_suffix
from ..utils.io import atomic_write_json, atomic_write_text, read_json, remove_stale_temps, sha256_bytes
from ..utils.progress import progress as progress_bar
from .discovery import link_problem
from .grayscale import get_conversion, gray_image, open_png

if TYPE_CHECKING:  # pragma: no cover
    from .release import NIHRelease

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_ENV = "CXR_BENCH_CACHE"
DEFAULT_CHUNK = 64
CHECKSUM = "blake2b-128"
# ImageCache.open checks every chunk of an array up to this size (0.2 s of hashing), a sample beyond.
QUICK_VERIFY_BYTES = 128 << 20
# Bytes per image besides its pixels: index.csv and rejected.csv rows, journal and checksum entries.
ROW_OVERHEAD_BYTES = 200
VERIFY_MODES = ("quick", "full", "none")

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
MISSING = "missing: no file under the data root"


class CacheDamaged(CacheError):
    """A complete cache whose files no longer match what was recorded when it was written.

    ``chunks`` lists the chunks whose checksum failed (empty when the damage is elsewhere: size, header,
    a CSV). :func:`build_cache` repairs it; a direct :meth:`ImageCache.open` only reports it.
    """

    def __init__(self, message: str, chunks: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.chunks = tuple(chunks)


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
    """``[name, file_size, mtime_ns]`` per image (``[name, None, None]`` when the file cannot be stat'ed)."""
    return _stat_sources(paths)[0]


def _stat_sources(paths: Mapping[str, Path | None]) -> tuple[list[list[Any]], dict[str, str]]:
    """:func:`source_identity` and, per image without a usable file, why (missing, dangling link, loop)."""
    out: list[list[Any]] = []
    problems: dict[str, str] = {}
    for name, path in paths.items():
        if path is None:
            out.append([name, None, None])
            problems[name] = MISSING
            continue
        try:
            st = os.stat(path)
        except OSError as e:
            out.append([name, None, None])
            problems[name] = link_problem(path, e)
        else:
            out.append([name, st.st_size, st.st_mtime_ns])
    return out, problems


def cache_key(identity: Sequence[Sequence[Any]], size: int, resize: str, conversion: str) -> str:
    blob = json.dumps({"format_version": FORMAT_VERSION, "size": size, "resize": resize,
                       "conversion": conversion, "sources": identity}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_dir_name(size: int, conversion: str, resize: str, key: str) -> str:
    return f"{size}px-{conversion}-{resize}-{key[:16]}"


def estimate_cache_bytes(n_images: int, image_size: int) -> int:
    """Disk space a cache of ``n_images`` images of ``image_size`` px takes (pixels, header, CSVs, journal).

    An upper estimate: 112,120 images at 256 px are 7.35 GB of pixels plus about 22 MB of the rest.
    """
    return 128 + int(n_images) * (int(image_size) ** 2 + ROW_OVERHEAD_BYTES) + 4096


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes (for this user) on the filesystem that holds ``path``, or would hold it once created."""
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError as e:
        raise CacheError(f"cannot read the free disk space of {p}: {e.strerror or e}") from e


def check_free_space(path: str | os.PathLike, needed_bytes: int, *, what: str = "the image cache") -> None:
    """Raise :class:`CacheError` if the filesystem of ``path`` has less than ``needed_bytes`` free.

    For a run's pre-check: ``check_free_space(cache_root, sum of cache_status(...).bytes_needed)``.
    """
    free = free_bytes(path)
    if needed_bytes > free:
        raise CacheError(f"not enough disk space for {what} under {path}: it needs {_size(needed_bytes)}, "
                         f"{_size(free)} are free; free some space or pass another --cache-dir")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class CacheStatus:
    """Where a release's cache stands, found without building anything (see :func:`cache_status`)."""

    key: str
    dir: Path
    complete: bool  # meta.json of this key exists (its contents are checked when the cache is opened)
    bytes_needed: int  # disk space a prepare would still take (0 when complete)


def cache_status(release: NIHRelease | str | os.PathLike | None, size: int = 256, *,
                 names: Sequence[str] | None = None, resize: str = "lanczos", conversion: str = "identity",
                 cache_dir: str | os.PathLike | None = None) -> CacheStatus:
    """The key :func:`prepare_cache` would give these arguments now, where that cache lives, whether it is
    complete, and how much disk it still needs; costs one directory scan and one ``stat`` per image.

    The key hashes each image's name, byte size and mtime_ns (see the module docstring), not its bytes:
    reading the bytes would mean reading the whole release (45 GB for NIH) for every check. Any tool that
    writes an image anew gives it a new mtime; a copy that keeps the mtime of another file (``cp -p``,
    ``rsync -a``, ``tar x``) is still noticed unless the byte size is also identical.
    """
    paths = _source_paths(_as_release(release), names)
    _check_arguments(size, resize, conversion)
    identity, problems = _stat_sources(paths)
    key = cache_key(identity, size, resize, conversion)
    directory = _cache_root(cache_dir) / cache_dir_name(size, conversion, resize, key)
    try:
        complete = read_json(directory / META_FILE).get("key") == key
    except (OSError, ValueError, AttributeError):
        complete = False
    needed = 0
    if not complete:
        needed = estimate_cache_bytes(len(paths) - len(problems), size)
        try:
            needed = max(0, needed - os.stat(directory / IMAGES_FILE).st_blocks * 512)
        except (OSError, AttributeError):
            pass
    return CacheStatus(key, directory, complete, needed)


def release_cache_key(release: NIHRelease | str | os.PathLike | None, size: int = 256, *,
                      names: Sequence[str] | None = None, resize: str = "lanczos",
                      conversion: str = "identity") -> str:
    """The cache key of the release's images as they are on disk now (see :func:`cache_status`)."""
    return cache_status(release, size, names=names, resize=resize, conversion=conversion).key


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
        self.checked_chunks = 0  # chunks whose checksum was verified when this object was made
        self.rebuilt_chunks: tuple[int, ...] = ()  # chunks found damaged and rebuilt by that build

    @classmethod
    def open(cls, directory: str | os.PathLike, *, verify: str = "quick",
             rng: np.random.Generator | None = None) -> ImageCache:
        """Open a complete cache; :class:`CacheError` if it is unfinished or of another format,
        :class:`CacheDamaged` if its files no longer match what was recorded when it was written.

        ``verify``: ``quick`` (size, header, CSVs, and the chunk checksums up to :data:`QUICK_VERIFY_BYTES`,
        chunks drawn from ``rng`` beyond that), ``full`` (every chunk) or ``none`` (no chunk). ``rng``
        defaults to fresh OS entropy, so that successive opens of a big cache check different chunks; which
        chunks are checked never changes a result.
        """
        if verify not in VERIFY_MODES:
            raise CacheError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise CacheError(f"{directory} is not a complete image cache (no {META_FILE}); run "
                             "`cxr-bench prepare` again to finish or rebuild it")
        try:
            meta = read_json(meta_path)
            version = meta.get("format_version")
        except (OSError, ValueError, AttributeError) as e:
            raise CacheDamaged(f"{meta_path} is unreadable ({e}); run `cxr-bench prepare` again to "
                               "repair the cache") from e
        if version != FORMAT_VERSION:
            raise CacheError(f"{meta_path}: cache format {version} is not the current "
                             f"{FORMAT_VERSION}; run `cxr-bench prepare` to rebuild it")
        for name in (INDEX_FILE, REJECTED_FILE):
            recorded = (meta.get("file_sha256") or {}).get(name)
            if recorded is not None and _file_sha256(directory / name) != recorded:
                raise CacheDamaged(f"{directory / name} changed since the cache was written; run "
                                   "`cxr-bench prepare` again to repair the cache")
        index = pd.read_csv(directory / INDEX_FILE, dtype={"name": str, "path": str, "orig_mode": str,
                                                           "status": str}, keep_default_na=False)
        rejected_df = pd.read_csv(directory / REJECTED_FILE, dtype=str, keep_default_na=False)
        for path, df, needed in ((INDEX_FILE, index, {"name", "status"}),
                                 (REJECTED_FILE, rejected_df, {"image", "reason"})):
            if not needed <= set(df.columns):
                raise CacheError(f"{directory / path} does not match this cache format (columns "
                                 f"{sorted(df.columns)}); delete {directory} and prepare again")
        cache = cls(directory, meta, index, list(zip(rejected_df["image"], rejected_df["reason"])))
        _check_npy(directory / IMAGES_FILE, len(index), int(meta["size"]))
        cache._verify(verify, rng)
        shape = tuple(cache.array.shape)
        if shape != (len(index), meta["size"], meta["size"]) or cache.array.dtype != np.uint8:
            raise CacheError(f"{directory / IMAGES_FILE}: shape {shape} does not match {INDEX_FILE} "
                             f"({len(index)} rows, {meta['size']} px); delete {directory} and prepare again")
        return cache

    def _verify(self, mode: str, rng: np.random.Generator | None) -> None:
        if mode == "none":
            return
        ranges = _chunk_ranges(len(self.names), int(self.meta["chunk_size"]))
        digests = _recorded_digests(self.dir, self.meta, len(ranges))
        if digests is None:
            raise CacheDamaged(f"{self.dir / META_FILE} and {DONE_FILE} hold no chunk checksums; run "
                               "`cxr-bench prepare` again to rebuild the cache")
        which = [c for c in _chunks_to_check(ranges, self.size ** 2, mode, rng) if digests[c] is not None]
        actual = _chunk_digests(self.dir / IMAGES_FILE, self.size, ranges, which)
        bad = [c for c in which if actual[c] != digests[c]]
        self.checked_chunks = len(which)
        if bad:
            first = ranges[bad[0]]
            raise CacheDamaged(f"{self.dir / IMAGES_FILE}: {len(bad)} of {len(which)} checked chunk(s) do "
                               f"not match their checksum (first: chunk {bad[0]}, images "
                               f"{self.names[first[0]]} to {self.names[first[1] - 1]}); run "
                               "`cxr-bench prepare` again to rebuild them", bad)

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
                  chunk_size: int = DEFAULT_CHUNK, verify: str = "quick", chunk_pause_s: float = 0.0) -> ImageCache:
    """Build (or find, or finish, or repair) the cache of ``release``'s images; see the module docstring.

    ``chunk_pause_s``: seconds each decoding process waits after a chunk is durable (0: none); a slowed
    build is one a test can interrupt part-way.

    ``release`` may be an :class:`~cxr_bench.data.release.NIHRelease` or a data root (None: the bundled
    sample). ``names`` restricts the cache to those images (default: every image of the metadata, in
    metadata order). ``cache_dir`` is the cache *root* (default :func:`default_cache_root`); the cache
    itself is a subdirectory named by its key. Missing and undecodable images, and ``.png`` links that
    dangle or loop, are listed in ``rejected.csv`` and :attr:`ImageCache.rejected`, logged, and skipped.
    ``verify`` is how a complete cache is checked before it is reused (see :meth:`ImageCache.open`).
    """
    release = _as_release(release)
    return build_cache(_source_paths(release, names), size, resize=resize, conversion=conversion,
                       cache_dir=cache_dir, workers=workers, progress=progress, chunk_size=chunk_size,
                       source_root=str(release.root), verify=verify, chunk_pause_s=chunk_pause_s)


def _as_release(release: NIHRelease | str | os.PathLike | None) -> NIHRelease:
    if release is None or isinstance(release, (str, os.PathLike)):
        from .release import NIHRelease

        return NIHRelease.open(release)
    return release


def _source_paths(release: NIHRelease, names: Sequence[str] | None) -> dict[str, Path | None]:
    """Name -> file for ``names`` (default: the metadata); unreadable links keep their path so that the
    build can say what is wrong with them, an image with no entry at all gets None."""
    wanted = list(release.metadata["image"]) if names is None else list(names)
    scan = release.image_scan()
    broken = {n: p for n, (p, _) in scan.broken.items()}
    return {name: scan.paths.get(name) or broken.get(name) for name in wanted}


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()


def _check_arguments(size: int, resize: str, conversion: str, chunk_size: int = DEFAULT_CHUNK) -> None:
    if size < 1:
        raise CacheError(f"image size must be positive, got {size}")
    if chunk_size < 1:
        raise CacheError(f"chunk size must be positive, got {chunk_size}")
    resize_filter(resize)
    get_conversion(conversion)


def build_cache(paths: Mapping[str, Path | None], size: int, *, resize: str = "lanczos",
                conversion: str = "identity", cache_dir: str | os.PathLike | None = None,
                workers: int | None = None, progress: bool | None = None,
                chunk_size: int = DEFAULT_CHUNK, source_root: str = "", verify: str = "quick",
                chunk_pause_s: float = 0.0) -> ImageCache:
    """The cache of ``paths`` (image name -> PNG path, None for a listed image with no file); ``chunk_pause_s``
    as for :func:`prepare_cache`.

    The engine of :func:`prepare_cache`; benchmarks call it directly on a list of files. An OS error on
    the cache side (a full disk, a cache root that is a file, no permission) is a :class:`CacheError`
    naming the path and the cause; the chunks already finished are kept for the next attempt.
    """
    _check_arguments(size, resize, conversion, chunk_size)
    if verify not in VERIFY_MODES:
        raise CacheError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    identity, problems = _stat_sources(paths)
    key = cache_key(identity, size, resize, conversion)
    root = _cache_root(cache_dir)
    directory = root / cache_dir_name(size, conversion, resize, key)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheError(_mkdir_message(directory, root, e)) from e
    try:
        with FileLock(str(directory / LOCK_FILE)):
            cache = _reuse(directory, key, verify)
            if cache is not None:
                return cache
            builder = _Builder(directory, key, identity, problems, paths, size, resize, conversion,
                               chunk_size, source_root)
            return builder.run(_n_workers(workers), progress, chunk_pause_s)
    except OSError as e:
        raise CacheError(_write_message(directory, e)) from e
    except BrokenProcessPool as e:  # a worker killed from outside (out of memory, most often)
        raise CacheError(f"image cache {directory}: a decoding process died ({e}); run the same command again "
                         "with fewer --workers (the chunks already finished are kept)") from e


def _reuse(directory: Path, key: str, verify: str) -> ImageCache | None:
    """The complete cache in ``directory`` if it is intact; else None, with ``meta.json`` removed so that
    the build that follows repairs it (the chunks that still match their checksums are kept)."""
    if not (directory / META_FILE).is_file():
        return None
    try:
        cache = ImageCache.open(directory, verify=verify)
    except CacheError as e:
        log.warning("image cache %s is damaged (%s); repairing it", directory, e)
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("image cache %s is damaged (%s: %s); repairing it", directory, type(e).__name__, e)
    else:
        if cache.key == key:
            log.info("image cache %s is complete (%d images)", directory, len(cache))
            return cache
    (directory / META_FILE).unlink()
    return None


def _recorded_digests(directory: Path, meta: dict[str, Any], n_chunks: int) -> list[str | None] | None:
    """Each chunk's digest as the journal recorded it when the chunk was written (``meta.json``'s list must
    agree; without one, the journal's alone); None when neither holds any.
    Raises :class:`CacheDamaged` where they disagree or the list has the wrong length."""
    journal = _read_journal(directory / DONE_FILE) if (directory / DONE_FILE).is_file() else {}
    from_journal = {c: r["digest"] for c, r in journal.items()
                    if 0 <= c < n_chunks and isinstance(r.get("digest"), str)}
    listed = meta.get("chunk_digests")
    if listed is not None:
        if not isinstance(listed, list) or len(listed) != n_chunks:
            raise CacheDamaged(f"{directory / META_FILE} lists {len(listed) if isinstance(listed, list) else 0} "
                               f"chunk checksums for {n_chunks} chunks; run `cxr-bench prepare` again to repair "
                               "the cache")
        differ = sorted(c for c, d in from_journal.items() if listed[c] != d)
        if differ:
            raise CacheDamaged(f"{directory / META_FILE}: the checksums of {len(differ)} chunk(s) differ from "
                               f"those recorded in {DONE_FILE} when they were written (first: chunk {differ[0]}); "
                               "run `cxr-bench prepare` again to rebuild them", differ)
        return list(listed)
    if not from_journal:
        return None
    return [from_journal.get(c) for c in range(n_chunks)]


def _mkdir_message(directory: Path, root: Path, e: OSError) -> str:
    blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return (f"cannot create the image cache under {root}: {blocker} is a file, not a folder; pass a "
                "folder as --cache-dir (or data.cache_dir)")
    return f"cannot create the image cache folder {directory}: {e.strerror or e}"


def _write_message(directory: Path, e: OSError) -> str:
    where = e.filename or directory
    code = errno_suffix(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some disk space or pass another --cache-dir"
    else:
        advice = "fix that"
    return (f"image cache {directory}: {where}: {e.strerror or e}{code}; {advice}, then run the same command "
            "again (the chunks already finished are kept)")


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

    def __init__(self, directory: Path, key: str, identity: list[list[Any]], problems: Mapping[str, str],
                 paths: Mapping[str, Path | None], size: int, resize: str, conversion: str, chunk_size: int,
                 source_root: str) -> None:
        self.dir = directory
        self.key = key
        self.size = size
        self.resize = resize
        self.conversion = conversion
        self.source_root = source_root
        self.stats = {row[0]: row for row in identity}
        # (name, path or "", reason) of every listed image without a usable file, in listing order.
        self.missing = [(n, "" if paths[n] is None else str(paths[n]), problems[n]) for n in paths
                        if n in problems]
        self.present = [(n, str(p)) for n, p in paths.items() if n not in problems]
        self.plan = {"key": key, "format_version": FORMAT_VERSION, "size": size, "resize": resize,
                     "conversion": conversion, "names": [n for n, _ in self.present],
                     "chunk_size": chunk_size}
        self.ranges = _chunk_ranges(len(self.present), chunk_size)
        self.row_bytes = size * size
        self.rebuilt: list[int] = []

    # -------------------------------------------------------------------------------------- driver
    def run(self, workers: int, progress: bool | None, chunk_pause_s: float = 0.0) -> ImageCache:
        t0 = time.perf_counter()
        remove_stale_temps(self.dir)
        done = self._keep_intact(self._start_or_resume())
        n = len(self.present)
        todo = [c for c in range(len(self.ranges)) if c not in done]
        if done and todo:
            log.info("resuming image cache %s: %d of %d chunks already done", self.dir, len(done),
                     len(self.ranges))
        left = sum(self.ranges[c][1] - self.ranges[c][0] for c in todo)
        if todo:
            self._check_space(left)
        args = [(c, self.ranges[c][0], self.present[self.ranges[c][0]:self.ranges[c][1]]) for c in todo]
        job = _ChunkJob(str(self.dir / IMAGES_FILE), len(_npy_header(n, self.size)), self.size, self.resize,
                        self.conversion, chunk_pause_s)
        with open(self.dir / DONE_FILE, "a", encoding="utf-8") as journal, \
                progress_bar(total=n, initial=n - left, desc="prepare", unit="img", enabled=progress) as bar:
            for result in _run_chunks(job, args, workers):
                done[result["chunk"]] = result
                journal.write(json.dumps(result, separators=(",", ":")) + "\n")
                journal.flush()
                os.fsync(journal.fileno())
                bar.update(len(result["images"]))
        return self._finish(done, time.perf_counter() - t0, workers)

    def _check_space(self, rows_left: int) -> None:
        """Refuse at once, rather than hours later, when the disk cannot hold what is left to write."""
        st = os.stat(self.dir / IMAGES_FILE)
        unallocated = max(0, st.st_size - getattr(st, "st_blocks", 0) * 512)
        needed = min(unallocated, rows_left * self.row_bytes) + rows_left * ROW_OVERHEAD_BYTES
        check_free_space(self.dir, needed, what=f"{rows_left} images of the image cache")

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

    def _keep_intact(self, done: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """The journal's chunks whose bytes are still those recorded; the file's header and length are
        put right first (a truncated file grows back to its size, the chunks past the cut are redone)."""
        path = self.dir / IMAGES_FILE
        header = _npy_header(len(self.present), self.size)
        expected = len(header) + len(self.present) * self.row_bytes
        with open(path, "r+b") as fh:
            if fh.read(len(header)) != header:
                log.warning("%s: the .npy header is damaged; writing it again", path)
                fh.seek(0)
                fh.write(header)
            actual = os.fstat(fh.fileno()).st_size
            if actual != expected:
                log.warning("%s is %d bytes instead of %d; the chunks past byte %d are built again", path,
                            actual, expected, actual)
                fh.truncate(expected)
            fh.flush()
            os.fsync(fh.fileno())
        kept: dict[int, dict[str, Any]] = {}
        for c, rec in done.items():
            if not 0 <= c < len(self.ranges):
                continue
            start, end = self.ranges[c]
            if rec.get("start") != start or len(rec.get("images", ())) != end - start:
                continue
            if len(header) + end * self.row_bytes > actual:
                self.rebuilt.append(c)
            else:
                kept[c] = rec
        digests = _chunk_digests(path, self.size, self.ranges, sorted(kept))
        for c in sorted(kept):
            if kept[c].get("digest") != digests[c]:
                start, end = self.ranges[c]
                log.warning("%s: chunk %d (images %s to %s) does not match its recorded checksum; building it again",
                            path, c, self.present[start][0], self.present[end - 1][0])
                del kept[c]
                self.rebuilt.append(c)
        return kept

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
        rejected: list[tuple[str, str, str]] = list(self.missing)
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
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "checksum": CHECKSUM, "chunk_digests": [done[c]["digest"] for c in range(len(self.ranges))],
            "file_sha256": {INDEX_FILE: sha256_bytes(index.getvalue().encode()),
                            REJECTED_FILE: sha256_bytes(rej.getvalue().encode())},
        })
        if self.rebuilt:
            log.warning("image cache %s: rebuilt %d damaged chunk(s): %s", self.dir, len(self.rebuilt),
                        ", ".join(map(str, sorted(self.rebuilt))))
        log.info("image cache %s: %d images (%d rejected) in %.1f s", self.dir, n_ok, len(rejected), seconds)
        # Every chunk was just checked or written: the open only checks the layout.
        cache = ImageCache.open(self.dir, verify="none")
        cache.checked_chunks = len(self.ranges)
        cache.rebuilt_chunks = tuple(sorted(self.rebuilt))
        return cache


# ---------------------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class _ChunkJob:
    npy_path: str
    offset: int
    size: int
    resize: str
    conversion: str
    pause_s: float = 0.0

    def __call__(self, arg: tuple[int, int, list[tuple[str, str]]]) -> dict[str, Any]:
        """Decode one chunk, write it at its place in the .npy, make it durable, report per-image results
        and the checksum of the bytes written."""
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
        data = block.data.cast("B")
        digest = _digest(data)
        fd = os.open(self.npy_path, os.O_WRONLY)
        try:
            pos = self.offset + start * self.size * self.size
            while data:
                written = os.pwrite(fd, data, pos)
                data, pos = data[written:], pos + written
            os.fdatasync(fd) if hasattr(os, "fdatasync") else os.fsync(fd)
        except OSError as e:
            e.filename = e.filename or self.npy_path
            raise
        finally:
            os.close(fd)
        if self.pause_s > 0:
            time.sleep(self.pause_s)
        return {"chunk": chunk, "start": start, "images": images, "digest": digest}


def _run_chunks(job: Callable[[Any], dict[str, Any]], args: list[Any],
                workers: int) -> Iterator[dict[str, Any]]:
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
        # On Ctrl-C (or any error) drop the queued chunks instead of finishing them: resume redoes them.
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------- checksums
def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256_bytes(path.read_bytes())
    except OSError:
        return None


def _npy_header(n: int, size: int) -> bytes:
    """The exact header ``open_memmap`` writes for the cache's array (format 1.0, 64-byte aligned)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (n, size, size)})
    return buf.getvalue()


def _check_npy(path: Path, n: int, size: int) -> None:
    """Cheap layout check of images.npy: exact byte length and header (no pixel read)."""
    header = _npy_header(n, size)
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(header))
            length = os.fstat(fh.fileno()).st_size
    except OSError as e:
        raise CacheDamaged(f"{path}: {e.strerror or e}; run `cxr-bench prepare` again to repair the "
                           "cache") from e
    expected = len(header) + n * size * size
    if length != expected:
        raise CacheDamaged(f"{path} is {length} bytes instead of {expected} (truncated or extended); run "
                           "`cxr-bench prepare` again to repair the cache")
    if head != header:
        raise CacheDamaged(f"{path}: the .npy header is damaged; run `cxr-bench prepare` again to repair "
                           "the cache")


def _chunk_ranges(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]


def _chunks_to_check(ranges: Sequence[tuple[int, int]], row_bytes: int, mode: str,
                     rng: np.random.Generator | None) -> list[int]:
    total = sum(end - start for start, end in ranges) * row_bytes
    if mode == "full" or total <= QUICK_VERIFY_BYTES:
        return list(range(len(ranges)))
    per_chunk = max(1, (ranges[0][1] - ranges[0][0]) * row_bytes)
    k = min(len(ranges), max(1, QUICK_VERIFY_BYTES // per_chunk))
    rng = rng if rng is not None else np.random.default_rng()
    return sorted(int(c) for c in rng.choice(len(ranges), size=k, replace=False))


def _chunk_digests(path: Path, size: int, ranges: Sequence[tuple[int, int]],
                   which: Iterable[int]) -> dict[int, str]:
    """Checksums of the chunks ``which`` of images.npy as they are on disk (a short read hashes short)."""
    out: dict[int, str] = {}
    which = list(which)
    if not which:
        return out
    row_bytes = size * size
    offset = len(_npy_header(ranges[-1][1], size))
    fd = os.open(path, os.O_RDONLY)
    try:
        for c in which:
            start, end = ranges[c]
            out[c] = _digest(os.pread(fd, (end - start) * row_bytes, offset + start * row_bytes))
    finally:
        os.close(fd)
    return out


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
