from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from cxr_bench.cli import main
from cxr_bench.data.labels import CHESTXRAY8, CHESTXRAY14
from cxr_bench.errors import RunStoreError
from cxr_bench.results.leaderboard import (
    COLUMNS,
    build_leaderboard,
    leaderboard_csv,
    read_leaderboard,
    write_leaderboard,
)
from cxr_bench.results.runs import RunRecord, iter_runs, load_runs


def test_iter_runs_reads_status_and_suites(run_store):
    root, ids = run_store
    runs = load_runs(root)
    assert {r.run_id for r in runs} == {v for k, v in ids.items() if k != "failed"}
    everything = {r.run_id: r for r in iter_runs(root, include_incomplete=True)}
    failed = everything[ids["failed"]]
    assert failed.status == "failed" and failed.failed and not failed.completed
    assert "loss is NaN" in failed.error
    assert {r.suite for r in load_runs(root, "wang2017")} == {"wang2017"}
    # A suite directory and a single run directory are accepted as roots too.
    assert len(load_runs(root / "wang2017")) == 3
    assert [r.run_id for r in load_runs(root / "wang2017" / ids["alexnet_8"])] == [ids["alexnet_8"]]
    with pytest.raises(RunStoreError, match="does not exist"):
        load_runs(root / "nope")


def test_rows_match_metrics_json(run_store):
    root, ids = run_store
    lb = build_leaderboard(root)
    t = lb.table
    assert list(t.columns) == list(COLUMNS)
    assert len(t) == 6 and set(t["run_id"]) == {v for k, v in ids.items() if k != "failed"}
    assert list(lb.failed["run_id"]) == [ids["failed"]] and lb.failed["status"].iloc[0] == "failed"
    row = t.set_index("run_id").loc[ids["resnet50_14"]]
    metrics = json.loads((root / "wang2017" / ids["resnet50_14"] / "metrics.json").read_text())
    assert row["mean_auc"] == metrics["test"]["mean_auc"]
    assert [row["mean_auc_ci_lo"], row["mean_auc_ci_hi"]] == metrics["test"]["mean_auc_ci"]
    for lab in CHESTXRAY14:
        assert row[f"auc_{lab}"] == metrics["test"]["per_label"][lab]["auc"]
        assert row[f"auc_{lab}_ci_lo"] == metrics["test"]["per_label"][lab]["ci"][0]
    assert (row["backbone"], row["label_set"], row["loss"], row["split"], row["profile"]) == \
        ("resnet50", "chestxray14", "wcel", "official", "sample")
    assert row["param_count"] == metrics["params"] and row["best_epoch"] == 2 and row["epochs"] == 3
    assert row["git_commit"].startswith("0123456789ab") and not row["git_dirty"]
    assert len(row["metadata_sha256"]) == 64
    # An 8-label run leaves the 6 ChestX-ray14-only columns empty.
    row8 = t.set_index("run_id").loc[ids["alexnet_8"]]
    assert all(math.isnan(row8[f"auc_{lab}"]) for lab in CHESTXRAY14 if lab not in CHESTXRAY8)
    assert all(not math.isnan(row8[f"auc_{lab}"]) for lab in CHESTXRAY8)
    # Localization: only resnet50_8 was localized (runstore_factory.write_localization): accuracy
    # 0.05 * (i + 1) * (1 - T) for the 7 labels with boxes (Nodule, i = 5, has none), 4 boxes each.
    loc = t.set_index("run_id").loc[ids["resnet50_8"]]
    with_boxes = [i for i in range(8) if i != 5]
    for thr in (0.1, 0.5):
        assert loc[f"loc_acc_iobb_{thr}"] == pytest.approx(sum(0.05 * (i + 1) * (1 - thr) for i in with_boxes) / 7)
    assert loc["loc_afp_iobb_0.1"] == 0.5 and loc["loc_n_boxes"] == 28
    assert math.isnan(row["loc_acc_iobb_0.1"]) and math.isnan(row8["loc_n_boxes"])  # not localized


def test_sorted_and_byte_stable(run_store, tmp_path):
    root, _ = run_store
    a = build_leaderboard(root).table
    b = build_leaderboard(root).table
    assert leaderboard_csv(a) == leaderboard_csv(b)
    keys = a[["suite", "label_set", "backbone", "head", "grayscale"]].astype(str).agg("|".join, axis=1).tolist()
    assert keys == sorted(keys)
    path = write_leaderboard(a, tmp_path / "lb.csv")
    text = path.read_text()
    header, first = text.splitlines()[:2]
    assert header.split(",")[:3] == ["suite", "run_id", "backbone"]
    cells = dict(zip(header.split(","), first.split(",")))
    assert len(cells["mean_auc"].split(".")[1]) == 4  # fixed 4 decimals
    assert cells["git_dirty"] == "false" and cells["image_size"] == "64"
    back = read_leaderboard(path)
    assert back["run_id"].tolist() == a["run_id"].tolist()
    assert leaderboard_csv(back) == text  # read + write round-trips to the same bytes
    assert not list(tmp_path.glob(".lb.csv.*"))  # no temporary file left behind


def test_record_without_runner_files(tmp_path, store_factory):
    # An engine-only run directory (no manifest/status) still counts, as completed.
    run_id, run_dir = store_factory.write_run(tmp_path / "runs", "solo", {"model.backbone": "resnet50"},
                                              strength=1.0, n_bootstrap=20)
    (run_dir / "manifest.json").unlink()
    rec = RunRecord.load(run_dir)
    assert rec.completed and rec.suite == "solo" and rec.run_id == run_id and rec.is_bundled_sample
    row = build_leaderboard(tmp_path / "runs").table.iloc[0]
    assert row["git_commit"] is None or pd.isna(row["git_commit"])
    assert row["profile"] == ""


def test_cli_leaderboard(run_store, tmp_path, capsys):
    root, ids = run_store
    out = tmp_path / "board.csv"
    assert main(["leaderboard", "--runs", str(root), "--out", str(out), "--suite", "wang2017"]) == 0
    printed = capsys.readouterr().out
    assert ids["resnet50_14"] in printed and "wrote" in printed
    df = read_leaderboard(out)
    assert set(df["suite"]) == {"wang2017"} and len(df) == 3
    assert main(["leaderboard", "--runs", str(tmp_path / "missing"), "--out", str(out)]) == 2
