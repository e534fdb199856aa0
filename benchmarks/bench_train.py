"""Harness overhead: training steps through the whole engine vs the same steps on a pre-made batch.

The harness is the real thing: :class:`cxr_bench.engine.trainer.Trainer` on the bundled sample (prepared
image cache -> the run's input path (``data.loader``: the GPU-resident images, or DataLoader workers) ->
uint8 to float on the device -> model -> loss -> optimizer -> schedule, with the per-step non-finite-loss
check), timed over whole capped epochs with :meth:`Trainer.train_epoch`. The bare loop is the model
alone: the trainer's own network, loss, optimizer and grad scaler, at the same precision, memory format,
compilation, batch and accumulation, stepping on one batch made beforehand and already on the device.
``ratio = harness images/s / bare images/s`` (goal: >= 0.90 on CUDA, >= 0.95 on a CPU), of the medians;
``ratio_best`` of the fastest repeats. The two are timed alternately, ``--repeats`` times each, so drifting
load hits both alike.

On CUDA each row also has the GPU's busy share while the harness ran (``gpu_busy_pct``: NVML's
utilization.gpu, the figure nvidia-smi prints, sampled every 100 ms; ``gpu_busy_bare_pct`` for the bare
loop) and the harness's evaluation throughput (``eval_images_per_s``: prediction over the training split at
the run's evaluation batch size).

Presets (``--preset``):

- ``cpu`` (default off CUDA): ``--model`` at ``--img-size`` / ``--batch-size``, once per ``--workers`` count;
- ``cuda`` (default on CUDA): the four GPU settings, each as its suite block trains it:
  MobileNetV1 + GAP at 224 px, batch 256; ResNet-50 + GAP at 224, batch 256; ResNet-50 + Wang head frozen
  at 1024, batch 16 x 5 accumulation, W-CEL, SGD (the paper profile); DenseNet-121 + GAP at 224, batch 16,
  AdamW, flips (CheXNet). bf16 autocast and channels_last. ``--tiny`` shrinks them (32 px, batch 4, 2 steps)
  so the preset runs end to end on a CPU in seconds (``benchmarks/gpu_check.sh --cpu-smoke``).

``--compile no|yes|both`` measures without / with ``torch.compile`` (CUDA only), one row each; ``--deadline``
(seconds since the epoch) stops before a setting that would start after it, so a time-boxed script keeps
what it measured. Results: ``results/harness_overhead.csv`` (CPU) or ``harness_overhead_cuda.csv``.

    python benchmarks/bench_train.py                          # CPU: mobilenet_v1, 128 px, batch 32, 0 and 2 workers
    python benchmarks/bench_train.py --quick                  # CPU: 64 px, fewer steps
    python benchmarks/bench_train.py --preset cuda --compile both --out DIR
    python benchmarks/bench_train.py --preset cuda --tiny --device cpu    # the CUDA preset, shrunk, on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr_bench.bench.measure import load_average, machine_info
from cxr_bench.bench.results import write_results_csv
from cxr_bench.config import RunConfig
from cxr_bench.engine.distributed import init_distributed
from cxr_bench.engine.evaluate import autocast, predict, to_model_input
from cxr_bench.engine.seeding import scoped_rng
from cxr_bench.engine.trainer import Trainer

log = logging.getLogger("benchmarks.bench_train")

COLUMNS = ("setting", "model", "img_size", "batch_size", "accum_steps", "frozen_backbone", "amp", "channels_last",
           "compiled", "loader", "workers", "device", "steps", "repeats", "bare_images_per_s",
           "harness_images_per_s", "ratio", "ratio_best", "bare_step_ms", "harness_step_ms", "gpu_busy_pct",
           "gpu_busy_bare_pct", "eval_images_per_s", "warmup_seconds")


@dataclass(frozen=True)
class Setting:
    """One measured configuration: a name and the RunConfig overrides that make it."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


