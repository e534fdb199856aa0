"""A run's measured inference cost as leaderboard columns (the tables built on them: accuracy_cost.py).

- :func:`cost_columns`: the run's inference cost measured at evaluation (``cost.json`` beside metrics.json,
  engine/cost.py) and its ONNX export's ONNX Runtime latency (``export/model.onnx.json``);
- :func:`pareto_front`: which points no other point beats on both cost and accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..runner.store import read_cost, read_export_info

__all__ = ["COST_COLUMNS", "COST_DOCS", "cost_columns", "pareto_front"]

# Measured at evaluation (CPU always, GPU when evaluated there) and at export; never in a run's identity.
COST_COLUMNS: tuple[str, ...] = (
    "cpu_latency_ms", "cpu_latency_p90_ms", "cpu_throughput_img_s", "cpu_threads", "peak_mem_mb", "weights_mb",
    "checkpoint_mb", "gpu_latency_ms", "gpu_throughput_img_s", "onnx_cpu_latency_ms",
)

# What each column means (docs/columns.md is generated from these, beside the leaderboard's own).
COST_DOCS: dict[str, str] = {
    "cpu_latency_ms": "median wall time of one batch-1 forward pass on the CPU that evaluated the run, in ms "
                      "(timed passes after warm-up; the run's cost.json names the CPU and thread count)",
    "cpu_latency_p90_ms": "90th percentile of those passes, in ms",
    "cpu_throughput_img_s": "images per second at the cost batch (eval.cost_batch) on that CPU",
    "cpu_threads": "torch threads the CPU measurement used",
    "peak_mem_mb": "parameters and buffers plus the peak tensor memory of one CPU forward at the cost batch, MiB",
    "weights_mb": "parameters and buffers at their stored precision, MiB",
    "checkpoint_mb": "size of the run's best.pt (weights and training state), MiB",
    "gpu_latency_ms": "median batch-1 latency on the run's CUDA device, ms (empty when evaluated on a CPU)",
    "gpu_throughput_img_s": "images per second at the cost batch on that GPU",
    "onnx_cpu_latency_ms": "median batch-1 latency of the run's ONNX export under ONNX Runtime's CPU provider, "
                           "ms (empty until `cxr-bench export` ran)",
}


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def cost_columns(run_dir: str | Path) -> dict[str, Any]:
    """The :data:`COST_COLUMNS` of one run (None where not measured)."""
    cost = read_cost(run_dir)
    export = read_export_info(run_dir)
    return {
        "cpu_latency_ms": _get(cost, "cpu", "batch1_latency_ms"),
        "cpu_latency_p90_ms": _get(cost, "cpu", "batch1_latency_p90_ms"),
        "cpu_throughput_img_s": _get(cost, "cpu", "throughput_img_s"),
        "cpu_threads": _get(cost, "cpu", "threads"),
        "peak_mem_mb": _get(cost, "cpu", "peak_mem_mb"),
        "weights_mb": _get(cost, "weights_mb"),
        "checkpoint_mb": _get(cost, "checkpoint_mb"),
        "gpu_latency_ms": _get(cost, "gpu", "batch1_latency_ms"),
        "gpu_throughput_img_s": _get(cost, "gpu", "throughput_img_s"),
        "onnx_cpu_latency_ms": _get(export, "latency_cpu", "batch1_latency_ms"),
    }


def pareto_front(cost: Iterable[float], value: Iterable[float]) -> np.ndarray:
    """True where no other point has cost <= and value >= with at least one strict (NaN: never on it)."""
    c = np.asarray(list(cost), dtype=np.float64)
    v = np.asarray(list(value), dtype=np.float64)
    ok = np.isfinite(c) & np.isfinite(v)
    out = np.zeros(c.size, dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i]))
        out[i] = not dominated.any()
    return out


