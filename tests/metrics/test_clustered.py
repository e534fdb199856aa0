"""Obuchowski's clustered AUC covariance against a brute-force double loop of the published formulas, and
against DeLong's estimator when every patient has one image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxr_bench.metrics import clustered_auc_covariance, clustered_auc_test, delong_test


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else (0.5 if x == y else 0.0)


def brute_force_obuchowski(y: np.ndarray, scores: list[np.ndarray], cluster: np.ndarray) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """Obuchowski (1997), written out with explicit loops over clusters and pairs of images."""
    ids = sorted(set(cluster.tolist()))
    pos = {c: [i for i in range(len(y)) if cluster[i] == c and y[i] == 1] for c in ids}
    neg = {c: [i for i in range(len(y)) if cluster[i] == c and y[i] == 0] for c in ids}
    all_pos = [i for c in ids for i in pos[c]]
    all_neg = [i for c in ids for i in neg[c]]
    m_tot, n_tot, n_cl = len(all_pos), len(all_neg), len(ids)
    i10 = sum(1 for c in ids if pos[c])
    i01 = sum(1 for c in ids if neg[c])
    k = len(scores)
    theta = np.zeros(k)
    v10 = np.zeros((n_cl, k))
    v01 = np.zeros((n_cl, k))
    for m, s in enumerate(scores):
        theta[m] = sum(_psi(s[i], s[j]) for i in all_pos for j in all_neg) / (m_tot * n_tot)
        for ci, c in enumerate(ids):
            v10[ci, m] = sum(sum(_psi(s[i], s[j]) for j in all_neg) / n_tot for i in pos[c])
            v01[ci, m] = sum(sum(_psi(s[i], s[j]) for i in all_pos) / m_tot for j in neg[c])
    mi = np.array([len(pos[c]) for c in ids], dtype=float)
    ni = np.array([len(neg[c]) for c in ids], dtype=float)
    cov = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            s10 = i10 / ((i10 - 1) * m_tot) * sum((v10[c, a] - mi[c] * theta[a]) * (v10[c, b] - mi[c] * theta[b])
                                                  for c in range(n_cl))
            s01 = i01 / ((i01 - 1) * n_tot) * sum((v01[c, a] - ni[c] * theta[a]) * (v01[c, b] - ni[c] * theta[b])
                                                  for c in range(n_cl))
            s11_ab = n_cl / (n_cl - 1) * sum((v10[c, a] - mi[c] * theta[a]) * (v01[c, b] - ni[c] * theta[b])
                                             for c in range(n_cl))
            s11_ba = n_cl / (n_cl - 1) * sum((v10[c, b] - mi[c] * theta[b]) * (v01[c, a] - ni[c] * theta[a])
                                             for c in range(n_cl))
            cov[a, b] = s10 / m_tot + s01 / n_tot + (s11_ab + s11_ba) / (m_tot * n_tot)
    return theta, cov


def _clustered_data(seed: int, n_patients: int = 25) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, n_patients)
    cluster = np.repeat(np.arange(n_patients) * 7 + 3, sizes)  # ids need not be 0..I-1
    frailty = rng.normal(size=n_patients)[np.searchsorted(np.unique(cluster), cluster)]
    y = (frailty + rng.normal(size=cluster.size) > 0.3).astype(int)
    # Rounded scores: many ties, within and across patients.
    a = np.round(y + frailty + rng.normal(size=y.size), 1)
    b = np.round(0.5 * y + frailty + rng.normal(size=y.size), 1)
    return y, [a, b], cluster


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_covariance_equals_brute_force_formula(seed):
    y, scores, cluster = _clustered_data(seed)
    theta, cov = brute_force_obuchowski(y, scores, cluster)
    r = clustered_auc_covariance(y, scores, cluster)
    assert r.reason == ""
    np.testing.assert_allclose(r.auc, theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.cov, cov, rtol=1e-10, atol=1e-15)
    assert r.auc[0] == pytest.approx(roc_auc_score(y, scores[0]), abs=1e-12)
    assert r.n_clusters == len(set(cluster.tolist()))
    t = clustered_auc_test(y, scores[0], scores[1], cluster)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (theta[0] - theta[1]) / math.sqrt(var)
    assert t.z == pytest.approx(z, rel=1e-9)
    assert t.p == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert t.ci[1] - t.ci[0] == pytest.approx(2 * 1.959963984540054 * math.sqrt(var), rel=1e-9)


def test_one_image_per_patient_is_delong():
    rng = np.random.default_rng(7)
    n = 300
    y = (rng.random(n) < 0.3).astype(int)
    a = np.round(y + rng.normal(size=n), 1)
    b = np.round(0.6 * y + rng.normal(size=n), 1)
    patients = np.array([f"p{i:04d}" for i in rng.permutation(n)])
    c = clustered_auc_test(y, a, b, patients)
    d = delong_test(y, a, b)
    for f in ("auc_a", "auc_b", "var_a", "var_b", "covariance", "z", "p"):
        assert getattr(c, f) == pytest.approx(getattr(d, f), rel=1e-10, abs=1e-15), f
    assert c.ci == pytest.approx(d.ci, rel=1e-10)


def test_duplicating_every_image_of_a_patient_changes_nothing_clustered():
    # Each patient's images twice: DeLong sees twice the data and halves its variance; per patient nothing
    # new was learnt, and Obuchowski's variance (cluster sums and M, N all double) is exactly unchanged.
    y, (a, _), cluster = _clustered_data(3, n_patients=40)
    single = clustered_auc_covariance(y, [a], cluster).cov[0, 0]
    yy, aa, cc = np.r_[y, y], np.r_[a, a], np.r_[cluster, cluster]
    doubled = clustered_auc_covariance(yy, [aa], cc).cov[0, 0]
    assert doubled == pytest.approx(single, rel=1e-9)
    assert delong_test(yy, aa, aa).var_a == pytest.approx(delong_test(y, a, a).var_a / 2, rel=0.05)


def test_degenerate_labels_give_nan_and_a_reason():
    cluster = np.array([1, 1, 1, 2, 2, 3])
    s = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.4])
    # Positives in one patient only: AUC defined, clustered variance not.
    r = clustered_auc_covariance(np.array([1, 1, 0, 0, 0, 0]), [s], cluster)
    assert r.auc[0] == 1.0 and np.isnan(r.cov).all() and "2 patients" in r.reason
    t = clustered_auc_test(np.array([1, 1, 0, 0, 0, 0]), s, s[::-1], cluster)
    assert math.isnan(t.p) and t.to_dict()["p"] is None
    # No positive: everything NaN, never 0.5, never an exception.
    r = clustered_auc_covariance(np.zeros(6, int), [s], cluster)
    assert np.isnan(r.auc).all() and "0 positive" in r.reason
    r = clustered_auc_covariance(np.array([1, 0, 0, 0, 0, 0]), [s], cluster)
    assert "1 positive" in r.reason and np.isnan(r.cov).all()
