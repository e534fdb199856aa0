"""An NIH ChestX-ray14 release on disk: metadata, official split lists, boxes, and where the images are.

A data root is laid out as the NIH download (https://nihcc.app.box.com/v/ChestXray-NIHCC) or its Kaggle copy::

    <root>/Data_Entry_2017_v2020.csv   (or Data_Entry_2017.csv; either may be .gz)
    <root>/train_val_list.txt
    <root>/test_list.txt
    <root>/BBox_List_2017.csv          (optional; may be .gz)
    <root>/images/... or images_001/images/... (any layout cxr_bench.data.discovery knows)

``NIHRelease.open(None)`` opens the bundled 1,673-image sample (a miniature release with real images);
``NIHRelease.bundled_full()`` opens the bundled full metadata (112,120 rows, no images).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import MetadataError
from ..utils.io import sha256_file
from . import bundled
from .discovery import ImageScan, scan_images
from .metadata import read_bbox_list, read_data_entry, read_split_list

log = logging.getLogger(__name__)

# Looked for in this order; the first one found is used.
DATA_ENTRY_NAMES = (
    "Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
)
TRAIN_VAL_NAMES = ("train_val_list.txt", "train_val_list.txt.gz")
TEST_NAMES = ("test_list.txt", "test_list.txt.gz")
BBOX_NAMES = ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")

NIH_URL = "https://nihcc.app.box.com/v/ChestXray-NIHCC"

# (root, Data_Entry sha256) of the releases already announced at INFO: a run opens its release from the
# runner, the trainer and the localizer, and one line per process says all there is to say.
_ANNOUNCED: set[tuple[str, str]] = set()


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        p = root / name
        if p.is_file():
            return p
    return None


@dataclass(eq=False)
class NIHRelease:
    """Metadata of one NIH release. Build with :meth:`open` or :meth:`bundled_full`, not directly."""

    root: Path
    data_entry_path: Path
    train_val_list_path: Path
    test_list_path: Path
    bbox_path: Path | None
    metadata: pd.DataFrame  # read_data_entry(): one row per image, row order = file order
    train_val_names: list[str]
    test_names: list[str]
    bboxes: pd.DataFrame  # read_bbox_list(): image, label, x, y, w, h (empty when there is no box file)
    is_bundled_sample: bool = False
    is_bundled_full: bool = False
    _hashes: dict[str, str] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------------------------------- builders
    @classmethod
    def open(cls, root: str | os.PathLike | None = None) -> NIHRelease:
        """Open the release under ``root``; ``None`` opens the bundled 1,673-image sample.

        Raises :class:`MetadataError` naming what is missing and where, or what is malformed (file, line,
        value). The image files are not touched here (see :meth:`image_paths`).
        """
        if root is None:
            return cls._load(bundled.sample_root(), sample=True)
        if is_phantom(root):
            return cls._load(_opened_phantom_root(str(root)))
        path = Path(root).expanduser()
        # The bundled folders passed by path are still recognised as what they are.
        resolved = path.resolve()
        return cls._load(path, sample=resolved == bundled.sample_root().resolve(),
                         full=resolved == bundled.full_metadata_root().resolve())

    @classmethod
    def bundled_full(cls) -> NIHRelease:
        """The bundled full NIH metadata: 112,120 images of 30,805 patients, official lists; no images."""
        return cls._load(bundled.full_metadata_root(), full=True)

    @classmethod
    def _load(cls, root: Path, *, sample: bool = False, full: bool = False) -> NIHRelease:
        if not root.exists():
            raise MetadataError(f"data root {root} does not exist; point --data-root at the folder holding "
                                "Data_Entry_2017*.csv, train_val_list.txt and test_list.txt "
                                f"(download: {NIH_URL})")
        if not root.is_dir():
            raise MetadataError(f"data root {root} is not a directory")
        entry = _find(root, DATA_ENTRY_NAMES)
        train_val = _find(root, TRAIN_VAL_NAMES)
        test = _find(root, TEST_NAMES)
        missing = [names[0] for names, p in ((DATA_ENTRY_NAMES, entry), (TRAIN_VAL_NAMES, train_val),
                                             (TEST_NAMES, test)) if p is None]
        if missing:
            hint = ""
            if entry is None:
                hint = f" (looked for {', '.join(DATA_ENTRY_NAMES)})"
            raise MetadataError(f"data root {root} is not an NIH release: missing {', '.join(missing)}"
                                f"{hint}; these files come with the NIH download ({NIH_URL}) and go next to "
                                "the image folders")
        assert entry is not None and train_val is not None and test is not None
        bbox = _find(root, BBOX_NAMES)
        metadata = read_data_entry(entry)
        tv_names = read_split_list(train_val)
        test_names = read_split_list(test)
        if bbox is not None:
            boxes = read_bbox_list(bbox)
            unknown = ~boxes["image"].isin(metadata["image"])
            if unknown.any():
                name = boxes["image"][unknown].iloc[0]
                raise MetadataError(f"{bbox}: box image {name!r} is not in {entry.name} "
                                    f"({int(unknown.sum())} box row(s) like it); is this file from the same "
                                    "release?")
        else:
            boxes = pd.DataFrame({"image": pd.Series(dtype=object), "label": pd.Series(dtype=object),
                                  "x": pd.Series(dtype="float64"), "y": pd.Series(dtype="float64"),
                                  "w": pd.Series(dtype="float64"), "h": pd.Series(dtype="float64")})
        hashes = {entry.name: metadata.attrs["sha256"]}
        if bbox is not None:
            hashes[bbox.name] = boxes.attrs["sha256"]
        rel = cls(root=root, data_entry_path=entry, train_val_list_path=train_val, test_list_path=test,
                  bbox_path=bbox, metadata=metadata, train_val_names=tv_names, test_names=test_names,
                  bboxes=boxes, is_bundled_sample=sample, is_bundled_full=full, _hashes=hashes)
        seen = (str(root.resolve()), metadata.attrs["sha256"])
        level = logging.DEBUG if seen in _ANNOUNCED else logging.INFO
        _ANNOUNCED.add(seen)
        log.log(level, "opened NIH release %s: %d images (%s form), %d train_val + %d test listed, %d boxes",
                root, len(metadata), metadata.attrs["format"], len(tv_names), len(test_names), len(boxes))
        return rel

    # ------------------------------------------------------------------------------------------ queries
    @property
    def has_images(self) -> bool:
        """False for the bundled full metadata, which ships without images."""
        return not self.is_bundled_full

    @property
    def data_entry_format(self) -> str:
        return self.metadata.attrs.get("format", "v2020")

    @property
    def kind(self) -> str:
        """``bundled-sample``, ``bundled-full`` or ``data-root``."""
        if self.is_bundled_sample:
            return "bundled-sample"
        if self.is_bundled_full:
            return "bundled-full"
        return "data-root"

    def __len__(self) -> int:
        return len(self.metadata)

    def __repr__(self) -> str:
        return (f"NIHRelease({self.kind}, root={str(self.root)!r}, images={len(self.metadata)}, "
                f"train_val={len(self.train_val_names)}, test={len(self.test_names)}, "
                f"boxes={len(self.bboxes)})")

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each metadata file used, by file name (Data_Entry, the two lists, BBox if present)."""
        for p in (self.train_val_list_path, self.test_list_path):
            if p.name not in self._hashes:
                self._hashes[p.name] = sha256_file(p)
        order = [self.data_entry_path, self.train_val_list_path, self.test_list_path, self.bbox_path]
        return {p.name: self._hashes[p.name] for p in order if p is not None}

    def image_paths(self) -> dict[str, Path]:
        """Image name -> file, for every readable PNG found under the root (see ``cxr_bench.data.discovery``).

        The bundled full metadata ships without images: it returns ``{}`` (with a warning), so every image
        counts as missing.
        """
        return self.image_scan().paths

    def image_scan(self) -> ImageScan:
        """:meth:`image_paths` plus the ``.png`` entries that cannot be read (dangling or looping links)."""
        if not self.has_images:
            log.warning("the bundled full NIH metadata (%s) has no images; download them from %s and pass "
                        "their folder as --data-root, or use the bundled sample", self.root, NIH_URL)
            return ImageScan()
        return scan_images(self.root)


