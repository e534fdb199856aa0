"""Paired comparison of two configurations on the same test images: patient bootstrap, clustered tests, Holm.

One function answers "is configuration B better than configuration A, label by label?":
:func:`paired_comparison`. Each side is one or more trained models (seeds) of a configuration, all scored
on the same images. Per label it reports ``delta`` = (mean over B's seeds of the AUC) - (mean over A's),
and:

- ``ci_lo, ci_hi, se, df, p_bootstrap``: the paired **patient bootstrap** (:func:`paired_bootstrap`).
  Resample the ``I`` patients with replacement (exactly the draws of :func:`.roc.resample_groups` /
  :func:`.roc.bootstrap_auc` with the same seed) and take all their images; every model of both sides
  is scored on the *same* resampled patients, so the correlation between the sides is kept. ``r`` indexes
  resamples, ``AUC*_sr`` is seed ``s`` on resample ``r``, ``D*_r = mean_B AUC*_sr - mean_A AUC*_sr``:

  - one seed per side: ``se = sd_r(D*_r)`` (ddof 1); ``p = 2 Phi(-|delta| / se)``, the normal
    approximation of pROC's bootstrap test (Robin et al. 2011, BMC Bioinformatics 12:77); the interval
    is the percentile interval of ``D*_r``. The p-value is continuous, so it survives a 14-label Holm
    correction, which a resample-count p-value (resolution 1/n) would not;
  - seeds: training randomness is a second source of variance. The seeds are **nested** in their
    configuration (seed 0 of A and seed 0 of B are different trainings, so no seed effect is shared across
    the sides), while every seed scores every test patient. ``se^2 = var_r(D*_r) + tau2_A / k_A + tau2_B /
    k_B``, where ``tau2`` is the between-seed variance of one model's AUC: the seeds' sample variance
    ``s^2`` of their AUCs minus its test-sampling part (``k/(k-1)`` times the mean over seeds of ``var_r``
    of the seed's deviation from the side's seed mean), truncated at 0. This is the variance decomposition
    of Obuchowski & Rockette (1995, Commun. Stat. Simul. 24:285) with the between-model term of a nested
    design (their readers are crossed with the modalities; our seeds are not), the variances coming from
    the patient bootstrap. Seeds 0-4 of two configurations do share the data order, which would make the
    seed effects positively correlated across sides; treating them as independent counts that shared part
    twice and errs on the wide side. (Resampling the seeds as well, Owen's 2007 "pigeonhole" bootstrap,
    counts the test-sampling part twice and is conservative when seeds disagree patient by patient.)
    A side with one seed borrows the other side's ``tau2`` (:func:`_seed_terms`), so a failed seed never
    makes the training variance of a configuration vanish; with one seed per side no seed term enters and
    the comparison is of two trained models (said in the interval note). ``p`` and the interval ``delta +- t
    se`` use Student t with Satterthwaite's (1946) df computed from the seed mean squares ``s^2 / k`` (Hillis
    2007), each with ``k - 1`` df, the patient term having infinitely many.
- ``p_clustered``: Obuchowski's (1997) clustered analytic test (:mod:`.clustered`) of the same contrast
  ``c' theta`` (``c = -1/k_A`` for A's models, ``+1/k_B`` for B's) with their clustered covariance
  matrix ``S``: ``var = c' S c``, plus the same seed terms (``tau2 / k`` per side, borrowed by a 1-seed
  side), where the test-sampling part of ``s^2`` is the mean diagonal minus the mean off-diagonal of that
  side's block of ``S``; same df rule.
- ``p_delong_image_level``: DeLong's test of the same contrast with images treated as independent (no
  patients, no seeds). Kept only to show how much it overstates certainty; no verdict uses it.
- ``p_bootstrap_holm``, ``p_clustered_holm``: :func:`holm`-adjusted across the labels of the pair (the Holm
  family is the labels of one pair: the family-wise error rate is controlled within a pair, not across the
  pairs of a suite; ``compare --ablations --multiplicity holm|bh`` adds suite-wide control with
  :func:`holm` or :func:`benjamini_hochberg` over every label test of every pair). The ``verdict``
  (``better`` / ``worse`` / ``no evidence``; ``no test`` where undefined) uses ``p_bootstrap_holm`` at
  ``alpha``. On a label where the null simulation at the official test split's real prevalences found the
  bootstrap rejecting above alpha + 2 Monte Carlo SEs (:data:`LIBERAL_LABELS`), a ``better`` / ``worse``
  verdict carries that flag in parentheses; where it rejected below alpha - 2 SEs
  (:data:`CONSERVATIVE_LABELS`: Hernia, positives in 32 patients, with 5 seeds per side), a ``no
  evidence`` does; ``reason`` says it either way. With 100-200 simulated sets per design (Monte Carlo SE
  1.5-2.2 points) these lists are coarse: Pleural_Thickening is in both.

What the intervals and p-values account for: the sampling of test patients, and with a side of several
seeds the randomness of training (estimated from that side, borrowed by a 1-seed side); not a different
test population or a different data release.

The ``mean`` row (the unweighted mean AUC over the labels with at least 2 positive and 2 negative images)
is the pair's single primary endpoint, so it is not in the Holm family (its adjusted p equals its raw p);
it has bootstrap columns only (the analytic tests are per label).

A label with fewer than 2 positive or 2 negative images gives NaN and a ``reason``, never a crash.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..utils.io import atomic_write_with
from ..utils.progress import progress
from .clustered import _Components, _obuchowski_cov, _reason, cluster_index
from .delong import _covariance, _structural_components, z_test
from .roc import (
    CountBlocks,
    SeedLike,
    _as_2d,
    _counts,
    _label_names,
    _weighted_auc,
    count_blocks,
    percentile_ci,
    resample_groups,
)

log = logging.getLogger(__name__)

__all__ = ["CONSERVATIVE_LABELS", "LIBERAL_LABELS", "PAIRED_COLUMNS", "VERDICTS", "PairedBootstrap", "benjamini_hochberg", "caution",
           "DEFAULT_BOOTSTRAP", "DEFAULT_SEED", "holm", "load_replicates", "model_replicates", "paired_bootstrap",
           "paired_comparison", "replicate_key", "save_replicates", "seed_note", "verdict"]

VERDICTS = ("better", "worse", "no evidence")
PAIRED_COLUMNS = (
    "label", "auc_a", "auc_b", "delta", "ci_lo", "ci_hi", "se", "df", "p_bootstrap", "p_bootstrap_holm", "p_clustered",
    "p_clustered_holm", "p_delong_image_level", "verdict", "n_pos", "n_neg", "n_patients_pos", "reason",
)


def _finite_order(pvalues: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p, out, order)``: the p-values as floats, a NaN result of their shape, and the positions of the
    finite ones in ascending order (ties in input order): what both multiplicity adjustments start from."""
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    return p, np.full(p.shape, np.nan), ok[np.argsort(p[ok], kind="mergesort")]


