"""DeLong's test for two correlated ROC AUCs, and DeLong's variance of one AUC.

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837, estimate the covariance of AUCs computed on
the same cases from the "structural components" (placement values) of each case: for a positive case, the
fraction of negatives it outranks; for a negative, the fraction of positives that outrank it (ties one
half). Sun & Xu (2014), IEEE Signal Processing Letters 21:1389, showed that these components are
differences of midranks, which turns the O(m n) double loop into three O(N log N) rankings; that is the
algorithm used here (``scipy.stats.rankdata``, method "average"). The tests check it against a brute-force
O(m n) implementation and against the published output of pROC (``roc.test``, ``var``, ``ci.auc``) on its
aSAH data set.

Why it is needed beside the bootstrap: to say whether model A beats model B on the *same* test set, the
two AUCs must be compared with their covariance; DeLong's test is the standard answer (and what pROC's
``roc.test`` does by default). Caveat for ChestX-ray14: DeLong treats images as independent; with several
images per patient its variance is too small (on test sets clustered like the official one, a null
difference is "significant" at 5% in about half of them: benchmarks/results/null_rejection.csv). Verdicts
use the patient-level tests instead: Obuchowski's clustered version of this estimator (:mod:`.clustered`)
and the paired patient bootstrap (:mod:`.paired`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)

__all__ = ["AucVariance", "DeLongResult", "delong_auc_variance", "delong_per_label", "delong_test", "z_test"]


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of ``auc_a == auc_b`` on the same cases.

    ``z = (auc_a - auc_b) / sqrt(var_a + var_b - 2 covariance)``; ``p`` is two-sided; ``ci`` is the
    ``level`` normal interval of ``difference``. NaN where undefined (fewer than two positive or two
    negative cases). Identical AUCs with zero variance give ``z = 0``, ``p = 1`` (pROC does the same).
    """

    auc_a: float
    auc_b: float
    difference: float
    var_a: float
    var_b: float
    covariance: float
    z: float
    p: float
    ci: tuple[float, float]
    level: float
    n_pos: int
    n_neg: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None)."""
        d = asdict(self)
        d["ci"] = list(self.ci)
        return {k: _none_if_nan(v) for k, v in d.items()}


@dataclass(frozen=True)
class AucVariance:
    """One AUC with DeLong's variance and the ``level`` normal interval, clipped to [0, 1] as in pROC."""

    auc: float
    variance: float
    ci: tuple[float, float]
    level: float


