"""Batch-1 CPU latency of every backbone x head at 224, 512 and 1024 px: the cost side of the MobileNet question,
before anything is trained.

One row per (backbone, head, image size) in ``results/latency_cpu.csv`` (plain CSV: the CPU, thread count,
load average, torch version and git commit are columns; the whole machine is in its sidecar,
``latency_cpu.csv.json``). Each latency is the median (and p90) of timed batch-1 forward passes of a randomly initialised model after warm-up, through the same timing code as a run's
``cost.json`` (``cxr_bench.engine.cost``); a time budget per setting caps the slow ones (VGG-16 at 1024 px
takes seconds per image on a 2-core CPU), with at least three timed passes.

    python benchmarks/bench_latency.py                       # 6 backbones x 4 heads x 3 sizes
    python benchmarks/bench_latency.py --quick               # 2 backbones, 1 head, 64 px: a smoke run
    python benchmarks/bench_latency.py --backbones mobilenet_v1,resnet50 --sizes 224
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from cxr_bench.bench.args import comma_ints, comma_strs
from cxr_bench.bench.measure import load_average, machine_info
from cxr_bench.bench.results import write_results_csv
from cxr_bench.engine.cost import CostSettings, latency_summary, time_passes, weights_bytes
from cxr_bench.models import create_model, list_heads, model_complexity

HERE = Path(__file__).resolve().parent
BACKBONES = ("mobilenet_v1", "alexnet", "googlenet", "vgg16", "resnet50", "densenet121")
SIZES = (224, 512, 1024)
COLUMNS = ("backbone", "head", "image_size", "batch1_latency_ms", "batch1_latency_p90_ms", "n_timed", "param_count",
           "gmacs", "weights_mb", "threads", "cpu_model", "cpu_count", "loadavg_1min", "torch", "git_commit")


def measure(backbone: str, head: str, size: int, settings: CostSettings,
            machine: dict[str, Any]) -> dict[str, object]:
    """One row; ``machine`` (:func:`machine_info`) gives the CPU, torch and commit columns."""
    model = create_model(backbone, head=head, num_labels=14).eval()
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        lat = latency_summary(time_passes(lambda: model(x), settings))
    cx = model_complexity(backbone, size, head=head, num_labels=14)
    return {"backbone": backbone, "head": head, "image_size": size, "batch1_latency_ms": round(lat["median_ms"], 2),
            "batch1_latency_p90_ms": round(lat["p90_ms"], 2), "n_timed": lat["n_timed"],
            "param_count": cx["params"], "gmacs": round(float(cx["gmacs"]), 3),
            "weights_mb": round(weights_bytes(model) / 2**20, 2), "threads": torch.get_num_threads(),
            "cpu_model": machine["cpu"], "cpu_count": machine["cpu_count"], "loadavg_1min": load_average(),
            "torch": machine["torch"], "git_commit": machine["git_commit"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "results", help="folder of latency_cpu.csv")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 backbones, the gap head, 64 px")
    p.add_argument("--backbones", type=comma_strs, default=BACKBONES)
    p.add_argument("--heads", type=comma_strs, default=tuple(list_heads()))
    p.add_argument("--sizes", type=comma_ints, default=SIZES)
    p.add_argument("--repeats", type=int, default=20, help="timed passes per setting (fewer if the budget ends)")
    p.add_argument("--budget", type=float, default=8.0, help="seconds of timed passes per setting")
    a = p.parse_args(argv)
    backbones, heads, sizes = a.backbones, a.heads, a.sizes
    name = "latency_cpu.csv"
    if a.quick:
        backbones, heads, sizes, name = ("mobilenet_v1", "resnet50"), ("gap",), (64,), "latency_cpu_quick.csv"
    settings = CostSettings(repeats=a.repeats, warmup=2, budget_s=a.budget)
    machine = machine_info()
    rows = []
    for size in sizes:
        for backbone in backbones:
            for head in heads:
                row = measure(backbone, head, size, settings, machine)
                print(f"{backbone:>12} {head:>9} {size:>5} px: {row['batch1_latency_ms']:9.1f} ms", flush=True)
                rows.append(row)
    print(f"wrote {write_results_csv(a.out / name, rows, {**machine, 'benchmark': 'bench_latency'}, COLUMNS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
