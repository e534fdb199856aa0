"""Accuracy against cost (results/cost.py, results/accuracy_cost.py): cost columns from cost.json and the
export's contract, one point per configuration with its Pareto flags, and MobileNetV1 against each baseline
through the ablations' paired machinery, checked against numbers computed here from the predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from runstore_factory import write_run
from sklearn.metrics import roc_auc_score

from cxr_bench.metrics.predictions import read_predictions
from cxr_bench.results.accuracy_cost import accuracy_cost_table, mobilenet_vs_baselines
from cxr_bench.results.cost import COST_COLUMNS, pareto_front
from cxr_bench.results.leaderboard import build_leaderboard
from cxr_bench.results.references import wang2017_table17
from cxr_bench.results.runs import load_runs
from cxr_bench.utils.io import atomic_write_json

LATENCY = {"mobilenet_v1": 10.0, "resnet50": 40.0, "alexnet": 8.0}


def _cost(run_dir, backbone, seed):
    atomic_write_json(run_dir / "cost.json", {
        "image_size": 64, "weights_mb": 12.0, "checkpoint_mb": 30.0,
        "cpu": {"batch1_latency_ms": LATENCY[backbone] + seed, "batch1_latency_p90_ms": LATENCY[backbone] + 2,
                "throughput_img_s": 100.0, "threads": 2, "peak_mem_mb": 50.0, "n_timed": 30}})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("acc_cost")
    base = {"data.image_size": 64, "optim.epochs": 3, "loss.name": "wcel"}
    strength = {"mobilenet_v1": 0.9, "resnet50": 1.1, "alexnet": 0.6}
    seeds = {"mobilenet_v1": (0, 1), "resnet50": (0, 1), "alexnet": (0,)}
    for backbone, ss in seeds.items():
        for s in ss:
            _, d = write_run(root, "wang2017", {**base, "model.backbone": backbone, "seed": s},
                             strength=strength[backbone] + 0.05 * s)
            _cost(d, backbone, s)
    return root


def test_pareto_front_by_hand():
    cost = [1, 2, 3, 4, np.nan, 2]
    auc = [0.6, 0.7, 0.65, 0.8, 0.9, 0.7]
    # (3, 0.65) is beaten by (2, 0.7); the two equal points (2, 0.7) do not dominate each other; NaN is off.
    assert pareto_front(cost, auc).tolist() == [True, True, False, True, False, True]


def test_leaderboard_has_the_cost_columns(store):
    lb = build_leaderboard(store).table
    assert set(COST_COLUMNS) <= set(lb.columns)
    mob = lb[lb["backbone"] == "mobilenet_v1"].sort_values("seed")
    assert mob["cpu_latency_ms"].tolist() == [10.0, 11.0]
    assert (mob["cpu_threads"] == 2).all() and (mob["weights_mb"] == 12.0).all()
    assert mob["onnx_cpu_latency_ms"].isna().all() and mob["gpu_latency_ms"].isna().all()


def test_accuracy_cost_table_one_row_per_configuration(store):
    lb = build_leaderboard(store).table
    acc = accuracy_cost_table(lb).set_index("backbone")
    assert sorted(acc.index) == ["alexnet", "mobilenet_v1", "resnet50"]
    for backbone, g in lb.groupby("backbone"):
        assert acc.loc[backbone, "n_seeds"] == len(g)
        assert acc.loc[backbone, "mean_auc"] == pytest.approx(g["mean_auc"].mean())
        assert acc.loc[backbone, "cpu_latency_ms"] == pytest.approx(g["cpu_latency_ms"].median())
    # Two seeds: the interval adds the seed spread to test sampling, so it is at least as wide as a seed's
    # own patient-bootstrap CI would suggest around the mean; one seed: that seed's CI.
    alex = lb[lb["backbone"] == "alexnet"].iloc[0]
    assert acc.loc["alexnet", "ci_lo"] == pytest.approx(alex["mean_auc_ci_lo"])
    assert "1 seed" in acc.loc["alexnet", "interval"]
    assert "seeds" in acc.loc["mobilenet_v1", "interval"]
    # Pareto by hand on (latency, AUC) and (GMACs, AUC): all three have the same GMACs here.
    pts = acc[["cpu_latency_ms", "mean_auc"]]
    for b in acc.index:
        others = pts.drop(index=b)
        beaten = ((others["cpu_latency_ms"] <= pts.loc[b, "cpu_latency_ms"])
                  & (others["mean_auc"] >= pts.loc[b, "mean_auc"])).any()
        assert acc.loc[b, "pareto_latency"] == (not beaten)
    assert acc["pareto_gmacs"].sum() == 1 and acc["mean_auc"].idxmax() == acc["pareto_gmacs"].idxmax()
    # Wang et al. Table 17 for the 14-label ResNet-50, nothing for backbones the paper has no 14-label row for.
    assert acc.loc["resnet50", "paper_mean_auc"] == pytest.approx(round(wang2017_table17().mean(), 4))
    assert np.isnan(acc.loc["mobilenet_v1", "paper_mean_auc"])


def _run_mean_auc(run_dir) -> float:
    p = read_predictions(run_dir / "predictions" / "test.csv")
    aucs = [roc_auc_score(p.y_true[:, j], p.y_prob[:, j]) for j in range(p.y_true.shape[1])
            if 0 < p.y_true[:, j].sum() < len(p.y_true)]
    return float(np.mean(aucs))


def test_mobilenet_against_each_baseline(store):
    lb = build_leaderboard(store).table
    runs = load_runs(store)
    vs = mobilenet_vs_baselines(runs, lb, n_bootstrap=200).set_index("baseline")
    assert sorted(vs.index) == ["alexnet", "resnet50"]
    by_backbone: dict[str, list[float]] = {}
    for r in runs:
        by_backbone.setdefault(r.config.model.backbone, []).append(_run_mean_auc(r.run_dir))
    for base in ("alexnet", "resnet50"):
        expected = np.mean(by_backbone["mobilenet_v1"]) - np.mean(by_backbone[base])
        assert vs.loc[base, "delta"] == pytest.approx(expected, abs=1e-9)
        assert vs.loc[base, "ci_lo"] <= vs.loc[base, "delta"] <= vs.loc[base, "ci_hi"]
        assert vs.loc[base, "cpu_latency_ratio"] == pytest.approx(10.5 / np.median(
            [LATENCY[base] + s for s in ((0, 1) if base == "resnet50" else (0,))]))
        assert vs.loc[base, "params_ratio"] == pytest.approx(1.0) and vs.loc[base, "also_differs"] == ""
    assert (vs["seeds_mobilenet"] == 2).all() and vs.loc["alexnet", "seeds_baseline"] == 1
    assert set(vs["verdict"]) <= {"better", "worse", "no evidence", "no test"}


def test_no_mobilenet_no_rows(tmp_path):
    write_run(tmp_path, "s", {"model.backbone": "resnet50"}, strength=1.0)
    lb = build_leaderboard(tmp_path).table
    assert mobilenet_vs_baselines(load_runs(tmp_path), lb).empty
    assert isinstance(accuracy_cost_table(lb), pd.DataFrame) and len(accuracy_cost_table(lb)) == 1
