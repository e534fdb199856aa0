from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from cxr_bench.cli import main
from cxr_bench.errors import RunStoreError
from cxr_bench.metrics.delong import delong_test
from cxr_bench.results.compare import (
    AblationPair,
    ablation_table,
    compare_leaderboards,
    compare_reference,
    find_ablation_pairs,
    pair_summary,
    paired_ablation,
)
from cxr_bench.results.leaderboard import build_leaderboard, read_leaderboard, write_leaderboard
from cxr_bench.results.references import wang2017_table17
from cxr_bench.results.runs import load_runs


@pytest.fixture(scope="module")
def boards(run_store, tmp_path_factory):
    """A.csv (the store) and B.csv: one run changed, one run removed, one new run."""
    root, ids = run_store
    d = tmp_path_factory.mktemp("boards")
    a = build_leaderboard(root).table
    b = a.copy()
    i = b.index[b["run_id"] == ids["gamma"]][0]
    b.loc[i, "mean_auc"] += 0.0100
    b.loc[i, "auc_Mass"] -= 0.0200
    b = b[b["run_id"] != ids["alexnet_8"]]
    new = b[b["run_id"] == ids["baseline"]].assign(seed=1, run_id="feedfacecafe")
    b = pd.concat([b, new], ignore_index=True)
    return write_leaderboard(a, d / "A.csv"), write_leaderboard(b, d / "B.csv"), ids


def test_compare_two_leaderboards(boards):
    pa, pb, ids = boards
    out = compare_leaderboards(read_leaderboard(pa), read_leaderboard(pb))
    assert out["present"].value_counts().to_dict() == {"both": 5, "only_a": 1, "only_b": 1}
    changed = out[out["run_id_a"] == ids["gamma"]].iloc[0]
    assert changed["delta_mean_auc"] == pytest.approx(0.01, abs=1e-9)
    assert changed["delta_auc_Mass"] == pytest.approx(-0.02, abs=1e-9)
    assert changed["delta_auc_Atelectasis"] == 0
    same = out[(out["present"] == "both") & (out["run_id_a"] != ids["gamma"])]
    assert (same["delta_mean_auc"] == 0).all()
    assert out.loc[out["present"] == "only_a", "run_id_a"].item() == ids["alexnet_8"]
    assert out.loc[out["present"] == "only_b", "run_id_b"].item() == "feedfacecafe"
    by_id = compare_leaderboards(read_leaderboard(pa), read_leaderboard(pb), key="run_id")
    assert set(by_id["present"]) == {"both", "only_a", "only_b"}


def test_duplicate_keys_are_refused(boards):
    pa, _, _ = boards
    a = read_leaderboard(pa)
    dup = pd.concat([a, a.iloc[:1].assign(run_id="000000000000")], ignore_index=True)
    with pytest.raises(RunStoreError, match="--key run_id"):
        compare_leaderboards(dup, a)


def test_compare_reference_table17(boards):
    pa, _, ids = boards
    cmp = compare_reference(read_leaderboard(pa), "wang2017")
    assert set(cmp["run_id"]) == {ids["resnet50_14"], ids["alexnet_8"], ids["resnet50_8"]}
    r14 = cmp[cmp["run_id"] == ids["resnet50_14"]].set_index("label")
    assert len(r14) == 15 and r14["comparable"].all() and "Table 17" in r14["source"].iloc[0]
    t17 = wang2017_table17()
    for lab, paper in t17.items():
        row = r14.loc[lab]
        assert row["paper"] == paper
        assert row["delta"] == pytest.approx(row["ours"] - paper)
        assert row["paper_in_ci"] == (row["ours_ci_lo"] <= paper <= row["ours_ci_hi"])
    assert r14.loc["mean", "paper"] == 0.7451
    alex = cmp[cmp["run_id"] == ids["alexnet_8"]]
    assert len(alex) == 9 and not alex["comparable"].any() and set(alex["setting"]) == {"AlexNet"}
    assert compare_reference(read_leaderboard(pa), "chexnet").empty


