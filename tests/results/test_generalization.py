"""The generalization table, its leaderboard CSV and the paired comparison on an external set, on a small run
store whose external files are written by the real writers (write_predictions, summarize) from synthetic
scores; expected AUCs are recomputed with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import external_sets  # tests/helpers is on pytest's pythonpath
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxr_bench.metrics.predictions import read_predictions
from cxr_bench.results.generalization import GENERALIZATION_COLUMNS, compare_external, generalization_table
from cxr_bench.results.leaderboard import build_leaderboard, generalization_path, write_leaderboard
from cxr_bench.results.runs import RunRecord

SHARED = external_sets.SHARED


@pytest.fixture
def store(tmp_path: Path, store_factory) -> tuple[Path, dict[str, Path]]:
    return external_sets.scored_factory_store(tmp_path / "runs", store_factory)


def test_table_rows_match_sklearn_and_metrics(store) -> None:
    root, dirs = store
    table = generalization_table(root)
    assert list(table.columns) == list(GENERALIZATION_COLUMNS)
    assert len(table) == 2 * len(SHARED)  # the unscored run has no rows
    for name in ("weak", "strong"):
        rec = RunRecord.load(dirs[name])
        pred = read_predictions(dirs[name] / "external" / "openi" / "predictions.csv")
        rows = table[table["run_id"] == rec.run_id].set_index("label")
        for j, lab in enumerate(SHARED):
            ext = roc_auc_score(pred.y_true[:, j], pred.y_prob[:, j])
            nih = rec.metrics["test"]["per_label"][lab]["auc"]
            assert rows.loc[lab, "ext_auc"] == pytest.approx(ext)
            assert rows.loc[lab, "nih_auc"] == pytest.approx(nih)
            assert rows.loc[lab, "drop"] == pytest.approx(nih - ext)
            assert rows.loc[lab, "ext_lo"] <= rows.loc[lab, "ext_auc"] <= rows.loc[lab, "ext_hi"]
            assert rows.loc[lab, "n_ext_positive"] == int(pred.y_true[:, j].sum())
            assert rows.loc[lab, "n_ext_images"] == 80
    assert table["ci_accounts_for"].str.contains("not training randomness").all()


def test_leaderboard_writes_the_generalization_csv_only_when_there_is_one(store, tmp_path: Path) -> None:
    root, dirs = store
    out = tmp_path / "lb" / "leaderboard.csv"
    write_leaderboard(build_leaderboard(root), out)
    gen = generalization_path(out)
    assert gen.name == "leaderboard_generalization.csv"
    text = gen.read_text()
    assert text.splitlines()[0] == ",".join(GENERALIZATION_COLUMNS)
    assert len(pd.read_csv(gen)) == 2 * len(SHARED)

    other = tmp_path / "plain"
    for d in dirs.values():
        if not (d / "external").exists():
            import shutil

            shutil.copytree(d, other / "gen" / d.name)
    out2 = tmp_path / "lb2" / "leaderboard.csv"
    write_leaderboard(build_leaderboard(other), out2)
    assert out2.is_file() and not generalization_path(out2).exists()


def test_paired_comparison_on_the_external_set(store) -> None:
    _, dirs = store
    a, b = RunRecord.load(dirs["weak"]), RunRecord.load(dirs["strong"])
    df = compare_external(a, b, "openi", n_bootstrap=200, seed=0).set_index("label")
    pa, pb = a.external_predictions("openi"), b.external_predictions("openi")
    for j, lab in enumerate(SHARED):
        want = roc_auc_score(pb.y_true[:, j], pb.y_prob[:, j]) - roc_auc_score(pa.y_true[:, j], pa.y_prob[:, j])
        assert df.loc[lab, "delta"] == pytest.approx(want)
        assert df.loc[lab, "verdict"] in ("better", "no evidence")
    assert df.loc["mean", "delta"] > 0
