from __future__ import annotations

import csv
import json
import math
import re

import pandas as pd
import pytest

from cxr_bench.cli import main
from cxr_bench.config import RunConfig
from cxr_bench.data.labels import CHESTXRAY8, CHESTXRAY14
from cxr_bench.errors import RunStoreError
from cxr_bench.results.leaderboard import (
    AGG_COLUMNS,
    COLUMN_DOCS,
    COLUMNS,
    FACTOR_COLUMNS,
    SUBGROUP_COLUMNS,
    auc_column,
    build_leaderboard,
    column_docs_markdown,
    leaderboard_csv,
    ranked_rows,
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
    assert set(t["status"]) == {"completed"} and set(t["problem"]) == {""}
    assert list(lb.failed["run_id"]) == [ids["failed"]] and lb.failed["status"].iloc[0] == "failed"
    row = t.set_index("run_id").loc[ids["resnet50_14"]]
    metrics = json.loads((root / "wang2017" / ids["resnet50_14"] / "metrics.json").read_text())
    assert row["mean_auc"] == metrics["test"]["mean_auc"]
    assert [row["mean_auc_ci_lo"], row["mean_auc_ci_hi"]] == metrics["test"]["mean_auc_ci"]
    for lab in CHESTXRAY14:
        assert row[auc_column(lab)] == metrics["test"]["per_label"][lab]["auc"]
        assert row[auc_column(lab) + "_ci_lo"] == metrics["test"]["per_label"][lab]["ci"][0]
    assert auc_column("Pleural_Thickening") == "auc_pleural_thickening"
    assert (row["backbone"], row["label_set"], row["loss"], row["split"], row["profile"]) == \
        ("resnet50", "chestxray14", "wcel", "official", "sample")
    assert row["param_count"] == metrics["params"] and row["best_epoch"] == 2 and row["epochs_run"] == 3
    assert row["git_commit"].startswith("0123456789ab") and not row["git_dirty"]
    assert len(row["metadata_sha256"]) == 64 and row["blocks"] == "main" and row["bundled_sample"]
    # An 8-label run leaves the 6 ChestX-ray14-only columns empty.
    row8 = t.set_index("run_id").loc[ids["alexnet_8"]]
    assert all(math.isnan(row8[auc_column(lab)]) for lab in CHESTXRAY14 if lab not in CHESTXRAY8)
    assert all(not math.isnan(row8[auc_column(lab)]) for lab in CHESTXRAY8)
    # Localization: only resnet50_8 was localized (runstore_factory.write_localization): accuracy
    # 0.05 * (i + 1) * (1 - T) for the 7 labels with boxes (Nodule, i = 5, has none), 4 boxes each.
    loc = t.set_index("run_id").loc[ids["resnet50_8"]]
    with_boxes = [i for i in range(8) if i != 5]
    for thr, col in ((0.1, "loc_acc_iobb_0p1"), (0.5, "loc_acc_iobb_0p5")):
        assert loc[col] == pytest.approx(sum(0.05 * (i + 1) * (1 - thr) for i in with_boxes) / 7)
    assert loc["loc_afp_iobb_0p1"] == 0.5 and loc["loc_n_boxes"] == 28
    assert math.isnan(row["loc_acc_iobb_0p1"]) and math.isnan(row8["loc_n_boxes"])  # not localized


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("head_kwargs", "kwargs"):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_factor_columns_are_every_identity_field(tmp_path, store_factory):
    """Every identity field of the config (the thing that makes two runs different experiments) is a
    column, named in one style, holding the run's value; two paper-profile rows that differ only in a
    frozen backbone no longer look identical."""
    leaves = _leaves(RunConfig().identity_dict(full=True))
    assert len(FACTOR_COLUMNS) == len(leaves) == len(set(FACTOR_COLUMNS))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", c) for c in COLUMNS), [c for c in COLUMNS if not re.fullmatch(
        r"[a-z][a-z0-9_]*", c)]
    assert len(set(COLUMNS)) == len(COLUMNS)
    over = {"model.backbone": "resnet50", "optim.optimizer": "sgd", "optim.lr": 3e-5, "optim.epochs": 7,
            "model.pretrained": "/w/imagenet-resnet50.pth", "model.head_kwargs": {}, "name": "rn50-frozen",
            "data.image_size": 96}
    root = tmp_path / "runs"
    frozen, _ = store_factory.write_run(root, "paper", {**over, "model.freeze_backbone": True}, strength=1.0,
                                        n_bootstrap=5)
    tuned, _ = store_factory.write_run(root, "paper", {**over, "model.freeze_backbone": False,
                                                        "name": "rn50-tuned"}, strength=1.0, n_bootstrap=5)
    t = build_leaderboard(root, expert=False).table.set_index("run_id")
    r = t.loc[frozen]
    assert (r["optimizer"], r["lr"], r["epochs"], r["image_size"], r["pretrained"], r["run_name"]) == \
        ("sgd", 3e-5, 7, 96, "imagenet-resnet50.pth", "rn50-frozen")
    assert bool(r["freeze_backbone"]) is True and bool(t.loc[tuned, "freeze_backbone"]) is False
    assert r["random_fractions"] == "[0.7,0.1,0.2]" and r["eval_threshold"] == "youden"
    differ = [c for c in FACTOR_COLUMNS if str(t.loc[frozen, c]) != str(t.loc[tuned, c])]
    assert differ == ["freeze_backbone"]
    # The shortest round-trip form keeps small learning rates exact in the CSV (4 decimals would print 0).
    path = write_leaderboard(build_leaderboard(root, expert=False), tmp_path / "lb.csv")
    back = read_leaderboard(path).set_index("run_id")
    assert back.loc[frozen, "lr"] == 3e-5 and back.loc[frozen, "freeze_backbone"] == True  # noqa: E712


