"""Input paths that keep a GPU busy: the whole uint8 cache resident on the device, or pinned prefetching.

Two ways for a batch of a :class:`~cxr_bench.data.datasets.CXRDataset` to reach the model, chosen by
``data.loader`` (:func:`choose_loader`):

- ``gpu``: :class:`ResidentImages` copies the cache rows a run uses into one uint8 device tensor, once.
  :class:`DeviceLoader` then draws each batch there (index_select), augments it there
  (:func:`~cxr_bench.data.augment.augment_batch`) and hands it over still uint8; the model's input
  conversion (uint8 / 255, then the model's own normalisation) runs on the device too. No Python work per
  sample, no host-to-device image copy per step.
- ``workers``: the DataLoader (worker processes, pinned memory), wrapped on CUDA by
  :class:`CudaPrefetcher`, which copies batch i+1 on a side stream with ``non_blocking`` while batch i
  trains.

Both give the same batches for the same sampler: the same items in the same order, augmented by the same
pure function of ``(seed, epoch, row)``. ``auto`` picks ``gpu`` when the run is on CUDA, reads a prepared
cache, and the rows it needs fit in :data:`RESIDENT_FRACTION` of the device's free memory (measured after
the model is on it): the whole NIH release is 5.6 GB at 224 px and 29 GB at 512 px.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError
from .augment import augment_batch

if TYPE_CHECKING:  # pragma: no cover
    from .cache import ImageCache

log = logging.getLogger(__name__)

__all__ = ["LOADERS", "RESIDENT_FRACTION", "choose_loader", "ResidentImages", "DeviceLoader", "CudaPrefetcher"]

LOADERS = ("auto", "gpu", "workers")
# Share of the device's free memory (after the model is loaded) the resident images may take: the rest is
# for activations, gradients, optimizer state and the allocator's slack.
RESIDENT_FRACTION = 0.5
# Host staging block for the one-time copy: bounds the pinned buffer, not the data size.
_COPY_BLOCK_BYTES = 256 * 2**20

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def choose_loader(mode: str, device: torch.device, nbytes: int | None, *,
                  fraction: float = RESIDENT_FRACTION) -> tuple[str, str]:
    """(``"gpu"`` or ``"workers"``, why) for ``data.loader = mode``.

    ``nbytes`` is the size of the images the run needs, None when it reads PNGs (no cache to hold).
    ``gpu`` on a CPU device is allowed: the images are then resident in RAM and batches take the same
    batched path (what the CPU tests exercise).
    """
    if mode not in LOADERS:
        raise ConfigError(f"data.loader must be one of {', '.join(LOADERS)}, got {mode!r}")
    if mode == "workers":
        return "workers", "data.loader = 'workers'"
    if nbytes is None:
        if mode == "gpu":
            raise ConfigError("data.loader = 'gpu' needs data.source = 'cache' (a prepared image cache); "
                              "set data.loader = 'auto' or 'workers' for PNG input")
        return "workers", "PNG input (data.source = 'png') has no cache to hold on the device"
    if device.type != "cuda":
        if mode == "gpu":
            return "gpu", f"data.loader = 'gpu' on {device}: {_gib(nbytes)} of images held in memory"
        return "workers", f"not on CUDA ({device})"
    free, _total = torch.cuda.mem_get_info(device)
    budget = fraction * free
    if nbytes <= budget:
        return "gpu", f"{_gib(nbytes)} of images fit in {fraction:.0%} of {_gib(free)} free on {device}"
    why = (f"{_gib(nbytes)} of images do not fit in {fraction:.0%} of the {_gib(free)} free on {device}")
    if mode == "gpu":
        raise ConfigError(f"data.loader = 'gpu': {why}; use a smaller data.image_size, fewer images, or "
                          "data.loader = 'auto' (falls back to DataLoader workers)")
    return "workers", why


class ResidentImages:
    """The cache rows ``slots`` of ``cache``, copied once into one uint8 ``(N, H, W)`` tensor on ``device``.

    Rows are kept in ascending slot order; :meth:`positions` maps cache slots to rows of :attr:`images`.
    The copy goes through a bounded (pinned, on CUDA) staging block, so host memory stays flat whatever
    the cache's size.
    """

    def __init__(self, cache: ImageCache, slots: np.ndarray, device: torch.device) -> None:
        self.slots = np.unique(np.asarray(slots, dtype=np.int64))
        if self.slots.size and self.slots[0] < 0:
            raise ValueError("rejected images (slot -1) cannot be made resident")
        size = cache.size
        self.device = device
        self.images = torch.empty((len(self.slots), size, size), dtype=torch.uint8, device=device)
        per_block = max(1, _COPY_BLOCK_BYTES // (size * size))
        pin = device.type == "cuda"
        for a in range(0, len(self.slots), per_block):
            block = torch.from_numpy(np.ascontiguousarray(cache.array[self.slots[a:a + per_block]]))
            if pin:
                block = block.pin_memory()
            self.images[a:a + len(block)].copy_(block)
        log.info("%d images (%s) resident on %s", len(self.slots), _gib(self.nbytes), device)

    @staticmethod
    def needed_bytes(cache: ImageCache, slots: np.ndarray) -> int:
        return int(np.unique(slots).size) * cache.size * cache.size

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def positions(self, slots: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.slots, slots)
        ok = (pos < len(self.slots)) & (self.slots[np.minimum(pos, len(self.slots) - 1)] == slots)
        if not ok.all():
            raise ValueError(f"cache slot {int(np.asarray(slots)[~ok][0])} is not resident")
        return pos


class DeviceLoader:
    """Batches of ``dataset`` drawn from :class:`ResidentImages`, in ``sampler``'s order, on the device.

    A drop-in for the DataLoader the trainer would build: the same ``len``, the same batches of
    ``(uint8 images (B, 1, H, W), float targets (B, L), metadata rows (B,))``, with images and targets on
    the device and rows on the host. ``sampler`` yields dataset indices, or ``(epoch, index)`` pairs (an
    epoch-tagged sampler); otherwise the dataset's own ``epoch`` selects the augmentation draw.
    """

    def __init__(self, dataset: Any, resident: ResidentImages, sampler: Iterable[Any], batch_size: int, *,
                 drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.resident = resident
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        dev = resident.device
        self._pos = torch.from_numpy(resident.positions(np.asarray(dataset.slots))).to(dev)
        self._labels = torch.as_tensor(np.asarray(dataset.labels, dtype=np.float32)).to(dev)
        self._rows = np.asarray(dataset.rows, dtype=np.int64)

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]  # torch types Sampler without __len__; ours have one
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> tuple[int, np.ndarray]:
        items = list(self.sampler)
        if items and isinstance(items[0], tuple):
            return int(items[0][0]), np.fromiter((i for _, i in items), dtype=np.int64, count=len(items))
        return int(getattr(self.dataset, "epoch", 0)), np.asarray(items, dtype=np.int64)

    def __iter__(self) -> Iterator[Batch]:
        epoch, order = self._order()
        dev = self.resident.device
        # The epoch's whole order goes to the device in one copy; batches are slices of it.
        order_dev = torch.from_numpy(order).to(dev, non_blocking=False)
        augment = getattr(self.dataset, "augment", "none")
        seed = int(getattr(self.dataset, "seed", 0))
        bs = self.batch_size
        for b in range(len(self)):
            sel = order[b * bs:(b + 1) * bs]
            idx = order_dev[b * bs:(b + 1) * bs]
            images = self.resident.images.index_select(0, self._pos.index_select(0, idx)).unsqueeze(1)
            rows = self._rows[sel]
            if augment != "none":
                images = augment_batch(augment, images, seed, epoch, rows)
            yield images, self._labels.index_select(0, idx), torch.from_numpy(rows)


class CudaPrefetcher:
    """Wraps a DataLoader on CUDA: batch i+1 is copied on a side stream while batch i trains.

    The DataLoader must pin its memory (``pin_memory=True``) for the copies to be asynchronous. Batches
    come out on ``device``, ready to use on the current stream (which waits for the copy, and the copy's
    memory is recorded against it so the allocator never reuses it early).
    """

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader = loader
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Sequence[Any]]:
        stream = torch.cuda.Stream(device=self.device)
        it = iter(self.loader)

        def fetch() -> list[Any] | None:
            batch = next(it, None)
            if batch is None:
                return None
            images, target, *rest = batch  # rows stay on the host: evaluation reads them there
            with torch.cuda.stream(stream):
                return [images.to(self.device, non_blocking=True), target.to(self.device, non_blocking=True),
                        *rest]

        nxt = fetch()
        current = torch.cuda.current_stream(self.device)
        while nxt is not None:
            current.wait_stream(stream)
            for t in nxt[:2]:
                t.record_stream(current)
            batch, nxt = nxt, None
            nxt = fetch()
            yield batch
