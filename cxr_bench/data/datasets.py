"""The torch Dataset of NIH images and labels, torchxrayvision-style.

``CXRDataset(release, rows, label_set, cache=...)`` yields ``(image, target, row)``:

- ``image``: uint8 tensor ``(1, H, W)``. It stays uint8 until the model, which owns normalisation (so the
  data path never knows which backbone it feeds, and a batch moves to the GPU at a quarter of the bytes);
- ``target``: float32 ``(L,)`` in the label set's order;
- ``row``: the image's row in ``release.metadata`` (predictions are written by row).

Fields as in torchxrayvision: ``.pathologies`` (label names), ``.labels`` (N, L) float32, ``.csv`` (the
metadata rows, aligned with ``.labels``), plus ``.rows``. Rows whose image is missing or was rejected by
the cache are dropped up front, logged, and listed in ``.dropped``.

Reading from a cache is a memory-map slice (``__getitem__``) or one fancy-indexed read and one batched
augmentation per batch (``__getitems__``, which :class:`torch.utils.data.DataLoader` uses when present;
the same pixels as item by item, see augment.py). The GPU-resident path
(:mod:`cxr_bench.data.gpu_loader`) reads :attr:`CXRDataset.slots` and draws batches on the device. The direct-from-PNG path
(``cache=None``) decodes with the very function the cache uses, so it gives identical pixels; it is for
small jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..errors import CacheError
from .augment import augment_batch, get_augmentation, item_rng
from .cache import ImageCache, load_resized
from .labels import LabelSet, get_label_set

if TYPE_CHECKING:  # pragma: no cover
    from .release import NIHRelease

log = logging.getLogger(__name__)

Sample = tuple[torch.Tensor, torch.Tensor, int]


class CXRDataset(Dataset):
    """Images of ``release.metadata`` rows ``rows`` with their labels under ``label_set``.

    Args:
        release: the NIH release the rows index into.
        rows: row positions into ``release.metadata`` (None: all rows).
        label_set: a :class:`LabelSet` or its registered name.
        cache: a prepared :class:`ImageCache`; None decodes PNGs on the fly (``size`` then required).
        size: output size; with a cache it must equal the cache's (default: the cache's).
        conversion: grayscale conversion; with a cache it must equal the cache's.
        resize: resize method of the PNG path (the cache's own is fixed when it is built).
        augment: a name in :data:`~cxr_bench.data.augment.AUGMENTATIONS`.
        seed: augmentation seed; item ``i`` in epoch ``e`` uses ``item_rng(seed, e, row_i)``.
    """

    def __init__(self, release: NIHRelease, rows: Sequence[int] | np.ndarray | None,
                 label_set: LabelSet | str, *, cache: ImageCache | None = None, size: int | None = None,
                 conversion: str | None = None, resize: str = "lanczos", augment: str = "none",
                 seed: int = 0) -> None:
        self.label_set = get_label_set(label_set) if isinstance(label_set, str) else label_set
        self.pathologies: list[str] = list(self.label_set.labels)
        self.cache = cache
        self.augment = augment
        self._augment = get_augmentation(augment)
        self.seed = int(seed)
        self.epoch = 0
        self.resize = resize
        meta = release.metadata
        rows_all = np.arange(len(meta), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows_all.ndim != 1 or (rows_all.size and (rows_all.min() < 0 or rows_all.max() >= len(meta))):
            raise CacheError(f"rows must be positions 0..{len(meta) - 1} into {release.data_entry_path}")
        names = meta["image"].to_numpy()[rows_all]

        if cache is not None:
            if size is not None and size != cache.size:
                raise CacheError(f"dataset size {size} differs from cache {cache.dir} ({cache.size} px); "
                                 "prepare a cache of that size")
            if conversion is not None and conversion != cache.conversion:
                raise CacheError(f"dataset conversion {conversion!r} differs from cache {cache.dir} "
                                 f"({cache.conversion!r}); prepare a cache with that conversion")
            self.size = cache.size
            self.conversion = cache.conversion
            slots = cache.slots(names)
            keep = slots >= 0
            reasons = [cache.reason(n) or "" for n in names[~keep]]
            self._slots = slots[keep]
            self._paths: np.ndarray | None = None
        else:
            if size is None:
                raise CacheError("CXRDataset without a cache needs size= (the output image size)")
            self.size = int(size)
            self.conversion = conversion or "identity"
            on_disk = release.image_paths()
            paths = np.array([str(on_disk.get(n, "")) for n in names], dtype=object)
            keep = paths != ""
            reasons = ["missing: no file under the data root"] * int((~keep).sum())
            self._paths = paths[keep]
            self._slots = np.empty(0, dtype=np.int64)

        self.dropped = pd.DataFrame({"row": rows_all[~keep], "image": names[~keep], "reason": reasons})
        if len(self.dropped):
            log.warning("dropped %d of %d rows whose image is missing or rejected (e.g. %s: %s)",
                        len(self.dropped), len(rows_all), self.dropped["image"].iloc[0],
                        self.dropped["reason"].iloc[0])
        self.rows = rows_all[keep]
        self.csv = meta.iloc[self.rows].reset_index(drop=True)
        self.labels = self.label_set.encode(self.csv["finding_labels"])
        self._labels_t = torch.from_numpy(self.labels)

    # ------------------------------------------------------------------------------------------ API
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def slots(self) -> np.ndarray:
        """Row of each item in ``cache.array`` (empty without a cache)."""
        return self._slots

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (call before each epoch, like DistributedSampler)."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> Sample:
        if self.cache is not None:
            image = torch.from_numpy(np.array(self.cache.array[self._slots[i]]))
        else:
            assert self._paths is not None
            image = torch.from_numpy(load_resized(self._paths[i], self.size, resize=self.resize,
                                                  conversion=self.conversion)[0].copy())
        return self._finish(i, image.unsqueeze(0))

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        """A whole batch with one read of the memory map (the DataLoader fetcher calls this)."""
        if self.cache is None:
            return [self[i] for i in indices]
        idx = np.asarray(indices, dtype=np.int64)
        block = torch.from_numpy(self.cache.array[self._slots[idx]]).unsqueeze(1)  # fancy index: one copy
        rows = self.rows[idx]
        if self.augment != "none":  # one batched call: the per-item pixels (augment.py), drawn at once
            block = augment_batch(self.augment, block, self.seed, self.epoch, rows)
        return [(block[k], self._labels_t[i], int(rows[k])) for k, i in enumerate(idx)]

    def _finish(self, i: int, image: torch.Tensor) -> Sample:
        row = int(self.rows[i])
        if self.augment != "none":
            image = self._augment(image, item_rng(self.seed, self.epoch, row))
        return image, self._labels_t[i], row

    def __repr__(self) -> str:
        source = f"cache={self.cache.dir}" if self.cache is not None else "source=png"
        return (f"CXRDataset({len(self)} images, {self.size} px, labels={self.label_set.name}, "
                f"augment={self.augment!r}, {source}, dropped={len(self.dropped)})")