def test_sorted_and_byte_stable(run_store, tmp_path):
    root, _ = run_store
    a = build_leaderboard(root).table
    b = build_leaderboard(root).table
    assert leaderboard_csv(a) == leaderboard_csv(b)
    keys = a[["suite", "label_set", "backbone", "head", "grayscale"]].astype(str).agg("|".join, axis=1).tolist()
    assert keys == sorted(keys)
    path = write_leaderboard(a, tmp_path / "lb.csv")
    text = path.read_text()
    lines = text.splitlines()
    # Plain CSV: the header first. The factory's runs are on the bundled sample (no data.root): every row
    # says so in its own columns, and the sidecar says why.
    header, first = list(csv.reader(lines[:2]))
    assert header[:3] == ["suite", "run_id", "status"]
    cells = dict(zip(header, first))
    assert len(cells["mean_auc"].split(".")[1]) == 4  # fixed 4 decimals
    assert cells["git_dirty"] == "false" and cells["image_size"] == "64" and cells["lr"] == "0.001"
    assert cells["data"] == "bundled sample" and cells["synthetic"] == "false" and cells["comparable"] == "false"
    assert "bundled" in cells["why_not"] and "sample" in cells["why_not"]
    side = json.loads((tmp_path / "lb.csv.json").read_text())
    # The notes state the rows' own facts (data/sample_note.py): every run on the sample, their AUC range.
    auc = a["mean_auc"].astype(float)
    assert side["notes"][0].startswith(f"NOT COMPARABLE WITH ANY PAPER: {len(a)} run(s) on the bundled 1,673-image")
    assert f"{auc.min():.2f}-{auc.max():.2f}" in side["notes"][0] and "NOT COMPARABLE" in side["notes"][0]
    assert " at 64 px: a smoke test" in side["notes"][0]
    assert side["notes"][1].startswith("Why: random init (no ImageNet weights), small images (papers: 224-1024 px)")
    assert side["provenance"]["runs"] == 6 and side["provenance"]["data"] == ["bundled sample"]
    back = read_leaderboard(path)
    assert back["run_id"].tolist() == a["run_id"].tolist()
    assert leaderboard_csv(back) == text  # read + write round-trips to the same bytes
    assert pd.read_csv(path).shape == a.shape
    assert not list(tmp_path.glob(".lb*.tmp"))  # no temporary file left behind
    assert {p.name for p in tmp_path.iterdir()} == {"lb.csv", "lb_agg.csv", "lb_subgroups.csv", "lb.csv.json",
                                                     "lb_agg.csv.json", "lb_subgroups.csv.json"}


