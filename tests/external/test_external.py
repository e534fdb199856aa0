"""A demo-size trained run scored on every fixture external set, end to end: the CLI entry point, the files
and manifest record it writes, the one reader, the generalization table, the leaderboard CSV and the report.

Expected numbers are recomputed here from the written predictions with scikit-learn, independently of the
metrics code that wrote them.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from external_sets import external_fixtures, train_demo_run  # tests/helpers is on pytest's pythonpath
from sklearn.metrics import roc_auc_score

from cxr_bench.data.external import DATASETS
from cxr_bench.errors import CxrBenchError, RunStoreError
from cxr_bench.external import evaluate_external_cli
from cxr_bench.results.generalization import GENERALIZATION_COLUMNS, compare_external, generalization_table
from cxr_bench.results.runs import RunRecord
from cxr_bench.runner.store import artifact_record, verify_artifacts
from cxr_bench.utils.io import atomic_write_json

pytestmark = pytest.mark.slow


def _args(**kw) -> argparse.Namespace:
    base = {"run": None, "runs": None, "suite": None, "dataset": None, "data_root": None, "no_progress": True,
            "verbose": 0, "quiet": 0}
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Path]]:
    """(store, run_dir, fixture roots): the demo run scored on all five sets through the CLI entry point."""
    base = tmp_path_factory.mktemp("ext-e2e")
    roots = external_fixtures(base / "sets")
    run_dir = train_demo_run(base)
    # As the runner leaves a completed run: a manifest with the artifacts record of its files.
    atomic_write_json(run_dir / "manifest.json", {"manifest_version": 1, "run_id": run_dir.name,
                                                  "status": "completed", "artifacts": artifact_record(run_dir)})
    for name, root in roots.items():
        assert evaluate_external_cli(_args(run=str(run_dir), dataset=name, data_root=str(root))) == 0
    return base / "runs", run_dir, roots


def test_every_set_is_scored_like_the_nih_test(scored) -> None:
    _, run_dir, roots = scored
    rec = RunRecord.load(run_dir)
    assert rec.external_datasets() == sorted(DATASETS)
    for name in DATASETS:
        m = rec.external_metrics(name)
        pred = rec.external_predictions(name)
        assert m["labels"] == [lab for lab in rec.labels if lab in DATASETS[name].shared]
        assert list(pred.labels) == m["labels"]
        block = m["test"]
        # the same keys as the NIH test block: AUC + CI per label, calibration, subgroups
        assert {"mean_auc", "mean_auc_ci", "per_label", "bootstrap", "calibration", "subgroups"} <= set(block)
        assert block["n_images"] == len(pred) == m["data"]["n_images"]
        for j, lab in enumerate(pred.labels):
            t = pred.y_true[:, j]
            if 0 < t.sum() < len(t):
                assert block["per_label"][lab]["auc"] == pytest.approx(roc_auc_score(t, pred.y_prob[:, j]), abs=1e-9)
                assert block["per_label"][lab]["n_pos"] == int(t.sum())
        # thresholds come from the run's NIH validation predictions, not from the external set
        nih_val = rec.metrics["val"]["per_label"]
        for lab in pred.labels:
            assert block["per_label"][lab]["threshold"] == nih_val[lab]["threshold"]
        # truth is the metadata's: the predictions file carries the fixture's image names
        files = [p.as_posix() for p in roots[name].rglob("*") if p.is_file()]
        assert all(any(f.endswith("/" + img) for f in files) for img in pred.images)
    assert rec.external_metrics("siim")["data"]["nih_overlap"]
    assert rec.external_metrics("openi")["test"]["n_patients"] < rec.external_metrics("openi")["test"]["n_images"]


def test_the_model_transfers_to_phantom_lesions(scored) -> None:
    """The fixtures plant the same lesion per NIH label as the training phantoms: RSNA's single label
    (Pneumonia) is separable, so a trained model must beat chance there."""
    _, run_dir, _ = scored
    rec = RunRecord.load(run_dir)
    aucs = [rec.external_metrics(n)["test"]["mean_auc"] for n in DATASETS]
    assert all(a is None or 0.0 <= a <= 1.0 for a in aucs)
    assert np.nanmean([a for a in aucs if a is not None]) > 0.5


def test_manifest_records_the_external_files(scored) -> None:
    _, run_dir, _ = scored
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"external/openi/metrics.json", "external/siim/predictions.csv"} <= set(manifest["artifacts"])
    assert verify_artifacts(run_dir) == []
    rec = RunRecord.load(run_dir)
    assert rec.problems == []


def test_generalization_table_and_leaderboard(scored, tmp_path: Path) -> None:
    store, run_dir, _ = scored
    rec = RunRecord.load(run_dir)
    table = generalization_table(store)
    assert list(table.columns) == list(GENERALIZATION_COLUMNS)
    assert len(table) == sum(len(rec.external_metrics(n)["labels"]) for n in DATASETS)
    both = table.dropna(subset=["nih_auc", "ext_auc"])
    assert len(both) >= 5
    for _, row in both.iterrows():
        nih = rec.metrics["test"]["per_label"][row["label"]]
        pred = rec.external_predictions(row["dataset"])
        j = pred.labels.index(row["label"])
        ext_auc = roc_auc_score(pred.y_true[:, j], pred.y_prob[:, j])
        assert row["nih_auc"] == pytest.approx(nih["auc"])
        assert (row["nih_lo"], row["nih_hi"]) == pytest.approx(tuple(nih["ci"]))
        assert row["ext_auc"] == pytest.approx(ext_auc)
        assert row["drop"] == pytest.approx(nih["auc"] - ext_auc)
        assert (row["n_ext_images"], row["n_ext_positive"]) == (len(pred), int(pred.y_true[:, j].sum()))
    rsna = table[table["dataset"] == "rsna"].iloc[0]
    assert "images" in rsna["ci_accounts_for"]  # RSNA has no patient ids: the bootstrap resamples images
    assert "reports" in table[table["dataset"] == "openi"].iloc[0]["ci_accounts_for"]
    assert generalization_table([rec]).equals(table)

    from cxr_bench.results.leaderboard import build_leaderboard, generalization_path, write_leaderboard

    out = tmp_path / "leaderboard.csv"
    write_leaderboard(build_leaderboard(store), out)
    written = pd.read_csv(generalization_path(out))
    assert written.columns.tolist() == list(GENERALIZATION_COLUMNS)
    assert len(written) == len(table)
    assert not generalization_path(out).read_text().startswith("#")


def _copy_completed(run_dir: Path, parent: Path, keep: tuple[str, ...] = ()) -> Path:
    """A copy of a finished run under ``parent`` (folder named by its run id, as every run's is), without its
    checkpoint: what a run made from outside predictions looks like. External sets not in ``keep`` are
    removed, those kept lose their metrics (their predictions stay); the manifest re-records the files."""
    from cxr_bench.runner.store import artifact_record
    from cxr_bench.utils.io import atomic_write_json

    dest = parent / run_dir.name
    shutil.copytree(run_dir, dest)
    shutil.rmtree(dest / "checkpoints")
    for d in (dest / "external").iterdir():
        if d.name not in keep:
            shutil.rmtree(d)
        else:
            (d / "metrics.json").unlink()
    manifest = json.loads((dest / "manifest.json").read_text())
    # The kept sets' predictions are the user's, placed in the run: not artifacts the run recorded.
    own = {k: v for k, v in artifact_record(dest).items() if not k.startswith("external/")}
    atomic_write_json(dest / "manifest.json", {**manifest, "artifacts": own})
    return dest


def test_paired_comparison_of_two_runs_on_one_set(scored, tmp_path: Path) -> None:
    _, run_dir, roots = scored
    # a second run: the same weights, its NIH files copied; scored on PadChest it must tie with the first
    from cxr_bench.config import RunConfig
    from cxr_bench.runner.store import Status, artifact_record
    from cxr_bench.utils.io import atomic_write_json

    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    cfg = cfg.replace(seed=cfg.seed + 1)  # another run id, so the twin is a run of its own
    twin = tmp_path / "demo" / cfg.run_id()
    shutil.copytree(run_dir, twin)
    shutil.rmtree(twin / "external")
    atomic_write_json(twin / "config.json", cfg.to_dict())
    atomic_write_json(twin / "manifest.json", {"run_id": cfg.run_id(), "status": Status.COMPLETED,
                                               "artifacts": artifact_record(twin)})
    assert evaluate_external_cli(_args(run=str(twin), dataset="padchest", data_root=str(roots["padchest"]))) == 0
    a, b = RunRecord.load(run_dir), RunRecord.load(twin)
    df = compare_external(a, b, "padchest", n_bootstrap=50)
    per_label = df[df["label"] != "mean"]
    assert np.allclose(per_label["delta"].fillna(0.0), 0.0)
    assert set(per_label["label"]) == set(a.external_metrics("padchest")["labels"])
    with pytest.raises(RunStoreError, match="external/chexpert/metrics.json: missing"):
        compare_external(a, b, "chexpert")


def test_user_errors_are_one_line(scored, tmp_path: Path) -> None:
    store, run_dir, roots = scored
    with pytest.raises(CxrBenchError, match="needs --data-root DIR"):
        evaluate_external_cli(_args(run=str(run_dir), dataset="openi"))
    with pytest.raises(CxrBenchError, match="needs --run-dir RUN_DIR or --runs STORE"):
        evaluate_external_cli(_args(dataset="openi", data_root=str(roots["openi"])))
    no_ckpt = _copy_completed(run_dir, tmp_path / "outside")
    with pytest.raises(RunStoreError, match="has no checkpoints/best.pt: a run made from outside predictions .* put "
                                            "the model's predictions of them in .*external/openi/predictions.csv") as e:
        evaluate_external_cli(_args(run=str(no_ckpt), dataset="openi", data_root=str(roots["openi"])))
    assert "\n" not in str(e.value)


def test_a_run_from_outside_predictions(scored, tmp_path: Path) -> None:
    """No checkpoint: the set's predictions placed in the run are scored (and left as they are)."""
    _, run_dir, roots = scored
    outside = _copy_completed(run_dir, tmp_path / "outside", keep=("openi",))
    given = (outside / "external" / "openi" / "predictions.csv").read_bytes()
    assert evaluate_external_cli(_args(run=str(outside), dataset="openi", data_root=str(roots["openi"]))) == 0
    assert (outside / "external" / "openi" / "predictions.csv").read_bytes() == given
    got, want = RunRecord.load(outside).external_metrics("openi"), RunRecord.load(run_dir).external_metrics("openi")
    assert got["predictions_from"] == "outside predictions" and got["checkpoint"] is None
    assert got["test"]["per_label"] == want["test"]["per_label"]
    assert got["test"]["mean_auc_ci"] == want["test"]["mean_auc_ci"]

    # once scored, the placed file is a recorded artifact: editing it makes the run damaged, not re-scored
    pred = outside / "external" / "openi" / "predictions.csv"
    pred.write_bytes(given.replace(b"1", b"0", 1) if b"1" in given else given + b"\n")
    with pytest.raises(RunStoreError, match="damaged"):
        evaluate_external_cli(_args(run=str(outside), dataset="openi", data_root=str(roots["openi"])))

    # a placed file whose truth disagrees with the set's metadata is refused, naming the image
    other = _copy_completed(run_dir, tmp_path / "outside2", keep=("openi",))
    df = pd.read_csv(other / "external" / "openi" / "predictions.csv", dtype=str, keep_default_na=False)
    col = next(c for c in df.columns if c.startswith("true_"))
    df.loc[0, col] = "0" if df.loc[0, col] == "1" else "1"
    df.to_csv(other / "external" / "openi" / "predictions.csv", index=False)
    with pytest.raises(RunStoreError, match=f"the truth of image '{df.loc[0, 'image']}' differs from"):
        evaluate_external_cli(_args(run=str(other), dataset="openi", data_root=str(roots["openi"])))


def test_a_whole_store(scored, caplog) -> None:
    store, _, roots = scored
    said: list[str] = []
    with caplog.at_level("WARNING", logger="cxr_bench"):
        assert evaluate_external_cli(_args(runs=str(store), suite="demo", dataset="rsna", data_root=str(roots["rsna"])),
                                     echo=said.append) == 0
    assert any(r.levelname == "WARNING" and "RSNA Pneumonia Detection Challenge: its images are NIH ChestX-ray14 "
               "images" in r.getMessage() for r in caplog.records)
    assert any("rsna: " in line and "mean AUC" in line for line in said)


def test_report_section_renders(scored, tmp_path: Path) -> None:
    from cxr_bench.reports.render import render_reports

    store, _, _ = scored
    done = render_reports(store, tmp_path / "reports", names=["generalization"])
    html = done[0].html.read_text()
    assert "Generalization report" in html and "NIH test AUC [95% CI]" in html
    assert "WARNING: SIIM-ACR Pneumothorax Segmentation" in html
    assert "padchest: NIH label -&gt; the set&#x27;s label" in html or "padchest: NIH label" in html


def test_the_evaluate_command_scores_an_external_set(scored, tmp_path: Path, capsys) -> None:
    """`cxr-bench evaluate --run-dir RUN --dataset NAME --data-root DIR`: the real command line, wired to the same
    library call; a second scoring of the same set gives the same metrics."""
    from cxr_bench.cli import main

    _, run_dir, roots = scored
    before = RunRecord.load(run_dir).external_metrics("siim")["test"]["per_label"]
    assert main(["evaluate", "--run-dir", str(run_dir), "--dataset", "siim", "--data-root", str(roots["siim"]),
                 "--no-progress"]) == 0
    assert RunRecord.load(run_dir).external_metrics("siim")["test"]["per_label"] == before
    assert main(["evaluate", "--run-dir", str(run_dir), "--dataset", "openi"]) == 2
    assert "needs --data-root" in capsys.readouterr().err
