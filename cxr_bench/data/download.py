"""``cxr-bench data download``: fetch the NIH ChestX-ray14 release into a data root, resumably and verified.

What is fetched is data, not code: ``nih_release.json`` beside this module lists each part (the 12 image
archives of NIH's ``batch_download_zips.py``, then ``Data_Entry_2017_v2020.csv``, the two split lists and
``BBox_List_2017.csv``) with its file name, URL and, where known, size and image-name range. ``base_url``
(a mirror serving the same file names) or a list file of one's own replaces the URLs.

Why each step is the way it is:

- Downloads go to ``<file>.part`` and continue with an HTTP ``Range`` request after an interruption (a
  killed process, a dropped connection); a server that ignores ``Range`` (answers 200) is detected and the
  part is fetched again from the start. Only a complete file (its announced length) is renamed to its name,
  so a file under its final name is always whole.
- A resume never stitches two versions of a file: the first response's validator (a strong ETag, else
  Last-Modified) and length are kept in ``<file>.part.json`` and sent as ``If-Range``; a 206 whose validator
  or length differs from the recorded one (a server that ignores ``If-Range``) makes it start over.
- Work and size are bounded: each file gets at most :data:`MAX_REQUESTS` requests, ``retries`` attempts in a
  row and ``stall_timeout`` seconds without getting past the furthest byte reached so far (a restart is
  not progress); a file is never larger than its ``size``, its ``max_size`` (an upper bound recorded for each
  NIH archive, which NIH publishes no sizes for) or :data:`UNKNOWN_SIZE_CAP`; extraction writes at most
  :data:`EXTRACT_RATIO` times the archive's size. Redirects are followed to http(s) URLs only.
- NIH publishes no checksums. The sha256 of every file is computed while it streams in and recorded in
  ``cxr-bench-download.json`` beside the data; a colleague's copy or a second download is compared against
  that manifest (:func:`verify_download`).
- An archive is extracted into a staging folder and only moved into place after the whole gzip stream
  (its CRC) and tar structure checked out: a corrupted archive leaves no half-trusted images behind. It is
  deleted, and its manifest entry dropped, so the next call fetches it again. Members pass tarfile's
  ``"data"`` filter (no absolute paths, no ``..``, no links leaving the folder, no devices); only regular
  ``.png`` files are kept.
- Images land in the NIH layout: ``images_001/images/*.png`` ... (``layout="parts"``, each archive in its own
  folder, as NIH's archives unpack and as the Kaggle mirror ships them) or one ``images/`` folder
  (``layout="flat"``). ``cxr_bench.data.discovery`` reads both. A file already there is never replaced: an
  identical one is kept, a different one stops the extraction of that archive (named; the archive is kept).
- File names from a URL list or a manifest are untrusted: one printable name component (no control, format,
  bidi or line-separator characters), not one of the tool's own files, and :func:`verify_download` hashes
  nothing that resolves outside the data root.
- An OS error (disk full, unwritable target) is one :class:`DownloadError` naming the path; nothing complete
  is removed, and a partial download is kept to be resumed.
"""

from __future__ import annotations

import contextlib
import filecmp
import gzip
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .. import __version__
from ..errors import CxrBenchError
from ..utils.io import atomic_write_json, atomic_write_with, read_json, sha256_file
from ..utils.progress import progress, progress_mode
from ..utils.text import describe_char, first_unprintable

log = logging.getLogger(__name__)

RELEASE_LIST = "nih_release.json"
MANIFEST_NAME = "cxr-bench-download.json"
ARCHIVE_DIR = "archives"
PART_SUFFIX = ".part"
PART_STATE_SUFFIX = ".part.json"
MAX_REQUESTS = 200
STALL_SECONDS = 600.0
# A file whose list gives neither size nor max_size is cut off here (NIH's metadata files are ~9 MB, its
# archives 2-4.5 GB).
UNKNOWN_SIZE_CAP = {"images": 16 << 30, "metadata": 1 << 30}
# PNGs do not compress: an archive of them expands to about its own size; a bomb to thousands of times it.
EXTRACT_RATIO = 4
EXTRACT_SLACK = 64 << 20
MAX_MEMBERS = 200_000
_TOOL_NAME = re.compile(r"images(_\d+)?|archives|cxr-bench-download\.json|.*\.part(\.json)?|\.?extracting-.*",
                        re.IGNORECASE)
_FOLDER = re.compile(r"images|images_\d{3}/images")
LAYOUTS = ("parts", "flat")
KINDS = ("images", "metadata")
SCHEMA_VERSION = 1
CHUNK = 1 << 20
USER_AGENT = f"cxr-bench/{__version__} (+https://nihcc.app.box.com/v/ChestXray-NIHCC)"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class DownloadError(CxrBenchError):
    """A part could not be fetched, verified, extracted or written. The message names the file."""


# ------------------------------------------------------------------------------------------ the list
@dataclass(frozen=True)
class Part:
    """One file of a release. ``size`` / ``sha256``, when given, are enforced on download."""

    file: str
    kind: str  # "images" (an archive of PNGs) or "metadata" (a file placed in the data root)
    url: str | None
    part: int | None = None  # image archives are numbered 1.. (what --parts selects)
    size: int | None = None
    max_size: int | None = None  # an upper bound where the exact size is not published (NIH's archives)
    sha256: str | None = None
    bundled: str | None = None  # metadata: the copy shipped under cxr_bench/bundled/ (used when url is None)
    reference_size: int | None = None  # metadata: of the bundled copy, uncompressed (a mirror is compared)
    reference_sha256: str | None = None
    images: int | None = None  # image archives: how many PNGs, first and last name (sorted)
    first: str | None = None
    last: str | None = None

    def folder(self, layout: str) -> str:
        """Where this archive's PNGs go, relative to the data root."""
        return f"images_{self.part:03d}/images" if layout == "parts" else "images"


