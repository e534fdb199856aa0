"""Find the NIH PNGs under a data root, whatever layout the download left behind.

People hold ChestX-ray14 in one of these layouts (all are searched, and may be mixed):

- flat: ``ROOT/images/*.png`` (the bundled sample, most scripts);
- NIH box download, each tarball extracted to its own folder: ``ROOT/images_001/*.png`` ...
  ``ROOT/images_012/*.png``;
- Kaggle mirror: ``ROOT/images_001/images/*.png`` ... ``ROOT/images_012/images/*.png``;
- PNGs directly in ``ROOT``.

Only those folders are listed, each with one :func:`os.scandir` pass (no recursive glob of the whole
tree), so discovering 112,120 files costs a fraction of a second and an unrelated big folder under the
root (a cache, a run store) is never walked. A name found in two places is an error naming both paths:
which copy a run used would otherwise depend on directory order.

Symbolic links are followed, since people link image folders in from other disks. A folder reached twice
(``images_001/images -> ..``, ``images -> .``) is listed once, so a link loop cannot make every image a
duplicate; a ``.png`` link that is dangling or part of a loop is not an image: :func:`scan_images` reports
it with its reason (the cache lists it in ``rejected.csv``) and the release stays usable.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIX = ".png"
# ``images`` (flat / extracted tarball) and ``images_001`` ... (box download, Kaggle mirror).
_IMAGE_DIR = re.compile(r"images(_\d+)?", re.IGNORECASE)
_REPORTED: set[tuple[Path, str]] = set()


@dataclass(frozen=True)
class ImageScan:
    """What :func:`scan_images` found: readable PNG files, and ``.png`` entries that cannot be read."""

    paths: dict[str, Path] = field(default_factory=dict)
    broken: dict[str, tuple[Path, str]] = field(default_factory=dict)  # name -> (path, reason)


def image_dirs(root: str | os.PathLike) -> list[Path]:
    """The folders under ``root`` that may hold images, in a stable (sorted) order, each folder once.

    ``root`` itself, ``root/images``, ``root/images_NNN`` and ``root/images_NNN/images``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"data root {root} is not a directory; pass the folder that holds "
                         "Data_Entry_2017_v2020.csv and the images")
    dirs = [root]
    seen = {_inode(root)}

    def add(path: Path) -> None:
        node = _inode(path)
        if node is None or node in seen:
            log.debug("not listing %s again: it is a folder already listed (a symbolic link)", path)
            return
        seen.add(node)
        dirs.append(path)

    for entry in sorted(_scandir(root), key=lambda e: e.name):
        if not _IMAGE_DIR.fullmatch(entry.name) or not _is_dir(entry):
            continue
        sub = Path(entry.path)
        add(sub)
        nested = sub / "images"
        if entry.name.lower() != "images" and _is_dir(nested):
            add(nested)
    return dirs


def scan_images(root: str | os.PathLike) -> ImageScan:
    """Every PNG file name under ``root`` (in the layouts above) with its path, sorted by name, and the
    ``.png`` entries that are not readable files (dangling or looping links) with the reason.

    Raises :class:`ImageError` if the same file name is a file in two folders (naming both paths).
    """
    found: dict[str, Path] = {}
    broken: dict[str, tuple[Path, str]] = {}
    for directory in image_dirs(root):
        for entry in _scandir(directory):
            name = entry.name
            if not name.lower().endswith(IMAGE_SUFFIX) or name.startswith("."):
                continue
            path = Path(entry.path)
            problem = _not_a_file(entry)
            if problem == "":
                continue  # a folder called x.png: not an image, not a fault either
            if problem is not None:
                broken.setdefault(name, (path, problem))
                continue
            previous = found.get(name)
            if previous is not None:
                raise ImageError(f"image {name} is present twice: {previous} and {path}; "
                                 "remove one copy so every run reads the same file")
            found[name] = path
    for name in set(broken) & set(found):
        path, reason = broken[name]
        log.warning("ignoring %s (%s): %s is read from %s", path, reason, name, found[name])
        del broken[name]
    for _name, (path, reason) in sorted(broken.items()):
        # Once per process and entry: the release is scanned by every dataset and cache of a run.
        level = logging.DEBUG if (path, reason) in _REPORTED else logging.WARNING
        _REPORTED.add((path, reason))
        log.log(level, "%s is not an image: %s", path, reason)
    log.debug("discovered %d PNGs under %s (%d unreadable links)", len(found), root, len(broken))
    return ImageScan(dict(sorted(found.items())), dict(sorted(broken.items())))


def discover_images(root: str | os.PathLike) -> dict[str, Path]:
    """Every readable PNG file name under ``root`` -> its path, sorted by name (see :func:`scan_images`)."""
    return scan_images(root).paths


def link_problem(path: str | os.PathLike, error: OSError) -> str:
    """Why ``path`` cannot be opened, in words a user can act on (``error``: what stat or open raised)."""
    if error.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if error.errno == errno.ENOENT and os.path.islink(path):
        try:
            target = os.readlink(os.fspath(path))
        except OSError:
            target = "?"
        return f"dangling symbolic link (its target {target} does not exist)"
    if error.errno == errno.ENOENT:
        return "missing: no file under the data root"
    return f"cannot read: {error.strerror or error}"


def _not_a_file(entry: os.DirEntry) -> str | None:
    """None for a (link to a) regular file, "" for something that is simply not a file (a folder), else
    the reason a ``.png`` entry cannot be read."""
    try:
        if entry.is_file():
            return None
    except OSError as e:  # ELOOP: DirEntry.is_file() raises for a link loop
        return link_problem(entry.path, e)
    if entry.is_symlink():
        try:
            os.stat(entry.path)
        except OSError as e:
            return link_problem(entry.path, e)
    return ""


def _is_dir(path: os.DirEntry | Path) -> bool:
    try:
        return path.is_dir()
    except OSError as e:  # a looping link named like an image folder
        where = getattr(path, "path", path)
        log.warning("skipping %s: %s", where, link_problem(where, e))
        return False


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _scandir(directory: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except OSError as e:
        raise ImageError(f"cannot list {directory}: {e.strerror or e}") from e