def test_ablation_pairs_from_manifest_and_from_config_diff(run_store, tmp_path):
    root, ids = run_store
    pairs = find_ablation_pairs(load_runs(root, "ablations"))
    got = {(p.factor, p.value_a, p.value_b, p.a.run_id, p.b.run_id) for p in pairs}
    assert got == {("data.grayscale", "identity", "gamma", ids["baseline"], ids["gamma"]),
                   ("model.head", "gap", "attention", ids["baseline"], ids["attention"])}
    # A store without the runner's pair records: pairs are found by diffing the configs.
    copy = tmp_path / "runs"
    shutil.copytree(root / "ablations", copy / "ablations")
    for manifest in copy.glob("ablations/*/manifest.json"):
        m = json.loads(manifest.read_text())
        del m["suite"]["pairs"]
        manifest.write_text(json.dumps(m))
    diffed = {(p.factor, p.value_a, p.value_b, p.a.run_id, p.b.run_id) for p in find_ablation_pairs(load_runs(copy))}
    assert diffed == got


def test_paired_ablation_numbers(run_store):
    root, ids = run_store
    runs = {r.run_id: r for r in load_runs(root, "ablations")}
    a, b = runs[ids["baseline"]], runs[ids["gamma"]]
    table = paired_ablation(AblationPair("ablations", "data.grayscale", "identity", "gamma", a, b),
                            n_bootstrap=200)
    assert len(table) == 15 and table["label"].iloc[-1] == "mean"
    pa, pb = a.predictions(), b.predictions()
    ma, mb = a.metrics["test"]["per_label"], b.metrics["test"]["per_label"]
    for j, lab in enumerate(pa.labels):
        row = table[table["label"] == lab].iloc[0]
        assert row["delta"] == pytest.approx(mb[lab]["auc"] - ma[lab]["auc"], abs=1e-12)
        assert row["p"] == delong_test(pa.y_true[:, j], pb.y_prob[:, j], pa.y_prob[:, j]).p
        assert row["test"] == "delong" and row["ci_lo"] <= row["ci_hi"]
    mean = table.iloc[-1]
    assert mean["test"] == "bootstrap" and 0 < mean["p"] <= 1
    assert mean["delta"] == pytest.approx(b.metrics["test"]["mean_auc"] - a.metrics["test"]["mean_auc"])
    # A run against itself: zero difference, a degenerate interval, no evidence of a difference.
    same = paired_ablation(AblationPair("ablations", "x", "a", "a", a, a), n_bootstrap=50)
    assert (same["delta"] == 0).all() and (same["ci_lo"] == 0).all() and (same["ci_hi"] == 0).all()
    assert (same["p"] == 1).all()
    summary = pair_summary(ablation_table(load_runs(root, "ablations"), n_bootstrap=50))
    assert len(summary) == 2 and set(summary["factor"]) == {"data.grayscale", "model.head"}
    assert np.isfinite(summary["ci_lo"]).all()


def test_cli_compare(boards, run_store, tmp_path, capsys):
    pa, pb, ids = boards
    root, _ = run_store
    assert main(["compare", str(pa), str(pb), "--out", str(tmp_path / "d.csv")]) == 0
    printed = capsys.readouterr().out
    assert "only_a" in printed and "only_b" in printed and ids["gamma"] in printed
    assert len(pd.read_csv(tmp_path / "d.csv")) == 7
    assert main(["compare", str(pa), "--reference", "wang2017"]) == 0
    assert "0.7451" in capsys.readouterr().out
    assert main(["compare", "--ablations", "--runs", str(root), "--suite", "ablations", "--bootstrap", "50"]) == 0
    assert "data.grayscale" in capsys.readouterr().out
    assert main(["compare", str(pa)]) == 2  # two leaderboards needed
    assert math.isfinite(read_leaderboard(pa)["mean_auc"].iloc[0])
