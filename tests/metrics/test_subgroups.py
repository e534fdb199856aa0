"""Subgroup AUCs and underdiagnosis: values against scikit-learn and hand counts, the bootstrap replayed,
degenerate groups, the metadata join and the trainer's entry point."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from cxr_bench.errors import MetadataError
from cxr_bench.metrics import (
    Predictions,
    extra_metrics,
    resample_groups,
    subgroup_block,
    subgroup_table,
    underdiagnosis_table,
)
from cxr_bench.metrics.subgroups import (
    SUBGROUP_COLUMNS,
    UNDERDIAGNOSIS_COLUMNS,
    has_finding,
    no_finding_threshold,
    subgroup_groups,
)

LABELS = ("Atelectasis", "Effusion")


def _case(seed: int = 0, n_patients: int = 80):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_patients)
    pids = np.repeat(np.arange(n_patients), sizes)
    n = pids.size
    images = np.array([f"{p:08d}_{i:03d}.png" for i, p in enumerate(pids)])
    sex = np.repeat(rng.choice(["M", "F"], n_patients), sizes)
    age = np.repeat(rng.integers(5, 95, n_patients), sizes)
    view = rng.choice(["PA", "AP"], n)
    y = (rng.random((n, 2)) < 0.3).astype(np.int8)
    p = 1 / (1 + np.exp(-(1.5 * y + rng.normal(size=y.shape) - 1)))
    pred = Predictions(images, pids.astype(str), y, p, LABELS)
    meta = pd.DataFrame({"image": images, "sex": sex, "age": age, "view": view, "patient_id": pids,
                         "finding_labels": np.where(y.any(axis=1), "Atelectasis", "No Finding")})
    return pred, meta


def test_group_auc_equals_sklearn_and_gap_is_the_difference():
    pred, meta = _case()
    block = subgroup_block(pred, meta, 0.5, n_bootstrap=30)
    t = subgroup_table(block)
    assert list(t.columns) == list(SUBGROUP_COLUMNS)
    assert list(t.columns[:9]) == ["attribute", "group", "label", "auc", "ci_low", "ci_high", "n_pos", "n_neg",
                                   "reason"]
    g = subgroup_groups(meta, pred.images)
    for attr in ("sex", "age", "view"):
        ref = block["reference"][attr]
        assert ref == g[attr].value_counts().idxmax()
        for j, lab in enumerate(LABELS):
            rows = t[(t["attribute"] == attr) & (t["label"] == lab)].set_index("group")
            for grp, r in rows.iterrows():
                mask = (g[attr] == grp).to_numpy()
                assert r["auc"] == pytest.approx(roc_auc_score(pred.y_true[mask, j], pred.y_prob[mask, j]), abs=1e-12)
                assert r["n_pos"] == pred.y_true[mask, j].sum() and r["n_images"] == mask.sum()
                if grp == ref:
                    assert math.isnan(r["gap"])
                else:
                    assert r["gap"] == pytest.approx(r["auc"] - rows.loc[ref, "auc"], abs=1e-12)
                    assert r["gap_ci_low"] <= r["gap_ci_high"]
    assert set(t.loc[t["attribute"] == "age", "group"]) <= {"0-19", "20-39", "40-59", "60-79", "80+"}


def test_group_interval_replays_the_patient_bootstrap():
    pred, meta = _case(1)
    n = 25
    block = subgroup_block(pred, meta, None, n_bootstrap=n, seed=3)
    row = subgroup_table(block).query("attribute == 'sex' and group == 'F' and label == 'Effusion'").iloc[0]
    ids = np.unique(pred.patient_ids)
    draws = resample_groups(len(ids), n, 3)
    female = (subgroup_groups(meta, pred.images)["sex"] == "F").to_numpy()
    reps = []
    for r in range(n):
        w = np.bincount(draws[r], minlength=len(ids))[np.searchsorted(ids, pred.patient_ids)]
        keep = female & (w > 0)
        reps.append(roc_auc_score(pred.y_true[keep, 1], pred.y_prob[keep, 1], sample_weight=w[keep]))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])), abs=1e-12)


def test_underdiagnosis_hand_count():
    # 6 images of 6 patients. Findings per the metadata (all 14 NIH labels, whatever the run's 2): images 0-3,
    # image 3 only with Hernia, which this model does not even predict. "No Finding" score 1 - max p:
    # 0.1, 0.6, 0.3, 0.7, 0.8, 0.2; at one threshold 0.6 the model calls images 1, 3, 4 normal.
    # Underdiagnosed: 1 and 3 -> 2 of 4.
    images = np.array([f"0000000{i}_000.png" for i in range(6)])
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [0, 0], [0, 0]], dtype=np.int8)
    p = np.array([[0.9, 0.1], [0.2, 0.4], [0.6, 0.7], [0.3, 0.1], [0.1, 0.2], [0.8, 0.1]])
    pred = Predictions(images, np.arange(6).astype(str), y, p, LABELS)
    meta = pd.DataFrame({"image": images, "sex": ["M", "M", "M", "F", "F", "F"], "age": [30] * 6,
                         "view": ["PA"] * 6, "finding_labels": ["Atelectasis", "Effusion", "Atelectasis|Effusion",
                                                               "Hernia", "No Finding", "No Finding"]})
    u = underdiagnosis_table(subgroup_block(pred, meta, 0.6, n_bootstrap=20)).set_index(["attribute", "group"])
    assert list(u.reset_index().columns) == list(UNDERDIAGNOSIS_COLUMNS)
    assert u.loc[("all", "all"), "rate"] == pytest.approx(2 / 4)
    assert u.loc[("all", "all"), ["n_finding", "n_underdiagnosed"]].tolist() == [4, 2]
    assert u.loc[("sex", "M"), "rate"] == pytest.approx(1 / 3)  # findings 0, 1, 2; missed 1
    f = u.loc[("sex", "F")]  # one image with a finding (3): too few for a rate
    assert math.isnan(f["rate"]) and "needs at least 2" in f["reason"]
    none = underdiagnosis_table(subgroup_block(pred, meta, None, n_bootstrap=20))
    assert none["rate"].isna().all() and (none["reason"] == "no validation-chosen No Finding threshold").all()
    assert has_finding(meta, images).tolist() == [True, True, True, True, False, False]
    with pytest.raises(MetadataError, match="finding_labels"):
        subgroup_block(pred, meta.drop(columns="finding_labels"), 0.6, n_bootstrap=5)


def test_no_finding_threshold_maximises_f1_like_brute_force():
    rng = np.random.default_rng(7)
    for n in (5, 40, 300):
        p = np.round(rng.random((n, 3)), 1)  # ties on purpose
        finding = rng.random(n) < 0.5
        finding[0], finding[1] = True, False
        thr = no_finding_threshold(finding, p)
        score = 1 - p.max(axis=1)
        best = max(np.unique(score), key=lambda c: (f1_score(~finding, score >= c), c))
        assert thr == pytest.approx(best)
        assert f1_score(~finding, score >= thr) == pytest.approx(f1_score(~finding, score >= best))
    assert no_finding_threshold(np.ones(4, bool), rng.random((4, 2))) is None


def test_small_groups_are_nan_with_a_reason_never_half():
    pred, meta = _case(2)
    meta = meta.copy()
    meta.loc[0, "view"] = "LL"  # a one-image view group
    t = subgroup_table(subgroup_block(pred, meta, 0.5, n_bootstrap=20))
    ll = t[(t["attribute"] == "view") & (t["group"] == "LL")]
    assert len(ll) == 2 and ll["auc"].isna().all() and ll["gap"].isna().all()
    assert ll["reason"].str.contains("needs at least 2").all()
    assert not (t["auc"] == 0.5).any()


def test_missing_metadata_names_the_image():
    pred, meta = _case()
    with pytest.raises(MetadataError, match=pred.images[5]):
        subgroup_block(pred, meta.drop(index=5), None, n_bootstrap=5)
    with pytest.raises(MetadataError, match="view"):
        subgroup_block(pred, meta.drop(columns="view"), None, n_bootstrap=5)


def test_extra_metrics_is_json_and_takes_its_operating_point_from_val():
    pred, meta = _case(3)
    val, vmeta = _case(4)
    ex = extra_metrics(pred, val, meta, val_metadata=vmeta, n_bootstrap=20)
    json.dumps(ex, allow_nan=False)  # NaN never reaches metrics.json
    assert set(ex) == {"calibration", "subgroups", "expert"}
    assert ex["expert"]["predictions_sha256"] is None  # no file given: never read back as current
    thr = no_finding_threshold(val.y_true.any(axis=1), val.y_prob)
    assert ex["subgroups"]["no_finding_threshold"] == pytest.approx(thr)
    expected = ((1 - pred.y_prob.max(axis=1) >= thr) & pred.y_true.any(axis=1)).sum() / pred.y_true.any(axis=1).sum()
    assert underdiagnosis_table(ex["subgroups"]).iloc[0]["rate"] == pytest.approx(expected)
    assert subgroup_table({"per_label": {}, **ex}).equals(subgroup_table(ex["subgroups"]))
    assert subgroup_table({"per_label": {}}).empty


def test_bundled_metadata_covers_nih_names():
    pred, _ = _case()
    real = np.array(["00000001_000.png", "00000013_026.png", "00030805_000.png"])
    p = Predictions(real, np.array(["1", "13", "30805"]), np.array([[1, 0], [0, 1], [1, 1]], dtype=np.int8),
                    np.full((3, 2), 0.5), LABELS)
    ex = extra_metrics(p, p, None, n_bootstrap=5)
    assert ex["subgroups"]["attributes"]["sex"] and ex["subgroups"]["attributes"]["view"]
