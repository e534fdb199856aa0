"""Subgroup performance: per-label AUC by sex, age band and view position, and underdiagnosis by subgroup.

The NIH metadata gives every image the patient's sex (``M``/``F``), age in years and the view position
(``PA``/``AP``). For each attribute the test images are split into groups (age bands :data:`AGE_BANDS`)
and, per group and label:

- ``auc`` with a 95% **patient-bootstrap** interval. One set of resampled patients serves every group,
  label and attribute (:func:`.roc.resample_groups` over all test patients, unstratified): a group's AUC on
  a resample uses that group's images of the drawn patients, so the number of patients in a group varies
  from resample to resample as it would in a new test set, and one patient's images may sit in two groups
  (a patient imaged both PA and AP, or across an age boundary) without breaking the pairing.
- ``gap`` = AUC(group) - AUC(reference group), with the percentile interval of the same difference on the
  same resamples. The reference is the attribute's largest group (most images; on the official test set
  ``M``, ``AP`` and ``40-59``); the reference's own row has no gap.
- Fewer than 2 positive or 2 negative images in a group: ``auc`` NaN and a ``reason``, never 0.5.

**Underdiagnosis**, as Seyyed-Kalantari et al. 2021 define it ("Underdiagnosis bias of artificial
intelligence algorithms applied to chest radiographs in under-served patient populations", Nature Medicine
27:2176): the false-positive rate of the "No Finding" call, at one operating point.

- an image **has a finding** when the NIH metadata gives it any of the 14 labels (its ``finding_labels``
  is not "No Finding"), whatever the run's label set: an image with only Hernia has a finding for a
  ChestX-ray8 model too, which cannot see it;
- the model's **"No Finding" score** is ``1 - max_j p_j`` over its labels (our models have no "No
  Finding" output; it is certain of "no finding" only when it is certain of no label), and it **calls an
  image normal** when that score is at least one threshold, chosen on the validation split to maximise the
  F1 score of the "No Finding" call (:func:`no_finding_threshold`, the paper's rule);
- the **underdiagnosis rate** of a group is (images with a finding that the model calls normal) / (images
  with a finding), with the same patient-bootstrap interval and gap to the reference group as the AUC.
  A group with fewer than 2 images with a finding, or a run without a validation-chosen threshold, gets
  NaN and a reason.

Everything here describes one trained model on one test set: the intervals cover test-set sampling of
patients, not training randomness.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from ..errors import MetadataError
from .calibration import _block, _nan
from .clustered import cluster_index
from .predictions import Predictions
from .roc import (
    SeedLike,
    _counts,
    _json_float,
    _json_pair,
    _weighted_auc,
    count_blocks,
    percentile_ci,
    resample_groups,
)

log = logging.getLogger(__name__)

__all__ = ["AGE_BANDS", "ATTRIBUTES", "SUBGROUP_COLUMNS", "UNDERDIAGNOSIS_COLUMNS", "bundled_metadata",
           "has_finding", "no_finding_score", "no_finding_threshold", "subgroup_block", "subgroup_groups",
           "subgroup_table", "underdiagnosis_table"]

ATTRIBUTES = ("sex", "age", "view")
# (lower bound inclusive, upper bound exclusive or None, name), in years.
AGE_BANDS: tuple[tuple[int, int | None, str], ...] = (
    (0, 20, "0-19"), (20, 40, "20-39"), (40, 60, "40-59"), (60, 80, "60-79"), (80, None, "80+"),
)
SUBGROUP_COLUMNS = ("attribute", "group", "label", "auc", "ci_low", "ci_high", "n_pos", "n_neg", "reason",
                    "n_images", "n_patients", "reference", "gap", "gap_ci_low", "gap_ci_high")
UNDERDIAGNOSIS_COLUMNS = ("attribute", "group", "rate", "ci_low", "ci_high", "n_finding", "n_underdiagnosed",
                          "reason", "n_images", "n_patients", "reference", "gap", "gap_ci_low", "gap_ci_high")


@lru_cache(maxsize=1)
def bundled_metadata() -> pd.DataFrame:
    """The bundled full NIH ``Data_Entry_2017_v2020.csv`` (all 112,120 images; sex, age, view per image),
    for scoring runs whose metrics.json predates the subgroup block."""
    from ..data.bundled import full_metadata_root
    from ..data.metadata import read_data_entry

    return read_data_entry(full_metadata_root() / "Data_Entry_2017_v2020.csv.gz")


def _age_band(age: pd.Series) -> np.ndarray:
    a = pd.to_numeric(age, errors="coerce").to_numpy(dtype=np.float64)
    out = np.full(a.shape, "unknown", dtype=object)
    for lo, hi, name in AGE_BANDS:
        out[(a >= lo) & ((a < hi) if hi is not None else np.isfinite(a))] = name
    return out


def subgroup_groups(metadata: pd.DataFrame, images: Sequence[str] | np.ndarray) -> pd.DataFrame:
    """``sex``, ``age`` (band name) and ``view`` of each of ``images``, in that order.

    ``metadata`` has an ``image`` column and ``sex``, ``age``, ``view`` (what
    :func:`cxr_bench.data.metadata.read_data_entry` returns, or a dataset's ``.csv``).
    """
    rows = _metadata_rows(metadata, images, ATTRIBUTES)
    return pd.DataFrame({"sex": rows["sex"].astype(str).to_numpy(), "age": _age_band(rows["age"]),
                         "view": rows["view"].astype(str).to_numpy()})


def _metadata_rows(metadata: pd.DataFrame, images: Sequence[str] | np.ndarray, columns: Sequence[str]
                   ) -> pd.DataFrame:
    """The rows of ``metadata`` (by ``image``) for ``images``, in that order; a missing column or image is a
    MetadataError naming it."""
    missing = [c for c in ("image", *columns) if c not in metadata.columns]
    if missing:
        raise MetadataError(f"subgroup metadata has no column(s) {', '.join(missing)}; expected the columns of "
                            f"read_data_entry (image, {', '.join(columns)})")
    meta = metadata.drop_duplicates("image").set_index("image")
    pos = meta.index.get_indexer(pd.Index(list(images)))
    if (pos < 0).any():
        i = int(np.flatnonzero(pos < 0)[0])
        raise MetadataError(f"image {list(images)[i]!r} ({int((pos < 0).sum())} images in all) has no row in the "
                            "subgroup metadata; pass the Data_Entry file of the release the run used")
    return meta.iloc[pos]


def has_finding(metadata: pd.DataFrame, images: Sequence[str] | np.ndarray) -> np.ndarray:
    """``(N,)`` bool: the image has any of the NIH labels (``finding_labels`` other than "No Finding")."""
    labels = _metadata_rows(metadata, images, ("finding_labels",))["finding_labels"]

    def one(v: Any) -> bool:
        parts = [p.strip() for p in (v if isinstance(v, (list, tuple)) else str(v).split("|"))]
        return any(p and p != "No Finding" for p in parts)

    return np.array([one(v) for v in labels], dtype=bool)


def no_finding_score(y_prob: np.ndarray) -> np.ndarray:
    """The model's "No Finding" score of each image, ``1 - max_j p_j`` over its labels."""
    return 1.0 - np.asarray(y_prob, dtype=np.float64).max(axis=1)


def no_finding_threshold(finding: np.ndarray, y_prob: np.ndarray) -> float | None:
    """The threshold on :func:`no_finding_score` (call normal when ``score >= threshold``) that maximises
    the F1 score of the "No Finding" call on these (validation) images, as Seyyed-Kalantari et al. 2021
    choose it; the highest such threshold on ties; None without a normal or an abnormal image."""
    normal = ~np.asarray(finding, dtype=bool)
    if normal.all() or not normal.any():
        return None
    score = no_finding_score(y_prob)
    order = np.argsort(-score, kind="mergesort")
    s, n = score[order], normal[order]
    last = np.r_[s[1:] != s[:-1], True]  # cut after every distinct score: all ties fall on one side
    tp = np.cumsum(n)[last]
    fp = np.cumsum(~n)[last]
    f1 = 2 * tp / (2 * tp + fp + (normal.sum() - tp))
    return float(s[last][int(np.argmax(f1))])


def _group_order(attribute: str, values: np.ndarray) -> list[str]:
    present = set(values.tolist())
    if attribute == "age":
        return [name for _, _, name in AGE_BANDS if name in present] + (["unknown"] if "unknown" in present else [])
    return sorted(present)


def _midrank_auc(t: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    m = int(t.sum())
    n = t.size - m
    return float((rankdata(s)[t].sum() - m * (m + 1) / 2.0) / (m * n))


def _gap(value: float, ref_value: float, reps: np.ndarray | None, ref_reps: np.ndarray | None, is_ref: bool,
         level: float) -> dict[str, Any]:
    if is_ref or reps is None or ref_reps is None or not (math.isfinite(value) and math.isfinite(ref_value)):
        return {"gap": None, "gap_ci": None}
    return {"gap": _json_float(value - ref_value), "gap_ci": _json_pair(percentile_ci(reps - ref_reps, level))}


def subgroup_block(pred: Predictions, metadata: pd.DataFrame, normal_threshold: float | None = None, *,
                   n_bootstrap: int = 1000, level: float = 0.95, seed: SeedLike = 0) -> dict[str, Any]:
    """The ``subgroups`` block of a ``metrics.json`` split (JSON types only; see the module docstring)::

        {"attributes": {attr: [groups]}, "reference": {attr: group}, "age_bands": [...],
         "bootstrap": {...}, "auc": [records], "underdiagnosis": [records], "no_finding_threshold": t}

    ``normal_threshold``: the validation-chosen threshold on the "No Finding" score
    (:func:`no_finding_threshold`); without it the underdiagnosis records are NaN with a reason.
    ``metadata`` must give every image's ``finding_labels`` (all 14 NIH labels) besides sex, age and view.
    """
    t = pred.y_true.astype(bool)
    s = pred.y_prob
    labels = list(pred.labels)
    attrs = subgroup_groups(metadata, pred.images)
    group, n_groups = cluster_index(pred.patient_ids, t.shape[0])
    counts_t = _counts(resample_groups(n_groups, n_bootstrap, seed), n_groups)
    blocks = count_blocks(counts_t)

    thr = math.nan if normal_threshold is None else float(normal_threshold)
    has_thr = math.isfinite(thr)
    finding = has_finding(metadata, pred.images)
    called_normal = no_finding_score(s) >= thr if has_thr else np.zeros(len(t), bool)
    under = finding & called_normal

    block: dict[str, Any] = {"attributes": {}, "reference": {}, "age_bands": [name for _, _, name in AGE_BANDS],
                             "auc": [], "underdiagnosis": [],
                             "no_finding_threshold": thr if has_thr else None,
                             "finding": "any of the 14 NIH labels (metadata finding_labels)",
                             "bootstrap": {"n_resamples": int(n_bootstrap), "level": float(level), "unit": "patient",
                                           "stratified": False,
                                           "seed": int(seed) if isinstance(seed, (int, np.integer)) else None}}

    def underdiagnosis(rows: np.ndarray) -> tuple[dict[str, Any], np.ndarray | None, float]:
        n_find = int((rows & finding).sum())
        n_under = int((rows & under).sum())
        rec: dict[str, Any] = {"rate": None, "ci": None, "n_finding": n_find, "n_underdiagnosed": n_under,
                               "reason": ""}
        if not has_thr:
            rec["reason"] = "no validation-chosen No Finding threshold"
            return rec, None, math.nan
        if n_find < 2:
            rec["reason"] = f"{n_find} image(s) with a finding (needs at least 2)"
            return rec, None, math.nan
        f = np.bincount(group[rows & finding], minlength=n_groups).astype(np.float64)
        u = np.bincount(group[rows & under], minlength=n_groups).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = (u @ counts_t) / (f @ counts_t)  # per resample: weighted counts of its patients
        rate = n_under / n_find
        rec.update(rate=rate, ci=_json_pair(percentile_ci(reps, level)))
        if n_under in (0, n_find):
            rec["reason"] = (f"{n_under} of {n_find} images with a finding called normal: every resample gives "
                             "the same rate, so the interval is degenerate")
        return rec, reps, rate

    all_rows = np.ones(len(t), dtype=bool)
    rec, _, _ = underdiagnosis(all_rows)
    block["underdiagnosis"].append({"attribute": "all", "group": "all", "n_images": len(t), "n_patients": n_groups,
                                    "reference": None, **rec, "gap": None, "gap_ci": None})
    for attr in ATTRIBUTES:
        values = attrs[attr].to_numpy(dtype=object)
        order = _group_order(attr, values)
        sizes = {g: int((values == g).sum()) for g in order}
        ref = max(order, key=lambda g: (sizes[g], -order.index(g)))
        block["attributes"][attr] = order
        block["reference"][attr] = ref
        masks = {g: values == g for g in order}
        info = {g: {"n_images": sizes[g], "n_patients": int(np.unique(group[masks[g]]).size)} for g in order}

        # underdiagnosis
        ud = {g: underdiagnosis(masks[g]) for g in order}
        for g in order:
            rec, reps, rate = ud[g]
            _, ref_reps, ref_rate = ud[ref]
            block["underdiagnosis"].append({"attribute": attr, "group": g, **info[g], "reference": ref, **rec,
                                            **_gap(rate, ref_rate, reps, ref_reps, g == ref, level)})
        # per-label AUC
        for j, label in enumerate(labels):
            res: dict[str, tuple[dict[str, Any], np.ndarray | None, float]] = {}
            for g in order:
                rows = masks[g]
                res[g] = _auc_record(t[rows, j], s[rows, j], group[rows], blocks, level, n_bootstrap)
            for g in order:
                rec, reps, auc = res[g]
                _, ref_reps, ref_auc = res[ref]
                block["auc"].append({"attribute": attr, "group": g, "label": label, **info[g], "reference": ref,
                                     **rec, **_gap(auc, ref_auc, reps, ref_reps, g == ref, level)})
    return block


def _auc_record(tj: np.ndarray, sj: np.ndarray, groups: np.ndarray, blocks: Any, level: float,
                n_bootstrap: int) -> tuple[dict[str, Any], np.ndarray | None, float]:
    """One label's AUC in one subgroup, with its patient-bootstrap interval: ``(record, replicates, auc)``;
    fewer than 2 positives or negatives leave it empty with the reason."""
    n_pos, n_neg = int(tj.sum()), int((~tj).sum())
    rec: dict[str, Any] = {"auc": None, "ci": None, "n_pos": n_pos, "n_neg": n_neg, "reason": ""}
    if n_pos < 2 or n_neg < 2:
        rec["reason"] = f"{n_pos} positive and {n_neg} negative images (needs at least 2 of each)"
        return rec, None, math.nan
    auc = _midrank_auc(tj, sj)
    reps = _weighted_auc(tj, sj, groups, blocks)
    rec.update(auc=auc, ci=_json_pair(percentile_ci(reps, level)))
    dropped = int(np.isnan(reps).sum())
    if dropped:
        rec["reason"] = (f"{dropped} of {n_bootstrap} resamples had no positive or no negative image "
                         "and were left out of the interval")
    return rec, reps, auc


def _table(records: list[Mapping[str, Any]], columns: Sequence[str], value: str) -> pd.DataFrame:
    rows = []
    for r in records:
        ci = r.get("ci") or [None, None]
        gap_ci = r.get("gap_ci") or [None, None]
        row = {c: r.get(c) for c in columns}
        row.update({value: _nan(r.get(value)), "ci_low": _nan(ci[0]), "ci_high": _nan(ci[1]),
                    "gap": _nan(r.get("gap")), "gap_ci_low": _nan(gap_ci[0]), "gap_ci_high": _nan(gap_ci[1]),
                    "reason": r.get("reason") or ""})
        rows.append(row)
    return pd.DataFrame(rows, columns=list(columns))


def subgroup_table(block: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (attribute, group, label) of a split block's ``subgroups`` (or the subgroups block):
    :data:`SUBGROUP_COLUMNS`. Empty (with the columns) when the block has none."""
    sub = _block(block, "subgroups", "attributes")
    return _table(list(sub.get("auc", [])) if sub else [], SUBGROUP_COLUMNS, "auc")


def underdiagnosis_table(block: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (attribute, group) of the underdiagnosis records (the first row: all test images):
    :data:`UNDERDIAGNOSIS_COLUMNS`. Empty (with the columns) when the block has none."""
    sub = _block(block, "subgroups", "attributes")
    return _table(list(sub.get("underdiagnosis", [])) if sub else [], UNDERDIAGNOSIS_COLUMNS, "rate")