def holm(pvalues: Any) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values; NaN entries stay NaN and are not counted in the family.

    With the ``m`` finite p-values sorted ``p_(1) <= ... <= p_(m)``, the adjusted value of ``p_(i)`` is
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where it is below alpha controls the family-wise
    error rate at alpha under any dependence between the tests.
    """
    p, out, order = _finite_order(pvalues)
    m = order.size
    if m:
        out[order] = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    return out


def benjamini_hochberg(pvalues: Any) -> np.ndarray:
    """Benjamini & Hochberg's (1995) step-up adjusted p-values (false discovery rate); NaN stays NaN and
    is not counted. With the ``m`` finite p-values sorted, the adjusted ``p_(i)`` is ``min_{j >= i} min(1,
    m p_(j) / j)``; rejecting where it is below alpha controls the FDR at alpha for independent or
    positively dependent tests."""
    p, out, order = _finite_order(pvalues)
    m = order.size
    if m:
        stepped = np.minimum(1.0, p[order] * m / np.arange(1, m + 1))
        out[order] = np.minimum.accumulate(stepped[::-1])[::-1]
    return out


# Labels on which the null simulation (benchmarks/results/null_rejection.csv: patient bootstraps of the
# official test split, every label at its real prevalence and clustering, 1 vs 1, 5 vs 5 and 1 vs 5 seeds)
# found the patient bootstrap, the verdict's test, outside alpha +- 2 Monte Carlo SEs in some design.
# Liberal (label -> its highest rejection rate at alpha 0.05): a "better" / "worse" there may be a false
# claim. Conservative (label -> its lowest rate): a "no evidence" there may be a lack of power.
# tests/metrics/test_simulation.py checks both against the committed CSV.
LIBERAL_LABELS: dict[str, float] = {"Emphysema": 0.110, "Pleural_Thickening": 0.085}
CONSERVATIVE_LABELS: dict[str, float] = {"Hernia": 0.0, "Pleural_Thickening": 0.0}


def caution(label: str, claim: bool = True) -> str:
    """The flag a label's verdict carries where the null simulation found its test unable to hold alpha:
    for a claim (``better`` / ``worse``) on a :data:`LIBERAL_LABELS` label, for ``no evidence`` on a
    :data:`CONSERVATIVE_LABELS` one; empty otherwise."""
    if claim and label in LIBERAL_LABELS:
        return (f"liberal test: the null simulation of the official test split rejects "
                f"{LIBERAL_LABELS[label]:.1%} at alpha 5% for this label")
    if not claim and label in CONSERVATIVE_LABELS:
        return (f"conservative test: the null simulation of the official test split rejects "
                f"{CONSERVATIVE_LABELS[label]:.1%} at alpha 5% for this label in some design")
    return ""


def verdict(delta: float, p_adjusted: float, alpha: float = 0.05, label: str = "") -> str:
    """``better`` / ``worse`` (B vs A) when the adjusted p is below ``alpha``, else ``no evidence``;
    ``no test`` where the p-value is undefined. For a ``label`` whose test the null simulation found unable
    to hold alpha, :func:`caution`'s flag follows in parentheses: the verdict itself says so."""
    if not (math.isfinite(p_adjusted) and math.isfinite(delta)):
        return "no test"
    claim = p_adjusted < alpha and delta != 0
    v = ("better" if delta > 0 else "worse") if claim else "no evidence"
    flag = caution(label, claim)
    return f"{v} ({flag})" if flag else v


