"""benchmarks/bench_latency.py: a plain CSV of batch-1 CPU latency per backbone x head x size."""

from __future__ import annotations

import bench_latency
import pandas as pd

from cxr_bench.models import model_complexity


def test_quick_latency_csv_is_plain_and_complete(tmp_path):
    assert bench_latency.main(["--quick", "--out", str(tmp_path), "--repeats", "3", "--budget", "1"]) == 0
    df = pd.read_csv(tmp_path / "latency_cpu_quick.csv")  # header first, no banner
    assert list(df.columns) == list(bench_latency.COLUMNS)
    assert sorted(df["backbone"]) == ["mobilenet_v1", "resnet50"] and set(df["image_size"]) == {64}
    assert (df["batch1_latency_ms"] > 0).all() and (df["batch1_latency_p90_ms"] >= df["batch1_latency_ms"]).all()
    assert (df["n_timed"] >= 3).all() and df["cpu_model"].notna().all()
    for _, r in df.iterrows():
        assert r["param_count"] == model_complexity(r["backbone"], 64, head="gap", num_labels=14)["params"]