# The four GPU settings, as the wang2017 suite trains them (speed flags as its paper profile sets).
CUDA_FAST = {"optim.amp": "bf16", "optim.channels_last": True, "data.workers": 8}
CUDA_SETTINGS = (
    Setting("mobilenet_v1-224-b256", {"model.backbone": "mobilenet_v1", "model.head": "gap", "data.image_size": 224,
                                      "optim.batch_size": 256, "data.augment": "flip"}),
    Setting("resnet50-224-b256", {"model.backbone": "resnet50", "model.head": "gap", "data.image_size": 224,
                                  "optim.batch_size": 256, "data.augment": "flip"}),
    Setting("resnet50-frozen-1024-paper", {
        "model.backbone": "resnet50", "model.head": "wang2017", "model.freeze_backbone": True,
        "data.image_size": 1024, "data.augment": "none", "loss.name": "wcel", "optim.optimizer": "sgd",
        "optim.lr": 0.01, "optim.batch_size": 16, "optim.accum_steps": 5}),
    Setting("densenet121-224-b16-chexnet", {
        "model.backbone": "densenet121", "model.head": "gap", "data.image_size": 224, "data.augment": "flip",
        "loss.name": "bce", "optim.optimizer": "adamw", "optim.weight_decay": 0.0, "optim.batch_size": 16}),
)
TINY = {"data.image_size": 32, "optim.batch_size": 4, "data.workers": 0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--name", default=None, help="CSV name (default harness_overhead[_cuda].csv)")
    p.add_argument("--preset", choices=("cpu", "cuda"), default=None, help="default: cuda on a GPU, else cpu")
    p.add_argument("--tiny", action="store_true", help="cuda preset shrunk to 32 px, batch 4, 2 steps (CPU smoke)")
    p.add_argument("--only", default=None, help="cuda preset: comma-separated setting names (prefixes) to run")
    p.add_argument("--quick", action="store_true", help="cpu preset: 64 px, 4 steps, 2 repeats")
    p.add_argument("--model", default="mobilenet_v1", help="cpu preset: backbone")
    p.add_argument("--img-size", type=int, default=None, help="cpu preset: default 128 (quick: 64)")
    p.add_argument("--batch-size", type=int, default=32, help="cpu preset: batch size")
    p.add_argument("--workers", default="0,2", help="cpu preset: DataLoader worker counts (comma-separated)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed optimizer steps per measurement (default: cpu 10, quick 4, cuda 20, tiny 2)")
    p.add_argument("--repeats", type=int, default=None, help="alternating measurements per side (default 3; "
                   "quick/tiny 2)")
    p.add_argument("--compile", choices=("no", "yes", "both"), default="no", help="torch.compile (CUDA only)")
    p.add_argument("--loader", choices=("auto", "gpu", "workers"), default="auto", help="data.loader")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None, help="NIH release (default: the bundled sample)")
    p.add_argument("--deadline", type=float, default=None,
                   help="wall-clock time (time.time()) after which no new setting starts")
    return p.parse_args(argv)


def harness_config(args: argparse.Namespace, overrides: dict[str, Any], steps: int, cache_dir: str) -> RunConfig:
    base = {"data": {"root": args.data_root, "augment": "flip", "loader": args.loader, "cache_dir": cache_dir},
            "model": {"backbone": args.model},
            "optim": {"optimizer": "adamw", "scheduler": "cosine", "epochs": 1000, "max_steps_per_epoch": steps},
            "device": args.device}
    cfg = RunConfig.from_dict(base)
    return cfg.replace(**overrides) if overrides else cfg


class GpuBusy:
    """Mean GPU busy share (%) over a block: NVML's utilization.gpu, sampled every ``interval`` seconds.

    NVML (the library nvidia-smi reads) when ``pynvml`` imports, else ``nvidia-smi`` polled; None off CUDA
    or without either. The first sample of a block is dropped: it averages over time before the block.
    """

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self.index = device.index or 0
        self.interval = interval
        self.samples: list[float] = []
        self._read = self._reader() if device.type == "cuda" else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _reader(self) -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # no pynvml, or no NVML behind it
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", str(self.index)]

        def read() -> float | None:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
            return float(out) if out.replace(".", "", 1).isdigit() else None

        return read

    def _loop(self) -> None:
        read = self._read
        if read is None:
            return
        while not self._stop.wait(self.interval):
            try:
                value = read()
            except Exception:
                value = None
            if value is not None:
                self.samples.append(value)

    @contextlib.contextmanager
    def measure(self) -> Iterator[list[float]]:
        """Collect samples during the block into the list it yields (appended to :attr:`samples`)."""
        window: list[float] = []
        if self._read is None:
            yield window
            return
        start = len(self.samples)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        try:
            yield window
        finally:
            self._stop.set()
            self._thread.join()
            window.extend(self.samples[start + 1:] or self.samples[start:])

    @staticmethod
    def mean(windows: list[list[float]]) -> float | None:
        values = [v for w in windows for v in w]
        return round(float(np.mean(values)), 1) if values else None


