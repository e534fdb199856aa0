"""Inference cost (engine/cost.py): what is measured, that it is bounded, and that the caller's model is left
alone. Timings themselves are never asserted on: they describe the machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cxr_bench.engine.cost import (
    COST_FILE,
    CostSettings,
    latency_summary,
    measure_cost,
    peak_forward_bytes,
    time_passes,
    weights_bytes,
)
from cxr_bench.engine.trainer import train_run
from cxr_bench.models import create_model
from cxr_bench.runner.store import read_cost


class Doubler(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 2) + 1  # two temporaries of x's size; the first is freed after the second is made


def test_peak_forward_bytes_counts_the_live_temporaries():
    x = torch.zeros(256, 1024)  # 1 MiB of float32
    peak = peak_forward_bytes(Doubler(), x)
    # x*2 (1 MiB) is alive while +1 (1 MiB) is allocated: at least 2 MiB, and nothing else of that size.
    assert 2 * 2**20 <= peak < 3 * 2**20


def test_weights_bytes_is_params_and_buffers():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    # conv: 4*1*3*3 + 4; bn: weight, bias (4 + 4), running mean/var (4 + 4) and num_batches_tracked (int64)
    assert weights_bytes(m) == (36 + 4 + 8 + 8) * 4 + 8


def test_latency_summary_median_and_p90():
    s = latency_summary([0.001 * i for i in range(1, 11)])
    assert s["median_ms"] == pytest.approx(5.5)
    assert s["p90_ms"] == pytest.approx(float(np.percentile(np.arange(1, 11), 90)))
    assert s["n_timed"] == 10


def test_time_passes_warms_up_and_respects_the_budget():
    calls = []
    times = time_passes(lambda: calls.append(1), CostSettings(repeats=20, warmup=4, budget_s=1e-9))
    assert len(times) == 3  # the budget ran out at once, but three passes are always timed
    assert len(calls) == 4 + 3
    assert len(time_passes(lambda: None, CostSettings(repeats=12, warmup=0, budget_s=60))) == 12


def test_measure_cost_block_and_caller_state():
    model = create_model("timm:test_resnet", head="gap", num_labels=3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cost = measure_cost(model, 32, settings=CostSettings(repeats=5, warmup=1, batch=4, budget_s=5))
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    cpu = cost["cpu"]
    assert cpu["n_timed"] == 5 and cpu["batch1_latency_ms"] > 0
    assert cpu["batch1_latency_p90_ms"] >= cpu["batch1_latency_ms"]
    assert cpu["throughput_batch"] == 4 and cpu["throughput_img_s"] > 0
    assert cpu["threads"] == torch.get_num_threads() and cpu["cpu_model"]
    assert cost["weights_mb"] == pytest.approx(weights_bytes(model) / 2**20)
    assert cpu["peak_mem_mb"] > cost["weights_mb"]
    assert "gpu" not in cost  # evaluated on the CPU


def test_a_run_writes_cost_json_beside_metrics(tmp_path, phantom_root, run_config):
    cfg = run_config(phantom_root, optim={"epochs": 1}, eval={"cost_repeats": 4, "cost_budget_s": 5})
    train_run(cfg, tmp_path, progress=False)
    cost = read_cost(tmp_path)
    assert cost is not None and (tmp_path / COST_FILE).is_file()
    assert cost["image_size"] == 32 and cost["cpu"]["n_timed"] == 4
    assert cost["checkpoint_mb"] == pytest.approx((tmp_path / "checkpoints" / "best.pt").stat().st_size / 2**20)
    # Off when asked: nothing written, and the run id is the same (a measurement is not an identity).
    off = run_config(phantom_root, optim={"epochs": 1}, eval={"cost_repeats": 0})
    assert off.run_id() == cfg.run_id()
    train_run(off, tmp_path / "off", progress=False)
    assert read_cost(tmp_path / "off") is None
