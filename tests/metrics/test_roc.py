"""ROC AUC, bootstrap intervals, operating points and the metrics.json block, against independent
references: scikit-learn's ``roc_auc_score`` / ``average_precision_score`` / ``roc_curve`` and naive loops
over the same resampled patients."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from cxr_bench.errors import ConfigError
from cxr_bench.metrics import roc
from cxr_bench.metrics.predictions import Predictions


def _data(n=300, n_labels=4, seed=0, decimals=2, prevalence=0.2):
    """Scores rounded to ``decimals`` so that many ties (within and across classes) occur."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, n_labels)) < prevalence
    s = np.round(np.clip(rng.normal(0.4, 0.2, (n, n_labels)) + 0.2 * y, 0, 1), decimals)
    return y.astype(int), s


def _sk_auc(y, s):
    return np.array([roc_auc_score(y[:, j], s[:, j]) for j in range(y.shape[1])])


# ------------------------------------------------------------------------------------------ point AUC


@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_per_label_auc_equals_sklearn_with_ties(decimals):
    y, s = _data(decimals=decimals)
    np.testing.assert_allclose(roc.per_label_auc(y, s), _sk_auc(y, s), rtol=0, atol=1e-12)


def test_per_label_auc_one_dimensional_and_constant():
    y = np.array([0, 1, 0, 1, 1, 0])
    assert roc.per_label_auc(y, np.full(6, 0.3))[0] == 0.5 == roc_auc_score(y, np.full(6, 0.3))
    assert roc.per_label_auc(y, y * 0.9)[0] == 1.0
    assert roc.per_label_auc(y, 1 - y)[0] == 0.0


def test_undefined_labels_are_nan_not_errors():
    y, s = _data(n=50, n_labels=3)
    y[:, 0] = 0
    y[:, 1] = 1
    auc = roc.per_label_auc(y, s)
    assert np.isnan(auc[0]) and np.isnan(auc[1])
    assert auc[2] == pytest.approx(roc_auc_score(y[:, 2], s[:, 2]), abs=1e-12)
    assert roc.mean_defined(auc) == auc[2]
    ap = roc.auprc(y, s)
    assert np.isnan(ap[0]) and ap[1] == 1.0