def test_no_banner_off_the_sample_and_formula_cells_neutralised(tmp_path, store_factory):
    root = tmp_path / "runs"
    store_factory.write_run(root, "real", {"data.root": "/data/nih", "name": "=HYPERLINK(\"http://x\")",
                                           "model.pretrained": "@evil.pth"}, strength=1.0, n_bootstrap=5)
    lb = build_leaderboard(root, expert=False)
    text = write_leaderboard(lb, tmp_path / "lb.csv").read_text()
    assert not text.startswith("#")
    cells = dict(zip(*csv.reader(text.splitlines()[:2])))
    assert cells["pretrained"] == "'@evil.pth" and cells["bundled_sample"] == "false"
    row = pd.read_csv(tmp_path / "lb.csv")
    assert row["run_name"].iloc[0] == "'=HYPERLINK(\"http://x\")"
    assert row["mean_auc"].iloc[0] == pytest.approx(lb.table["mean_auc"].iloc[0], abs=5e-5)  # numbers untouched


def test_a_run_directory_without_a_manifest_is_pending(tmp_path, store_factory):
    """The manifest is the one record of a run's state: engine files alone (``cxr-bench train`` outside a
    sweep) do not make a completed run."""
    _, run_dir = store_factory.write_run(tmp_path / "runs", "solo", {"model.backbone": "resnet50"},
                                         strength=1.0, n_bootstrap=20)
    (run_dir / "manifest.json").unlink()
    rec = RunRecord.load(run_dir)
    assert rec.status == "pending" and not rec.completed and (run_dir / "metrics.json").is_file()
    assert build_leaderboard(tmp_path / "runs").table.empty  # nothing finished to report


