"""Batch-1 CPU latency of every backbone x head at 224, 512 and 1024 px: the cost side of the MobileNet question,
before anything is trained.

One row per (backbone, head, image size) in ``results/latency_cpu.csv`` (plain CSV: the machine, thread count,
load average, torch version and git commit are columns). Each latency is the median (and p90) of timed batch-1
forward passes of a randomly initialised model after warm-up, through the same timing code as a run's
``cost.json`` (``cxr_bench.engine.cost``); a time budget per setting caps the slow ones (VGG-16 at 1024 px
takes seconds per image on a 2-core CPU), with at least three timed passes.

    python benchmarks/bench_latency.py                       # 6 backbones x 4 heads x 3 sizes
    python benchmarks/bench_latency.py --quick               # 2 backbones, 1 head, 64 px: a smoke run
    python benchmarks/bench_latency.py --backbones mobilenet_v1,resnet50 --sizes 224
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import torch

from cxr_bench.engine.cost import CostSettings, cpu_model_name, latency_summary, time_passes, weights_bytes
from cxr_bench.models import create_model, list_heads, model_complexity
from cxr_bench.utils.io import atomic_write_text

HERE = Path(__file__).resolve().parent
BACKBONES = ("mobilenet_v1", "alexnet", "googlenet", "vgg16", "resnet50", "densenet121")
SIZES = (224, 512, 1024)
COLUMNS = ("backbone", "head", "image_size", "batch1_latency_ms", "batch1_latency_p90_ms", "n_timed", "param_count",
           "gmacs", "weights_mb", "threads", "cpu_model", "cpu_count", "loadavg_1min", "torch", "git_commit")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def measure(backbone: str, head: str, size: int, settings: CostSettings) -> dict[str, object]:
    model = create_model(backbone, head=head, num_labels=14).eval()
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        lat = latency_summary(time_passes(lambda: model(x), settings))
    cx = model_complexity(backbone, size, head=head, num_labels=14)
    return {"backbone": backbone, "head": head, "image_size": size, "batch1_latency_ms": round(lat["median_ms"], 2),
            "batch1_latency_p90_ms": round(lat["p90_ms"], 2), "n_timed": lat["n_timed"],
            "param_count": cx["params"], "gmacs": round(float(cx["gmacs"]), 3),
            "weights_mb": round(weights_bytes(model) / 2**20, 2), "threads": torch.get_num_threads(),
            "cpu_model": cpu_model_name(), "cpu_count": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
            "torch": torch.__version__, "git_commit": _commit()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "results", help="folder of latency_cpu.csv")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 backbones, the gap head, 64 px")
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--heads", default=",".join(list_heads()))
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    p.add_argument("--repeats", type=int, default=20, help="timed passes per setting (fewer if the budget ends)")
    p.add_argument("--budget", type=float, default=8.0, help="seconds of timed passes per setting")
    a = p.parse_args(argv)
    backbones, heads, sizes = a.backbones.split(","), a.heads.split(","), [int(s) for s in a.sizes.split(",")]
    name = "latency_cpu.csv"
    if a.quick:
        backbones, heads, sizes, name = ["mobilenet_v1", "resnet50"], ["gap"], [64], "latency_cpu_quick.csv"
    settings = CostSettings(repeats=a.repeats, warmup=2, budget_s=a.budget)
    rows = []
    for size in sizes:
        for backbone in backbones:
            for head in heads:
                row = measure(backbone, head, size, settings)
                print(f"{backbone:>12} {head:>9} {size:>5} px: {row['batch1_latency_ms']:9.1f} ms", flush=True)
                rows.append(row)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / name, buf.getvalue())
    print(f"wrote {a.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
