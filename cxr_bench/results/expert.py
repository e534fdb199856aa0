"""The expert-label block of each run, read back from its metrics.json (recomputed only when missing or stale),
as the leaderboard's ``expert_*`` columns and the reports' table. What is scored and how the labels map is
:mod:`cxr_bench.metrics.expert`'s docstring.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pandas as pd

from ..metrics.expert import (
    EXPERT_MAPPING,
    EXPERT_TARGETS,
    ExpertResult,
    evaluate_expert,
    expert_labels,
    expert_results_from_block,
)
from .runs import RunRecord

log = logging.getLogger(__name__)

__all__ = ["EXPERT_CI_COLUMNS", "EXPERT_COLUMNS", "EXPERT_MAPPING", "EXPERT_TABLE_COLUMNS", "EXPERT_TARGETS",
           "evaluate_expert", "expert_columns", "expert_labels", "expert_results", "expert_table"]

# Leaderboard columns, in order.
EXPERT_COLUMNS: tuple[str, ...] = ("expert_n",) + tuple(
    col for t in EXPERT_TARGETS
    for col in (f"expert_pos_{t}", f"expert_auc_{t}", f"nih_pos_{t}_same_images", f"nih_auc_{t}_same_images")
)
# Patient-bootstrap intervals of the expert-label AUCs; :func:`expert_columns` fills them as well.
EXPERT_CI_COLUMNS: tuple[str, ...] = tuple(f"expert_auc_{t}_ci_{end}" for t in EXPERT_TARGETS for end in ("lo", "hi"))


def expert_results(rec: RunRecord, split: str = "test") -> list[ExpertResult]:
    """:func:`evaluate_expert` of the run's predictions: read from ``metrics.json`` (``<split>.expert``,
    written when the run completed) while it matches the predictions file's sha256, computed from the file
    otherwise. What the leaderboard and the reports call; the file is read only when needed."""
    try:
        block = (rec.metrics.get(split) or {}).get("expert")
    except Exception:  # noqa: BLE001 - an unreadable metrics.json: recompute from the predictions
        block = None
    if block is not None:
        stored = expert_results_from_block(block, rec.predictions_sha256(split))
        if stored is not None:
            return stored
    return evaluate_expert(rec.predictions(split))


def expert_columns(rec: RunRecord, split: str = "test") -> dict[str, Any]:
    """The leaderboard's expert-label columns for one run (NaN where no image is covered)."""
    row: dict[str, Any] = {c: math.nan for c in EXPERT_COLUMNS + EXPERT_CI_COLUMNS}
    row["expert_n"] = 0
    if not rec.predictions_path(split).is_file():
        log.warning("%s: no %s predictions; expert-label columns left empty", rec.run_dir, split)
        return row
    results = expert_results(rec, split)
    for r in results:
        row["expert_n"] = max(int(row["expert_n"]), r.n)
        row[f"expert_pos_{r.target}"] = r.expert_pos
        row[f"expert_auc_{r.target}"] = r.expert_auc
        row[f"nih_pos_{r.target}_same_images"] = r.nih_pos
        row[f"nih_auc_{r.target}_same_images"] = r.nih_auc
        row[f"expert_auc_{r.target}_ci_lo"], row[f"expert_auc_{r.target}_ci_hi"] = r.expert_ci
    return row


def expert_table(runs: list[RunRecord], split: str = "test") -> pd.DataFrame:
    """Long table: one row per (run, expert target): n, patients, positives and AUC under each label source
    with its patient-bootstrap interval, and the paired interval of NIH minus expert
    (:data:`EXPERT_TABLE_COLUMNS`)."""
    rows = []
    for rec in runs:
        if not rec.predictions_path(split).is_file():
            continue
        for r in expert_results(rec, split):
            rows.append({
                "suite": rec.suite, "run_id": rec.run_id, "backbone": rec.cfg("model.backbone"),
                "target": r.target, "scored_from": "max(" + ", ".join(r.members) + ")", "n": r.n,
                "n_patients": r.n_patients, "expert_pos": r.expert_pos, "nih_pos": r.nih_pos,
                "expert_auc": r.expert_auc, "expert_ci_lo": r.expert_ci[0], "expert_ci_hi": r.expert_ci[1],
                "nih_auc": r.nih_auc, "nih_ci_lo": r.nih_ci[0], "nih_ci_hi": r.nih_ci[1],
                "nih_minus_expert": r.nih_auc - r.expert_auc, "nih_minus_expert_ci_lo": r.difference_ci[0],
                "nih_minus_expert_ci_hi": r.difference_ci[1],
            })
    return pd.DataFrame(rows, columns=list(EXPERT_TABLE_COLUMNS))


EXPERT_TABLE_COLUMNS = (
    "suite", "run_id", "backbone", "target", "scored_from", "n", "n_patients", "expert_pos", "nih_pos", "expert_auc",
    "expert_ci_lo", "expert_ci_hi", "nih_auc", "nih_ci_lo", "nih_ci_hi", "nih_minus_expert", "nih_minus_expert_ci_lo",
    "nih_minus_expert_ci_hi",
)
