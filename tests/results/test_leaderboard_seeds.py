"""The seed aggregate (leaderboard_agg.csv) against a hand computation from each run's
metrics.json, and the calibration and subgroup columns from metrics.json blocks."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest

from cxr_bench.data.labels import CHESTXRAY14
from cxr_bench.metrics.extended import BLOCK_TABLES
from cxr_bench.results.leaderboard import (
    AGG_COLUMNS,
    SUBGROUP_COLUMNS,
    auc_column,
    build_leaderboard,
    output_paths,
    trimmed_mean,
    write_leaderboard,
)


def test_trimmed_mean_is_mlperfs():
    assert trimmed_mean([0.9, 0.1, 0.5, 0.6, 0.7]) == pytest.approx((0.5 + 0.6 + 0.7) / 3)
    assert trimmed_mean([1, 2, 3, 4, 5, 100]) == pytest.approx((2 + 3 + 4 + 5) / 4)
    assert trimmed_mean([0.2, 0.4, 0.9, 0.5]) == pytest.approx(0.5)  # n < 5: the plain mean
    assert math.isnan(trimmed_mean([]))


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory, store_factory):
    """Config A with 5 seeds, config B (attention head) with 2 seeds, in one suite."""
    root = tmp_path_factory.mktemp("seeds") / "runs"
    ids: dict[str, list[str]] = {"A": [], "B": []}
    for seed in range(5):
        ids["A"].append(store_factory.write_run(root, "s", {"seed": seed}, strength=0.5 + 0.2 * seed,
                                                n_bootstrap=5)[0])
    for seed in (0, 1):
        ids["B"].append(store_factory.write_run(root, "s", {"seed": seed, "model.head": "attention"},
                                                strength=1.0, n_bootstrap=5)[0])
    return root, ids


def _by_hand(root, run_ids):
    """mean, sd, trimmed mean of the mean AUC and of each label's AUC, read straight from metrics.json."""
    per_run = [json.loads((root / "s" / r / "metrics.json").read_text())["test"] for r in run_ids]
    out = {}
    series = {"mean_auc": [m["mean_auc"] for m in per_run]}
    for lab in CHESTXRAY14:
        series[auc_column(lab)] = [m["per_label"][lab]["auc"] for m in per_run]
    # MLPerf's olympic scoring: the seeds with the best and the worst mean AUC are dropped from every column.
    means = series["mean_auc"]
    dropped = {means.index(max(means)), means.index(min(means))} if len(means) >= 5 else set()
    for col, v in series.items():
        out[col] = statistics.mean(v)
        out[col + "_sd"] = statistics.stdev(v)
        out[col + "_trimmed"] = statistics.mean([x for i, x in enumerate(v) if i not in dropped])
    return out


