"""Obuchowski's clustered-data nonparametric AUC: variance, covariance and a paired test, patients as clusters.

Why: the official ChestX-ray14 test set has 25,596 images of only 2,797 patients (up to 184 images of one
patient), and a patient's images share anatomy, devices and labels. DeLong's variance (:mod:`.delong`)
treats every image as independent and is too small there, so its tests reject too often. Obuchowski
(1997), "Nonparametric analysis of clustered ROC curve data", Biometrics 53:567-578, keeps DeLong's
structural components but sums them per cluster (here: per patient) before taking variances.

The formulas, exactly as implemented. Cluster ``i = 1..I`` has ``m_i`` positive and ``n_i`` negative
images; ``M = sum m_i``, ``N = sum n_i``; ``I_10`` / ``I_01`` count the clusters with ``m_i > 0`` /
``n_i > 0``; ``psi(x, y) = 1`` if ``x > y``, ``1/2`` if ``x = y``, else 0. For model ``k``:

- ``theta_k = (1 / (M N)) sum_{positive x} sum_{negative y} psi(x, y)`` (the ordinary AUC);
- per image: ``V10(x) = (1/N) sum_y psi(x, y)``, ``V01(y) = (1/M) sum_x psi(x, y)``; per cluster:
  ``V10_i = sum of V10 over the positives of cluster i``, ``V01_i`` likewise over its negatives;
- deviations ``a_ik = V10_i - m_i theta_k`` and ``b_ik = V01_i - n_i theta_k``;
- ``S10_kl = I_10 / ((I_10 - 1) M) sum_i a_ik a_il``, ``S01_kl = I_01 / ((I_01 - 1) N) sum_i b_ik b_il``,
  ``S11_kl = I / (I - 1) sum_i a_ik b_il``;
- ``cov(theta_k, theta_l) = S10_kl / M + S01_kl / N + (S11_kl + S11_lk) / (M N)``, which for ``k = l`` is
  Obuchowski's ``var = S10 / M + S01 / N + 2 S11 / (M N)``.

A paired test of two models is ``z = (theta_a - theta_b) / sqrt(var_a + var_b - 2 cov_ab)``, two-sided normal
p-value. With one image per patient, ``I_10 = M``, ``I_01 = N`` and ``S11 = 0`` (a cluster has either a
positive or a negative), so everything reduces to DeLong's estimator; the tests check that equality and
the formulas above against a brute-force double loop.

The per-image structural components come from midranks (Sun & Xu 2014, see :mod:`.delong`), so a label of
the full test set costs a few sorts, not ``M x N`` comparisons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .delong import DeLongResult, _split, _structural_components, z_test

__all__ = [
    "ClusteredCovariance",
    "ClusteredTestResult",
    "cluster_index",
    "clustered_auc_covariance",
    "clustered_auc_test",
]


def cluster_index(groups: Any, n: int) -> tuple[np.ndarray, int]:
    """``(index (n,) in 0..I-1, I)`` for the cluster (patient) label of each of ``n`` cases."""
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups has shape {g.shape}, expected ({n},): one patient per image")
    _, idx = np.unique(g, return_inverse=True)
    idx = idx.ravel().astype(np.intp)
    return idx, (int(idx.max()) + 1 if idx.size else 0)


@dataclass(frozen=True)
class ClusteredCovariance:
    """AUCs ``(K,)`` of K models on the same cases and Obuchowski's ``(K, K)`` covariance matrix.

    ``reason`` is empty when everything is defined; otherwise it says why the AUC (fewer than one positive
    or negative) or the covariance (positives or negatives in fewer than two clusters) is NaN.
    """

    auc: np.ndarray
    cov: np.ndarray
    n_pos: int
    n_neg: int
    n_clusters: int
    n_clusters_pos: int
    n_clusters_neg: int
    reason: str = ""


@dataclass(frozen=True)
class ClusteredTestResult(DeLongResult):
    """Obuchowski's paired test of ``auc_a == auc_b`` (same cases, clustered): DeLongResult's fields, with
    the variance and covariance taken over patients, plus the cluster counts and why a value is NaN."""

    n_clusters: int = 0
    n_clusters_pos: int = 0
    n_clusters_neg: int = 0
    reason: str = ""


@dataclass(frozen=True)
class _Components:
    """Structural components of K models on one label, with each case's cluster."""

    auc: np.ndarray  # (K,)
    v10: np.ndarray  # (K, M)
    v01: np.ndarray  # (K, N)
    cluster_pos: np.ndarray  # (M,)
    cluster_neg: np.ndarray  # (N,)
    n_clusters: int


