"""Model throughput per backbone x head: train and inference images/s, step time, params, GMACs, peak memory.

One row per (backbone, head, image size) in ``results/models_<device>.csv``, timm's ``benchmark.py``
column names (``infer_samples_per_sec``, ``train_step_time`` in ms, ``param_count`` in millions), the
machine and versions in the CSV's sidecar (``models_<device>.csv.json``). Inputs are pre-made random tensors, so this is
the model alone (the harness's overhead on top is ``bench_train.py``).

On CUDA the fast paths are on by default (channels_last, bf16 autocast, ``torch.compile``); on CPU they
are off. Each setting runs in a fresh process so its CPU peak-memory number is its own (see
``cxr_bench.bench``); ``--no-isolate`` measures in this process (faster, memory deltas then only show
growth beyond earlier settings' peaks).

    python benchmarks/bench_models.py                 # full: 6 backbones x 2 heads x {224, 512}
    python benchmarks/bench_models.py --quick         # 224 only, small batch, 2 timed steps
    python benchmarks/bench_models.py --backbones resnet50 --heads gap --sizes 224 --iters 10
    python benchmarks/bench_models.py --settings mobilenet_v1:gap:224:256,resnet50:wang2017:1024:16:frozen

``--settings`` lists exact settings (backbone:head:size:batch[:frozen]) instead of the grid: the ones
``bench_train.py --preset cuda`` trains, so its harness rates can be set beside the model alone.
``--compile both`` measures each setting eager and compiled (one row each).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cxr_bench.bench.args import comma_ints, comma_strs
from cxr_bench.bench.measure import (
    MODEL_COLUMNS,
    machine_info,
    measure_model,
    measure_model_isolated,
    resolve_device,
)
from cxr_bench.bench.results import write_results_csv
from cxr_bench.utils.progress import progress

log = logging.getLogger("benchmarks.bench_models")

BACKBONES = ("mobilenet_v1", "alexnet", "googlenet", "vgg16", "resnet50", "densenet121")
HEADS = ("gap", "wang2017")
SIZES = (224, 512)
QUICK_SIZES = (224,)
# Batch per image size: same pixels per batch on CPU, so a 512-px VGG step stays within minutes.
CPU_BATCH = {224: 8, 512: 2}
CUDA_BATCH = {224: 64, 512: 16}


def _settings(text: str) -> tuple[tuple[str, str, int, int, bool], ...]:
    out = []
    for item in text.split(","):
        parts = item.split(":")
        if not item or len(parts) not in (4, 5) or (len(parts) == 5 and parts[4] != "frozen"):
            raise argparse.ArgumentTypeError(f"setting {item!r}: expected backbone:head:size:batch[:frozen]")
        out.append((parts[0], parts[1], int(parts[2]), int(parts[3]), len(parts) == 5))
    return tuple(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--quick", action="store_true", help="224 px only, batch 4, 1 warm-up + 2 timed steps")
    p.add_argument("--backbones", type=comma_strs, default=BACKBONES)
    p.add_argument("--heads", type=comma_strs, default=HEADS)
    p.add_argument("--sizes", type=comma_ints, default=None, help="image sizes (default 224,512; quick: 224)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 8 at 224 / 2 at 512 on CPU")
    p.add_argument("--iters", type=int, default=None, help="timed steps (default CPU 2, CUDA 30)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default CPU 1, CUDA 10)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop timing a phase after this many seconds (at least one step; default CPU 20)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-compile", action="store_true", help="CUDA: skip torch.compile (= --compile no)")
    p.add_argument("--compile", choices=("default", "no", "yes", "both"), default="default",
                   help="torch.compile: default = on CUDA, off on CPU; both = one row each")
    p.add_argument("--settings", type=_settings, default=None,
                   help="exact settings backbone:head:size:batch[:frozen], comma-separated (replaces the grid)")
    p.add_argument("--amp", choices=("bf16", "fp16", "none"), default=None, help="default: bf16 on CUDA")
    p.add_argument("--no-isolate", action="store_true", help="measure in this process")
    p.add_argument("--name", default=None, help="CSV name (default models_<device>.csv)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    iters = args.iters or (30 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick or not cuda else 10)
    max_seconds = args.max_seconds if args.max_seconds is not None else (None if cuda else 20.0)
    measure = measure_model if args.no_isolate else measure_model_isolated
    meta = machine_info()
    meta.update(benchmark="bench_models", quick=args.quick, warmup=warmup, iters=iters, max_seconds=max_seconds,
                isolated=not args.no_isolate,
                memory="CPU: growth of ru_maxrss over the phase, in a fresh process; CUDA: max_memory_allocated")
    out = args.out / (args.name or f"models_{device.split(':')[0]}.csv")
    rows = []
    compiles = {"default": (None,), "no": (False,), "yes": (True,), "both": (False, True)}[
        "no" if args.no_compile else args.compile]
    if args.settings is not None:
        grid = [(b, h, s, batch, frozen) for b, h, s, batch, frozen in args.settings]
    else:
        grid = [(b, h, s, args.batch_size or (4 if args.quick else (CUDA_BATCH if cuda else CPU_BATCH).get(s, 2)),
                 False) for s in sizes for b in args.backbones for h in args.heads]
    grid_c = [(*g, c) for g in grid for c in compiles]
    for backbone, head, size, batch, frozen, compiled in progress(grid_c, desc="models", unit="setting"):
        row = measure(backbone=backbone, head=head, img_size=size, batch_size=batch, iters=iters, warmup=warmup,
                      device=device, threads=args.threads, compile=compiled, amp=args.amp,
                      max_seconds=max_seconds, freeze_backbone=frozen)
        log.info("%s @%d: train %.2f img/s, infer %.2f img/s", row["model"], size,
                 row["train_samples_per_sec"], row["infer_samples_per_sec"])
        rows.append(row)
        # Rewritten after every setting: an interrupted run keeps what it measured.
        write_results_csv(out, rows, {**meta, "complete": len(rows) == len(grid_c)}, columns=MODEL_COLUMNS)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
