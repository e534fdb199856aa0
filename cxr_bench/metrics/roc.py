"""ROC AUC, AUPRC, patient-level bootstrap confidence intervals and operating points.

Why the AUC is computed here and not by calling scikit-learn in a loop: the confidence intervals need the
AUC of every label on 1,000 bootstrap resamples of a 25,596-image test set, which a Python loop over
``roc_auc_score`` does in minutes. Here a resample is a vector of *counts* (how many times each patient was
drawn), every image inherits the count of its patient as a weight, and the weighted Mann-Whitney statistic
of all resamples is computed at once from one sort per label (see :func:`_weighted_auc`). Ties count one
half, exactly like scikit-learn's trapezoidal ``roc_auc_score``; the tests check equality with it to 1e-12,
and the bootstrap against a naive loop of ``roc_auc_score`` on the same resampled patients.

Why patients and not images: NIH ChestX-ray14 has up to ~180 images of one patient and they are strongly
correlated, so resampling images would make the intervals too narrow. Resampling patient ids with
replacement and taking all their images (a cluster bootstrap) keeps that correlation in every resample.

Conventions: ``y_true`` and ``y_score`` are ``(N, L)`` arrays (a 1-D array is one label); a higher score
means "more likely positive"; a label with no positive or no negative case has no AUC (NaN, ``None`` in
JSON), is reported with a warning and left out of the mean; it never raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.metrics import average_precision_score

from ..registry import Registry
from ..utils.progress import progress
from .predictions import Predictions

log = logging.getLogger(__name__)

__all__ = [
    "THRESHOLD_METHODS",
    "BootstrapResult",
    "auprc",
    "bootstrap_auc",
    "choose_thresholds",
    "mean_defined",
    "per_label_auc",
    "percentile_ci",
    "resample_groups",
    "sens_spec",
    "summarize",
    "summary_table",
]

SeedLike = int | np.random.Generator

# Resamples per block of the weighted AUC: a (segments, block) float64 array of a common label of the full
# test set (~5,000 segments) stays near 5 MB, in cache for the cumulative sum that follows the product.
_BLOCK = 128


# --------------------------------------------------------------------------------------------------
# input handling


def _as_2d(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(N, L)`` bool truth and float64 scores; a 1-D input is one label."""
    t = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"y_true {t.shape} and y_score {s.shape} must have the same (N, L) shape")
    if not np.isfinite(s).all():
        raise ValueError("y_score contains NaN or inf; predictions must be finite")
    if t.dtype != np.bool_:
        tf = t.astype(np.float64)
        if not np.isin(tf, (0.0, 1.0)).all():
            raise ValueError("y_true must contain only 0 and 1")
        t = tf.astype(bool)
    return t, s


def _label_names(labels: Sequence[str] | None, n: int) -> list[str]:
    if labels is None:
        return [f"label_{j}" for j in range(n)]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} label names for {n} columns")
    return list(labels)


def _undefined(t: np.ndarray) -> np.ndarray:
    """Labels (columns) whose AUC is undefined: no positive or no negative case."""
    n_pos = t.sum(axis=0)
    return (n_pos == 0) | (n_pos == t.shape[0])


# --------------------------------------------------------------------------------------------------
# weighted AUC: one sort per label, all resamples at once


CountBlocks = Sequence[np.ndarray]


def count_blocks(counts_t: np.ndarray | CountBlocks) -> CountBlocks:
    """``(G, B)`` resample counts as C-contiguous column blocks of :data:`_BLOCK` resamples.

    The sparse product of :func:`_weighted_auc` needs contiguous operands; cutting them once per bootstrap
    (instead of once per label and model) and keeping each block small enough for the cache is most of
    what the product costs.
    """
    if not isinstance(counts_t, np.ndarray):
        return counts_t
    n_res = counts_t.shape[1]
    # Integer counts are multiplied as int32 (half the memory traffic of float64, and exact), which the
    # doubled integer weights of _weighted_auc keep below 2**31 for any realistic test set.
    integral = counts_t.size and np.array_equal(counts_t, np.round(counts_t)) and float(np.abs(counts_t).max()) < 2**20
    dtype = np.int32 if integral else np.float64
    return [np.ascontiguousarray(counts_t[:, b0 : b0 + _BLOCK], dtype=dtype) for b0 in range(0, n_res, _BLOCK)]


