"""The generalization table, its leaderboard CSV and the paired comparison on an external set, on a small run
store whose external files are written by the real writers (write_predictions, summarize) from synthetic
scores; expected AUCs are recomputed with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxr_bench.metrics.predictions import read_predictions, write_predictions
from cxr_bench.metrics.roc import summarize
from cxr_bench.results.generalization import GENERALIZATION_COLUMNS, compare_external, generalization_table
from cxr_bench.results.leaderboard import build_leaderboard, generalization_path, write_leaderboard
from cxr_bench.results.runs import RunRecord
from cxr_bench.utils.io import atomic_write_json

SHARED = ["Atelectasis", "Cardiomegaly", "Effusion"]


def _score(run_dir: Path, dataset: str, strength: float, *, title: str = "<script>alert(1)</script>") -> None:
    rng = np.random.default_rng(7)  # one truth for every run: the same external images
    images = [f"ext_{i:03d}.png" for i in range(80)]
    patients = [f"p{i // 2}" for i in range(80)]
    y = (rng.random((80, len(SHARED))) < 0.3).astype(np.int8)
    noise = np.random.default_rng(int(strength * 100)).normal(size=y.shape)
    p = 1 / (1 + np.exp(-(strength * (2 * y - 1) + noise)))
    out = run_dir / "external" / dataset
    write_predictions(out / "predictions.csv", images, patients, y, p, SHARED)
    pred = read_predictions(out / "predictions.csv")
    val = read_predictions(run_dir / "predictions" / "val.csv").select(SHARED)
    atomic_write_json(out / "metrics.json", {
        "dataset": dataset, "labels": SHARED, "test": summarize(pred, val=val, n_bootstrap=50, split=dataset),
        "data": {"title": title, "bootstrap_unit": "patient", "n_images": 80, "n_patients": 40}})


@pytest.fixture
def store(tmp_path: Path, store_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "runs"
    base = {"optim.epochs": 3, "data.image_size": 64, "model.backbone": "resnet50"}
    dirs = {}
    for name, strength in (("weak", 0.4), ("strong", 1.5), ("unscored", 1.0)):
        _, dirs[name] = store_factory.write_run(root, "gen", {**base, "seed": int(strength * 10)}, strength=strength)
    _score(dirs["weak"], "openi", 0.4)
    _score(dirs["strong"], "openi", 1.5)
    return root, dirs


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


def test_report_section_escapes_text_from_files(store) -> None:
    from cxr_bench.reports import generalization as rg

    root, _ = store
    ctx = rg.load(root)
    assert ctx.datasets == ["openi"]
    html = rg.intro_html(ctx)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    view = rg.generalization_view(ctx, "openi").to_html()
    assert "NIH test AUC [95% CI]" in view and "<script>" not in view
    assert len(rg.paired_views(ctx, n_bootstrap=50)) == 1
