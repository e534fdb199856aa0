from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxr_bench.metrics import resample_groups
from cxr_bench.metrics.predictions import Predictions
from cxr_bench.results.expert import EXPERT_COLUMNS, evaluate_expert, expert_columns, expert_labels, expert_table
from cxr_bench.results.runs import load_runs


def test_bundled_expert_labels():
    ex = expert_labels()
    assert len(ex) > 4000 and ex["image"].is_unique
    assert set(ex["pneumothorax"].unique()) <= {0, 1}
    assert ex.loc[ex["image"] == "00000013_026.png", "pneumothorax"].item() == 1


def test_expert_auc_matches_a_direct_computation(run_store):
    root, ids = run_store
    rec = next(r for r in load_runs(root) if r.run_id == ids["resnet50_14"])
    pred = rec.predictions("test")
    ex = expert_labels().set_index("image")
    covered = [i for i, name in enumerate(pred.images) if name in ex.index]
    assert len(covered) == 30  # the factory puts 30 covered test images first
    res = {r.target: r for r in evaluate_expert(pred)}
    truth = ex.loc[pred.images[covered]]
    cols = [pred.labels.index(lab) for lab in ("Consolidation", "Pneumonia", "Infiltration", "Edema")]
    score = pred.y_prob[covered][:, cols].max(axis=1)
    air = res["airspace_opacity"]
    assert air.n == 30 and air.members == ("Consolidation", "Pneumonia", "Infiltration", "Edema")
    assert math.isclose(air.expert_auc, roc_auc_score(truth["airspace_opacity"], score), abs_tol=1e-12)
    nih = pred.y_true[covered][:, cols].max(axis=1)
    assert math.isclose(air.nih_auc, roc_auc_score(nih, score), abs_tol=1e-12)
    nm = [pred.labels.index("Nodule"), pred.labels.index("Mass")]
    assert math.isclose(res["nodule_or_mass"].expert_auc,
                        roc_auc_score(truth["nodule_or_mass"], pred.y_prob[covered][:, nm].max(axis=1)),
                        abs_tol=1e-12)
    row = expert_columns(rec)
    assert row["expert_n"] == 30 and row["expert_auc_airspace_opacity"] == air.expert_auc
    assert row["nih_auc_airspace_opacity_same_images"] == air.nih_auc


def test_eight_label_run_uses_only_its_labels(run_store):
    root, ids = run_store
    rec = next(r for r in load_runs(root) if r.run_id == ids["alexnet_8"])
    res = {r.target: r for r in evaluate_expert(rec.predictions())}
    assert res["airspace_opacity"].members == ("Pneumonia", "Infiltration")
    table = expert_table([rec])
    assert set(table["target"]) == {"pneumothorax", "nodule_or_mass", "airspace_opacity"}


def test_no_covered_image_gives_empty_columns():
    names = np.array(["99999999_000.png", "99999999_001.png"])
    pred = Predictions(names, np.array(["1", "1"]), np.array([[1], [0]], dtype=np.int8),
                       np.array([[0.7], [0.2]]), ("Pneumothorax",))
    assert evaluate_expert(pred) == []
    # Only one class among the covered images: AUC is NaN, not an error.
    ex = expert_labels()
    neg = ex[ex["pneumothorax"] == 0]["image"].to_numpy()[:3]
    pred = Predictions(neg, np.array(["1", "2", "3"]), np.array([[1], [0], [0]], dtype=np.int8),
                       np.array([[0.9], [0.1], [0.4]]), ("Pneumothorax",))
    (r,) = evaluate_expert(pred)
    assert r.n == 3 and r.expert_pos == 0 and math.isnan(r.expert_auc) and r.nih_auc == 1.0
    assert "expert_n" in EXPERT_COLUMNS


