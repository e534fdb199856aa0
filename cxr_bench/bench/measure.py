"""The measurement core of the benchmark scripts: the machine, a timed train/inference step, a power-law fit.

Memory: on CPU the peak is the growth of the process's resident-set high-water mark
(``resource.getrusage(...).ru_maxrss``) across the timed phase. ``tracemalloc`` does not see torch's
allocations (they bypass Python's allocator), and a high-water mark only grows, so each setting is measured
in a fresh child process (``isolate=True``) where the mark starts from import + model construction. On CUDA
it is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import platform
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.clock import utc_now

log = logging.getLogger(__name__)

# Columns every model-throughput row has, in timm's benchmark.py naming (step times in milliseconds,
# param_count in millions), plus the peak-memory columns timm leaves out.
MODEL_COLUMNS = (
    "model", "backbone", "head", "img_size", "device", "amp", "channels_last", "compiled", "frozen_backbone",
    "threads",
    "infer_batch_size", "infer_samples_per_sec", "infer_step_time", "infer_iters",
    "train_batch_size", "train_samples_per_sec", "train_step_time", "train_iters",
    "param_count", "gmacs", "infer_peak_mem_mb", "train_peak_mem_mb", "mem_method",
)



# ---------------------------------------------------------------------------------------------- machine
# The checkout the benchmark scripts and the package share: a change to a script makes the figures dirty too.
CHECKOUT = Path(__file__).resolve().parents[2]


def machine_info() -> dict[str, Any]:
    """The machine, software and commit a number was measured on, flat: what every benchmark's results
    carry (:func:`cxr_bench.bench.results.write_results_csv` puts it in the CSV's sidecar, or a script copies
    keys of it into columns).

    Built from :mod:`cxr_bench.runner.provenance` (the record every run's manifest carries) plus the load
    average at the time: on a shared machine it says how much of the CPU the measurement actually had.
    ``git_commit``/``git_dirty`` are those of the whole checkout (``benchmarks/`` included), None in an
    installed wheel.
    """
    from ..runner.provenance import git_info, hardware_info, package_versions

    hw = hardware_info()
    git = git_info(CHECKOUT)
    versions = package_versions(("torch", "torchvision", "timm", "numpy"))
    return {
        "timestamp_utc": utc_now(),
        "hostname": platform.node(),
        "platform": hw["platform"],
        "cpu": hw["cpu_model"],
        "cpu_count": hw["cpu_count"],
        "cpu_usable": hw["cpu_usable"],
        "torch_threads": hw["torch_threads"],
        "memory_gb": round(hw["ram_bytes"] / 2**30, 1) if hw["ram_bytes"] else None,
        "gpu": ", ".join(g["name"] for g in hw["gpus"]) or None,
        "loadavg_1m": load_average(),
        "python": platform.python_version(),
        **versions,
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
    }


def load_average() -> float | None:
    """The 1-minute load average, to 2 decimals (None where the OS has none): beside a timing, how busy the
    machine was."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


# ---------------------------------------------------------------------------------------------- timing
def current_maxrss_mb() -> float:
    """This process's resident-set high-water mark in MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children already reaped (a finished
    ``multiprocessing.Pool``'s workers, a waited-for subprocess)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(fn(), wall seconds, CPU seconds)`` of one call. On a shared machine wall >> CPU means the cores
    were busy with something else."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - t0, cpu_seconds() - c0


def resolve_device(device: str = "auto") -> str:
    """The engine's device rule (:func:`cxr_bench.engine.distributed.resolve_device`), as the string a
    results row records."""
    from ..engine.distributed import resolve_device as engine_device

    dev = engine_device(device)
    return dev.type if dev.index in (None, 0) and device in ("auto", "cuda", "cpu") else str(dev)


def measure_model(backbone: str, head: str = "gap", img_size: int = 224, *, batch_size: int = 8,
                  infer_batch_size: int | None = None, iters: int = 5, warmup: int = 2,
                  device: str = "auto", threads: int | None = None, amp: str | None = None,
                  channels_last: bool | None = None, compile: bool | None = None,
                  num_labels: int = 14, max_seconds: float | None = None, seed: int = 0,
                  freeze_backbone: bool = False, phases: Sequence[str] = ("infer", "train")) -> dict[str, Any]:
    """Time inference and one training step (forward, BCE loss, backward, SGD step) of one model.

    ``freeze_backbone`` times the step the way a frozen-backbone run trains (Wang et al.: only the head
    learns), where backward stops at the head.

    ``amp``/``channels_last``/``compile`` left as None follow the device: on CUDA bf16 autocast,
    channels_last and ``torch.compile``; on CPU none of them (bf16 autocast on CPU is slower on most
    CPUs without AMX, and compile time would dominate a short CPU measurement). Inputs are pre-made random
    tensors, so this is the model alone; the harness overhead is ``benchmarks/bench_train.py``.
    Returns one row with the :data:`MODEL_COLUMNS`.
    """
    import torch

    from ..engine.cost import CostSettings, time_passes
    from ..models import create_model, model_complexity

    device = resolve_device(device)
    cuda = device.startswith("cuda")
    amp = amp if amp is not None else ("bf16" if cuda else "none")
    channels_last = channels_last if channels_last is not None else cuda
    compile = compile if compile is not None else cuda
    if threads is not None:
        torch.set_num_threads(threads)
    infer_batch_size = infer_batch_size or batch_size

    # Counted by name on the meta device: a counting pass on the real model would raise the CPU memory
    # mark the peaks are measured from.
    complexity = model_complexity(backbone, img_size, head=head, num_labels=num_labels)
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        # A frozen random backbone would be pointless to train; to time one it is exactly right.
        warnings.filterwarnings("ignore", message="freeze_backbone=True with a randomly initialised")
        model = create_model(backbone, head=head, num_labels=num_labels, freeze_backbone=freeze_backbone)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    runner = torch.compile(model) if compile else model
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, 1, img_size, img_size, generator=gen).to(device, memory_format=fmt)
        y = (torch.rand(n, num_labels, generator=gen) < 0.1).float().to(device)
        return x, y

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def autocast() -> contextlib.AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda" if cuda else "cpu", dtype=dtype)

    sync = torch.cuda.synchronize if cuda else (lambda: None)

    # The baseline the peaks are measured from: model and inputs resident. On CPU the high-water mark never
    # comes down, so both phases share the mark taken before the first one (inference runs first and
    # training's peak is the larger), rather than the train phase starting from inference's peak.
    cpu_baseline = current_maxrss_mb()

    def memory_mark() -> float:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated() / 2**20
        return cpu_baseline

    def peak_mb(baseline: float) -> float:
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else current_maxrss_mb()
        return max(0.0, peak - baseline)

    def phase(prefix: str, step_fn: Callable[[], None], n_batch: int) -> dict[str, Any]:
        """Time one phase: median step time, images/s, timed steps, peak memory above the baseline."""
        start = memory_mark()
        budget = math.inf if max_seconds is None else max_seconds
        times = time_passes(step_fn, CostSettings(repeats=iters, warmup=warmup, budget_s=budget), sync, min_passes=1)
        n = len(times)
        step = float(np.median(times))
        return {f"{prefix}_batch_size": n_batch, f"{prefix}_samples_per_sec": n_batch / step,
                f"{prefix}_step_time": step * 1e3, f"{prefix}_iters": n, f"{prefix}_peak_mem_mb": peak_mb(start)}

    row: dict[str, Any] = {
        "model": f"{backbone}+{head}", "backbone": backbone, "head": head, "img_size": img_size,
        "device": device, "amp": amp, "channels_last": channels_last, "compiled": compile,
        "frozen_backbone": freeze_backbone,
        "threads": torch.get_num_threads(),
        "param_count": round(complexity["params"] / 1e6, 3), "gmacs": round(float(complexity["gmacs"]), 3),
        "mem_method": "cuda_max_allocated_delta" if cuda else "maxrss_delta",
    }

    if "infer" in phases:
        x, _ = batch(infer_batch_size)
        runner.eval()  # type: ignore[attr-defined]  # a compiled module's wrapper is typed as a callable

        def infer_step() -> None:
            with torch.inference_mode(), autocast():
                runner(x)

        row.update(phase("infer", infer_step, infer_batch_size))
        del x

    if "train" in phases:
        x, y = batch(batch_size)
        runner.train()  # type: ignore[attr-defined]  # a compiled module's wrapper is typed as a callable
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def train_step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(runner(x).float(), y)
            loss.backward()
            opt.step()

        row.update(phase("train", train_step, batch_size))
    return row


def _measure_in_child(kwargs: dict[str, Any]) -> dict[str, Any]:
    # Child process entry point: quiet logging, one measurement, a plain dict back.
    logging.basicConfig(level=logging.WARNING)
    return measure_model(**kwargs)


def measure_model_isolated(**kwargs: Any) -> dict[str, Any]:
    """:func:`measure_model` in a fresh (spawned) process, so the CPU peak-memory mark is its own.

    Costs one interpreter start (a few seconds to import torch) per setting. An error in the child is
    re-raised here.
    """
    if kwargs.get("threads") is None:
        import torch

        kwargs["threads"] = torch.get_num_threads()  # a spawned child would otherwise pick its own
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_measure_in_child, kwargs).result()


def fit_power_law(x: Iterable[float], y: Iterable[float]) -> tuple[float, float, float]:
    """Least-squares fit of ``y = a * x**b`` on log-log axes. Returns ``(b, a, r2)``.

    ``b`` is the growth exponent the cost curve reports (2 for cost proportional to pixels at fixed
    aspect, 1 for cost proportional to images).
    """
    lx = np.log(np.asarray(list(x), dtype=float))
    ly = np.log(np.asarray(list(y), dtype=float))
    if lx.size < 2 or not (np.all(np.isfinite(lx)) and np.all(np.isfinite(ly))):
        raise ValueError("a power-law fit needs at least two positive points")
    b, log_a = np.polyfit(lx, ly, 1)
    pred = log_a + b * lx
    ss_res = float(np.sum((ly - pred) ** 2))
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return float(b), float(math.exp(log_a)), r2
