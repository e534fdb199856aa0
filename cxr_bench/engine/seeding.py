"""Per-run randomness: every stream is derived from ``(cfg.seed, purpose, ...)``, nothing leaks out.

Where randomness comes from inside a run, and why each source is handled the way it is:

- **Data order** (which images, in which order, on which rank): a ``torch.Generator`` seeded from
  ``derive_seed(seed, "order", epoch)`` inside :class:`cxr_bench.engine.distributed.ShardedSampler`.
  It is rebuilt every epoch, so it has no state to save: a resumed run replays epoch ``e`` exactly.
- **Augmentation**: owned by the dataset (``CXRDataset.set_epoch``), a pure function of
  ``(seed, epoch, index)``; the trainer sends the epoch with every index so DataLoader workers agree.
- **Weight initialisation and dropout**: ``torch.nn`` layers draw from torch's *global* generator and
  offer no per-call generator, so this is the one place the engine seeds globally. It does so only
  inside :func:`scoped_rng`, which restores the caller's generator state on exit, and the state is
  saved in every checkpoint (:func:`capture_rng_state`) so a resumed run continues the same stream.
- numpy's and Python's global generators are never used by the engine, so they are neither seeded nor
  saved.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["derive_seed", "make_generator", "scoped_rng", "capture_rng_state", "restore_rng_state"]


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed for the stream named by ``keys`` under ``seed``.

    Hashing (rather than ``seed + epoch``) keeps streams independent: seed 1 epoch 0 and seed 0 epoch 1
    do not collide, and the value is the same on every machine and Python version.
    """
    blob = "\x1f".join([str(int(seed)), *(str(k) for k in keys)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


def make_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU ``torch.Generator`` for the stream ``(seed, *keys)``."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *keys))
    return g


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextlib.contextmanager
def scoped_rng(seed: int, *keys: object) -> Iterator[None]:
    """Seed torch's global generators (CPU and CUDA) for a block, then restore the caller's state.

    A benchmark that trains several runs in one process therefore gets the same numbers for a run
    whatever ran before it, and the caller's own random stream is not disturbed.
    """
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(derive_seed(seed, *keys))
        yield


def capture_rng_state() -> dict[str, Any]:
    """The global torch generator states, as tensors (loadable with ``torch.load(weights_only=True)``)."""
    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored only where CUDA is in use."""
    torch.set_rng_state(state["torch_cpu"].cpu())
    cuda = state.get("torch_cuda")
    if cuda is not None and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda[:n]])