def bare_loop(trainer: Trainer, steps: int) -> float:
    """Seconds for ``steps`` optimizer steps of the trainer's own model, loss and optimizer on one batch.

    The batch is built from the training set beforehand (not augmented) and put on the device; each step
    is ``accum_steps`` micro-batches, as the harness takes them. Nothing else runs: no data, no loss check,
    no schedule.
    """
    o = trainer.cfg.optim
    dev = trainer.ctx.device
    ds = trainer.data.train
    items = [ds[i] for i in range(min(o.batch_size, len(ds)))]
    x = to_model_input(torch.stack([it[0] for it in items]), dev, trainer.channels_last)
    y = torch.stack([it[1] for it in items]).to(dev)
    net, loss_fn, opt, scaler = trainer.net, trainer.criterion, trainer.optimizer, trainer.scaler
    net.train()

    def step() -> None:
        for _ in range(o.accum_steps):
            with autocast(dev, trainer.amp):
                logits = net(x)
            scaler.scale(loss_fn(logits.float(), y) / o.accum_steps).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, cuDNN autotuning for this shape
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - t0


def harness_epochs(trainer: Trainer, first_epoch: int, steps: int) -> tuple[int, float, int]:
    """(images, seconds, epochs) for at least ``steps`` optimizer steps through :meth:`Trainer.train_epoch`."""
    images, seconds, epoch = 0, 0.0, first_epoch
    while (images // (trainer.cfg.optim.batch_size * trainer.cfg.optim.accum_steps)) < steps:
        _loss, n, s = trainer.train_epoch(epoch)
        if n == 0:
            raise RuntimeError(f"an epoch of {len(trainer.data.train)} training images yielded no batch")
        images, seconds, epoch = images + n, seconds + s, epoch + 1
    return images, seconds, epoch


def eval_rate(trainer: Trainer, split: str) -> float:
    """Images/s of the harness's prediction path (evaluation batch size) over one split."""
    ds = getattr(trainer.data, split)
    loader = trainer.inputs.eval_loader(ds, persistent=False)
    dev = trainer.ctx.device
    for _ in range(2):  # the first pass warms up this batch shape's kernels; the second is timed
        t0 = time.perf_counter()
        predict(trainer.model, loader, ds.rows, trainer.ctx, amp=trainer.amp, channels_last=trainer.channels_last,
                progress=False)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    return len(ds) / (time.perf_counter() - t0)


def measure(args: argparse.Namespace, setting: Setting, steps: int, repeats: int, cache_dir: str) -> dict[str, Any]:
    cfg = harness_config(args, setting.overrides, steps, cache_dir)
    o = cfg.optim
    ctx = init_distributed(cfg.device)
    cuda = ctx.device.type == "cuda"
    busy = GpuBusy(ctx.device)
    with tempfile.TemporaryDirectory() as tmp, scoped_rng(0, "bench_train"), warnings.catch_warnings():
        # A frozen random backbone is pointless to train and exactly right to time (no weights offline).
        warnings.filterwarnings("ignore", message="freeze_backbone=True with a randomly initialised")
        t0 = time.perf_counter()
        trainer = Trainer(cfg, Path(tmp), ctx, progress=False)
        # Warm-up: worker start-up, first touch of the memory map, cuDNN autotuning, torch.compile.
        _, _, epoch = harness_epochs(trainer, 0, 1)
        warmup_seconds = time.perf_counter() - t0
        bare, harness, busy_h, busy_b = [], [], [], []
        for r in range(repeats):
            with busy.measure() as window:
                b_seconds = bare_loop(trainer, steps)
            busy_b.append(window)
            bare.append(o.batch_size * o.accum_steps * steps / b_seconds)
            with busy.measure() as window:
                images, seconds, epoch = harness_epochs(trainer, epoch, steps)
            busy_h.append(window)
            harness.append(images / seconds)
            log.info("%s repeat %d: bare %.1f img/s, harness %.1f img/s", setting.name, r + 1, bare[-1], harness[-1])
        evaluation = eval_rate(trainer, "val" if args.tiny or args.quick else "train")
        row_loader = trainer.inputs.kind
        del trainer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    b, h = statistics.median(bare), statistics.median(harness)
    return {
        "setting": setting.name, "model": f"{cfg.model.backbone}+{cfg.model.head}", "img_size": cfg.data.image_size,
        "batch_size": o.batch_size, "accum_steps": o.accum_steps, "frozen_backbone": cfg.model.freeze_backbone,
        "amp": o.amp if cuda else "none", "channels_last": o.channels_last and cuda, "compiled": o.compile and cuda,
        "loader": row_loader, "workers": cfg.data.workers, "device": str(ctx.device), "steps": steps,
        "repeats": repeats, "bare_images_per_s": round(b, 2), "harness_images_per_s": round(h, 2),
        "ratio": round(h / b, 4),
        # Best-of-N (timeit's rule: noise only ever slows a step down), beside the ratio of medians.
        "ratio_best": round(max(harness) / max(bare), 4),
        "bare_step_ms": round(1e3 * o.batch_size * o.accum_steps / b, 2),
        "harness_step_ms": round(1e3 * o.batch_size * o.accum_steps / h, 2),
        "gpu_busy_pct": GpuBusy.mean(busy_h), "gpu_busy_bare_pct": GpuBusy.mean(busy_b),
        "eval_images_per_s": round(evaluation, 1), "warmup_seconds": round(warmup_seconds, 1),
    }


def settings(args: argparse.Namespace, cuda: bool) -> list[Setting]:
    preset = args.preset or ("cuda" if cuda else "cpu")
    if preset == "cpu":
        size = args.img_size or (64 if args.quick else 128)
        return [Setting(f"{args.model}-{size}-b{args.batch_size}-w{w}",
                        {"model.backbone": args.model, "data.image_size": size, "optim.batch_size": args.batch_size,
                         "data.workers": int(w)}) for w in args.workers.split(",") if w != ""]
    if args.only is None:
        chosen = list(CUDA_SETTINGS)
    else:  # in the order given: a time-boxed run measures the first ones first
        prefixes = [p for p in args.only.split(",") if p]
        chosen = [s for p in prefixes for s in CUDA_SETTINGS if s.name.startswith(p)]
        chosen = [s for i, s in enumerate(chosen) if s not in chosen[:i]]
        if not chosen:
            raise SystemExit(f"--only {args.only}: no setting; known: {', '.join(s.name for s in CUDA_SETTINGS)}")
    out = []
    for s in chosen:
        over = {**s.overrides, **CUDA_FAST, **(TINY if args.tiny else {})}
        if args.tiny and over.get("optim.accum_steps", 1) > 1:
            over["optim.accum_steps"] = 2  # still accumulates, at a fraction of the CPU time
        for compiled in {"no": (False,), "yes": (True,), "both": (False, True)}[args.compile]:
            out.append(replace(s, name=s.name + ("-compiled" if compiled else ""),
                               overrides={**over, "optim.compile": compiled}))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cuda = init_distributed(args.device).device.type == "cuda"
    preset = args.preset or ("cuda" if cuda else "cpu")
    small = args.quick or args.tiny
    steps = args.steps or (2 if args.tiny else 4 if args.quick else 20 if preset == "cuda" else 10)
    repeats = args.repeats or (2 if small else 3)
    if cuda:
        torch.backends.cudnn.benchmark = True  # as train_run does on CUDA: fixed shapes, autotuned kernels
    meta = machine_info()
    meta.update(preset=preset, tiny=args.tiny, loader=args.loader, compile=args.compile,
                harness="cache -> input path (data.loader) -> uint8/255 on device -> model -> loss -> optimizer",
                bare="the trainer's own model, loss, optimizer and precision on one batch already on the device",
                gpu_busy="NVML utilization.gpu (what nvidia-smi prints), mean of 100-ms samples")
    out = args.out / (args.name or ("harness_overhead_cuda.csv" if preset == "cuda" else "harness_overhead.csv"))
    rows: list[dict[str, Any]] = []
    todo = settings(args, cuda)
    with tempfile.TemporaryDirectory(prefix="cxr-bench-train-") as cache_dir:
        for setting in todo:
            if args.deadline is not None and time.time() > args.deadline:
                log.warning("deadline reached: %s and later settings not measured", setting.name)
                break
            rows.append(measure(args, setting, steps, repeats, cache_dir))
            meta["loadavg_1m_end"] = load_average()
            meta["complete"] = len(rows) == len(todo)
            # Rewritten after every setting: a run stopped by a time limit keeps what it measured.
            write_results_csv(out, rows, meta=meta, columns=COLUMNS)
    for row in rows:
        log.info("%s: harness/bare = %.3f (%.1f / %.1f img/s), GPU busy %s %%", row["setting"], row["ratio"],
                 row["harness_images_per_s"], row["bare_images_per_s"], row["gpu_busy_pct"])
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