def test_auprc_equals_sklearn():
    y, s = _data(decimals=3)
    ref = [average_precision_score(y[:, j], s[:, j]) for j in range(y.shape[1])]
    np.testing.assert_allclose(roc.auprc(y, s), ref, atol=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same"):
        roc.per_label_auc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite"):
        roc.per_label_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0 and 1"):
        roc.per_label_auc([0, 2], [0.1, 0.2])


# ------------------------------------------------------------------------------------------ bootstrap


def _naive_bootstrap(y, s, groups, n, seed):
    """sklearn on the images of each resample's drawn patients, drawn from the same seed."""
    ids, g = np.unique(groups, return_inverse=True)
    images_of = [np.flatnonzero(g == k) for k in range(ids.size)]
    draws = roc.resample_groups(ids.size, n, seed)
    out = np.full((n, y.shape[1]), np.nan)
    for b in range(n):
        idx = np.concatenate([images_of[k] for k in draws[b]])
        for j in range(y.shape[1]):
            if 0 < y[idx, j].sum() < idx.size:
                out[b, j] = roc_auc_score(y[idx, j], s[idx, j])
    return out


def test_bootstrap_one_image_per_patient_equals_naive_sklearn_loop():
    y, s = _data(n=120, n_labels=3, seed=1)
    groups = np.arange(120)
    res = roc.bootstrap_auc(y, s, groups, n=150, seed=7)
    draws = roc.resample_groups(120, 150, 7)  # one image per patient: patient k = image k
    naive = np.array([[roc_auc_score(y[d, j], s[d, j]) for j in range(3)] for d in draws])
    np.testing.assert_allclose(res.samples, naive, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.auc, _sk_auc(y, s), atol=1e-12)


def test_cluster_bootstrap_takes_all_images_of_each_drawn_patient():
    y, s = _data(n=200, n_labels=3, seed=2)
    rng = np.random.default_rng(5)
    groups = np.array([f"p{k:03d}" for k in rng.integers(0, 40, 200)])  # ~5 images per patient
    res = roc.bootstrap_auc(y, s, groups, n=120, level=0.9, seed=11)
    naive = _naive_bootstrap(y, s, groups, 120, 11)
    np.testing.assert_allclose(res.samples, naive, rtol=0, atol=1e-10, equal_nan=True)
    assert res.n_groups == np.unique(groups).size
    # mean AUC of each resample on the same patients, then its percentile interval
    np.testing.assert_allclose(res.mean_samples, naive.mean(axis=1), atol=1e-10)
    np.testing.assert_allclose(res.mean_ci, np.percentile(naive.mean(axis=1), [5, 95]), atol=1e-10)
    for j in range(3):
        np.testing.assert_allclose(res.ci[j], np.percentile(naive[:, j], [5, 95]), atol=1e-10)
        assert res.ci[j, 0] < res.auc[j] < res.ci[j, 1]


def test_bootstrap_drops_and_counts_resamples_without_positives(caplog):
    y, s = _data(n=200, n_labels=2, seed=3)
    groups = np.repeat(np.arange(50), 4)
    y[:, 1] = 0
    y[groups == 7, 1] = 1  # one positive patient: missing from ~37% of resamples
    with caplog.at_level(logging.WARNING, logger="cxr_bench.metrics.roc"):
        res = roc.bootstrap_auc(y, s, groups, n=200, seed=0, labels=["A", "B"])
    naive = _naive_bootstrap(y, s, groups, 200, 0)
    expected_drop = int(np.isnan(naive[:, 1]).sum())
    assert 40 < expected_drop < 120
    assert res.n_dropped.tolist() == [0, expected_drop]
    assert res.n_dropped_mean == expected_drop
    np.testing.assert_allclose(res.ci[1], np.nanpercentile(naive[:, 1], [2.5, 97.5]), atol=1e-10)
    assert "label B" in caplog.text and str(expected_drop) in caplog.text


def test_bootstrap_is_seeded():
    y, s = _data(n=100, n_labels=2)
    g = np.arange(100) // 3
    a = roc.bootstrap_auc(y, s, g, n=50, seed=3)
    b = roc.bootstrap_auc(y, s, g, n=50, seed=np.random.default_rng(3))
    c = roc.bootstrap_auc(y, s, g, n=50, seed=4)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_bootstrap_constant_predictions_and_missing_label():
    y, s = _data(n=60, n_labels=3)
    s[:, 0] = 0.5
    y[:, 2] = 0
    res = roc.bootstrap_auc(y, s, np.arange(60), n=30, seed=0)
    assert res.auc[0] == 0.5 and (res.samples[:, 0] == 0.5).all()
    assert np.isnan(res.auc[2]) and np.isnan(res.ci[2]).all()
    assert res.mean_auc == pytest.approx((0.5 + res.auc[1]) / 2)


# ------------------------------------------------------------------------------------------ thresholds


def _brute_force_threshold(y, s, method):
    """Try every observed score as threshold (predict ``s >= t``), scored from plain counts."""
    best_t, best_v = None, -np.inf
    for t in np.unique(s)[::-1]:  # descending: ties keep the highest threshold
        pred = s >= t
        tp, fp = (pred & (y == 1)).sum(), (pred & (y == 0)).sum()
        fn, tn = ((~pred) & (y == 1)).sum(), ((~pred) & (y == 0)).sum()
        if method == "youden":
            v = tp / (tp + fn) + tn / (tn + fp) - 1
        elif method == "f1":
            v = 2 * tp / (2 * tp + fp + fn)
        else:
            if tp / (tp + fn) >= 0.9:
                return t
            continue
        if v > best_v + 1e-15:
            best_t, best_v = t, v
    return best_t


@pytest.mark.parametrize("method", ["youden", "f1", "sens90"])
def test_choose_thresholds_equals_brute_force(method):
    y, s = _data(n=150, n_labels=3, decimals=2, seed=4)
    thr = roc.choose_thresholds(y, s, method)
    for j in range(3):
        assert thr[j] == _brute_force_threshold(y[:, j], s[:, j], method)


def test_clf_curve_matches_sklearn_roc_curve():
    y, s = _data(n=200, n_labels=1, decimals=2)
    thr, tps, fps = roc._clf_curve(y[:, 0].astype(bool), s[:, 0])
    fpr, tpr, sk_thr = roc_curve(y[:, 0], s[:, 0], drop_intermediate=False)
    np.testing.assert_array_equal(thr, sk_thr[1:])
    np.testing.assert_allclose(tps / y.sum(), tpr[1:], atol=1e-15)
    np.testing.assert_allclose(fps / (1 - y).sum(), fpr[1:], atol=1e-15)


def test_sens_spec_hand_example_and_undefined():
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.1], [0.4, 0.2], [0.6, 0.3], [0.1, 0.4], [0.7, 0.5]])
    sens, spec = roc.sens_spec(y, s, [0.5, 0.3])
    assert sens[0] == pytest.approx(2 / 3) and spec[0] == pytest.approx(1 / 2)
    assert np.isnan(sens[1]) and spec[1] == pytest.approx(2 / 5)
    sens, spec = roc.sens_spec(y, s, [np.nan, 0.3])
    assert np.isnan(sens[0]) and np.isnan(spec[0])
    assert np.isnan(roc.choose_thresholds(y, s, "youden")[1])


def test_unknown_threshold_method_lists_known():
    with pytest.raises(ConfigError, match="sens90"):
        roc.choose_thresholds([0, 1], [0.1, 0.9], "best")


# ------------------------------------------------------------------------------------------ summarize


