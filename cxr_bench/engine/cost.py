"""What inference costs where a model would be deployed: latency, throughput, memory, size.

MobileNetV1's case (Howard et al. 2017) is a cost claim: depthwise separable convolutions keep most of a
large network's accuracy at a fraction of its multiply-adds. GMACs count arithmetic; a small device pays
in milliseconds and megabytes, which also depend on memory traffic, operator support and threads. So each
evaluated run gets a short, separate measurement of the model it saved:

- ``cpu``: batch-1 latency (median and p90 over timed passes after warm-up), throughput at a larger batch,
  peak memory of one forward at that batch, with the thread count and the CPU model recorded;
- ``gpu``: the same on the run's CUDA device, when it was evaluated on one;
- ``weights_mb``: the model's parameters and buffers as stored (fp32), the size a device must hold;
- ``checkpoint_mb``: the size of the run's ``best.pt`` (weights and training state).

They are written to the run's ``cost.json``, beside ``metrics.json``.

A measurement is a few dozen forward passes, bounded by a time budget (a 1024-px VGG-16 forward takes
seconds on a laptop CPU), never part of a run's identity and never asserted on in tests: the numbers depend
on the machine and its load, which is why the machine is written beside them.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..utils.host import cpu_model_name as host_cpu_model
from .artifacts import COST_FILE

log = logging.getLogger(__name__)

__all__ = ["COST_FILE", "CostSettings", "cpu_model_name", "latency_summary", "measure_cost", "peak_forward_bytes", "time_passes",
           "weights_bytes"]


@dataclass(frozen=True)
class CostSettings:
    """How long to measure: ``repeats`` timed batch-1 passes (fewer if ``budget_s`` runs out, never < 3)."""

    repeats: int = 30
    warmup: int = 3
    batch: int = 8
    budget_s: float = 30.0


def cpu_model_name() -> str:
    """The CPU's marketing name (:func:`cxr_bench.utils.host.cpu_model_name`), ``"unknown"`` when none."""
    return host_cpu_model() or "unknown"


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers, at their stored precision."""
    tensors = [*model.parameters(), *model.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def latency_summary(seconds: list[float]) -> dict[str, float | int]:
    """Median and p90 of per-pass times, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "n_timed": int(ms.size)}


def time_passes(fn: Callable[[], Any], settings: CostSettings, sync: Callable[[], None] | None = None, *,
                min_passes: int = 3) -> list[float]:
    """Wall seconds of each timed call of ``fn`` after ``settings.warmup`` untimed ones.

    Stops early once ``settings.budget_s`` is spent, but always times at least ``min_passes`` passes (three
    for a latency, so a slow model on a slow machine gets a short, honest measurement rather than a long one;
    one for a training step of a large model at 1024 px on a CPU, which the speed benchmark times once).
    """
    sync = sync or (lambda: None)
    for _ in range(max(settings.warmup, 0)):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    for i in range(max(settings.repeats, min_passes, 1)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if i + 1 >= min_passes and time.perf_counter() - start > settings.budget_s:
            break
    return times


class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages that operators create, while they are alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key and key not in self._sizes:  # a view of a tensor already counted is not new memory
                self._sizes[key] = storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, key)
        return out


def peak_forward_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Peak bytes of the tensors that one CPU forward of ``x`` allocates and holds at once.

    Every operator's outputs are counted while they are alive (a dispatch mode sees each one); the maximum
    of their sum is what a device needs on top of the weights. Kernels' internal scratch space is not
    counted. (torch.profiler's memory records would give the same and also print its own log lines to
    the console; this needs nothing but the dispatcher.)
    """
    mode = _LiveBytes()
    with torch.inference_mode(), mode:
        out = model(x)
    del out
    return int(mode.peak)


def _cpu_block(model: torch.nn.Module, shape: tuple[int, int, int], settings: CostSettings,
               gen: torch.Generator) -> dict[str, Any]:
    c, h, w = shape
    one = torch.rand((1, c, h, w), generator=gen)
    many = torch.rand((settings.batch, c, h, w), generator=gen)
    with torch.inference_mode():
        lat = latency_summary(time_passes(lambda: model(one), settings))
        short = CostSettings(repeats=3, warmup=1, batch=settings.batch, budget_s=settings.budget_s)
        thr = time_passes(lambda: model(many), short)
    return {
        "batch1_latency_ms": lat["median_ms"], "batch1_latency_p90_ms": lat["p90_ms"], "n_timed": lat["n_timed"],
        "throughput_batch": settings.batch, "throughput_img_s": settings.batch / float(np.median(thr)),
        "peak_mem_mb": (weights_bytes(model) + peak_forward_bytes(model, many)) / 2**20,
        "threads": torch.get_num_threads(), "cpu_model": cpu_model_name(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def _gpu_block(model: torch.nn.Module, shape: tuple[int, int, int], settings: CostSettings,
               device: torch.device, gen: torch.Generator) -> dict[str, Any]:
    c, h, w = shape
    one = torch.rand((1, c, h, w), generator=gen).to(device)
    many = torch.rand((settings.batch, c, h, w), generator=gen).to(device)

    def sync() -> None:
        torch.cuda.synchronize(device)

    with torch.inference_mode():
        lat = latency_summary(time_passes(lambda: model(one), settings, sync))
        torch.cuda.reset_peak_memory_stats(device)
        thr = time_passes(lambda: model(many), CostSettings(repeats=10, warmup=2, batch=settings.batch,
                                                            budget_s=settings.budget_s), sync)
        peak = torch.cuda.max_memory_allocated(device)
    return {
        "batch1_latency_ms": lat["median_ms"], "batch1_latency_p90_ms": lat["p90_ms"], "n_timed": lat["n_timed"],
        "throughput_batch": settings.batch, "throughput_img_s": settings.batch / float(np.median(thr)),
        "peak_mem_mb": peak / 2**20, "gpu_model": torch.cuda.get_device_name(device), "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def measure_cost(model: torch.nn.Module, image_size: int, *, in_chans: int = 1, device: torch.device | None = None,
                 settings: CostSettings | None = None, seed: int = 0) -> dict[str, Any]:
    """The ``cost`` block of a run's metrics.json for ``model`` at ``image_size``.

    Always measured on the CPU (a copy of the model, fp32, the process's thread count); also on ``device``
    when it is a CUDA device. Inputs are random images in [0, 1] of the model's input shape (cost does not
    depend on pixel values). The caller's model, device and RNG are left as they were.
    """
    settings = settings or CostSettings()
    gen = torch.Generator().manual_seed(seed)
    shape = (in_chans, image_size, image_size)
    was_training = model.training
    cpu_model = copy.deepcopy(model).to("cpu").float().eval()
    out: dict[str, Any] = {"image_size": image_size, "weights_mb": weights_bytes(cpu_model) / 2**20,
                           "cpu": _cpu_block(cpu_model, shape, settings, gen)}
    del cpu_model
    if device is not None and device.type == "cuda":
        model.eval()
        try:
            out["gpu"] = _gpu_block(model, shape, settings, device, gen)
        finally:
            model.train(was_training)
    log.debug("inference cost at %d px: %.1f ms batch-1 on %d CPU threads", image_size,
              out["cpu"]["batch1_latency_ms"], out["cpu"]["threads"])
    return out