def test_expert_intervals_replay_the_patient_bootstrap(run_store):
    root, ids = run_store
    rec = next(r for r in load_runs(root) if r.run_id == ids["resnet50_14"])
    pred = rec.predictions("test")
    res = {r.target: r for r in evaluate_expert(pred, n_bootstrap=40, seed=2)}
    ex = expert_labels().set_index("image")
    covered = np.array([i for i, name in enumerate(pred.images) if name in ex.index])
    members = [pred.labels.index(lab) for lab in ("Consolidation", "Pneumonia", "Infiltration", "Edema")]
    truth = ex.loc[pred.images[covered], "airspace_opacity"].to_numpy()
    nih = pred.y_true[covered][:, members].max(axis=1)
    score = pred.y_prob[covered][:, members].max(axis=1)
    patients = pred.patient_ids[covered]
    pids = np.unique(patients)
    draws = resample_groups(len(pids), 40, 2)
    reps = {"expert": [], "nih": []}
    for r in range(40):
        w = np.bincount(draws[r], minlength=len(pids))[np.searchsorted(pids, patients)]
        for name, t in (("expert", truth), ("nih", nih)):
            keep = w > 0
            ok = 0 < t[keep].sum() < keep.sum()
            reps[name].append(roc_auc_score(t[keep], score[keep], sample_weight=w[keep]) if ok else np.nan)
    nm = res["airspace_opacity"]
    for name, ci in (("expert", nm.expert_ci), ("nih", nm.nih_ci)):
        v = np.array(reps[name])
        assert ci == pytest.approx(tuple(np.percentile(v[np.isfinite(v)], [2.5, 97.5])), abs=1e-12)
    assert nm.n_patients == len(pids)
    diff = np.array(reps["nih"]) - np.array(reps["expert"])
    assert nm.difference_ci == pytest.approx(tuple(np.percentile(diff[np.isfinite(diff)], [2.5, 97.5])), abs=1e-12)
    # One expert-positive image (nodule_or_mass in this store): an AUC but no interval.
    assert res["nodule_or_mass"].expert_pos == 1 and math.isnan(res["nodule_or_mass"].expert_ci[0])
    table = expert_table([rec])
    assert {"expert_ci_lo", "nih_ci_hi", "nih_minus_expert_ci_lo"} <= set(table.columns)
    row = expert_columns(rec)
    assert row["expert_auc_airspace_opacity_ci_lo"] <= row["expert_auc_airspace_opacity"] \
        <= row["expert_auc_airspace_opacity_ci_hi"]


def test_too_few_positives_give_no_interval():
    ex = expert_labels()
    pos = ex[ex["pneumothorax"] == 1]["image"].to_numpy()[:1]
    neg = ex[ex["pneumothorax"] == 0]["image"].to_numpy()[:4]
    names = np.r_[pos, neg]
    pred = Predictions(names, np.array(["1", "2", "3", "4", "5"]), np.array([[1], [0], [0], [0], [1]], dtype=np.int8),
                       np.array([[0.9], [0.1], [0.4], [0.3], [0.2]]), ("Pneumothorax",))
    (r,) = evaluate_expert(pred, n_bootstrap=20)
    assert r.expert_pos == 1 and r.expert_auc == 1.0 and all(math.isnan(v) for v in r.expert_ci)
    assert r.nih_pos == 2 and all(math.isfinite(v) for v in r.nih_ci)


def _plain(results):
    """Results as nested tuples of plain values, NaN as None (NaN != NaN would fail any equality)."""
    def v(x):
        if isinstance(x, tuple):
            return tuple(v(y) for y in x)
        if isinstance(x, (float, np.floating)):
            return None if math.isnan(x) else float(x)
        return x
    return [tuple(v(getattr(r, f)) for f in r.__dataclass_fields__) for r in results]


def test_expert_block_stored_at_completion_is_read_back_while_the_predictions_match(tmp_path, store_factory):
    import json

    from cxr_bench.metrics.expert import expert_block
    from cxr_bench.results.expert import expert_results
    from cxr_bench.results.runs import RunRecord
    from cxr_bench.utils.io import sha256_file

    _, run_dir = store_factory.write_run(tmp_path / "runs", "s", {"data.image_size": 64}, strength=1.0, n_bootstrap=5)
    rec = RunRecord.load(run_dir)
    computed = evaluate_expert(rec.predictions())
    assert computed and _plain(expert_results(RunRecord.load(run_dir))) == _plain(computed)  # no block: computed
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sha = sha256_file(run_dir / "predictions" / "test.csv")
    block = expert_block(rec.predictions(), predictions_sha256=sha)
    json.dumps(block, allow_nan=False)
    block["results"][0]["expert_auc"] = 0.123  # a value only the block has: shows where it was read from
    metrics["test"]["expert"] = block
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    stored = expert_results(RunRecord.load(run_dir))
    assert stored[0].expert_auc == 0.123 and _plain(stored[1:]) == _plain(computed[1:])  # exact JSON round trip
    row = expert_columns(RunRecord.load(run_dir))
    assert row[f"expert_auc_{computed[0].target}"] == 0.123
    # Predictions changed since (another sha256): the block is stale and the file is scored again.
    block["predictions_sha256"] = "0" * 64
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert _plain(expert_results(RunRecord.load(run_dir))) == _plain(computed)