def _weighted_auc(t: np.ndarray, s: np.ndarray, group: np.ndarray, counts_t: np.ndarray | CountBlocks) -> np.ndarray:
    """AUC of one label under many weightings of the cases, ties counted one half.

    ``counts_t`` is ``(G, B)`` (or its :func:`count_blocks`): column ``b`` gives each group (patient) a
    weight, and image ``i`` weighs ``counts_t[group[i], b]``. The AUC of weighting ``b`` is the weighted
    Mann-Whitney statistic ``sum_{pos i, neg j} w_i w_j ([s_i > s_j] + [s_i == s_j] / 2) / (W_pos W_neg)``,
    NaN where ``W_pos`` or ``W_neg`` is 0.

    How: let ``u_1 < ... < u_m`` be the distinct positive scores. Every positive falls in one ``u_k``;
    a negative strictly between ``u_{k-1}`` and ``u_k`` goes to bin ``k`` (``m`` = above all), and a
    negative tied with ``u_k`` goes half to bin ``k`` and half to bin ``k + 1``, so that the cumulative
    sum over bins up to ``k`` is the weight of the negatives below ``u_k`` plus half of those tied with it.
    Consecutive positive scores with no negative between them share that cumulative sum, so they are
    merged into one segment first (the sorted order fixes the segments; only the weights vary with the
    resample). The per-(segment, patient) counts form a sparse matrix ``A`` built once; ``A @ counts``
    gives the segments' weights for every resample at once. Cost O(N log N + nnz(A) * B); every sum is a
    multiple of 1/2 of an integer (exact in float64) when the weights are counts, so merging and blocking
    change no bit of the result.
    """
    blocks = count_blocks(counts_t)
    if blocks[0].dtype == np.int32 and 2 * s.size * max(int(np.abs(b).max()) for b in blocks) >= 2**31:
        blocks = [b.astype(np.float64) for b in blocks]  # sums that int32 could not hold
    n_groups = blocks[0].shape[0]
    n_res = sum(b.shape[1] for b in blocks)
    pos_scores = s[t]
    neg_scores = s[~t]
    if pos_scores.size == 0 or neg_scores.size == 0:
        return np.full(n_res, np.nan)
    u, pos_bin = np.unique(pos_scores, return_inverse=True)
    m = u.size
    neg_bin = np.searchsorted(u, neg_scores, side="left")  # first u_k >= score, m if none
    tied = np.zeros(neg_scores.size, dtype=bool)
    inside = neg_bin < m
    tied[inside] = u[neg_bin[inside]] == neg_scores[inside]
    neg_group = group[~t]
    nb_rows = np.concatenate([neg_bin, neg_bin[tied] + 1])  # bins 0..m
    # Positive score k starts a new segment when bin k holds a negative (bin 0 always starts one).
    occupied = np.zeros(m + 1, dtype=bool)
    occupied[nb_rows] = True
    starts = occupied[:m].copy()
    starts[0] = True
    seg = np.cumsum(starts) - 1
    n_seg = int(seg[-1]) + 1
    # Negatives of bin k < m count below segment seg[k] and every later one; bin m only in W_neg.
    neg_row = np.where(nb_rows < m, seg[np.minimum(nb_rows, m - 1)], n_seg)
    rows = np.concatenate([seg[pos_bin], n_seg + neg_row])
    cols = np.concatenate([group[t], neg_group, neg_group[tied]])
    # Negatives weigh 2 (a tied one 1 + 1), positives 1: integers throughout; the factor 2 cancels in the
    # ratio below (num and W_neg both doubled, exactly).
    dtype = blocks[0].dtype
    vals = np.concatenate([np.ones(int(t.sum()), dtype), np.where(tied, 1, 2).astype(dtype),
                           np.ones(int(tied.sum()), dtype)])
    # Duplicate (row, col) entries are summed on conversion to CSR: the per-(segment, patient) image counts.
    a = sparse.csr_array((vals, (rows, cols)), shape=(2 * n_seg + 1, n_groups))
    out = np.empty(n_res)
    b0 = 0
    for block in blocks:
        r = a @ block
        w_pos, w_neg2 = r[:n_seg], r[n_seg:]
        cum2 = np.cumsum(w_neg2[:n_seg], axis=0, dtype=r.dtype)
        num2 = np.einsum("kb,kb->b", w_pos, cum2, dtype=np.float64)  # exact: integers below 2**53
        w_p = w_pos.sum(axis=0, dtype=np.float64)
        w_n2 = w_neg2.sum(axis=0, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = num2 / (w_p * w_n2)
        auc[(w_p == 0) | (w_n2 == 0)] = np.nan
        out[b0 : b0 + block.shape[1]] = auc
        b0 += block.shape[1]
    return out


def per_label_auc(y_true: Any, y_score: Any) -> np.ndarray:
    """ROC AUC of each column of ``(N, L)`` arrays; NaN where a label has no positive or no negative.

    Equal to ``sklearn.metrics.roc_auc_score`` per column (ties count one half); a constant score gives
    0.5. Never warns or raises for an undefined label: :func:`summarize` reports those.
    """
    t, s = _as_2d(y_true, y_score)
    one_group = np.zeros(t.shape[0], dtype=np.intp)
    ones = np.ones((1, 1))
    return np.array([_weighted_auc(t[:, j], s[:, j], one_group, ones)[0] for j in range(t.shape[1])])


def mean_defined(values: np.ndarray) -> float:
    """Mean over the finite entries (the labels whose AUC is defined); NaN if there is none."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    return float(v[ok].mean()) if ok.any() else math.nan


def auprc(y_true: Any, y_score: Any) -> np.ndarray:
    """Area under the precision-recall curve (scikit-learn's average precision) per label.

    NaN where a label has no positive case (precision is then undefined at every threshold).
    """
    t, s = _as_2d(y_true, y_score)
    out = np.full(t.shape[1], np.nan)
    for j in range(t.shape[1]):
        if t[:, j].any():
            out[j] = average_precision_score(t[:, j], s[:, j])
    return out


# --------------------------------------------------------------------------------------------------
# cluster bootstrap


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def resample_groups(n_groups: int, n: int, seed: SeedLike = 0) -> np.ndarray:
    """The resampled group indices: ``(n, n_groups)`` draws with replacement from ``range(n_groups)``.

    Row ``b`` lists the patients of resample ``b`` (a patient drawn twice contributes all its images
    twice). :func:`bootstrap_auc` draws exactly these rows from the same seed, so a test can replay a
    resample with any reference implementation.
    """
    if n_groups < 1 or n < 1:
        raise ValueError(f"need at least one group and one resample, got {n_groups} and {n}")
    return _rng(seed).integers(0, n_groups, size=(n, n_groups))


def _counts(draws: np.ndarray, n_groups: int) -> np.ndarray:
    """``(n_groups, n)`` float64 count of each group in each resample (transposed for the sparse product)."""
    n = draws.shape[0]
    flat = (draws + (np.arange(n) * n_groups)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n * n_groups).reshape(n, n_groups)
    return np.ascontiguousarray(counts.T, dtype=np.float64)


def percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite ``samples`` at ``level`` (NaN, NaN when none is finite)."""
    ok = samples[np.isfinite(samples)]
    if ok.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(ok, [100 * alpha, 100 * (1 - alpha)])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimates and percentile intervals of a patient-level bootstrap of the ROC AUC.

    ``samples[b, j]`` is the AUC of label ``j`` on resample ``b`` (NaN where that resample has no
    positive or no negative of the label; such resamples are left out of that label's interval and
    counted in ``n_dropped[j]``). ``mean_samples[b]`` is the mean over the labels defined on the full set,
    on the same resampled patients; a resample where one of those labels is undefined is dropped from the
    mean's interval and counted in ``n_dropped_mean``.
    """

    auc: np.ndarray  # (L,) on the full set, NaN where undefined
    ci: np.ndarray  # (L, 2)
    mean_auc: float
    mean_ci: tuple[float, float]
    samples: np.ndarray  # (n, L)
    mean_samples: np.ndarray  # (n,)
    n_dropped: np.ndarray  # (L,) int
    n_dropped_mean: int
    n: int
    level: float
    n_groups: int
    labels: list[str] = field(default_factory=list)


def bootstrap_auc(
    y_true: Any,
    y_score: Any,
    groups: Any,
    n: int = 1000,
    level: float = 0.95,
    seed: SeedLike = 0,
    *,
    labels: Sequence[str] | None = None,
    show_progress: bool | None = None,
) -> BootstrapResult:
    """ROC AUC per label and their mean, with percentile intervals from a cluster bootstrap over ``groups``.

    ``groups`` (length N) names the patient of each image; a resample draws ``n_groups`` patients with
    replacement (:func:`resample_groups`) and takes all their images. The mean AUC's interval comes from
    the mean of each resample (same patients for every label), not from the per-label intervals.
    """
    t, s = _as_2d(y_true, y_score)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    g = np.asarray(groups)
    if g.shape != (t.shape[0],):
        raise ValueError(f"groups has shape {g.shape}, expected ({t.shape[0]},): one patient per image")
    _, group = np.unique(g, return_inverse=True)
    group = group.ravel()
    n_groups = int(group.max()) + 1 if group.size else 0
    names = _label_names(labels, t.shape[1])
    counts_t = count_blocks(_counts(resample_groups(n_groups, n, seed), n_groups))

    auc = per_label_auc(t, s)
    samples = np.full((n, t.shape[1]), np.nan)
    for j in progress(range(t.shape[1]), desc="bootstrap AUC", unit="label", enabled=show_progress):
        if np.isfinite(auc[j]):
            samples[:, j] = _weighted_auc(t[:, j], s[:, j], group, counts_t)
    defined = np.isfinite(auc)
    n_dropped = np.where(defined, np.isnan(samples).sum(axis=0), n).astype(int)
    if defined.any():
        mean_samples = samples[:, defined].mean(axis=1)  # NaN where any defined label dropped out
    else:
        mean_samples = np.full(n, np.nan)
    n_dropped_mean = int(np.isnan(mean_samples).sum())
    for j in np.flatnonzero(defined & (n_dropped > 0)):
        log.warning(
            "bootstrap: label %s has no positive or no negative case in %d of %d resamples; "
            "its interval uses the other %d", names[j], n_dropped[j], n, n - n_dropped[j],
        )
    ci = np.array([percentile_ci(samples[:, j], level) for j in range(t.shape[1])]).reshape(-1, 2)
    return BootstrapResult(
        auc=auc,
        ci=ci,
        mean_auc=mean_defined(auc),
        mean_ci=percentile_ci(mean_samples, level),
        samples=samples,
        mean_samples=mean_samples,
        n_dropped=n_dropped,
        n_dropped_mean=n_dropped_mean,
        n=n,
        level=level,
        n_groups=n_groups,
        labels=names,
    )


# --------------------------------------------------------------------------------------------------
# operating points: thresholds chosen on validation, applied to test


def _clf_curve(t: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) with the true/false positive counts of ``score >= threshold``.

    The same points as scikit-learn's ``roc_curve(drop_intermediate=False)`` minus its leading ``inf``.
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(t[order])[last].astype(np.float64)
    fps = (last + 1) - tps
    return s_sorted[last], tps, fps


ThresholdMethod = Callable[[np.ndarray, np.ndarray, float, float], int]
THRESHOLD_METHODS: Registry[ThresholdMethod] = Registry("threshold method")


@THRESHOLD_METHODS.register("youden")
def _youden(tps: np.ndarray, fps: np.ndarray, n_pos: float, n_neg: float) -> int:
    """Maximise Youden's J = sensitivity + specificity - 1 (the highest threshold among ties)."""
    return int(np.argmax(tps / n_pos - fps / n_neg))


@THRESHOLD_METHODS.register("f1")
def _f1(tps: np.ndarray, fps: np.ndarray, n_pos: float, n_neg: float) -> int:
    """Maximise F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + P)."""
    return int(np.argmax(2 * tps / (tps + fps + n_pos)))


@THRESHOLD_METHODS.register("sens90")
def _sens90(tps: np.ndarray, fps: np.ndarray, n_pos: float, n_neg: float) -> int:
    """The highest threshold whose sensitivity is at least 0.90 (the most specific such point)."""
    # tps / n_pos reaches 1 at the last threshold, so there is always such a point.
    return int(np.argmax(tps >= 0.9 * n_pos - 1e-9))


def choose_thresholds(y_true_val: Any, y_score_val: Any, method: str = "youden") -> np.ndarray:
    """One decision threshold per label (predict positive when ``score >= threshold``), chosen on
    validation data by ``method`` (a :data:`THRESHOLD_METHODS` name: ``youden``, ``f1``, ``sens90``).

    Thresholds are observed validation scores, so applying them to the test set is well defined. NaN for
    a label with no positive or no negative validation case.
    """
    pick = THRESHOLD_METHODS.get(method)
    t, s = _as_2d(y_true_val, y_score_val)
    out = np.full(t.shape[1], np.nan)
    for j in np.flatnonzero(~_undefined(t)):
        thr, tps, fps = _clf_curve(t[:, j], s[:, j])
        n_pos = float(t[:, j].sum())
        out[j] = thr[pick(tps, fps, n_pos, t.shape[0] - n_pos)]
    return out


def sens_spec(y_true: Any, y_score: Any, thresholds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity per label of the rule ``score >= threshold``.

    NaN where the threshold is NaN, sensitivity NaN without positives, specificity NaN without negatives.
    """
    t, s = _as_2d(y_true, y_score)
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.shape != (t.shape[1],):
        raise ValueError(f"{thr.size} thresholds for {t.shape[1]} labels")
    pred = s >= thr[None, :]
    n_pos = t.sum(axis=0)
    n_neg = t.shape[0] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (pred & t).sum(axis=0) / n_pos
        spec = (~pred & ~t).sum(axis=0) / n_neg
    bad = ~np.isfinite(thr)
    sens = np.where(bad | (n_pos == 0), np.nan, sens)
    spec = np.where(bad | (n_neg == 0), np.nan, spec)
    return sens, spec


# --------------------------------------------------------------------------------------------------
# the metrics.json split block


def _json_float(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _json_pair(pair: Any) -> list[float] | None:
    lo, hi = (_json_float(v) for v in pair)
    return None if lo is None or hi is None else [lo, hi]


def _as_predictions(pred: Any, labels: Sequence[str] | None, what: str) -> Predictions:
    """A Predictions object (validated) from a Predictions or a predictions DataFrame."""
    if isinstance(pred, pd.DataFrame):
        pred = Predictions.from_frame(pred, source=what)
    if not isinstance(pred, Predictions):
        raise TypeError(f"{what}: expected Predictions or a predictions DataFrame, got {type(pred).__name__}")
    return pred.select(labels) if labels is not None else pred


def summarize(
    pred: Any,
    labels: Sequence[str] | None = None,
    *,
    val: Any = None,
    threshold_method: str = "youden",
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: SeedLike = 0,
    split: str = "test",
) -> dict[str, Any]:
    """The ``metrics.json`` block of one split (see docs/architecture.md, "engine").

    ``pred`` is a :class:`~cxr_bench.metrics.predictions.Predictions` (or its DataFrame with ``image,
    patient_id, true_<Label>..., prob_<Label>...``); ``labels`` selects and orders labels (default: all).
    Thresholds are chosen on ``val`` (same kind of object) by ``threshold_method`` and applied to
    ``pred``; without ``val`` they are ``None`` rather than tuned on the split they are reported on.

    Labels with no positive (or no negative) case are listed in ``missing_labels``, logged as a warning,
    get ``auc: null`` and are left out of ``mean_auc``. The result holds only JSON types (NaN -> None).
    """
    p = _as_predictions(pred, labels, split)
    names = list(p.labels)
    t = p.y_true.astype(bool)
    s = p.y_prob
    missing = [names[j] for j in np.flatnonzero(_undefined(t))]
    if missing:
        log.warning(
            "%s split (%d images): no positive or no negative case for %s; their AUC is null and "
            "they are left out of the mean AUC", split, t.shape[0], ", ".join(missing),
        )
    boot = bootstrap_auc(t, s, p.patient_ids, n=n_bootstrap, level=level, seed=seed, labels=names)
    ap = auprc(t, s)
    if val is not None:
        v = _as_predictions(val, names, "val")
        thresholds = choose_thresholds(v.y_true, v.y_prob, threshold_method)
        sens, spec = sens_spec(t, s, thresholds)
    else:
        thresholds = sens = spec = np.full(len(names), np.nan)
    n_pos = t.sum(axis=0)
    per_label: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        per_label[name] = {
            "auc": _json_float(boot.auc[j]),
            "ci": _json_pair(boot.ci[j]),
            "auprc": _json_float(ap[j]),
            "n_pos": int(n_pos[j]),
            "threshold": _json_float(thresholds[j]),
            "sensitivity": _json_float(sens[j]),
            "specificity": _json_float(spec[j]),
        }
    return {
        "mean_auc": _json_float(boot.mean_auc),
        "mean_auc_ci": _json_pair(boot.mean_ci),
        "n_images": int(t.shape[0]),
        "n_patients": int(boot.n_groups),
        "per_label": per_label,
        "missing_labels": missing,
        "threshold_method": threshold_method if val is not None else None,
        "bootstrap": {
            "n_resamples": int(n_bootstrap),
            "level": float(level),
            "unit": "patient",
            "seed": int(seed) if isinstance(seed, (int, np.integer)) else None,
            "dropped": {
                name: int(boot.n_dropped[j])
                for j, name in enumerate(names)
                if name not in missing and boot.n_dropped[j] > 0
            },
            "dropped_mean": int(boot.n_dropped_mean),
        },
    }


def summary_table(block: Mapping[str, Any]) -> pd.DataFrame:
    """One row per label of a :func:`summarize` block (for printing and reports)."""
    rows = []
    for name, m in block["per_label"].items():
        ci = m["ci"] or [None, None]
        rows.append({"label": name, "auc": m["auc"], "ci_low": ci[0], "ci_high": ci[1], "auprc": m["auprc"],
                     "n_pos": m["n_pos"], "threshold": m["threshold"], "sensitivity": m["sensitivity"],
                     "specificity": m["specificity"]})
    return pd.DataFrame(rows)
