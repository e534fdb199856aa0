"""Subgroup AUCs and underdiagnosis: values against scikit-learn and hand counts, the bootstrap replayed,
degenerate groups, the metadata join and the trainer's entry point."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxr_bench.errors import MetadataError
from cxr_bench.metrics import (
    Predictions,
    extra_metrics,
    resample_groups,
    subgroup_block,
    subgroup_table,
    underdiagnosis_table,
)
from cxr_bench.metrics.subgroups import SUBGROUP_COLUMNS, UNDERDIAGNOSIS_COLUMNS, subgroup_groups

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
    meta = pd.DataFrame({"image": images, "sex": sex, "age": age, "view": view, "patient_id": pids})
    return pred, meta


def test_group_auc_equals_sklearn_and_gap_is_the_difference():
    pred, meta = _case()
    block = subgroup_block(pred, meta, [0.5, 0.5], n_bootstrap=30)
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
    # 6 images of 6 patients, thresholds 0.5 / 0.5. Findings: images 0-3. Called normal (both p < 0.5):
    # images 1, 3, 4. Underdiagnosed: 1 and 3 -> overall 2/4; M (images 0-2): 1 of 3 findings... see below.
    images = np.array([f"0000000{i}_000.png" for i in range(6)])
    y = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 0], [0, 0]], dtype=np.int8)
    p = np.array([[0.9, 0.1], [0.2, 0.4], [0.6, 0.7], [0.3, 0.1], [0.1, 0.2], [0.8, 0.1]])
    pred = Predictions(images, np.arange(6).astype(str), y, p, LABELS)
    meta = pd.DataFrame({"image": images, "sex": ["M", "M", "M", "F", "F", "F"], "age": [30] * 6,
                         "view": ["PA"] * 6})
    u = underdiagnosis_table(subgroup_block(pred, meta, [0.5, 0.5], n_bootstrap=20)).set_index(["attribute", "group"])
    assert list(u.reset_index().columns) == list(UNDERDIAGNOSIS_COLUMNS)
    assert u.loc[("all", "all"), "rate"] == pytest.approx(2 / 4)
    assert u.loc[("all", "all"), ["n_finding", "n_underdiagnosed"]].tolist() == [4, 2]
    assert u.loc[("sex", "M"), "rate"] == pytest.approx(1 / 3)  # findings 0, 1, 2; missed 1
    f = u.loc[("sex", "F")]  # one image with a finding (3): too few for a rate
    assert math.isnan(f["rate"]) and "needs at least 2" in f["reason"]
    # A threshold that could not be chosen on validation is ignored.
    u2 = underdiagnosis_table(subgroup_block(pred, meta, [None, 0.5], n_bootstrap=20)).set_index(["attribute", "group"])
    # Only Effusion counts now: normal = p_Effusion < 0.5 -> images 0, 1, 3, 4, 5; findings 0-3 -> 0, 1, 3 missed.
    assert u2.loc[("all", "all"), "rate"] == pytest.approx(3 / 4)
    none = underdiagnosis_table(subgroup_block(pred, meta, None, n_bootstrap=20))
    assert none["rate"].isna().all() and (none["reason"] == "no label has a validation-chosen threshold").all()


def test_small_groups_are_nan_with_a_reason_never_half():
    pred, meta = _case(2)
    meta = meta.copy()
    meta.loc[0, "view"] = "LL"  # a one-image view group
    t = subgroup_table(subgroup_block(pred, meta, [0.5, 0.5], n_bootstrap=20))
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


def test_extra_metrics_is_json_and_reads_thresholds_from_a_summary_block():
    pred, meta = _case(3)
    summary = {"threshold_method": "youden",
               "per_label": {"Atelectasis": {"threshold": 0.4}, "Effusion": {"threshold": None}}}
    ex = extra_metrics(pred, summary, meta, n_bootstrap=20)
    json.dumps(ex, allow_nan=False)  # NaN never reaches metrics.json
    assert set(ex) == {"calibration", "subgroups", "expert"}
    assert ex["expert"]["predictions_sha256"] is None  # no file given: never read back as current
    assert ex["subgroups"]["ignored_labels"] == ["Effusion"] and ex["subgroups"]["threshold_method"] == "youden"
    assert subgroup_table({"per_label": {}, **ex}).equals(subgroup_table(ex["subgroups"]))
    assert subgroup_table({"per_label": {}}).empty


def test_bundled_metadata_covers_nih_names():
    pred, _ = _case()
    real = np.array(["00000001_000.png", "00000013_026.png", "00030805_000.png"])
    p = Predictions(real, np.array(["1", "13", "30805"]), np.array([[1, 0], [0, 1], [1, 1]], dtype=np.int8),
                    np.full((3, 2), 0.5), LABELS)
    ex = extra_metrics(p, [0.5, 0.5], None, n_bootstrap=5)
    assert ex["subgroups"]["attributes"]["sex"] and ex["subgroups"]["attributes"]["view"]
