"""Where the bundled NIH files live, and a registry of their sha256.

The files are package data under ``cxr_bench/bundled/`` and are found through :mod:`importlib.resources`,
so they work from an installed package (a wheel or ``pip install .``), not only from the repository root:

- ``nih/``: the full NIH metadata (``Data_Entry_2017_v2020.csv.gz``, 112,120 rows), both official split
  lists, ``BBox_List_2017.csv.gz`` and the Google 2019 adjudicated labels; no images.
- ``nih-sample/``: a miniature NIH release: 1,673 real images at 256 px under ``images/``, the
  Data_Entry rows, split-list subsets and BBox rows of those images.

:data:`BUNDLED_SHA256` records the hash of every bundled metadata, list, box and label file;
:func:`verify_bundled` checks the files against it (``cxr-bench data verify``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
from importlib import resources
from pathlib import Path

from ..utils.io import sha256_file

log = logging.getLogger(__name__)

FULL_DIRNAME = "nih"
SAMPLE_DIRNAME = "nih-sample"

# Number of images in the bundled sample (nih-sample/images/*.png).
SAMPLE_N_IMAGES = 1673

# relpath under cxr_bench/bundled/ -> sha256 of the bytes on disk (the .gz files are hashed compressed).
BUNDLED_SHA256: dict[str, str] = {
    "nih/Data_Entry_2017_v2020.csv.gz": "9d4de640ee4f760215d8be98376b20387ca52f9c6b4d1b727cb588fb82f40b80",
    "nih/train_val_list.txt": "61fbe896321c1c1c8b75f3e4f3a08e4fef6486d95ef8a667c31d4d60dca6cb81",
    "nih/test_list.txt": "38ca5ef7f756092946f57c1a59faca882ed589a1ab1f72590b45dc06c6d5e1cc",
    "nih/BBox_List_2017.csv.gz": "cf9dc6029f65daa8b389415b0546af0eeeb91fbac7d63ec49d7f8de2fd8f40cd",
    "nih/google2019_nih-chest-xray-labels.csv.gz": "1d1b846e463753ed0219f67e21b10c8aef381897dbd64865c8191aa5794e8048",
    "nih-sample/Data_Entry_2017_v2020.csv": "b7d26424839139b76e4e74d9c13d3a091106f1777b2e546626df8d19dc0a758e",
    "nih-sample/train_val_list.txt": "6506f47753c63f7c8c2bc72652e39faa969dfad0e0d0c86d5c5ea84287c99fa7",
    "nih-sample/test_list.txt": "40d10d741ddce0dbe1ac7ed6aff41a835d5c64f756220721f793aa6cffb6fc1e",
    "nih-sample/BBox_List_2017.csv": "6c0e664207dbb3525435d44c0a03ca5efd5273a4d20e85bc2cf45c273c9c48c0",
    "nih-sample/manifest.csv": "4c10fe95d69c85b78d63e3a5103146ceb1b49b9d39fa3f555e2826130b554bfe",
}

_IMAGE_NAME = re.compile(r"\d{8}_\d{3}\.png")

_bundled_path: Path | None = None
_exit_stack = contextlib.ExitStack()
atexit.register(_exit_stack.close)


def bundled_dir() -> Path:
    """The ``cxr_bench/bundled`` directory of the installed package, as a real filesystem path."""
    global _bundled_path
    if _bundled_path is None:
        ref = resources.files("cxr_bench") / "bundled"
        if isinstance(ref, Path):
            path = ref
        else:  # pragma: no cover - zip imports: extract once for the life of the process
            path = Path(_exit_stack.enter_context(resources.as_file(ref)))
        _bundled_path = path
    return _bundled_path


def full_metadata_root() -> Path:
    """``bundled/nih``: the full NIH metadata and split lists (no images)."""
    return bundled_dir() / FULL_DIRNAME


def sample_root() -> Path:
    """``bundled/nih-sample``: the 1,673-image miniature NIH release."""
    return bundled_dir() / SAMPLE_DIRNAME


def bundled_file(relpath: str) -> Path:
    """Path of a registered bundled file, e.g. ``bundled_file("nih/test_list.txt")``."""
    if relpath not in BUNDLED_SHA256:
        raise KeyError(f"{relpath!r} is not a registered bundled file; known: {', '.join(BUNDLED_SHA256)}")
    return bundled_dir() / relpath


def verify_bundled(*, check_images: bool = True) -> list[str]:
    """Check every registered bundled file against its sha256; return the problems (empty list: all good).

    With ``check_images`` the sample's ``images/`` folder is also checked: it must hold exactly one PNG per
    row of the sample's Data_Entry file (file names only; the images are not decoded).
    """
    problems: list[str] = []
    base = bundled_dir()
    for rel, expected in BUNDLED_SHA256.items():
        path = base / rel
        if not path.is_file():
            problems.append(f"{path}: missing (reinstall cxr-bench or restore the file from git)")
            continue
        got = sha256_file(path)
        if got != expected:
            problems.append(f"{path}: sha256 {got} differs from the registered {expected} "
                            "(the file was modified; restore it from git)")
    if check_images:
        problems.extend(_check_sample_images(base / SAMPLE_DIRNAME))
    return problems


def _check_sample_images(root: Path) -> list[str]:
    images = root / "images"
    if not images.is_dir():
        return [f"{images}: missing (the bundled sample has no images folder)"]
    on_disk = {p.name for p in images.iterdir() if p.suffix == ".png"}
    entry = root / "Data_Entry_2017_v2020.csv"
    if not entry.is_file():
        return []  # already reported as missing by the hash check
    with open(entry, encoding="utf-8-sig") as fh:
        next(fh, None)
        listed = {line.split(",", 1)[0] for line in fh if line.strip()}
    problems: list[str] = []
    missing = sorted(listed - on_disk)
    extra = sorted(n for n in on_disk - listed if _IMAGE_NAME.fullmatch(n))
    if missing:
        problems.append(f"{images}: {len(missing)} image(s) of the sample's Data_Entry are missing, "
                        f"e.g. {missing[:3]}")
    if extra:
        problems.append(f"{images}: {len(extra)} image(s) not in the sample's Data_Entry, e.g. {extra[:3]}")
    if len(on_disk) != SAMPLE_N_IMAGES and not missing and not extra:
        problems.append(f"{images}: {len(on_disk)} PNGs, expected {SAMPLE_N_IMAGES}")
    return problems
