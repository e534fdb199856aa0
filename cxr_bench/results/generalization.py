"""How NIH-trained runs generalize: NIH test AUC beside external-set AUC, per label, and paired comparisons.

:func:`generalization_table` has one row per (run, external set, scored label) (:data:`GENERALIZATION_COLUMNS`):
the run's NIH test AUC with its patient-bootstrap CI (metrics.json), the same label's AUC on the external
set with its CI (``external/<dataset>/metrics.json``, :meth:`RunRecord.external_metrics`), ``drop`` = NIH AUC
- external AUC, the external image and positive counts, and ``ci_accounts_for``: what the two intervals
resample (NIH test patients; the external set's patients, reports or images, whichever it has). Neither
interval covers training randomness, and the drop itself has no interval: the two test sets are
independent samples, so a rough one is the two half-widths combined in quadrature; the honest statement
of a drop across seeds comes from several seeds (leaderboard_agg.csv).

:func:`compare_external` is the paired, clustered comparison of two runs on the same external set, exactly
as ``cxr-bench compare`` does on NIH (:func:`cxr_bench.metrics.paired.paired_comparison`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import RunStoreError
from .runs import RunRecord, iter_runs, take_rows

log = logging.getLogger(__name__)

__all__ = ["GENERALIZATION_COLUMNS", "generalization_table", "compare_external", "external_records"]

GENERALIZATION_COLUMNS = ("run_id", "dataset", "label", "nih_auc", "nih_lo", "nih_hi", "ext_auc", "ext_lo", "ext_hi",
                          "drop", "n_ext_images", "n_ext_positive", "ci_accounts_for")


def external_records(source: str | Path | Iterable[RunRecord], suite: str | None = None) -> list[RunRecord]:
    """The intact completed runs of ``source`` (a run store or records) that have external metrics."""
    recs = list(iter_runs(source, suite)) if isinstance(source, (str, Path)) else list(source)
    return [r for r in recs if r.external_datasets()]


def _pair(ci: Any) -> tuple[Any, Any]:
    return (ci[0], ci[1]) if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)


def _unit(m: dict[str, Any]) -> str:
    return str((m.get("data") or {}).get("bootstrap_unit") or "patient")


def generalization_table(source: str | Path | Iterable[RunRecord], suite: str | None = None) -> pd.DataFrame:
    """One row per (run, external set, label), :data:`GENERALIZATION_COLUMNS` (module docstring)."""
    rows = []
    for rec in external_records(source, suite):
        nih = (rec.metrics.get("test") or {}).get("per_label") or {}
        for dataset in rec.external_datasets():
            m = rec.external_metrics(dataset)
            block = m.get("test") or {}
            per_label = block.get("per_label") or {}
            accounts = (f"test-set sampling only: NIH test patients; {dataset} {_unit(m)}s "
                        f"({block.get('bootstrap', {}).get('n_resamples', '?')} resamples); not training randomness")
            for label in m.get("labels") or list(per_label):
                ext = per_label.get(label) or {}
                ref = nih.get(label) or {}
                nih_lo, nih_hi = _pair(ref.get("ci"))
                ext_lo, ext_hi = _pair(ext.get("ci"))
                a, b = ref.get("auc"), ext.get("auc")
                rows.append({"run_id": rec.run_id, "dataset": dataset, "label": label, "nih_auc": a,
                             "nih_lo": nih_lo, "nih_hi": nih_hi, "ext_auc": b, "ext_lo": ext_lo, "ext_hi": ext_hi,
                             "drop": a - b if a is not None and b is not None else None,
                             "n_ext_images": block.get("n_images"), "n_ext_positive": ext.get("n_pos"),
                             "ci_accounts_for": accounts})
    df = pd.DataFrame(rows, columns=list(GENERALIZATION_COLUMNS))
    for col in ("nih_auc", "nih_lo", "nih_hi", "ext_auc", "ext_lo", "ext_hi", "drop"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df.sort_values(["dataset", "run_id", "label"], kind="stable").reset_index(drop=True)


def compare_external(a: RunRecord, b: RunRecord, dataset: str, *, n_bootstrap: int = 1000, level: float = 0.95,
                     seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Run B - run A on ``dataset``, per shared label: the paired patient bootstrap, the clustered test and
    Holm-adjusted p-values of :func:`cxr_bench.metrics.paired.paired_comparison`, on the images both
    scored (the same set, so the same images unless one run's decoder rejected a file)."""
    from ..metrics.paired import paired_comparison

    pa, pb = a.external_predictions(dataset), b.external_predictions(dataset)
    labels = [lab for lab in pa.labels if lab in pb.labels]
    if not labels:
        raise RunStoreError(f"runs {a.run_id} and {b.run_id} share no scored label on {dataset}")
    in_b = set(pb.images)
    common = [img for img in pa.images if img in in_b]
    if not common:
        raise RunStoreError(f"runs {a.run_id} and {b.run_id} have no {dataset} image in common")
    pa, pb = take_rows(pa.select(labels), common), take_rows(pb.select(labels), common)
    if (pa.y_true != pb.y_true).any():
        raise RunStoreError(f"runs {a.run_id} and {b.run_id} disagree on the truth of {dataset}'s images "
                            "(scored from different metadata files?); score both again from the same data root")
    return paired_comparison(pa.y_true, [pa.y_prob], [pb.y_prob], pa.patient_ids, labels=labels,
                             n_bootstrap=n_bootstrap, level=level, seed=seed, alpha=alpha)