@dataclass(frozen=True)
class Difference:
    """``B - A`` of seed-mean AUCs with its standard error, degrees of freedom, p-value and interval.

    ``tau2_a`` / ``tau2_b``: the estimated training (between-seed) variance of one model's AUC on each side
    (NaN where no side has 2 seeds; on a 1-seed side, the value borrowed from the other side); ``df`` is
    infinite when no seed component enters. ``seeds``: what the seed component is (:func:`seed_note`).
    """

    delta: float
    se: float
    df: float
    p: float
    ci: tuple[float, float]
    tau2_a: float
    tau2_b: float
    n_replicates: int
    seeds: str = ""


_NAN_DIFF = Difference(math.nan, math.nan, math.nan, math.nan, (math.nan, math.nan), math.nan, math.nan, 0)


@dataclass(frozen=True)
class _SeedTerm:
    """One estimated seed component of ``Var(delta)``: ``var`` = ``tau2 x weight`` (tau2 truncated at 0) is
    added to the variance, ``mean_square`` = ``s^2 x weight`` (the seeds' sample variance, never
    truncated) with ``df`` degrees of freedom enters Satterthwaite's df."""

    var: float
    mean_square: float
    df: int


def _tau2(auc: np.ndarray, test_noise: float) -> float:
    """Training variance of one model's AUC: the seeds' sample variance minus the part of it that is test
    sampling, truncated at 0 (the seed analogue of Obuchowski & Rockette's reader component)."""
    return max(0.0, float(np.var(auc, ddof=1)) - test_noise) if auc.size > 1 else math.nan


def _seed_terms(sides: Sequence[tuple[np.ndarray, float]]) -> tuple[list[_SeedTerm], tuple[float, float]]:
    """The seed components of ``Var(mean_B - mean_A)`` and the ``(tau2_a, tau2_b)`` they use.

    ``sides``: per side the ``(k,)`` AUCs of its seeds and the test-sampling part of their sample variance.
    A side with ``k >= 2`` seeds adds ``tau2 / k`` with ``k - 1`` df. A side with 1 seed still has training
    variance (its one model is one draw of the configuration), which that side cannot estimate: it borrows
    the other side's ``tau2`` (the two configurations differ in one factor, so their seed-to-seed spread is
    taken as equal), and the two parts become one term ``tau2_other (1/k_a + 1/k_b)`` with the other side's
    ``k - 1`` df (one estimate, counted once). With 1 seed per side nothing is estimated and nothing added:
    the comparison is then between two trained models, not two configurations (the interval note says so).
    """
    k = [auc.size for auc, _ in sides]
    tau = [_tau2(auc, noise) for auc, noise in sides]
    s2 = [float(np.var(auc, ddof=1)) if auc.size > 1 else math.nan for auc, _ in sides]
    if all(x > 1 for x in k):
        return [_SeedTerm(t / n, v / n, n - 1) for t, v, n in zip(tau, s2, k)], (tau[0], tau[1])
    if max(k) < 2:
        return [], (math.nan, math.nan)
    j = 0 if k[0] > 1 else 1  # the side with seeds
    weight = 1.0 / k[0] + 1.0 / k[1]
    return [_SeedTerm(tau[j] * weight, s2[j] * weight, k[j] - 1)], (tau[j], tau[j])


