"""Single-process and ``torchrun`` training through one code path.

``torchrun --nproc_per_node=N -m cxr_bench train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the rendezvous variables; :func:`init_distributed` reads them and starts a process group (NCCL on CUDA,
gloo on CPU). Without them it returns a world of one, and every collective here is a no-op, so the
trainer never branches on "am I distributed".

:class:`ShardedSampler` replaces ``DistributedSampler``: its order is a pure function of
``(seed, epoch)`` (a fresh generator per epoch, no hidden state to checkpoint), it can cap the number
of samples per epoch, and it can tag each index with the epoch so dataset copies in persistent
DataLoader workers know which epoch's augmentation to apply.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import ConfigError, TrainingError
from .seeding import make_generator

log = logging.getLogger(__name__)

__all__ = ["DistContext", "init_distributed", "resolve_device", "ShardedSampler", "EpochTagged"]


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is usable, else ``cpu``; ``cuda`` gets the local rank."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} requested but CUDA is not available; use device = 'cpu' or 'auto'")
        return torch.device(spec if ":" in spec else f"cuda:{local_rank}")
    raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


@dataclass
class DistContext:
    """Where this process stands in the job: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # whether init_distributed started the process group (and must end it)
    # A process group is in use: any world of several ranks, and a torchrun job of one (which then runs DDP
    # and its collectives over NCCL or gloo exactly as a larger job does, with the same numbers as a plain run).
    in_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.in_group

    def barrier(self) -> None:
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` on a single process)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over ranks (in place; returns ``t``)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics).

        DDP keeps parameters identical across ranks, but each rank updates its BatchNorm statistics on its
        own batches; before an evaluation every rank must score with the model rank 0 checkpoints.
        """
        if self.distributed:
            for b in module.buffers():
                dist.broadcast(b.data, src=0)

    def shutdown(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def init_distributed(device_spec: str = "auto") -> DistContext:
    """Read the ``torchrun`` environment and join (or start) the process group if ``WORLD_SIZE > 1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    # torchrun (torch.distributed.run) sets TORCHELASTIC_RUN_ID; a bare process with RANK set does not start
    # a group of one.
    if world_size <= 1 and not (os.environ.get("TORCHELASTIC_RUN_ID") and os.environ.get("MASTER_ADDR")):
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        owns = True
        log.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, device)
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise TrainingError(
            f"process group (rank {dist.get_rank()}/{dist.get_world_size()}) disagrees with the environment "
            f"(RANK={rank}, WORLD_SIZE={world_size})"
        )
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device, owns_group=owns,
                       in_group=True)


class ShardedSampler(Sampler):
    """Indices ``0..n-1`` for one rank; the order is a pure function of ``(seed, epoch)``.

    - ``shuffle``: a permutation drawn from ``make_generator(seed, "order", epoch)``; else ``0..n-1``.
    - ``limit``: keep only the first ``limit`` samples *per rank* of the epoch's order (a capped epoch
      still sees a different random subset each epoch).
    - Padding: without ``drop_last`` the order is padded with its own first indices to a multiple of
      ``world_size`` so every rank runs the same number of batches (DDP needs that); evaluation drops the
      duplicates by row index. With ``drop_last`` the tail is cut instead.
    - Rank ``r`` takes positions ``r, r + world_size, ...`` of the padded order.
    - ``tag_epoch``: yield ``(epoch, index)`` pairs, for :class:`EpochTagged` datasets.
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, limit: int | None = None, tag_epoch: bool = False) -> None:
        if n <= 0:
            raise TrainingError("cannot sample from an empty split")
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.limit = limit
        self.tag_epoch = tag_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self) -> int:
        k = self.n // self.world_size if self.drop_last else math.ceil(self.n / self.world_size)
        return min(k, self.limit) if self.limit is not None else k

    def __len__(self) -> int:
        return self._per_rank()

    def indices(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=make_generator(self.seed, "order", self.epoch)).tolist()
        else:
            order = list(range(self.n))
        per_rank = math.ceil(self.n / self.world_size) if not self.drop_last else self.n // self.world_size
        total = per_rank * self.world_size
        if total > len(order):  # pad by cycling: n may be smaller than world_size
            order = (order * math.ceil(total / len(order)))[:total]
        else:
            order = order[:total]
        mine = order[self.rank:total:self.world_size]
        return mine[: self._per_rank()]

    def __iter__(self) -> Iterator[Any]:
        idx = self.indices()
        if self.tag_epoch:
            return iter([(self.epoch, i) for i in idx])
        return iter(idx)


class EpochTagged(torch.utils.data.Dataset):
    """Wraps a dataset with ``set_epoch``: items are fetched by ``(epoch, index)`` keys.

    A persistent DataLoader worker holds its own copy of the dataset, so calling ``set_epoch`` in the
    main process would not reach it; sending the epoch along with each index does, for any number of
    workers, which keeps augmentation a pure function of ``(seed, epoch, index)``.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _enter(self, epoch: int) -> None:
        if epoch != self._epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
            self._epoch = epoch

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self._enter(epoch)
        return self.dataset[index]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[Any]:
        """A whole batch at once (the DataLoader uses this), through the dataset's own batched read."""
        if not keys:
            return []
        self._enter(keys[0][0])
        indices = [i for _, i in keys]
        getitems = getattr(self.dataset, "__getitems__", None)
        return getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]
