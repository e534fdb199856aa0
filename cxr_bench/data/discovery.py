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
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ImageError

if TYPE_CHECKING:  # pragma: no cover
    from .release import NIHRelease

log = logging.getLogger(__name__)

IMAGE_SUFFIX = ".png"
# ``images`` (flat / extracted tarball) and ``images_001`` ... (box download, Kaggle mirror).
_IMAGE_DIR = re.compile(r"images(_\d+)?", re.IGNORECASE)


def image_dirs(root: str | os.PathLike) -> list[Path]:
    """The folders under ``root`` that may hold images, in a stable (sorted) order.

    ``root`` itself, ``root/images``, ``root/images_NNN`` and ``root/images_NNN/images``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"data root {root} is not a directory; pass the folder that holds "
                         "Data_Entry_2017_v2020.csv and the images")
    dirs = [root]
    for entry in sorted(_scandir(root), key=lambda e: e.name):
        if entry.is_dir() and _IMAGE_DIR.fullmatch(entry.name):
            sub = Path(entry.path)
            dirs.append(sub)
            nested = sub / "images"
            if entry.name.lower() != "images" and nested.is_dir():
                dirs.append(nested)
    return dirs


def discover_images(root: str | os.PathLike) -> dict[str, Path]:
    """Map every PNG file name under ``root`` (in the layouts above) to its path, sorted by name.

    Raises :class:`ImageError` if the same file name occurs in two folders (naming both paths).
    """
    found: dict[str, Path] = {}
    for directory in image_dirs(root):
        for entry in _scandir(directory):
            name = entry.name
            if not name.lower().endswith(IMAGE_SUFFIX) or name.startswith("."):
                continue
            if not entry.is_file():
                continue
            path = Path(entry.path)
            previous = found.get(name)
            if previous is not None:
                raise ImageError(f"image {name} is present twice: {previous} and {path}; "
                                 "remove one copy so every run reads the same file")
            found[name] = path
    log.debug("discovered %d PNGs under %s", len(found), root)
    return dict(sorted(found.items()))


def missing_images(release: NIHRelease) -> list[str]:
    """Names listed in ``release.metadata`` with no file on disk, in metadata order.

    A metadata-only release (for instance :meth:`NIHRelease.bundled_full`) reports every image.
    """
    on_disk = release.image_paths()
    missing = [name for name in release.metadata["image"] if name not in on_disk]
    if missing:
        log.info("%d of %d listed images are missing under %s (e.g. %s)", len(missing),
                 len(release.metadata), release.root, ", ".join(missing[:3]))
    return missing


def _scandir(directory: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except OSError as e:
        raise ImageError(f"cannot list {directory}: {e.strerror or e}") from e