def test_aggregate_matches_a_hand_computation(seeded_store, tmp_path):
    root, ids = seeded_store
    lb = build_leaderboard(root, expert=False)
    assert len(lb.table) == 7  # one row per run, as before
    agg = lb.aggregate
    assert list(agg.columns) == list(AGG_COLUMNS) and "seed" not in agg.columns and len(agg) == 2
    for cfg, head in (("A", "gap"), ("B", "attention")):
        row = agg[agg["head"] == head].iloc[0]
        assert row["n_seeds"] == len(ids[cfg]) and set(row["run_ids"].split(";")) == set(ids[cfg])
        assert row["seeds"] == ";".join(str(s) for s in range(len(ids[cfg])))
        for col, want in _by_hand(root, ids[cfg]).items():
            assert row[col] == pytest.approx(want, abs=1e-12), (cfg, col)
    a = agg[agg["head"] == "gap"].iloc[0]
    assert a["mean_auc_trimmed"] != pytest.approx(a["mean_auc"])  # 5 seeds: best and worst dropped
    # The same seeds for every column: a label whose own best or worst seed is not the mean's keeps it, so
    # trimming each column by its own order would give another number there.
    per_run = [json.loads((root / "s" / r / "metrics.json").read_text())["test"]["per_label"] for r in ids["A"]]
    per_column = [lab for lab in CHESTXRAY14 if np.isfinite(a[auc_column(lab) + "_trimmed"])
                  and a[auc_column(lab) + "_trimmed"] != pytest.approx(trimmed_mean([m[lab]["auc"] for m in per_run]))]
    assert per_column, "the store should have a label whose seed order differs from the mean AUC's"
    # Written beside the leaderboard, with the same banner and fixed formats.
    path = write_leaderboard(lb, tmp_path / "leaderboard.csv")
    written = output_paths(path)["aggregate"]
    assert written.name == "leaderboard_agg.csv"
    back = pd.read_csv(written)
    assert back["n_seeds"].tolist() == agg["n_seeds"].tolist()
    assert np.allclose(back["mean_auc_sd"], agg["mean_auc_sd"], atol=5e-5)
    assert written.read_text().startswith("suite,")  # plain; the banner is in the sidecar's notes
    assert json.loads(written.with_name(written.name + ".json").read_text())["notes"][0].startswith(
        "NOT COMPARABLE WITH ANY PAPER")


def _fake_blocks(rng_seed: int) -> tuple[dict, dict]:
    """A calibration and a subgroups block in a layout of this test's own, read by the fake readers below:
    they check the leaderboard's plumbing whatever layout the metrics package chooses."""
    rng = np.random.default_rng(rng_seed)
    cal = {lab: {"brier": float(rng.uniform(0.05, 0.3)), "ece": float(rng.uniform(0, 0.2))}
           for lab in CHESTXRAY14[:8]}
    auc = [{"attribute": "sex", "group": g, "label": "Effusion", "auc": float(rng.uniform(0.5, 0.9)),
            "ci_low": 0.4, "ci_high": 0.95, "n_pos": 5, "n_neg": 30, "reason": ""} for g in ("F", "M")]
    auc.append({"attribute": "view", "group": "AP", "label": "Hernia", "auc": None, "ci_low": None,
                "ci_high": None, "n_pos": 1, "n_neg": 12, "reason": "fewer than 2 positives"})
    ud = [{"attribute": "sex", "group": "F", "rate": 0.25, "ci_low": 0.1, "ci_high": 0.4, "n_finding": 8,
           "n_underdiagnosed": 2, "reason": ""}]
    return cal, {"auc": auc, "underdiagnosis": ud}


def _calibration_table(block):
    rows = [{"label": lab, "brier": v["brier"], "ece": v["ece"], "bin": b, "bin_lo": b / 2, "bin_hi": (b + 1) / 2,
             "n": 3, "mean_score": 0.5, "frac_pos": 0.5} for lab, v in block["calibration"].items() for b in (0, 1)]
    return pd.DataFrame(rows)