def seed_note(k_a: int, k_b: int) -> str:
    """What the seed part of a pair's interval and p-value is, given its seeds per side."""
    if k_a > 1 and k_b > 1:
        return f"patients + seeds ({k_a} vs {k_b}; nested: each configuration's own seeds)"
    if max(k_a, k_b) > 1:
        many = max(k_a, k_b)
        return (f"patients + seeds (1 vs {many}: the 1-seed side's between-seed variance borrowed from the "
                f"{many}-seed side, {many - 1} df)")
    return "patients only (1 seed per side: two trained models compared, training variance not included)"


def _t_test(delta: float, var_test: float, seeds: Sequence[_SeedTerm], level: float
            ) -> tuple[float, float, float, tuple[float, float]]:
    """``(se, df, p, t interval)`` for ``delta`` with variance ``var_test + sum(term.var)``.

    The test-sampling part is treated as known (infinite df). The df is Satterthwaite's (1946) computed,
    as Hillis (2007, Stat. Med. 26:596) does for the Obuchowski-Rockette model, from the seeds' mean
    squares ``s^2 / k`` rather than from the truncated ``tau2 / k``: a truncated (zero) seed variance would
    otherwise give infinite df and a z test although the seed spread was estimated from a handful of seeds.
    Like Hillis's ``df_H``, the df is never below that of the seed terms alone.
    """
    var = var_test + sum(t.var for t in seeds)
    if not (math.isfinite(var) and math.isfinite(delta)):
        return math.nan, math.nan, math.nan, (math.nan, math.nan)
    denom = sum(t.mean_square**2 / t.df for t in seeds)
    if denom > 0:
        floor = sum(t.mean_square for t in seeds) ** 2 / denom
        df = max(var * var / denom, floor)
    else:
        df = math.inf
    se = math.sqrt(max(var, 0.0))
    if se == 0.0:
        _, p, ci = z_test(delta, 0.0, level)
        return se, df, p, ci
    if math.isinf(df):
        _, p, ci = z_test(delta, var, level)
        return se, df, p, ci
    p = float(2.0 * stats.t.sf(abs(delta) / se, df))
    half = float(stats.t.ppf(0.5 + level / 2.0, df)) * se
    return se, df, p, (delta - half, delta + half)


def _difference(rep_a: np.ndarray, rep_b: np.ndarray, auc_a: np.ndarray, auc_b: np.ndarray, level: float
                ) -> Difference:
    """Bootstrap inference for one label (or the mean): ``rep_*`` are ``(k, n)`` replicate AUCs of each
    model on the same resampled patients, ``auc_*`` ``(k,)`` the AUCs on the full test set."""
    delta = float(auc_b.mean() - auc_a.mean())
    diff = rep_b.mean(axis=0) - rep_a.mean(axis=0)
    ok = np.isfinite(diff)
    if ok.sum() < 2 or not math.isfinite(delta):
        return _NAN_DIFF
    var_test = float(diff[ok].var(ddof=1))
    sides = []
    for rep, auc in ((rep_a, auc_a), (rep_b, auc_b)):
        k = auc.size
        noise = math.nan
        if k > 1:
            dev = rep[:, ok] - rep[:, ok].mean(axis=0)
            # Test-sampling variance of one seed's deviation from the seed mean, scaled to one seed's.
            noise = float(dev.var(axis=1, ddof=1).mean()) * k / (k - 1)
        sides.append((auc, noise))
    terms, (tau2_a, tau2_b) = _seed_terms(sides)
    se, df, p, ci = _t_test(delta, var_test, terms, level)
    if auc_a.size == 1 and auc_b.size == 1:
        ci = percentile_ci(diff, level)
    return Difference(delta, se, df, p, ci, tau2_a, tau2_b, int(ok.sum()), seed_note(auc_a.size, auc_b.size))


