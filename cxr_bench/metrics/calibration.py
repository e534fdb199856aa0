"""Calibration of predicted probabilities: Brier score, expected calibration error, reliability curves.

AUC only needs a ranking; a reader who takes ``p = 0.8`` as "80% likely" needs calibration too. Per label:

- **Brier score** (Brier 1950): ``mean_i (p_i - y_i)^2`` over all test images (0 is perfect; a constant
  prediction of the prevalence ``pi`` scores ``pi (1 - pi)``).
- **Binning** (fixed, so numbers compare across runs): :data:`N_BINS` = 15 equal-width bins on [0, 1];
  image ``i`` falls in bin ``min(floor(15 p_i), 14)``, i.e. bins ``[k/15, (k+1)/15)`` with the last one
  closed at 1 (the 15 equal-width bins of Guo et al. 2017, "On calibration of modern neural networks").
- **Reliability curve**: per bin, the number of images ``n_k``, their mean predicted probability
  ``mean_score_k`` and the fraction that are positive ``frac_pos_k`` (NaN for an empty bin).
- **ECE** (Naeini et al. 2015; Guo et al. 2017): ``sum_k (n_k / N) |frac_pos_k - mean_score_k|`` over the
  non-empty bins.

Both are computed per label on the images of the split; they describe these trained weights on this test
set (no interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .roc import _as_2d, _json_float, _label_names

__all__ = ["CALIBRATION_COLUMNS", "N_BINS", "brier_score", "calibration_block", "calibration_table",
           "expected_calibration_error", "reliability_bins"]

N_BINS = 15
CALIBRATION_COLUMNS = ("label", "brier", "ece", "bin", "bin_lo", "bin_hi", "n", "mean_score", "frac_pos")


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum(np.floor(p * n_bins).astype(np.intp), n_bins - 1)


def brier_score(y_true: Any, y_prob: Any) -> np.ndarray:
    """``(L,)`` mean squared difference between probability and 0/1 truth per label (NaN with no image)."""
    t, p = _as_2d(y_true, y_prob)
    if t.shape[0] == 0:
        return np.full(t.shape[1], np.nan)
    return ((p - t) ** 2).mean(axis=0)


def reliability_bins(y_true: Any, y_prob: Any, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, mean_score, frac_pos)``, each ``(L, n_bins)``, of the equal-width bins (module docstring)."""
    t, p = _as_2d(y_true, y_prob)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("probabilities must lie in [0, 1] for calibration")
    n_labels = t.shape[1]
    n = np.zeros((n_labels, n_bins))
    score_sum = np.zeros((n_labels, n_bins))
    pos = np.zeros((n_labels, n_bins))
    for j in range(n_labels):
        k = _bin_index(p[:, j], n_bins)
        n[j] = np.bincount(k, minlength=n_bins)
        score_sum[j] = np.bincount(k, weights=p[:, j], minlength=n_bins)
        pos[j] = np.bincount(k, weights=t[:, j].astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return n, score_sum / n, pos / n


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = N_BINS) -> np.ndarray:
    """``(L,)`` ECE over ``n_bins`` equal-width bins (NaN with no image)."""
    n, mean_score, frac_pos = reliability_bins(y_true, y_prob, n_bins)
    total = n.sum(axis=1)
    gap = np.where(n > 0, np.abs(frac_pos - mean_score), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n * gap).sum(axis=1) / total


def calibration_block(y_true: Any, y_prob: Any, labels: Sequence[str] | None = None, n_bins: int = N_BINS
                      ) -> dict[str, Any]:
    """The ``calibration`` block of a ``metrics.json`` split (JSON types only, NaN -> None)::

        {"binning": {...}, "per_label": {label: {"brier", "ece", "n": [...], "mean_score": [...],
                                                  "frac_pos": [...]}}}
    """
    t, p = _as_2d(y_true, y_prob)
    names = _label_names(labels, t.shape[1])
    brier = brier_score(t, p)
    ece = expected_calibration_error(t, p, n_bins)
    n, mean_score, frac_pos = reliability_bins(t, p, n_bins)
    per_label = {}
    for j, name in enumerate(names):
        per_label[name] = {
            "brier": _json_float(brier[j]), "ece": _json_float(ece[j]), "n": [int(x) for x in n[j]],
            "mean_score": [_json_float(x) for x in mean_score[j]],
            "frac_pos": [_json_float(x) for x in frac_pos[j]],
        }
    return {
        "binning": {"method": "equal-width", "n_bins": n_bins, "range": [0.0, 1.0],
                    "rule": f"bin = min(floor({n_bins} p), {n_bins - 1}): [k/{n_bins}, (k+1)/{n_bins}), last closed"},
        "per_label": per_label,
    }


def _block(block: Mapping[str, Any], key: str, marker: str) -> Mapping[str, Any] | None:
    """``block[key]`` of a split block, or ``block`` itself when it is that block (has ``marker``)."""
    if isinstance(block.get(key), Mapping):
        return block[key]
    return block if marker in block else None


def calibration_table(block: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (label, bin) of a split block's ``calibration`` (or of the calibration block itself):
    :data:`CALIBRATION_COLUMNS`; ``brier`` and ``ece`` repeat on every bin row of their label. Empty (with
    the columns) when the block has no calibration, e.g. a run scored before it existed."""
    cal = _block(block, "calibration", "binning")
    if not cal or "per_label" not in cal:
        return pd.DataFrame(columns=list(CALIBRATION_COLUMNS))
    n_bins = int(cal.get("binning", {}).get("n_bins", N_BINS))
    rows = []
    for label, m in cal["per_label"].items():
        for k in range(n_bins):
            rows.append({"label": label, "brier": _nan(m.get("brier")), "ece": _nan(m.get("ece")), "bin": k,
                         "bin_lo": k / n_bins, "bin_hi": (k + 1) / n_bins, "n": int(m["n"][k]),
                         "mean_score": _nan(m["mean_score"][k]), "frac_pos": _nan(m["frac_pos"][k])})
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)
