"""Numerical faults: a diverging run fails alone (the sweep goes on), a label with no positive in the test set
is reported as missing (not a crash, not a NaN in the mean), constant predictions score AUC 0.5; and every
metrics file stays standard JSON (no NaN/Infinity tokens) through all of it.

The engine's own NaN tests (a loss that turns NaN at a chosen step) are in tests/engine/test_trainer.py; the
AUC edge cases of the metric functions in tests/metrics/test_roc.py; see README.md.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import reliability_harness as H

from cxr_bench.cli import main
from cxr_bench.metrics.predictions import read_predictions, write_predictions
from cxr_bench.metrics.roc import per_label_auc, summarize

ENTRY = "Data_Entry_2017_v2020.csv"
DROPPED = "Mass"  # removed from every test image below; it keeps its train/val positives


def _without_label_in_test(phantom_root: Path, dest: Path, label: str) -> int:
    """A copy of the phantom release where no test image carries ``label``; returns the images changed."""
    root = Path(shutil.copytree(phantom_root, dest))
    test = set((root / "test_list.txt").read_text().split())
    lines = (root / ENTRY).read_text().splitlines()
    changed = 0
    for i, line in enumerate(lines[1:], start=1):
        fields = line.split(",")
        findings = fields[1].split("|")
        if fields[0] in test and label in findings:
            fields[1] = "|".join(f for f in findings if f != label) or "No Finding"
            lines[i] = ",".join(fields)
            changed += 1
    (root / ENTRY).write_text("\n".join(lines) + "\n")
    return changed


@pytest.mark.slow
def test_diverging_run_fails_alone_and_a_label_absent_from_test_is_reported(phantom_root, tmp_path, capsys):
    root = tmp_path / "nih"
    assert _without_label_in_test(phantom_root, root, DROPPED) > 0
    suite = H.write_suite(tmp_path / "numerics.toml", "numerics", {"optim.lr": [1e30, 0.01]},
                          base={"optim.epochs": 2})
    rc = main(["run", "--suite", str(suite), "--data-root", str(root), "--runs", str(tmp_path / "runs"),
               "--no-report"])
    captured = capsys.readouterr()
    assert rc == 1  # one run failed; the sweep still ran the other
    runs = H.run_dirs(tmp_path / "runs" / "numerics")
    by_lr = {H.strict_json(d / "config.json")["optim"]["lr"]: d for d in runs.values()}
    assert sorted(by_lr) == [0.01, 1e30]

    bad = by_lr[1e30]
    m = H.strict_json(bad / "manifest.json")
    assert m["status"] == "failed" and m["error"]["type"] == "TrainingError"
    assert "non-finite training loss" in m["error"]["message"]
    assert not (bad / "metrics.json").exists()
    assert f"FAILED {bad.name}" in captured.err and "non-finite training loss" in captured.err

    good = by_lr[0.01]
    assert H.strict_json(good / "manifest.json")["status"] == "completed"
    metrics = H.strict_json(good / "metrics.json")  # strict: a null, not a NaN token
    test, val = metrics["test"], metrics["val"]
    assert DROPPED in test["missing_labels"] and test["per_label"][DROPPED]["auc"] is None
    assert DROPPED not in val["missing_labels"] and H.finite(val["per_label"][DROPPED]["auc"])
    # The mean is over the defined labels only, recomputed here from the saved predictions.
    preds = read_predictions(good / "predictions" / "test.csv", labels=metrics["labels"])
    auc = per_label_auc(preds.y_true, preds.y_prob)
    defined = [a for lab, a in zip(metrics["labels"], auc) if lab not in test["missing_labels"]]
    assert all(math.isfinite(a) for a in defined)
    assert test["mean_auc"] == pytest.approx(float(np.mean(defined)), abs=1e-12)
    H.check_files_parse(tmp_path / "runs")


def test_constant_predictions_score_half_and_stay_standard_json(tmp_path):
    rng = np.random.default_rng(0)
    labels = ["Atelectasis", "Effusion", "Mass"]
    n = 40
    y = (rng.random((n, 3)) < 0.3).astype(np.float32)
    y[:, 2] = 0  # Mass: no positive at all
    y[0, :2] = 1  # at least one positive for the others
    y[1, :2] = 0
    prob = np.full((n, 3), 0.25, dtype=np.float32)
    images = [f"{i // 2 + 1:08d}_{i % 2:03d}.png" for i in range(n)]
    patients = [i // 2 + 1 for i in range(n)]
    for split in ("val", "test"):
        write_predictions(tmp_path / f"{split}.csv", images, patients, y, prob, labels)
    val = read_predictions(tmp_path / "val.csv", labels)
    test = read_predictions(tmp_path / "test.csv", labels)

    block = summarize(test, val=val, n_bootstrap=50, seed=0)
    text = json.dumps(block, allow_nan=False)  # raises on any NaN/inf that would reach metrics.json
    assert json.loads(text) == block
    assert block["mean_auc"] == 0.5 and block["mean_auc_ci"] == [0.5, 0.5]
    for lab in labels[:2]:
        assert block["per_label"][lab]["auc"] == 0.5
    assert block["missing_labels"] == ["Mass"] and block["per_label"]["Mass"]["auc"] is None