def test_calibration_and_subgroup_columns(tmp_path, store_factory, monkeypatch):
    monkeypatch.setitem(BLOCK_TABLES, "calibration_table", _calibration_table)
    monkeypatch.setitem(BLOCK_TABLES, "subgroup_table", lambda b: pd.DataFrame(b["subgroups"]["auc"]))
    monkeypatch.setitem(BLOCK_TABLES, "underdiagnosis_table", lambda b: pd.DataFrame(b["subgroups"]["underdiagnosis"]))
    root = tmp_path / "runs"
    cal, sub = _fake_blocks(1)
    with_blocks, _ = store_factory.write_run(root, "s", {}, strength=1.0, n_bootstrap=5,
                                             test_extra={"calibration": cal, "subgroups": sub})
    without, _ = store_factory.write_run(root, "s", {"seed": 4}, strength=1.0, n_bootstrap=5)
    lb = build_leaderboard(root, expert=False)
    t = lb.table.set_index("run_id")
    row = t.loc[with_blocks]
    for lab in CHESTXRAY14:
        col = lab.lower()
        if lab in cal:
            assert row[f"brier_{col}"] == cal[lab]["brier"] and row[f"ece_{col}"] == cal[lab]["ece"]
        else:
            assert math.isnan(row[f"brier_{col}"])
    assert row["mean_brier"] == pytest.approx(sum(v["brier"] for v in cal.values()) / len(cal))
    assert row["mean_ece"] == pytest.approx(sum(v["ece"] for v in cal.values()) / len(cal))
    assert math.isnan(t.loc[without, "mean_brier"])  # metrics.json without the block: empty, not an error
    s = lb.subgroups
    assert list(s.columns) == list(SUBGROUP_COLUMNS) and len(s) == 4 and set(s["run_id"]) == {with_blocks}
    assert s["metric"].tolist() == ["auc"] * 3 + ["underdiagnosis_rate"]
    assert s["value"].iloc[0] == sub["auc"][0]["auc"] and s["ci_lo"].iloc[0] == 0.4
    assert s["reason"].iloc[2] == "fewer than 2 positives" and s["label"].iloc[3] == ""
    assert (s["value"].iloc[3], s["n_finding"].iloc[3], s["n_underdiagnosed"].iloc[3]) == (0.25, 8, 2)
    path = write_leaderboard(lb, tmp_path / "leaderboard.csv")
    back = pd.read_csv(output_paths(path)["subgroups"], keep_default_na=False)
    assert back["group"].tolist() == ["F", "M", "AP", "F"] and back["value"].iloc[2] == ""


def _ece_by_hand(t: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al. 2017: sum over equal-width bins of (n_bin / n) |mean score - fraction positive|."""
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inside = (p >= lo) & ((p < hi) if k < n_bins - 1 else (p <= hi))
        if inside.any():
            total += inside.sum() / len(p) * abs(p[inside].mean() - t[inside].mean())
    return total


def test_calibration_and_subgroups_from_the_real_metrics_blocks(tmp_path, store_factory):
    """With the blocks the trainer writes (cxr_bench.metrics.extended.extra_metrics): each label's Brier
    score and ECE in the leaderboard equal mean((p - y)^2) and a 15-bin ECE computed here from the saved
    test predictions, and a subgroup AUC equals scikit-learn's on that subgroup's images."""
    from sklearn.metrics import roc_auc_score

    from cxr_bench.metrics.predictions import read_predictions
    from cxr_bench.metrics.subgroups import bundled_metadata

    root = tmp_path / "runs"
    run_id, run_dir = store_factory.write_run(root, "s", {}, strength=1.0, n_bootstrap=5, extended=True)
    pred = read_predictions(run_dir / "predictions" / "test.csv")
    lb = build_leaderboard(root, expert=False)
    row = lb.table.iloc[0]
    for j, lab in enumerate(pred.labels):
        t, p = pred.y_true[:, j].astype(float), pred.y_prob[:, j]
        assert row[f"brier_{lab.lower()}"] == pytest.approx(np.mean((p - t) ** 2), abs=1e-12)
        assert row[f"ece_{lab.lower()}"] == pytest.approx(_ece_by_hand(t, p), abs=1e-12)
    meta = bundled_metadata().drop_duplicates("image").set_index("image").loc[list(pred.images)]
    s = lb.subgroups[(lb.subgroups["metric"] == "auc") & (lb.subgroups["attribute"] == "sex")]
    checked = 0
    for _, r in s.iterrows():
        if pd.isna(r["value"]):
            continue
        j = pred.labels.index(r["label"])
        rows = (meta["sex"] == r["group"]).to_numpy()
        assert r["value"] == pytest.approx(roc_auc_score(pred.y_true[rows, j], pred.y_prob[rows, j]), abs=1e-12)
        checked += 1
    assert checked >= 14  # both sexes, most labels
    assert set(lb.subgroups["metric"]) == {"auc", "underdiagnosis_rate"}