def _components(y_true: Any, scores: Sequence[Any], groups: Any) -> _Components | None:
    """None when the AUC is undefined (no positive or no negative case)."""
    pos, neg = _split(y_true, scores)
    t = np.asarray(y_true).astype(bool)
    idx, n_clusters = cluster_index(groups, t.shape[0])
    if pos.shape[1] == 0 or neg.shape[1] == 0:
        return None
    auc, v10, v01 = _structural_components(pos, neg)
    return _Components(auc, v10, v01, idx[t], idx[~t], n_clusters)


def _obuchowski_cov(c: _Components) -> np.ndarray:
    """Obuchowski's (K, K) covariance from the per-image components (NaN with < 2 clusters per class)."""
    k = c.auc.shape[0]
    m, n, n_cl = c.v10.shape[1], c.v01.shape[1], c.n_clusters
    m_i = np.bincount(c.cluster_pos, minlength=n_cl).astype(np.float64)
    n_i = np.bincount(c.cluster_neg, minlength=n_cl).astype(np.float64)
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i10 < 2 or i01 < 2:
        return np.full((k, k), np.nan)
    v10_i = np.stack([np.bincount(c.cluster_pos, weights=c.v10[j], minlength=n_cl) for j in range(k)], axis=1)
    v01_i = np.stack([np.bincount(c.cluster_neg, weights=c.v01[j], minlength=n_cl) for j in range(k)], axis=1)
    a = v10_i - m_i[:, None] * c.auc[None, :]  # (I, K)
    b = v01_i - n_i[:, None] * c.auc[None, :]
    s10 = i10 / ((i10 - 1) * m) * (a.T @ a)
    s01 = i01 / ((i01 - 1) * n) * (b.T @ b)
    s11 = n_cl / (n_cl - 1) * (a.T @ b)
    return s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def _counts(c: _Components | None, y_true: Any, groups: Any) -> tuple[int, int, int, int, int]:
    t = np.asarray(y_true).astype(bool)
    idx, n_cl = cluster_index(groups, t.shape[0])
    return (int(t.sum()), int((~t).sum()), n_cl, int(np.unique(idx[t]).size), int(np.unique(idx[~t]).size))


def _reason(n_pos: int, n_neg: int, c_pos: int, c_neg: int) -> str:
    if n_pos < 2 or n_neg < 2:
        return f"{n_pos} positive and {n_neg} negative images (needs at least 2 of each)"
    if c_pos < 2 or c_neg < 2:
        return (f"positives in {c_pos} and negatives in {c_neg} patients (the clustered variance needs at "
                "least 2 patients of each)")
    return ""


def clustered_auc_covariance(y_true: Any, scores: Sequence[Any], groups: Any) -> ClusteredCovariance:
    """AUCs of ``scores`` (K arrays of N scores, higher = more likely positive) and their clustered
    covariance matrix, clusters = ``groups`` (the patient of each image). Never raises for a degenerate
    label: NaN plus ``reason``."""
    scores = list(scores)
    c = _components(y_true, scores, groups)
    n_pos, n_neg, n_cl, c_pos, c_neg = _counts(c, y_true, groups)
    k = len(scores)
    reason = _reason(n_pos, n_neg, c_pos, c_neg)
    if c is None:
        return ClusteredCovariance(np.full(k, np.nan), np.full((k, k), np.nan), n_pos, n_neg, n_cl, c_pos, c_neg,
                                   reason)
    cov = _obuchowski_cov(c) if not reason else np.full((k, k), np.nan)
    return ClusteredCovariance(c.auc, cov, n_pos, n_neg, n_cl, c_pos, c_neg, reason)


def clustered_auc_test(y_true: Any, score_a: Any, score_b: Any, groups: Any, level: float = 0.95
                       ) -> ClusteredTestResult:
    """Obuchowski's (1997) test of ``auc_a == auc_b`` for two models scored on the same clustered cases.

    ``difference = auc_a - auc_b``; ``p`` two-sided from the normal distribution; ``ci`` the ``level``
    normal interval of the difference. The interval and p-value account for the test cases being a sample
    of patients (images of one patient are correlated), not for the randomness of training either model.
    """
    r = clustered_auc_covariance(y_true, [score_a, score_b], groups)
    diff = float(r.auc[0] - r.auc[1])
    var_diff = float(r.cov[0, 0] + r.cov[1, 1] - 2.0 * r.cov[0, 1])
    z, p, ci = z_test(diff, var_diff, level)
    return ClusteredTestResult(
        auc_a=float(r.auc[0]), auc_b=float(r.auc[1]), difference=diff, var_a=float(r.cov[0, 0]),
        var_b=float(r.cov[1, 1]), covariance=float(r.cov[0, 1]), z=z, p=p, ci=ci, level=level, n_pos=r.n_pos,
        n_neg=r.n_neg, n_clusters=r.n_clusters, n_clusters_pos=r.n_clusters_pos, n_clusters_neg=r.n_clusters_neg,
        reason=r.reason,
    )
