"""Harness overhead: a training step through the whole engine vs a bare loop over pre-made tensors.

The harness is the real thing: :class:`cxr_bench.engine.trainer.Trainer` on the bundled sample
(prepared image cache -> ``CXRDataset`` -> ``DataLoader`` with the run's sampler and workers -> uint8 to
float on the device -> model -> loss -> optimizer -> schedule, with the per-step non-finite-loss check),
timed over whole capped epochs with :meth:`Trainer.train_epoch`. The bare loop is the same model, batch,
loss and optimizer on one random float tensor built beforehand: the fastest a training step can be.
``ratio = harness images/s / bare images/s`` (target >= 0.95), of the medians; ``ratio_best`` of the fastest
repeats.

The two are timed alternately, ``--repeats`` times each, and the medians compared, so load on a shared
machine drifts into both alike. Results: ``results/harness_overhead.csv`` (one row per worker count, with
the machine and versions in the header lines).

    python benchmarks/bench_train.py                 # mobilenet_v1, 128 px, batch 32, 0 and 2 workers
    python benchmarks/bench_train.py --quick         # 64 px, fewer steps
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cxr_bench.bench import machine_info, write_results_csv
from cxr_bench.config import RunConfig
from cxr_bench.engine.distributed import init_distributed
from cxr_bench.engine.losses import build_loss
from cxr_bench.engine.optim import build_optimizer
from cxr_bench.engine.seeding import scoped_rng
from cxr_bench.engine.trainer import Trainer, build_model

log = logging.getLogger("benchmarks.bench_train")

COLUMNS = ("model", "img_size", "batch_size", "workers", "steps", "repeats", "bare_images_per_s",
           "harness_images_per_s", "ratio", "ratio_best", "bare_step_ms", "harness_step_ms")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--quick", action="store_true", help="64 px, 4 steps, 2 repeats")
    p.add_argument("--model", default="mobilenet_v1")
    p.add_argument("--img-size", type=int, default=None, help="default 128 (quick: 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps per measurement (default 10)")
    p.add_argument("--repeats", type=int, default=None, help="alternating measurements per side (default 3)")
    p.add_argument("--workers", default="0,2", help="DataLoader worker counts to measure (comma-separated)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", default=None, help="NIH release (default: the bundled sample)")
    return p.parse_args(argv)


def harness_config(args: argparse.Namespace, workers: int, size: int, steps: int) -> RunConfig:
    return RunConfig.from_dict({
        "data": {"root": args.data_root, "image_size": size, "workers": workers, "augment": "flip"},
        "model": {"backbone": args.model},
        "optim": {"optimizer": "adamw", "scheduler": "cosine", "batch_size": args.batch_size, "epochs": 100,
                  "max_steps_per_epoch": steps},
        "device": args.device,
    })


def bare_loop(cfg: RunConfig, n_labels: int, steps: int) -> float:
    """Seconds for ``steps`` training steps on one pre-made batch (same model, loss, optimizer)."""
    size, bs = cfg.data.image_size, cfg.optim.batch_size
    device = torch.device("cuda" if cfg.device.startswith("cuda") else "cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(bs, 1, size, size, generator=gen).to(device)
    y = (torch.rand(bs, n_labels, generator=gen) < 0.1).float().to(device)
    labels = tuple(f"l{i}" for i in range(n_labels))
    model = build_model(cfg, labels).to(device).train()
    loss_fn = build_loss(cfg.loss, y.cpu().numpy())
    opt = build_optimizer(model, cfg.optim)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x).float(), y)
        loss.backward()
        opt.step()

    step()  # warm-up: allocator, oneDNN primitive caches
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - t0


def measure(args: argparse.Namespace, workers: int, size: int, steps: int, repeats: int) -> dict[str, Any]:
    cfg = harness_config(args, workers, size, steps)
    with tempfile.TemporaryDirectory() as tmp, scoped_rng(0, "bench_train"):
        trainer = Trainer(cfg, Path(tmp), init_distributed(cfg.device), progress=False)
        n_labels = len(trainer.labels)
        trainer.train_epoch(0)  # warm-up epoch: worker start-up, first touch of the memory map
        bare, harness = [], []
        for r in range(repeats):
            bare.append(cfg.optim.batch_size * steps / bare_loop(cfg, n_labels, steps))
            _loss, images, seconds = trainer.train_epoch(r + 1)
            harness.append(images / seconds)
            log.info("workers=%d repeat %d: bare %.1f img/s, harness %.1f img/s", workers, r + 1, bare[-1],
                     harness[-1])
        del trainer
    b, h = statistics.median(bare), statistics.median(harness)
    return {"model": args.model, "img_size": size, "batch_size": args.batch_size, "workers": workers,
            "steps": steps, "repeats": repeats, "bare_images_per_s": round(b, 2),
            "harness_images_per_s": round(h, 2), "ratio": round(h / b, 4),
            # Best-of-N (timeit's rule: noise only ever slows a step down), beside the ratio of medians.
            "ratio_best": round(max(harness) / max(bare), 4),
            "bare_step_ms": round(1e3 * args.batch_size / b, 1), "harness_step_ms": round(1e3 * args.batch_size / h, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    size = args.img_size or (64 if args.quick else 128)
    steps = args.steps or (4 if args.quick else 10)
    repeats = args.repeats or (2 if args.quick else 3)
    meta = machine_info()
    rows = [measure(args, int(w), size, steps, repeats) for w in args.workers.split(",") if w != ""]
    meta["loadavg_1m_end"] = machine_info()["loadavg_1m"]
    meta["harness"] = "cache -> CXRDataset -> DataLoader -> uint8/255 on device -> model -> loss -> AdamW + cosine"
    meta["bare"] = "the same model, loss and optimizer on one pre-made float batch"
    write_results_csv(args.out / "harness_overhead.csv", rows, meta=meta, columns=COLUMNS)
    for row in rows:
        log.info("%s %d px batch %d, %d workers: harness/bare = %.3f (%.1f / %.1f img/s)", row["model"],
                 row["img_size"], row["batch_size"], row["workers"], row["ratio"], row["harness_images_per_s"],
                 row["bare_images_per_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