# ``data.root = "phantom:<seed>"``: a seeded phantom release (synthetic radiographs with planted, label-specific
# lesions; :mod:`cxr_bench.data.phantoms`) in the cache folder, made by an explicit :func:`materialize_phantom`
# (``cxr-bench run`` and ``cxr-bench train`` call it for the phantom roots of their runs before anything
# opens them; opening one that was never made is an error, not a write). The demo's sanity block trains on
# it: a pipeline that works scores far above chance there, one with misaligned labels does not.
PHANTOM_PREFIX = "phantom:"
SANITY_PHANTOM: dict[str, Any] = {"n_patients": 150, "images_per_patient": 2, "size": 64}


def is_phantom(root: object) -> bool:
    return isinstance(root, str) and root.startswith(PHANTOM_PREFIX)


def phantom_release_root(spec: str, cache_root: str | os.PathLike | None = None) -> Path:
    """Where the phantom release ``phantom:<seed>`` lives: ``<cache root>/phantoms/seed<N>-...`` (the cache
    root: ``cache_root``, else :func:`cxr_bench.data.cache.default_cache_root`). Writes nothing."""
    from .cache import default_cache_root

    tail = spec[len(PHANTOM_PREFIX):]
    if not is_phantom(spec) or not tail.isdigit():
        raise MetadataError(f"data root {spec!r}: a phantom release is 'phantom:<seed>', e.g. 'phantom:0'")
    base = Path(cache_root) if cache_root is not None else default_cache_root()
    return base / "phantoms" / (f"seed{int(tail)}-{SANITY_PHANTOM['n_patients']}x"
                                f"{SANITY_PHANTOM['images_per_patient']}-{SANITY_PHANTOM['size']}px")


def materialize_phantom(spec: str, cache_root: str | os.PathLike | None = None) -> Path:
    """Write the phantom release ``phantom:<seed>`` to :func:`phantom_release_root` unless it is there (same
    seed, same bytes); returns its folder."""
    import shutil

    from .phantoms import make_phantom_release

    root = phantom_release_root(spec, cache_root)
    if (root / "phantom.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    make_phantom_release(tmp, seed=int(spec[len(PHANTOM_PREFIX):]), **SANITY_PHANTOM)
    try:
        os.replace(tmp, root)  # atomic: a concurrent sweep sees the whole release or none
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: use its copy
        if not (root / "phantom.json").is_file():
            raise
    log.info("wrote the phantom release %s to %s", spec, root)
    return root


def _opened_phantom_root(spec: str) -> Path:
    root = phantom_release_root(spec)
    if not (root / "phantom.json").is_file():
        raise MetadataError(f"data root {spec!r}: the phantom release is not made yet (it would be {root}); "
                            "`cxr-bench run` and `cxr-bench train` make it, or call "
                            "cxr_bench.data.release.materialize_phantom")
    return root