@dataclass(frozen=True)
class PartList:
    name: str
    origin: str  # where the list came from (package, a file, plus any --base-url)
    parts: tuple[Part, ...]

    @property
    def archives(self) -> list[Part]:
        return [p for p in self.parts if p.kind == "images"]

    def to_json(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in vars(p).items() if v is not None} for p in self.parts]


def load_part_list(path: str | os.PathLike | None = None) -> PartList:
    """The packaged NIH list (``path=None``) or a list file in the same JSON format, validated."""
    if path is None:
        text = resources.files(__package__).joinpath(RELEASE_LIST).read_text(encoding="utf-8")
        where = f"cxr_bench/data/{RELEASE_LIST}"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DownloadError(f"cannot read the URL list {path}: {_reason(e)}") from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DownloadError(f"{where}: not valid JSON (line {e.lineno}: {e.msg})") from e
    return _parse_list(raw, where)


def _parse_list(raw: Any, where: str) -> PartList:
    if not isinstance(raw, dict) or not isinstance(raw.get("parts"), list) or not raw["parts"]:
        raise DownloadError(f"{where}: expected an object with a non-empty \"parts\" list")
    if raw.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise DownloadError(f"{where}: schema {raw.get('schema')!r} is not supported "
                            f"(expected {SCHEMA_VERSION})")
    known = {f for f in Part.__dataclass_fields__}
    parts: list[Part] = []
    for i, item in enumerate(raw["parts"]):
        at = f"{where}: parts[{i}]"
        if not isinstance(item, dict):
            raise DownloadError(f"{at}: expected an object")
        unknown = sorted(set(item) - known)
        if unknown:
            raise DownloadError(f"{at}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        try:
            p = Part(**item)
        except TypeError as e:
            raise DownloadError(f"{at}: {e}") from None
        parts.append(_check_part(p, at))
    for what, values in (("file", [p.file for p in parts]), ("part number", [p.part for p in parts])):
        seen: set[object] = set()
        for v in values:
            if v is not None and v in seen:
                raise DownloadError(f"{where}: {what} {v!r} is listed twice")
            seen.add(v)
    return PartList(name=str(raw.get("name", "release")), origin=where, parts=tuple(parts))


def check_file_name(name: Any, at: str) -> str:
    """``name`` if it can be a file of the data root: one plain, printable, visible name component that is
    not one of the tool's own files or folders. Everything a URL list or manifest names passes here."""
    if (not isinstance(name, str) or not name or len(name) > 255 or name != PurePosixPath(name).name
            or "\\" in name or name.startswith(".")):
        raise DownloadError(f"{at}: file {name!r} must be a plain file name (no folders, not hidden)")
    bad = first_unprintable(name, spaces=False)
    if bad is not None:
        raise DownloadError(f"{at}: file {name!r} holds the unprintable character {describe_char(bad)}; use a "
                            "plain name")
    if _TOOL_NAME.fullmatch(name):
        raise DownloadError(f"{at}: file {name!r} is a name cxr-bench uses for its own files or folders; "
                            "rename it")
    return name


def _check_part(p: Part, at: str) -> Part:
    name = check_file_name(p.file, at)
    if p.kind not in KINDS:
        raise DownloadError(f"{at} ({name}): kind {p.kind!r} must be one of {', '.join(KINDS)}")
    if p.url is not None:
        _check_url(p.url, f"{at} ({name})")
    for key in ("size", "max_size", "reference_size", "images", "part"):
        v = getattr(p, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise DownloadError(f"{at} ({name}): {key} must be a non-negative integer, got {v!r}")
    for key in ("sha256", "reference_sha256"):
        v = getattr(p, key)
        if v is not None and not (isinstance(v, str) and _SHA256.fullmatch(v)):
            raise DownloadError(f"{at} ({name}): {key} must be 64 lowercase hex digits, got {v!r}")
    if p.kind == "images":
        if p.part is None or p.part < 1:
            raise DownloadError(f"{at} ({name}): an image archive needs a part number >= 1")
        if not name.endswith(_ARCHIVE_SUFFIXES):
            raise DownloadError(f"{at} ({name}): an image archive must be a "
                                f"{' / '.join(_ARCHIVE_SUFFIXES)} file")
    elif p.url is None and p.bundled is None:
        raise DownloadError(f"{at} ({name}): needs a url (or a bundled copy)")
    return p


def _check_url(url: Any, at: str) -> None:
    parsed = urllib.parse.urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DownloadError(f"{at}: url {url!r} must be an http:// or https:// URL")


def with_base_url(parts: PartList, base_url: str) -> PartList:
    """Every part fetched from ``base_url`` + its file name (a mirror serving the same names)."""
    _check_url(base_url, "--base-url")
    base = base_url if base_url.endswith("/") else base_url + "/"
    return replace(parts, origin=f"{parts.origin} at {base}",
                   parts=tuple(replace(p, url=urllib.parse.urljoin(base, urllib.parse.quote(p.file)))
                               for p in parts.parts))


def read_url_overrides(path: str | os.PathLike, parts: PartList) -> PartList:
    """``parts`` with URLs from ``path``: a whole JSON list, or text lines ``<file name> <url>``
    (``#`` comments) replacing the URLs of the files they name."""
    path = Path(path)
    if path.suffix == ".json":
        return load_part_list(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DownloadError(f"cannot read the URL list {path}: {_reason(e)}") from e
    by_name = {p.file: p for p in parts.parts}
    urls: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0] not in by_name:
            known = ", ".join(sorted(by_name))
            raise DownloadError(f"{path} line {n}: expected '<file name> <url>' with a file name of the list "
                                f"({known}); got {line.strip()!r}")
        _check_url(fields[1], f"{path} line {n}")
        urls[fields[0]] = fields[1]
    return replace(parts, origin=f"{parts.origin} with URLs from {path}",
                   parts=tuple(replace(p, url=urls.get(p.file, p.url)) for p in parts.parts))


def select_parts(parts: PartList, spec: str | None) -> list[Part]:
    """The archives named by ``spec`` (``"1,3-4"``; None: all) plus every metadata file, in list order."""
    numbers = sorted(p.part for p in parts.archives if p.part is not None)
    if spec is None or not spec.strip():
        wanted = set(numbers)
    else:
        wanted = set()
        for token in spec.split(","):
            token = token.strip()
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
            if not m:
                raise DownloadError(f"--parts {spec!r}: {token!r} is not a number or a range like 3-5")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if lo > hi or lo not in numbers or hi not in numbers:
                span = f"{numbers[0]}-{numbers[-1]}" if numbers else "none"
                raise DownloadError(f"--parts {spec!r}: {token!r} is not among the archives of {parts.name} "
                                    f"({span})")
            wanted.update(range(lo, hi + 1))
    return [p for p in parts.parts if p.kind == "metadata" or p.part in wanted]


def format_part_numbers(numbers: Iterable[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3,5"`` (what ``--parts`` takes)."""
    out: list[str] = []
    nums = sorted(set(numbers))
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


# ------------------------------------------------------------------------------------------ manifest
def manifest_path(dest: str | os.PathLike) -> Path:
    return Path(dest) / MANIFEST_NAME


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """A download manifest, checked enough to be used (file -> record under ``files``)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise DownloadError(f"no download manifest at {path}; `cxr-bench data download` writes it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DownloadError(f"{path}: not a readable download manifest ({e})") from e
    if not (isinstance(data, dict) and isinstance(data.get("files"), dict)
            and isinstance(data.get("parts"), list)):
        raise DownloadError(f"{path}: not a cxr-bench download manifest (no 'files' / 'parts')")
    for file, rec in data["files"].items():
        _check_record(file, rec, f"{path}: files")
    return data


def _check_record(file: Any, rec: Any, at: str) -> None:
    """One manifest record, checked before any of it becomes a path or a number."""
    check_file_name(file, at)
    at = f"{at}[{file!r}]"
    if not isinstance(rec, dict):
        raise DownloadError(f"{at}: expected an object, got {type(rec).__name__}")
    if not (isinstance(rec.get("sha256"), str) and _SHA256.fullmatch(rec["sha256"])):
        raise DownloadError(f"{at}: sha256 must be 64 lowercase hex digits")
    for key in ("size", "images", "part"):
        v = rec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise DownloadError(f"{at}: {key} must be a non-negative integer, got {v!r}")
    folder = rec.get("folder")
    if folder is not None and not (isinstance(folder, str) and _FOLDER.fullmatch(folder)):
        raise DownloadError(f"{at}: folder {folder!r} is not images/ or images_NNN/images")
    for key in ("first", "last"):
        v = rec.get(key)
        if v is not None and not isinstance(v, str):
            raise DownloadError(f"{at}: {key} must be an image name")
    if rec.get("status") == "extracted" and folder is None:
        raise DownloadError(f"{at}: an extracted part needs its folder")


class _Manifest:
    """The manifest of one data root, updated by several worker threads, written atomically each time."""

    def __init__(self, dest: Path, parts: PartList, layout: str) -> None:
        self.path = manifest_path(dest)
        self.lock = threading.Lock()
        if self.path.exists():
            self.data = read_manifest(self.path)
            if self.data.get("layout") not in (None, layout) and self.data["files"]:
                raise DownloadError(
                    f"{dest} was downloaded with --layout {self.data['layout']}; run with the same layout "
                    f"(or into another folder)")
        else:
            self.data = {"schema": SCHEMA_VERSION, "files": {}}
        # The list of the latest call: data info reports the parts of this list that are missing.
        self.data.update({"tool": f"cxr-bench {__version__}", "release": parts.name, "list": parts.origin,
                          "layout": layout, "parts": parts.to_json()})

    def get(self, file: str) -> dict[str, Any] | None:
        with self.lock:
            rec = self.data["files"].get(file)
            return dict(rec) if isinstance(rec, dict) else None

    def put(self, file: str, record: dict[str, Any] | None) -> None:
        with self.lock:
            if record is None:
                self.data["files"].pop(file, None)
            else:
                self.data["files"][file] = record
            self.data["updated"] = _now()
            self.save()

    def save(self) -> None:
        try:
            atomic_write_json(self.path, self.data)
        except OSError as e:
            raise DownloadError(f"cannot write {self.path}: {e.strerror or e}") from e


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ progress
class _Progress:
    """A bar per file plus a total (bytes) on a terminal; off it, log lines per file (utils.progress)."""

    def __init__(self, enabled: bool | None, n_slots: int) -> None:
        self.enabled = enabled
        self.mode = progress_mode(enabled)
        self.lock = threading.Lock()
        self.total = progress(desc="total", total=0, unit="B", enabled=self.mode == "bar", unit_scale=True,
                              unit_divisor=1024, position=0)
        self.free_slots = list(range(1, n_slots + 1))

    @contextlib.contextmanager
    def file(self, name: str) -> Iterator[_FileBar]:
        with self.lock:
            slot = self.free_slots.pop(0) if self.free_slots else 1
        bar = _FileBar(self, name, slot)
        try:
            yield bar
        finally:
            bar.close()
            with self.lock:
                self.free_slots.insert(0, slot)

    def close(self) -> None:
        self.total.close()


class _FileBar:
    def __init__(self, owner: _Progress, name: str, slot: int) -> None:
        self.owner, self.name, self.slot = owner, name, slot
        self.bar: Any = None
        self.total: int | None = None
        self.counted = 0  # bytes of this file already added to the total bar

    def start(self, total: int | None, done: int) -> None:
        """(Re)start the file's bar: ``total`` bytes announced, ``done`` already on disk."""
        if self.bar is not None:
            self.bar.close()
        if done:
            log.info("%s: resuming at %s", self.name, _size(done))
        self.bar = progress(desc=self.name, total=total, unit="B", enabled=self.owner.enabled, initial=done,
                            unit_scale=True, unit_divisor=1024, position=self.slot, leave=False)
        with self.owner.lock:
            if total is not None and self.total is None:
                self.owner.total.total = (self.owner.total.total or 0) + total
            self.owner.total.update(done - self.counted)
            self.owner.total.refresh()
        self.total, self.counted = total, done

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.counted += n
        with self.owner.lock:
            self.owner.total.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


# ------------------------------------------------------------------------------------------ fetching
class _RedirectRefused(urllib.error.URLError):
    pass


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// as well; a download follows them to http(s) only."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        scheme = urllib.parse.urlparse(urllib.parse.urljoin(req.full_url, newurl)).scheme.lower()
        if scheme not in ("http", "https"):
            raise _RedirectRefused(f"{req.full_url} redirects to {newurl!r}; only http(s) is followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def open_url(request: urllib.request.Request, timeout: float) -> Any:
    """``urllib.request.urlopen`` that follows redirects to http(s) only."""
    return _OPENER.open(request, timeout=timeout)


class _Stopped(Exception):
    """Another part failed or the user interrupted: stop between chunks, keep the .part."""


def _write_chunk(fh: IO[bytes], data: bytes) -> None:
    fh.write(data)


def _reason(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or e)


def _os_error(action: str, path: Path, e: OSError, hint: str = "") -> DownloadError:
    return DownloadError(f"cannot {action} {path}: {e.strerror or e}{hint}")


def _content_range(header: str | None) -> tuple[int, int | None] | None:
    m = _CONTENT_RANGE.match(header or "")
    if not m:
        return None
    return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))


def _hash_existing(path: Path, hasher: Any) -> int:
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            hasher.update(block)
            n += len(block)
    return n


def _validator(headers: Any) -> str | None:
    """What ``If-Range`` may carry: a strong ETag, else Last-Modified (RFC 9110 13.1.5)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return str(etag)
    modified = headers.get("Last-Modified")
    return str(modified) if modified else None


def _read_part_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def download_file(url: str, final: Path, *, expected_size: int | None = None, retries: int = 3,
                  timeout: float = 60.0, bar: _FileBar | None = None, stop: threading.Event | None = None,
                  binary: bool = False, max_size: int | None = None, stall_timeout: float = STALL_SECONDS,
                  max_requests: int = MAX_REQUESTS) -> tuple[int, str]:
    """Fetch ``url`` into ``final`` through ``final.part``, resuming it; return (bytes, sha256).

    ``retries``: how many attempts in a row may fail to get past the furthest byte reached so far (a
    restart from zero is not progress); ``stall_timeout``: seconds allowed without such progress;
    ``max_requests``: requests in all. ``max_size``: the most bytes the file may have (``expected_size``,
    when given, is exact). ``binary``: an HTML answer is an error (file hosts answer a missing or
    rate-limited link with a web page and status 200).
    """
    part = final.with_name(final.name + PART_SUFFIX)
    state_path = final.with_name(final.name + PART_STATE_SUFFIX)
    limit = expected_size if expected_size is not None else max_size
    hasher = hashlib.sha256()
    have = _hash_existing(part, hasher) if part.is_file() else 0
    state = _read_part_state(state_path) if have else {}
    if state.get("url") not in (None, url):
        log.info("%s: the partial download came from %s; starting over", final.name, state.get("url"))
        have, hasher, state = 0, hashlib.sha256(), {}
    validator: str | None = state.get("validator") if isinstance(state.get("validator"), str) else None
    known_total: int | None = state.get("total") if isinstance(state.get("total"), int) else None
    failures = requests = changes = 0
    best, last_progress = have, time.monotonic()
    total: int | None = None

    def start_over() -> None:
        nonlocal have, hasher
        have, hasher = 0, hashlib.sha256()

    def changed(old: object, new: object) -> None:
        nonlocal changes, best
        changes += 1
        log.info("%s: the file changed on the server (%s -> %s); starting over", final.name, old, new)
        if changes > retries:
            raise DownloadError(f"{final.name}: the file at {url} changed {changes} times during the download; "
                                "try again later or use a mirror")
        best = 0  # another version: its bytes are progress of their own

    def no_progress(what: str) -> None:
        nonlocal failures
        failures += 1
        stalled = time.monotonic() - last_progress
        if failures > retries or stalled > stall_timeout:
            of = f" of {_size(total)}" if total is not None else ""
            raise DownloadError(f"{final.name}: {what} ({failures} attempts in a row, {stalled:.0f} s without "
                                f"getting past {_size(best)}{of}); run the same command later to resume")

    while True:
        if stop is not None and stop.is_set():
            raise _Stopped
        requests += 1
        if requests > max_requests:
            raise DownloadError(f"{final.name}: {max_requests} requests to {url} did not complete the file; the "
                                "server does not serve it consistently, use a mirror (--base-url / --urls)")
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            if validator:
                headers["If-Range"] = validator
        ended = False
        try:
            resp = open_url(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and have:
                cr = _content_range(e.headers.get("Content-Range"))
                if cr is not None and cr[1] == have and known_total in (None, have):
                    total = have  # the .part already holds the whole file
                    break
                log.info("%s: the server refuses to resume at %s; starting over", final.name, _size(have))
                start_over()
                no_progress(f"{url} refuses to resume")
            elif e.code in (408, 429) or e.code >= 500:
                no_progress(f"{url} answered HTTP {e.code} {e.reason}")
                time.sleep(min(2.0 ** (failures - 1), 30.0))
            else:
                raise DownloadError(f"{final.name}: {url} answered HTTP {e.code} {e.reason}; check the URL "
                                    f"(--base-url / --urls)") from None
            continue
        except _RedirectRefused as e:
            raise DownloadError(f"{final.name}: {e.reason}; use a mirror (--base-url / --urls)") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            no_progress(f"cannot reach {url} ({reason}); check the network, or fetch from a mirror with "
                        "--base-url / --urls")
            time.sleep(min(2.0 ** (failures - 1), 30.0))
            continue
        with resp:
            if binary and resp.headers.get_content_type() == "text/html":
                raise DownloadError(f"{final.name}: {url} answered with a web page, not the file (an expired "
                                    "link, a login or rate-limit page?); try again later or use a mirror")
            served = _validator(resp.headers)
            if resp.status == 206:
                cr = _content_range(resp.headers.get("Content-Range"))
                if cr is None or cr[0] != have:
                    log.info("%s: the server answered another range (%s); starting over", final.name,
                             resp.headers.get("Content-Range"))
                    start_over()
                    no_progress("the server answers other ranges than asked")
                    continue
                if (validator and served != validator) or (known_total is not None and cr[1] != known_total):
                    # A server that ignores If-Range: the bytes would be the tail of another version.
                    changed(validator or known_total, served or cr[1])
                    start_over()
                    validator, known_total = None, None
                    continue
                total = cr[1]
            else:
                if have:
                    log.info("%s: the server sent the whole file (it ignores Range, or the file changed); "
                             "fetching it again from the start", final.name)
                start_over()
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if (validator is not None and served != validator) or known_total not in (None, total):
                    changed(validator or known_total, served or total)
                validator, known_total = served, total
                try:
                    atomic_write_json(state_path, {"url": url, "validator": validator, "total": total})
                except OSError as e:
                    raise _os_error("write", state_path, e) from e
            if expected_size is not None and total is not None and total != expected_size:
                raise DownloadError(f"{final.name}: {url} serves {total:,} bytes, the URL list says "
                                    f"{expected_size:,}; the server holds another file (wrong URL or mirror)")
            if limit is not None and total is not None and total > limit:
                raise DownloadError(f"{final.name}: {url} announces {total:,} bytes, more than the {limit:,} "
                                    "this file can have; the server holds another file (wrong URL or mirror)")
            if bar is not None:
                bar.start(total, have)
            try:
                fh = open(part, "ab" if have else "wb")
            except OSError as e:
                raise _os_error("write", part, e) from e
            with fh:
                while True:
                    if stop is not None and stop.is_set():
                        raise _Stopped
                    try:
                        chunk = resp.read1(CHUNK)  # what has arrived: the .part grows as it comes
                    except (OSError, http.client.HTTPException) as e:  # dropped / timed out mid-body
                        log.info("%s: connection lost after %s (%s); resuming", final.name, _size(have), e)
                        break
                    if not chunk:
                        ended = True
                        break
                    if limit is not None and have + len(chunk) > limit:
                        fh.close()
                        part.unlink(missing_ok=True)
                        state_path.unlink(missing_ok=True)
                        raise DownloadError(f"{final.name}: {url} sent more than the {limit:,} bytes this file "
                                            "can have; the partial file was deleted. Check the URL, or give "
                                            "the file's size in the URL list")
                    try:
                        _write_chunk(fh, chunk)
                    except OSError as e:
                        raise _os_error("write", part, e, "; the partial download is kept and resumes on the "
                                        "next call once there is room") from e
                    hasher.update(chunk)
                    have += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        if have == total or (total is None and ended):  # without a length, only a clean end counts
            break
        if total is not None and have > total:
            part.unlink(missing_ok=True)
            state_path.unlink(missing_ok=True)
            raise DownloadError(f"{final.name}: received {have:,} bytes of a {total:,}-byte file from {url}; "
                                "the partial file was deleted, run again")
        if have > best:
            best, failures, last_progress = have, 0, time.monotonic()
        else:
            no_progress(f"the download from {url} stops at {_size(have)}")
    if expected_size is not None and have != expected_size:
        raise DownloadError(f"{final.name}: {have:,} bytes received, the URL list says {expected_size:,}")
    try:
        if not part.exists():  # a 416 on an already complete .part created no file
            part.touch()
        os.replace(part, final)
    except OSError as e:
        raise _os_error("rename", part, e) from e
    state_path.unlink(missing_ok=True)
    return have, hasher.hexdigest()


# ------------------------------------------------------------------------------------------ extraction
class _CorruptArchive(Exception):
    pass


def extract_archive(archive: Path, target: Path, staging: Path,
                    stop: threading.Event | None = None, *, max_bytes: int | None = None) -> list[str]:
    """Extract the PNGs of ``archive`` into ``target`` (flat); return their sorted names.

    Everything is first extracted into ``staging``, and the whole gzip stream read to its end (so its CRC
    is checked), before any file is moved into ``target``. At most ``max_bytes`` are written (default
    :data:`EXTRACT_RATIO` times the archive's size) and :data:`MAX_MEMBERS` members read. A file already in
    ``target`` is kept when identical and otherwise never replaced (:class:`DownloadError` naming it; nothing
    is moved). Raises :class:`_CorruptArchive` for a damaged, unsafe or oversized archive,
    :class:`DownloadError` for an OS error while writing.
    """
    if max_bytes is None:
        max_bytes = EXTRACT_RATIO * archive.stat().st_size + EXTRACT_SLACK
    written = members = 0
    if staging.exists():
        shutil.rmtree(staging)
    try:
        staging.mkdir(parents=True)
    except OSError as e:
        raise _os_error("create", staging, e) from e
    found: dict[str, str] = {}
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    if stop is not None and stop.is_set():
                        raise _Stopped
                    members += 1
                    if members > MAX_MEMBERS:
                        raise _CorruptArchive(f"more than {MAX_MEMBERS:,} members")
                    if member.isdir():
                        continue
                    try:
                        safe = tarfile.data_filter(member, str(staging))
                    except tarfile.FilterError as e:
                        raise _CorruptArchive(f"unsafe member {member.name!r} ({e})") from e
                    name = PurePosixPath(safe.name).name
                    if not safe.isfile() or not name.lower().endswith(".png") or name.startswith("."):
                        log.debug("%s: skipping member %s", archive.name, member.name)
                        continue
                    if name in found:
                        raise _CorruptArchive(f"two members named {name}: {found[name]} and {member.name}")
                    found[name] = safe.name
                    written += safe.size
                    if written > max_bytes:
                        raise _CorruptArchive(f"it expands to more than {_size(max_bytes)} (an archive of PNGs "
                                              "expands to about its own size)")
                    tar.extract(safe, staging, filter="data")
                # Read the compressed stream to its end: gzip checks its CRC and length only there.
                fileobj = tar.fileobj
                while fileobj is not None and fileobj.read(CHUNK):
                    pass
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise _CorruptArchive(str(e) or type(e).__name__) from e
        except OSError as e:
            if e.errno is None:  # a decoding failure reported as OSError without an errno
                raise _CorruptArchive(str(e)) from e
            raise _os_error("extract into", staging, e) from e
        try:
            target.mkdir(parents=True, exist_ok=True)
            keep = _existing_images(archive, target, staging, found)
            for name, rel in found.items():
                if name not in keep:
                    os.replace(staging / rel, target / name)
        except OSError as e:
            raise _os_error("move extracted images into", target, e) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(found)


def _existing_images(archive: Path, target: Path, staging: Path, found: dict[str, str]) -> set[str]:
    """The names already in ``target`` with the archive's very bytes (kept as they are); any other file
    in the way is the user's, and stops the extraction before anything is moved."""
    keep: set[str] = set()
    clash: list[str] = []
    for name, rel in found.items():
        dst = target / name
        if not (dst.exists() or dst.is_symlink()):
            continue
        if dst.is_file() and not dst.is_symlink() and filecmp.cmp(staging / rel, dst, shallow=False):
            keep.add(name)
        else:
            clash.append(name)
    if clash:
        raise DownloadError(f"{archive.name}: {len(clash)} file(s) in {target} differ from the archive's and "
                            f"were not written by this download (first: {sorted(clash)[0]}); nothing was "
                            "overwritten or moved. Move them away (or download into another folder) and run "
                            "again; the archive is kept")
    if keep:
        log.info("%s: %d identical image(s) already in %s kept", archive.name, len(keep), target)
    return keep


# ------------------------------------------------------------------------------------------ one part
@dataclass
class PartResult:
    file: str
    part: int | None
    action: str  # present | written | kept | fetched | extracted | fetched and extracted | stopped | failed
    detail: str = ""


@dataclass
class _Job:
    dest: Path
    layout: str
    keep_archives: bool
    retries: int
    timeout: float
    manifest: _Manifest
    progress: _Progress
    stop: threading.Event = field(default_factory=threading.Event)


def _metadata_part(job: _Job, p: Part) -> PartResult:
    dest = job.dest / p.file
    rec = job.manifest.get(p.file)
    if rec and rec.get("status") == "done" and dest.is_file():
        return PartResult(p.file, None, "present")
    if dest.is_file():  # the user's own copy: never overwritten
        job.manifest.put(p.file, {"kind": "metadata", "source": "existing file", "size": dest.stat().st_size,
                                  "sha256": sha256_file(dest), "status": "done", "at": _now()})
        return PartResult(p.file, None, "kept", "existing file kept")
    if p.url is None:
        data = _bundled_bytes(p)

        def write(fh: IO[bytes]) -> None:
            fh.write(data)

        try:
            atomic_write_with(dest, write)
        except OSError as e:
            raise _os_error("write", dest, e) from e
        job.manifest.put(p.file, {"kind": "metadata", "source": f"bundled:{p.bundled}", "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest(), "status": "done", "at": _now()})
        return PartResult(p.file, None, "written", "from the copy bundled with cxr-bench")
    assert p.url is not None
    with job.progress.file(p.file) as bar:
        size, sha = download_file(p.url, dest, expected_size=p.size, retries=job.retries, timeout=job.timeout,
                                  bar=bar, stop=job.stop, max_size=_max_size(p))
    _check_sha(p, dest, sha, rec)
    if p.reference_sha256 and sha != p.reference_sha256:
        log.warning("%s from %s differs from the NIH file bundled with cxr-bench (sha256 %s, reference %s); "
                    "the manifest records what you have", p.file, p.url, sha[:12], p.reference_sha256[:12])
    job.manifest.put(p.file, {"kind": "metadata", "url": p.url, "size": size, "sha256": sha, "status": "done",
                              "at": _now()})
    return PartResult(p.file, None, "fetched", _size(size))


def _max_size(p: Part) -> int:
    return p.size if p.size is not None else p.max_size if p.max_size is not None else UNKNOWN_SIZE_CAP[p.kind]


def _bundled_bytes(p: Part) -> bytes:
    from .bundled import bundled_dir

    assert p.bundled is not None
    path = bundled_dir() / p.bundled
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DownloadError(f"cannot read the bundled {path} ({e}); reinstall cxr-bench") from e
    if p.reference_sha256 and hashlib.sha256(data).hexdigest() != p.reference_sha256:
        raise DownloadError(f"the bundled {path} does not match its registered sha256; reinstall cxr-bench "
                            "(`cxr-bench data verify` checks the bundled files)")
    return data


def _check_sha(p: Part, path: Path, sha: str, rec: dict[str, Any] | None) -> None:
    expected = p.sha256 or (rec or {}).get("sha256")
    if expected and sha != expected:
        path.unlink(missing_ok=True)
        origin = "the URL list" if p.sha256 else f"{MANIFEST_NAME} (an earlier download)"
        raise DownloadError(f"{p.file}: sha256 {sha} differs from {expected} in {origin}; the file was "
                            f"deleted. If the server's file really changed, remove its entry from "
                            f"{MANIFEST_NAME} and run again")


def _archive_part(job: _Job, p: Part) -> PartResult:
    rec = job.manifest.get(p.file)
    if rec and rec.get("status") == "extracted":
        return PartResult(p.file, p.part, "present",
                          f"{rec.get('images', '?')} images in {rec.get('folder')}")
    archive = job.dest / ARCHIVE_DIR / p.file
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error("create", archive.parent, e) from e
    action = "extracted"
    if archive.is_file():
        # Only a complete download is ever renamed to its final name; hash it if the record is missing.
        size = archive.stat().st_size
        sha = rec["sha256"] if rec and rec.get("status") == "downloaded" and rec.get("size") == size \
            else sha256_file(archive)
        url = (rec or {}).get("url", p.url)
    else:
        if p.url is None:
            raise DownloadError(f"{p.file}: no URL to fetch it from; pass --base-url or --urls")
        url = p.url
        with job.progress.file(p.file) as bar:
            size, sha = download_file(p.url, archive, expected_size=p.size, retries=job.retries,
                                      timeout=job.timeout, bar=bar, stop=job.stop, binary=True,
                                      max_size=_max_size(p))
        action = "fetched and extracted"
    _check_sha(p, archive, sha, rec)
    record: dict[str, Any] = {"kind": "images", "part": p.part, "url": url, "size": size, "sha256": sha,
                              "status": "downloaded", "at": _now()}
    job.manifest.put(p.file, record)
    folder = p.folder(job.layout)
    staging = job.dest / f".extracting-{p.file}"
    try:
        names = extract_archive(archive, job.dest / folder, staging, job.stop)
    except _CorruptArchive as e:
        archive.unlink(missing_ok=True)
        job.manifest.put(p.file, None)
        raise DownloadError(f"{p.file} (from {url}) is corrupt: {e}; it was deleted, run the same command "
                            "again to fetch it again") from None
    if p.images is not None and len(names) != p.images:
        log.warning("%s holds %d PNGs; the URL list expects %d", p.file, len(names), p.images)
    if not names:
        log.warning("%s holds no PNG images", p.file)
    record.update({"status": "extracted", "folder": folder, "images": len(names),
                   "first": names[0] if names else None, "last": names[-1] if names else None,
                   "archive_kept": job.keep_archives, "at": _now()})
    job.manifest.put(p.file, record)
    if not job.keep_archives:
        archive.unlink(missing_ok=True)
    return PartResult(p.file, p.part, action, f"{len(names):,} images into {folder}/, sha256 {sha[:12]}")


# ------------------------------------------------------------------------------------------ entry points
def download_release(dest: str | os.PathLike, *, parts: PartList | None = None, select: str | None = None,
                     workers: int = 4, layout: str = "parts", keep_archives: bool = False, retries: int = 3,
                     timeout: float = 60.0, show_progress: bool | None = None) -> list[PartResult]:
    """Download, verify and extract the selected parts of ``parts`` (default: the NIH list) into ``dest``.

    Parts already complete (recorded as extracted in the manifest) are not fetched again. Every part is
    attempted even when another fails; then one :class:`DownloadError` names every failure.
    """
    if layout not in LAYOUTS:
        raise DownloadError(f"layout {layout!r} must be one of {', '.join(LAYOUTS)}")
    if workers < 1:
        raise DownloadError(f"--workers must be at least 1, got {workers}")
    parts = parts or load_part_list()
    chosen = select_parts(parts, select)
    dest = Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _os_error("create the data root", dest, e) from e
    if not os.access(dest, os.W_OK | os.X_OK):
        raise DownloadError(f"cannot write into {dest}: permission denied; pick a folder you can write to "
                            "(--data-root)")
    import filelock

    lock = filelock.FileLock(str(dest / f".{MANIFEST_NAME}.lock"), blocking=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise DownloadError(f"another `cxr-bench data download` is writing into {dest}; wait for it") \
            from None
    except OSError as e:
        raise _os_error("write", dest, e) from e
    bars = _Progress(show_progress, min(workers, len(chosen)))
    try:
        job = _Job(dest, layout, keep_archives, retries, timeout, _Manifest(dest, parts, layout), bars)
        job.manifest.save()
        return _run(job, chosen, workers)
    finally:
        bars.close()
        lock.release()


def _run(job: _Job, chosen: Sequence[Part], workers: int) -> list[PartResult]:
    def one(p: Part) -> PartResult:
        try:
            return _metadata_part(job, p) if p.kind == "metadata" else _archive_part(job, p)
        except _Stopped:
            return PartResult(p.file, p.part, "stopped", "stopped; run again to resume")
        except DownloadError as e:
            if _is_disk_full(e):
                job.stop.set()  # every other part would fail the same way
            return PartResult(p.file, p.part, "failed", str(e))

    results: list[PartResult] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cxr-download") as pool:
        futures = [pool.submit(one, p) for p in chosen]
        try:
            for f in futures:
                r = f.result()
                results.append(r)
                if r.action == "failed":
                    log.error("%s", r.detail)
                else:
                    log.info("%s: %s%s (%d of %d files)", r.file, r.action,
                             f", {r.detail}" if r.detail else "", len(results), len(futures))
        except KeyboardInterrupt:
            job.stop.set()  # running downloads stop between chunks, keeping their .part files
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    failed = [r for r in results if r.action == "failed"]
    if failed:
        done = sum(r.action not in ("failed", "stopped") for r in results)
        others = ", ".join(r.file for r in failed[1:])
        more = f"; also failed: {others} (see the log)" if others else ""
        raise DownloadError(f"{len(failed)} of {len(results)} file(s) failed ({done} complete, kept): "
                            f"{failed[0].detail}{more}")
    return results


def _is_disk_full(e: Exception) -> bool:
    cause = e.__cause__
    return isinstance(cause, OSError) and cause.errno in (28, 122)  # ENOSPC, EDQUOT


# ------------------------------------------------------------------------------------------ verify
def verify_download(dest: str | os.PathLike, reference: str | os.PathLike | None = None) -> list[str]:
    """Problems found checking ``dest`` against its manifest (and a ``reference`` one); [] when all agree.

    Kept archives and metadata files are hashed again and compared with the recorded sha256; extracted
    parts must still hold their recorded number of images. With ``reference`` (a colleague's manifest or
    another download's), every file's recorded sha256 must equal the reference's. No network is used.
    """
    dest = Path(dest)
    ours = read_manifest(dest)
    problems: list[str] = []
    for file, rec in sorted(ours["files"].items()):
        if rec.get("kind") == "metadata":
            path = dest / file
            if not _inside(dest, path):
                problems.append(f"{file}: {path} leads outside {dest} (a link); not read")
            elif not path.is_file():
                problems.append(f"{file}: missing from {dest}")
            elif (sha := sha256_file(path)) != rec.get("sha256"):
                problems.append(f"{file}: sha256 {sha} differs from the recorded {rec.get('sha256')}")
            continue
        archive = dest / ARCHIVE_DIR / file
        if not _inside(dest, archive):
            problems.append(f"{file}: {archive} leads outside {dest} (a link); not read")
        elif archive.is_file():
            sha = sha256_file(archive)
            if sha != rec.get("sha256"):
                problems.append(f"{file}: archive sha256 {sha} differs from the recorded {rec.get('sha256')}")
        if rec.get("status") == "extracted":
            present = _count_in_range(dest / rec["folder"], rec.get("first"), rec.get("last"))
            if present < int(rec.get("images") or 0):
                problems.append(f"{file}: {present:,} of its {rec['images']:,} images are in "
                                f"{rec['folder']}/")
        elif not archive.is_file():
            problems.append(f"{file}: recorded as downloaded but {archive} is gone; run the download again")
        else:
            problems.append(f"{file}: downloaded but its images are not extracted; run the download again")
    if reference is not None:
        ref = read_manifest(reference)
        for file, rrec in sorted(ref["files"].items()):
            rec = ours["files"].get(file)
            if rec is None:
                problems.append(f"{file}: in the reference {reference} but not downloaded here")
            elif rrec.get("sha256") != rec.get("sha256"):
                problems.append(f"{file}: sha256 {rec.get('sha256')} here, {rrec.get('sha256')} in "
                                f"{reference}")
    return problems


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path``, links resolved, stays under ``root`` (a manifest never makes the tool read
    outside the data root)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def _count_in_range(folder: Path, first: str | None, last: str | None) -> int:
    if first is None or last is None:
        return 0
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if first <= e.name <= last and e.name.lower().endswith(".png"))
    except OSError:
        return 0