def _none_if_nan(v: Any) -> Any:
    if isinstance(v, list):
        return [_none_if_nan(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _split(y_true: Any, scores: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(K, m)`` of the positive and ``(K, n)`` of the negative cases."""
    t = np.asarray(y_true)
    if t.ndim != 1:
        raise ValueError(f"y_true must be 1-D (one label), got shape {t.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    t = t.astype(bool)
    s = np.stack([np.asarray(x, dtype=np.float64) for x in scores])
    if s.shape[1] != t.shape[0]:
        raise ValueError(f"scores have {s.shape[1]} cases, y_true has {t.shape[0]}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return s[:, t], s[:, ~t]


def _structural_components(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs ``(K,)`` and placement values ``v10 (K, m)``, ``v01 (K, n)`` (Sun & Xu 2014).

    Sun & Xu compute them from three midrankings (positives, negatives, all); a positive's midrank among
    all cases minus its midrank among positives is the count of negatives below it plus half of those tied
    with it, so one sort of each model's scores gives both: with the sorted scores cut into groups of ties,
    ``v10 = (negatives in earlier groups + negatives in its group / 2) / n`` and ``v01 = 1 - (positives in
    earlier groups + positives in its group / 2) / m``. Every count is a multiple of 1/2 below 2**52, so the
    result is the midrank formula's to the bit (:func:`_structural_components_midranks` is kept for tests).
    """
    m, n = pos.shape[1], neg.shape[1]
    k = pos.shape[0]
    z = np.concatenate([pos, neg], axis=1).astype(np.float64, copy=False)
    order = np.argsort(z, axis=1)  # ties are grouped below, so their order does not matter
    zs = np.take_along_axis(z, order, axis=1)
    is_pos = order < m
    starts = np.ones(zs.shape, dtype=bool)
    starts[:, 1:] = zs[:, 1:] != zs[:, :-1]
    # Tie groups numbered across the rows (every row's first case starts one), counted with one bincount.
    gid = np.cumsum(starts.ravel()) - 1
    n_g = int(gid[-1]) + 1 if gid.size else 0
    pos_g = np.bincount(gid, weights=is_pos.ravel(), minlength=n_g)
    size_g = np.bincount(gid, minlength=n_g).astype(np.float64)
    neg_g = size_g - pos_g
    row_start = gid.reshape(k, m + n)[:, 0]  # the first group of each row
    pos_before = np.cumsum(pos_g) - pos_g
    neg_before = np.cumsum(neg_g) - neg_g
    first = np.repeat(row_start, np.diff(np.r_[row_start, n_g]))
    pos_below = pos_before - pos_before[first] + pos_g / 2.0  # within the row
    neg_below = neg_before - neg_before[first] + neg_g / 2.0
    placed = np.empty(zs.shape)
    flat_gid = gid.reshape(k, m + n)
    placed[is_pos] = neg_below[flat_gid[is_pos]] / n
    placed[~is_pos] = 1.0 - pos_below[flat_gid[~is_pos]] / m
    out = np.empty_like(placed)
    np.put_along_axis(out, order, placed, axis=1)
    v10, v01 = out[:, :m], out[:, m:]
    auc = v10.mean(axis=1)
    return auc, v10, v01


def _structural_components_midranks(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sun & Xu's three midrankings, as written in their paper: the reference :func:`_structural_components`
    is tested against."""
    m, n = pos.shape[1], neg.shape[1]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    auc = v10.mean(axis=1)
    return auc, v10, v01


def _covariance(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    """DeLong's ``(K, K)`` covariance matrix of the AUCs: S10 / m + S01 / n (sample covariances)."""
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        return np.full((v10.shape[0],) * 2, np.nan)
    return np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def delong_test(y_true: Any, score_a: Any, score_b: Any, level: float = 0.95) -> DeLongResult:
    """DeLong's test for the difference of two correlated ROC AUCs (two models, the same cases).

    A higher score means more likely positive for both models. Returns NaNs (with a warning) where a
    label has fewer than two positive or negative cases instead of raising.
    """
    pos, neg = _split(y_true, [score_a, score_b])
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        log.warning("DeLong test: %d positive and %d negative cases; the AUC is undefined", m, n)
        nan = math.nan
        return DeLongResult(nan, nan, nan, nan, nan, nan, nan, nan, (nan, nan), level, m, n)
    auc, v10, v01 = _structural_components(pos, neg)
    cov = _covariance(v10, v01)
    if m < 2 or n < 2:
        log.warning("DeLong test: %d positive and %d negative cases; the variance needs two of each", m, n)
    diff = float(auc[0] - auc[1])
    var_diff = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    z, p, ci = z_test(diff, var_diff, level)
    return DeLongResult(
        auc_a=float(auc[0]), auc_b=float(auc[1]), difference=diff,
        var_a=float(cov[0, 0]), var_b=float(cov[1, 1]), covariance=float(cov[0, 1]),
        z=z, p=p, ci=ci, level=level, n_pos=m, n_neg=n,
    )


def z_test(diff: float, var_diff: float, level: float = 0.95) -> tuple[float, float, tuple[float, float]]:
    """Two-sided normal test of ``diff == 0`` with variance ``var_diff``: ``(z, p, level interval)``.

    NaN where the variance is not finite. A zero variance (identical or perfectly correlated rankings)
    gives ``z = 0, p = 1`` for a zero difference, else ``z = +-inf, p = 0`` (pROC does the same).
    """
    if not math.isfinite(var_diff) or not math.isfinite(diff):
        return math.nan, math.nan, (math.nan, math.nan)
    if var_diff <= 0.0:
        z = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0.0 else 0.0
    else:
        z = diff / math.sqrt(var_diff)
        p = math.erfc(abs(z) / math.sqrt(2.0))  # 2 * (1 - Phi(|z|)), without scipy's per-call overhead
    half = NormalDist().inv_cdf(0.5 + level / 2.0) * math.sqrt(max(var_diff, 0.0))
    return float(z), float(p), (diff - half, diff + half)


def delong_auc_variance(y_true: Any, score: Any, level: float = 0.95) -> AucVariance:
    """One AUC with DeLong's variance and a normal confidence interval (pROC's ``ci.auc`` default)."""
    pos, neg = _split(y_true, [score])
    if pos.shape[1] == 0 or neg.shape[1] == 0:
        return AucVariance(math.nan, math.nan, (math.nan, math.nan), level)
    auc, v10, v01 = _structural_components(pos, neg)
    var = float(_covariance(v10, v01)[0, 0])
    half = stats.norm.ppf(0.5 + level / 2.0) * math.sqrt(var) if math.isfinite(var) else math.nan
    a = float(auc[0])
    return AucVariance(a, var, (max(0.0, a - half), min(1.0, a + half)), level)


def delong_per_label(y_true: Any, score_a: Any, score_b: Any, labels: Sequence[str] | None = None,
                     level: float = 0.95) -> dict[str, DeLongResult]:
    """:func:`delong_test` for every column of ``(N, L)`` arrays, keyed by label name."""
    t = np.asarray(y_true)
    a = np.asarray(score_a, dtype=np.float64)
    b = np.asarray(score_b, dtype=np.float64)
    if t.ndim != 2 or a.shape != t.shape or b.shape != t.shape:
        raise ValueError(f"y_true {t.shape}, score_a {a.shape} and score_b {b.shape} must be the same (N, L)")
    names = list(labels) if labels is not None else [f"label_{j}" for j in range(t.shape[1])]
    if len(names) != t.shape[1]:
        raise ValueError(f"{len(names)} label names for {t.shape[1]} columns")
    return {name: delong_test(t[:, j], a[:, j], b[:, j], level) for j, name in enumerate(names)}