def _predictions(y, s, patients, labels):
    return Predictions(np.array([f"{i:08d}_000.png" for i in range(len(y))]), np.asarray(patients).astype(str),
                       y.astype(np.int8), s, tuple(labels))


def test_summarize_block_matches_contract_and_references(caplog):
    labels = ["Atelectasis", "Hernia", "Mass"]
    y, s = _data(n=240, n_labels=3, seed=6)
    y[:, 1] = 0  # no Hernia in this split
    patients = np.arange(240) // 2
    yv, sv = _data(n=100, n_labels=3, seed=7)
    test, val = _predictions(y, s, patients, labels), _predictions(yv, sv, np.arange(100), labels)
    with caplog.at_level(logging.WARNING):
        block = roc.summarize(test, val=val, n_bootstrap=200, seed=0)
    json.dumps(block, allow_nan=False)  # strict JSON: no NaN anywhere
    assert set(block) >= {"mean_auc", "mean_auc_ci", "n_images", "n_patients", "per_label", "missing_labels"}
    assert block["missing_labels"] == ["Hernia"] and "Hernia" in caplog.text
    assert block["n_images"] == 240 and block["n_patients"] == 120
    sk = {j: roc_auc_score(y[:, j], s[:, j]) for j in (0, 2)}
    assert block["mean_auc"] == pytest.approx((sk[0] + sk[2]) / 2, abs=1e-12)
    thr = roc.choose_thresholds(yv, sv, "youden")
    for j, name in enumerate(labels):
        m = block["per_label"][name]
        assert set(m) == {"auc", "ci", "auprc", "n_pos", "threshold", "sensitivity", "specificity"}
        assert m["n_pos"] == int(y[:, j].sum())
        assert m["threshold"] == pytest.approx(thr[j])
        if name == "Hernia":
            assert m["auc"] is None and m["ci"] is None and m["auprc"] is None and m["sensitivity"] is None
            continue
        assert m["auc"] == pytest.approx(sk[j], abs=1e-12)
        assert m["ci"][0] < m["auc"] < m["ci"][1]
        assert m["auprc"] == pytest.approx(average_precision_score(y[:, j], s[:, j]))
        pred = s[:, j] >= thr[j]
        assert m["sensitivity"] == pytest.approx(pred[y[:, j] == 1].mean())
        assert m["specificity"] == pytest.approx((~pred)[y[:, j] == 0].mean())
    lo, hi = block["mean_auc_ci"]
    assert lo < block["mean_auc"] < hi


def test_summarize_from_dataframe_selects_labels_and_no_val():
    labels = ["A", "B"]
    y, s = _data(n=80, n_labels=2)
    df = _predictions(y, s, np.arange(80) // 4, labels).to_frame()
    block = roc.summarize(df, ["B"], n_bootstrap=50)
    assert list(block["per_label"]) == ["B"]
    assert block["per_label"]["B"]["auc"] == pytest.approx(roc_auc_score(y[:, 1], s[:, 1]), abs=1e-12)
    assert block["per_label"]["B"]["threshold"] is None and block["threshold_method"] is None
    table = roc.summary_table(block)
    assert isinstance(table, pd.DataFrame) and table.loc[0, "label"] == "B"


def _reference_weighted_auc(t, s, group, counts_t):
    """The weighted Mann-Whitney statistic by brute force over every positive-negative pair: the slow
    definition that :func:`roc._weighted_auc` computes in blocks."""
    out = np.full(counts_t.shape[1], np.nan)
    pos, neg = np.flatnonzero(t), np.flatnonzero(~t)
    gt = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    for b in range(counts_t.shape[1]):
        w = counts_t[group, b]
        wp, wn = w[pos].sum(), w[neg].sum()
        if wp > 0 and wn > 0:
            out[b] = (w[pos] @ gt @ w[neg]) / (wp * wn)
    return out


@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_weighted_auc_blocks_equal_the_brute_force_definition(decimals):
    rng = np.random.default_rng(decimals)
    n, n_groups, n_res = 150, 37, 300  # 300 resamples: three blocks, the last one partial
    group = rng.integers(0, n_groups, n)
    t = rng.random(n) < 0.3
    s = np.round(rng.random(n) * 0.5 + 0.3 * t, decimals)  # coarse rounding: many ties across classes
    counts_t = roc._counts(roc.resample_groups(n_groups, n_res, seed=decimals), n_groups)
    ref = _reference_weighted_auc(t, s, group, counts_t)
    fast = roc._weighted_auc(t, s, group, counts_t)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-12, equal_nan=True)
    assert np.array_equal(roc._weighted_auc(t, s, group, roc.count_blocks(counts_t)), fast, equal_nan=True)
    # Non-integer weights take the float64 path: still the same statistic.
    frac = counts_t * 0.5
    np.testing.assert_allclose(roc._weighted_auc(t, s, group, frac), _reference_weighted_auc(t, s, group, frac),
                               rtol=0, atol=1e-12, equal_nan=True)