@dataclass(frozen=True)
class PairedBootstrap:
    """Per-label (and mean) :class:`Difference` of a paired patient bootstrap, plus the raw replicates.

    ``replicates_a[s, r, j]``: AUC of seed ``s`` of side A, label ``j``, resample ``r`` (NaN where the
    resample has no positive or no negative of the label; such resamples are left out of that label and
    counted in ``n_dropped[j]``). Labels with fewer than 2 positive or 2 negative images on the full set
    are NaN throughout and left out of the mean.
    """

    auc_a: np.ndarray  # (L,) seed-mean AUCs on the full test set
    auc_b: np.ndarray
    labels: list[Difference]
    mean: Difference
    mean_a: float
    mean_b: float
    replicates_a: np.ndarray  # (k_a, n, L)
    replicates_b: np.ndarray  # (k_b, n, L)
    n_dropped: np.ndarray  # (L,)
    n: int
    level: float
    n_groups: int
    names: list[str] = field(default_factory=list)


def _stack_side(scores: Sequence[Any], shape: tuple[int, int], side: str) -> list[np.ndarray]:
    out = []
    for i, s in enumerate(scores):
        a = np.asarray(s, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.shape != shape:
            raise ValueError(f"side {side}, model {i}: scores {a.shape}, expected {shape} like y_true")
        if not np.isfinite(a).all():
            raise ValueError(f"side {side}, model {i}: scores contain NaN or inf")
        out.append(a)
    if not out:
        raise ValueError(f"side {side} has no model")
    return out


@lru_cache(maxsize=2)
def _resample_blocks(n_groups: int, n: int, seed: int) -> CountBlocks:
    # The same draws for every pair of a store (same test patients, n and seed): drawn once per process.
    return count_blocks(_counts(resample_groups(n_groups, n, seed), n_groups))


def _auc_blocks(n_groups: int, n: int, seed: SeedLike) -> list[np.ndarray]:
    """Column 0 weighs every patient once (the AUC on the full test set, from the same pass as the
    replicates), then the ``n`` resamples of ``resample_groups(n_groups, n, seed)`` (a new list: the cached
    draws are shared by every pair)."""
    if isinstance(seed, (int, np.integer)):
        blocks = _resample_blocks(n_groups, n, int(seed))
    else:
        blocks = count_blocks(_counts(resample_groups(n_groups, n, seed), n_groups))
    return [np.ones((n_groups, 1), dtype=blocks[0].dtype), *blocks]


# Replicate AUCs of one model and label, keyed by :func:`replicate_key`: the caller's model key (e.g. a run's
# predictions hash), the label and the bootstrap (n, seed, patients): what a run contributes to every pair.
ReplicateCache = MutableMapping[Hashable, np.ndarray]

# The bootstrap of `compare --ablations`, `compare --pair` and the reports unless told otherwise. A run's own
# replicates under these draws are computed when it completes (:func:`model_replicates`, saved beside its
# predictions by :func:`save_replicates`) and read back by the comparisons (:func:`load_replicates`).
DEFAULT_BOOTSTRAP = 1000
DEFAULT_SEED = 0
REPLICATES_FORMAT = 1


def replicate_key(model_key: Hashable, label: str, n: int, seed: int, n_groups: int, n_images: int,
                  n_pos: int) -> tuple[Hashable, ...]:
    """What one model's replicate AUCs of one label depend on besides its scores (which ``model_key``
    names): the label, the draws (``n``, ``seed``, the number of patients) and the test set's size and
    positives (a cheap guard; the model key pins the images)."""
    return (model_key, label, int(n), int(seed), int(n_groups), int(n_images), int(n_pos))


def model_replicates(y_true: Any, scores: Any, groups: Any, *, n: int = DEFAULT_BOOTSTRAP,
                     seed: int = DEFAULT_SEED) -> np.ndarray:
    """``(L, n + 1)``: per label, one model's AUC on the full test set (column 0) and on each of the ``n``
    patient resamples :func:`paired_bootstrap` draws with the same ``seed`` (exactly its numbers); NaN rows
    for labels with fewer than 2 positive or 2 negative images."""
    t, _ = _as_2d(y_true, np.zeros(np.shape(y_true)))
    (s,) = _stack_side([scores], t.shape, "A")
    group, n_groups = cluster_index(groups, t.shape[0])
    blocks = _auc_blocks(n_groups, n, seed)
    n_pos = t.sum(axis=0)
    out = np.full((t.shape[1], n + 1), np.nan)
    for j in np.flatnonzero((n_pos >= 2) & (t.shape[0] - n_pos >= 2)):
        out[j] = _weighted_auc(t[:, j], s[:, j], group, blocks)
    return out


def save_replicates(path: str | os.PathLike, y_true: Any, scores: Any, groups: Any, labels: Sequence[str], *,
                    model_key: str, n: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED) -> Path:
    """Write :func:`model_replicates` with what they were computed from (``model_key``: the sha256 of the
    predictions file they score) to ``path`` (an ``.npz``, atomically)."""
    t, _ = _as_2d(y_true, np.zeros(np.shape(y_true)))
    _, n_groups = cluster_index(groups, t.shape[0])
    arrays = {"auc": model_replicates(t, scores, groups, n=n, seed=seed),
              "labels": np.asarray(list(labels), dtype=str), "n_pos": t.sum(axis=0).astype(np.int64),
              "meta": np.asarray([REPLICATES_FORMAT, n, seed, n_groups, t.shape[0]], dtype=np.int64),
              "model_key": np.asarray(model_key, dtype=str)}
    if arrays["labels"].size != t.shape[1]:
        raise ValueError(f"{arrays['labels'].size} label names for {t.shape[1]} columns")
    atomic_write_with(path, lambda fh: np.savez(fh, allow_pickle=False, **arrays))
    return Path(path)


def load_replicates(path: str | os.PathLike, model_key: str) -> dict[tuple[Hashable, ...], np.ndarray]:
    """The :data:`ReplicateCache` entries a file of :func:`save_replicates` holds, keyed by
    :func:`replicate_key`; ``{}`` (and a debug log line) when it is missing, unreadable, damaged, of another
    format or computed from another predictions file than ``model_key``, so a comparison then computes them.
    Never raises: the file only saves time."""
    try:
        return _read_replicates(path, model_key)
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, the numbers are computed instead
        log.debug("replicates %s not used: %s: %s", path, type(e).__name__, e)
        return {}


def _read_replicates(path: str | os.PathLike, model_key: str) -> dict[tuple[Hashable, ...], np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        auc, labels, n_pos, meta, key = (z[k] for k in ("auc", "labels", "n_pos", "meta", "model_key"))
    ok = (meta.shape == (5,) and meta.dtype == np.int64 and n_pos.dtype == np.int64 and auc.dtype == np.float64
          and labels.ndim == 1 and labels.dtype.kind == "U" and key.shape == () and key.dtype.kind == "U"
          and n_pos.shape == labels.shape)
    if not ok or int(meta[0]) != REPLICATES_FORMAT or str(key) != model_key \
            or auc.shape != (labels.size, int(meta[1]) + 1):
        raise ValueError("another format or predictions file")
    _, n, seed, n_groups, n_images = (int(x) for x in meta)
    return {replicate_key(model_key, str(lab), n, seed, n_groups, n_images, int(k)): auc[j]
            for j, (lab, k) in enumerate(zip(labels, n_pos)) if np.isfinite(auc[j]).any()}


def paired_bootstrap(y_true: Any, scores_a: Sequence[Any], scores_b: Sequence[Any], groups: Any, n: int = 1000,
                     level: float = 0.95, seed: SeedLike = 0, *, labels: Sequence[str] | None = None,
                     seed_variance: bool = True, show_progress: bool | None = None,
                     model_keys: tuple[Sequence[Hashable], Sequence[Hashable]] | None = None,
                     cache: ReplicateCache | None = None) -> PairedBootstrap:
    """Paired patient bootstrap of ``mean_B AUC - mean_A AUC`` (seed means), with the seed component.

    ``scores_a`` / ``scores_b``: one ``(N, L)`` array per seed of each side; ``groups``: the patient of
    each image. The patient draws are exactly ``resample_groups(I, n, seed)`` (what
    :func:`.roc.bootstrap_auc` draws with the same seed), shared by every model of both sides. The interval
    and p-value account for the sampling of test patients and, with a side of 2 or more seeds, for training
    randomness (module docstring). ``seed_variance=False`` leaves the
    seed component out (patients only): only for showing what that costs (:mod:`.simulation`).

    ``model_keys`` (one hashable per model of each side) and ``cache``: a model's replicates depend only on
    its scores, the truth, the patients and the draws, so a caller comparing many pairs of the same runs
    on the same images passes a key per run (e.g. its predictions' sha256) and one dict for all pairs;
    each run's replicates are then computed once.
    """
    t, _ = _as_2d(y_true, np.zeros(np.shape(y_true)))
    a = _stack_side(scores_a, t.shape, "A")
    b = _stack_side(scores_b, t.shape, "B")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    group, n_groups = cluster_index(groups, t.shape[0])
    names = _label_names(labels, t.shape[1])
    blocks = _auc_blocks(n_groups, n, seed)
    n_labels = t.shape[1]
    # A label needs 2 positive and 2 negative images to be compared (the same rule as the analytic tests).
    n_pos = t.sum(axis=0)
    usable = (n_pos >= 2) & (t.shape[0] - n_pos >= 2)
    auc = [np.full((len(side), n_labels), np.nan) for side in (a, b)]
    reps = [np.full((len(side), n, n_labels), np.nan) for side in (a, b)]
    # Replicates are reusable only for a fixed integer seed: a Generator draws other resamples on every call.
    int_seed = int(seed) if isinstance(seed, (int, np.integer)) else None
    keys = model_keys if cache is not None and model_keys is not None and int_seed is not None else None
    if keys is not None and (len(keys[0]) != len(a) or len(keys[1]) != len(b)):
        raise ValueError(f"model_keys: {len(keys[0])} and {len(keys[1])} keys for {len(a)} and {len(b)} models")
    for j in progress(np.flatnonzero(usable), desc="paired bootstrap", unit="label", enabled=show_progress):
        for i_side, (side, au, rep) in enumerate(zip((a, b), auc, reps)):
            for k, s in enumerate(side):
                key = None if keys is None else replicate_key(keys[i_side][k], names[j], n, int_seed or 0, n_groups,
                                                              t.shape[0], int(n_pos[j]))
                if key is not None and cache is not None and key in cache:
                    out = cache[key]
                else:
                    out = _weighted_auc(t[:, j], s[:, j], group, blocks)
                    if key is not None and cache is not None:
                        cache[key] = out.copy()
                au[k, j], rep[k, :, j] = out[0], out[1:]

    def infer(ra: np.ndarray, rb: np.ndarray, aa: np.ndarray, ab: np.ndarray) -> Difference:
        if not seed_variance:  # every seed's deviation counted as test noise: no seed component
            d = _difference(ra.mean(axis=0, keepdims=True), rb.mean(axis=0, keepdims=True),
                            aa.mean(keepdims=True), ab.mean(keepdims=True), level)
            return d
        return _difference(ra, rb, aa, ab, level)

    per_label = [infer(reps[0][:, :, j], reps[1][:, :, j], auc[0][:, j], auc[1][:, j]) if usable[j] else _NAN_DIFF
                 for j in range(n_labels)]
    if usable.any():
        mean = infer(reps[0][:, :, usable].mean(axis=2), reps[1][:, :, usable].mean(axis=2),
                     auc[0][:, usable].mean(axis=1), auc[1][:, usable].mean(axis=1))
        mean_a, mean_b = float(auc[0][:, usable].mean()), float(auc[1][:, usable].mean())
    else:
        mean, mean_a, mean_b = _NAN_DIFF, math.nan, math.nan
    dropped = np.isnan(reps[0]).any(axis=0) | np.isnan(reps[1]).any(axis=0)  # (n, L)
    return PairedBootstrap(
        auc_a=auc[0].mean(axis=0), auc_b=auc[1].mean(axis=0), labels=per_label, mean=mean, mean_a=mean_a,
        mean_b=mean_b, replicates_a=reps[0], replicates_b=reps[1],
        n_dropped=np.where(usable, dropped.sum(axis=0), n).astype(int), n=n, level=level, n_groups=n_groups,
        names=names,
    )


def _contrast_tests(t: np.ndarray, a: list[np.ndarray], b: list[np.ndarray], group: np.ndarray, n_groups: int,
                    level: float) -> tuple[float, float]:
    """``(p_clustered, p_delong_image_level)`` of one label's seed-mean contrast (module docstring)."""
    ka, kb = len(a), len(b)
    scores = np.stack(a + b)  # (K, N)
    auc, v10, v01 = _structural_components(scores[:, t], scores[:, ~t])
    c = np.r_[np.full(ka, -1.0 / ka), np.full(kb, 1.0 / kb)]
    diff = float(c @ auc)
    cov = _obuchowski_cov(_Components(auc, v10, v01, group[t], group[~t], n_groups))
    sides = []
    for idx in (np.arange(ka), ka + np.arange(kb)):
        k = idx.size
        noise = math.nan
        if k > 1:
            block = cov[np.ix_(idx, idx)]
            # Var(theta_s - theta_s') / 2 averaged over seed pairs: the test-sampling part of the seeds' spread.
            noise = float(np.diag(block).mean() - (block.sum() - np.trace(block)) / (k * (k - 1)))
        sides.append((auc[idx], noise))
    terms, _ = _seed_terms(sides)
    _, _, p_cl, _ = _t_test(diff, float(c @ cov @ c), terms, level)
    _, p_dl, _ = z_test(diff, float(c @ _covariance(v10, v01) @ c))
    return p_cl, p_dl


def paired_comparison(y_true: Any, scores_a: Sequence[Any], scores_b: Sequence[Any], groups: Any, *,
                      labels: Sequence[str] | None = None, n_bootstrap: int = 1000, level: float = 0.95,
                      seed: SeedLike = 0, alpha: float = 0.05, seed_variance: bool = True,
                      show_progress: bool | None = None,
                      model_keys: tuple[Sequence[Hashable], Sequence[Hashable]] | None = None,
                      cache: ReplicateCache | None = None) -> pd.DataFrame:
    """Per label and for the mean: B - A with every column of :data:`PAIRED_COLUMNS` (module docstring).

    ``auc_a`` / ``auc_b`` are seed means; ``n_patients_pos`` counts the patients with a positive image.
    The intervals and p-values account for the sampling of test patients and, when a side has 2 or more
    seeds, for training randomness (a 1-seed side borrowing the other side's; :func:`seed_note`); not for a
    different test population or data release.

    ``model_keys`` and ``cache``: see :func:`paired_bootstrap`.
    """
    t, _ = _as_2d(y_true, np.zeros(np.shape(y_true)))
    a = _stack_side(scores_a, t.shape, "A")
    b = _stack_side(scores_b, t.shape, "B")
    names = _label_names(labels, t.shape[1])
    group, n_groups = cluster_index(groups, t.shape[0])
    boot = paired_bootstrap(t, a, b, group, n=n_bootstrap, level=level, seed=seed, labels=names,
                            seed_variance=seed_variance, show_progress=show_progress, model_keys=model_keys,
                            cache=cache)
    rows = []
    for j, name in enumerate(names):
        tj = t[:, j]
        n_pos, n_neg = int(tj.sum()), int((~tj).sum())
        c_pos, c_neg = int(np.unique(group[tj]).size), int(np.unique(group[~tj]).size)
        reasons = [_reason(n_pos, n_neg, c_pos, c_neg)]
        d = boot.labels[j]
        row: dict[str, Any] = {"label": name, "n_pos": n_pos, "n_neg": n_neg, "n_patients_pos": c_pos,
                               "auc_a": boot.auc_a[j], "auc_b": boot.auc_b[j], "delta": d.delta,
                               "ci_lo": d.ci[0], "ci_hi": d.ci[1], "se": d.se, "df": d.df, "p_bootstrap": d.p,
                               "p_clustered": math.nan, "p_delong_image_level": math.nan}
        if n_pos >= 2 and n_neg >= 2:
            row["p_clustered"], row["p_delong_image_level"] = _contrast_tests(
                tj, [s[:, j] for s in a], [s[:, j] for s in b], group, n_groups, level)
            if boot.n_dropped[j]:
                reasons.append(f"{boot.n_dropped[j]} of {boot.n} bootstrap resamples had no positive or no "
                               "negative image and were left out")
        reasons.append(caution(name) or caution(name, claim=False))
        row["reason"] = "; ".join(r for r in reasons if r)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["p_bootstrap_holm"] = holm(df["p_bootstrap"])
    df["p_clustered_holm"] = holm(df["p_clustered"])
    df["verdict"] = [verdict(d, p, alpha, lab) for d, p, lab in zip(df["delta"], df["p_bootstrap_holm"], df["label"])]
    m = boot.mean
    mean_row = {
        "label": "mean", "auc_a": boot.mean_a, "auc_b": boot.mean_b, "delta": m.delta, "ci_lo": m.ci[0],
        "ci_hi": m.ci[1], "se": m.se, "df": m.df, "p_bootstrap": m.p, "p_bootstrap_holm": m.p,
        "p_clustered": math.nan, "p_clustered_holm": math.nan, "p_delong_image_level": math.nan,
        "verdict": verdict(m.delta, m.p, alpha), "n_pos": math.nan, "n_neg": math.nan, "n_patients_pos": math.nan,
        "reason": "" if math.isfinite(m.delta) else "no label with 2 positive and 2 negative images",
    }
    out = pd.concat([df, pd.DataFrame([mean_row])], ignore_index=True)
    return out[list(PAIRED_COLUMNS)]