def test_cli_leaderboard(run_store, tmp_path, capsys):
    root, ids = run_store
    out = tmp_path / "board.csv"
    assert main(["leaderboard", "--runs", str(root), "--out", str(out), "--suite", "wang2017"]) == 0
    printed = capsys.readouterr().out
    assert ids["resnet50_14"] in printed and "wrote" in printed
    df = read_leaderboard(out)
    assert set(df["suite"]) == {"wang2017"} and len(df) == 3
    assert (tmp_path / "board_agg.csv").is_file() and (tmp_path / "board_subgroups.csv").is_file()
    assert main(["leaderboard", "--runs", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_cli_defaults_json_empty_store_and_bad_out(tmp_path, store_factory, capsys):
    runs = tmp_path / "runs"
    a, _ = store_factory.write_run(runs, "alpha", {}, strength=1.0, n_bootstrap=5)
    b, _ = store_factory.write_run(runs, "beta", {"seed": 3}, strength=1.0, n_bootstrap=5)
    # No --out: each suite's leaderboard lands where `cxr-bench run` writes it, <runs>/<suite>/leaderboard.csv.
    assert main(["leaderboard", "--runs", str(runs), "--no-expert"]) == 0
    assert read_leaderboard(runs / "alpha" / "leaderboard.csv")["run_id"].tolist() == [a]
    assert read_leaderboard(runs / "beta" / "leaderboard.csv")["run_id"].tolist() == [b]
    assert (runs / "beta" / "leaderboard_agg.csv").is_file()
    capsys.readouterr()
    assert main(["leaderboard", "--runs", str(runs), "--suite", "beta", "--json", "--no-expert"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in doc["runs"]] == [b] and doc["runs"][0]["seed"] == 3
    assert doc["aggregate"][0]["n_seeds"] == 1 and doc["files"][0].endswith("beta/leaderboard.csv")
    # An empty store: a warning and a non-zero exit, nothing written.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["leaderboard", "--runs", str(empty)]) == 1
    assert "no completed run" in capsys.readouterr().err and not list(empty.iterdir())
    # --out that is a directory: one line naming it, exit 2.
    assert main(["leaderboard", "--runs", str(runs), "--out", str(tmp_path), "--no-expert"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cxr-bench: error:") and str(tmp_path) in err[0]
    assert "is a directory" in err[0]
    # --out under a path that is a file: the same, naming the file it could not write.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["leaderboard", "--runs", str(runs), "--out", str(blocker / "lb.csv"), "--no-expert"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cxr-bench: error: cannot write {blocker / 'lb.csv'}")


def test_every_row_says_which_data_and_phantom_runs_are_synthetic(tmp_path, store_factory):
    root = tmp_path / "runs"
    base = {"optim.epochs": 3, "data.image_size": 64}
    nih, _ = store_factory.write_run(root, "s", {**base, "data.root": "/data/nih"}, strength=1.0, n_bootstrap=5)
    sample, _ = store_factory.write_run(root, "s", {**base, "model.backbone": "alexnet"}, strength=1.0, n_bootstrap=5)
    fake, _ = store_factory.write_run(root, "s", {**base, "model.backbone": "densenet121", "data.root": "phantom:0"},
                                      strength=3.0, n_bootstrap=5)
    t = build_leaderboard(root, expert=False).table.set_index("run_id")
    sha = store_factory.DATA_ENTRY_SHA[:8]
    assert t.loc[nih, "data"] == f"NIH v2020 {sha}" and not t.loc[nih, "synthetic"] and t.loc[nih, "comparable"]
    assert t.loc[nih, "why_not"] == ""
    assert t.loc[sample, "data"] == "bundled sample" and not t.loc[sample, "synthetic"]
    assert not t.loc[sample, "comparable"] and "sample" in t.loc[sample, "why_not"]
    assert t.loc[fake, "data"] == "phantom" and t.loc[fake, "synthetic"] and not t.loc[fake, "comparable"]
    assert "synthetic" in t.loc[fake, "why_not"]
    ranked = ranked_rows(t.reset_index())
    assert set(ranked["run_id"]) == {nih, sample}  # the sanity run is listed, never ranked
    back = read_leaderboard(write_leaderboard(build_leaderboard(root, expert=False), tmp_path / "lb.csv"))
    assert back.set_index("run_id").loc[fake, "synthetic"] == True  # noqa: E712 - read back as a boolean


def test_column_dictionary_matches_the_code_and_covers_every_column():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "columns.md"
    assert doc.read_text(encoding="utf-8") == column_docs_markdown(), (
        "docs/columns.md is stale: regenerate it with the command at its top")
    assert list(COLUMN_DOCS["leaderboard.csv"]) == list(COLUMNS)
    assert list(COLUMN_DOCS["leaderboard_agg.csv"]) == list(AGG_COLUMNS)
    assert list(COLUMN_DOCS["leaderboard_subgroups.csv"]) == list(SUBGROUP_COLUMNS)
    for name, cols in COLUMN_DOCS.items():
        for col, meaning in cols.items():
            assert meaning.strip() and f"| `{col}` | {meaning} |" in doc.read_text(encoding="utf-8"), (name, col)


def test_pandas_reads_every_csv_the_tool_writes(run_store, tmp_path):
    root, _ = run_store
    from cxr_bench.cli import main

    out = tmp_path / "out"
    assert main(["leaderboard", "--runs", str(root), "--out", str(out / "lb.csv")]) == 0
    assert main(["leaderboard", "--runs", str(root)]) == 0  # into each suite's folder
    assert main(["compare", str(out / "lb.csv"), str(out / "lb.csv"), "--out", str(out / "d.csv")]) == 0
    assert main(["compare", str(out / "lb.csv"), "--reference", "wang2017", "--out", str(out / "r.csv")]) == 0
    assert main(["compare", "--ablations", "--runs", str(root), "--bootstrap", "20", "--out", str(out / "a.csv")]) == 0
    written = sorted(out.rglob("*.csv")) + sorted(p for p in root.rglob("*.csv") if "predictions" not in p.parts)
    assert len(written) >= 10
    for path in written:
        df = pd.read_csv(path)  # no options: header first, no banner
        assert len(df.columns) > 1 and not str(df.columns[0]).startswith("#"), path
        if path.parent == out or path.name.startswith("leaderboard"):
            assert (path.parent / (path.name + ".json")).is_file(), path
