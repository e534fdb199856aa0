"""``compare --pair A B``: any two runs scored on the same test images, paired by patient (how a model scored
with ``cxr-bench evaluate`` is tested against a baseline). Differences checked against scikit-learn."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxr_bench.errors import RunStoreError
from cxr_bench.results.compare import paired_runs, pick_runs
from cxr_bench.results.runs import load_runs


def _auc(run_dir, label: str) -> float:
    df = pd.read_csv(run_dir / "predictions" / "test.csv")
    return roc_auc_score(df[f"true_{label}"], df[f"prob_{label}"])


def test_pair_across_suites_by_id_and_suite_slash_id(run_store):
    root, ids = run_store
    runs = load_runs(root)
    table = paired_runs(runs, f"wang2017/{ids['resnet50_14']}", ids["baseline"], n_bootstrap=50).set_index("label")
    a = next(r for r in runs if r.run_id == ids["resnet50_14"])
    b = next(r for r in runs if r.run_id == ids["baseline"])
    for label in ("Atelectasis", "Hernia"):
        assert table.loc[label, "delta"] == pytest.approx(_auc(b.run_dir, label) - _auc(a.run_dir, label), abs=1e-9)
    assert table.loc["mean", "factor"] == "run" and table.loc["mean", "suite"] == "wang2017 vs ablations"
    assert 0 <= table.loc["Atelectasis", "p_clustered"] <= 1


def test_pair_refusals(run_store):
    root, ids = run_store
    runs = load_runs(root)
    with pytest.raises(RunStoreError, match="no completed run is named 'nope'"):
        pick_runs(runs, "nope")
    with pytest.raises(RunStoreError, match="name the same run"):
        paired_runs(runs, ids["baseline"], f"ablations/{ids['baseline']}")
    # chestxray8 and chestxray14 runs share labels but were scored on the same images: paired on the shared ones
    table = paired_runs(runs, ids["resnet50_8"], ids["resnet50_14"], n_bootstrap=20)
    assert set(table["label"]) - {"mean"} <= {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass",
                                              "Nodule", "Pneumonia", "Pneumothorax"}
