"""The ``calibration``, ``subgroups`` and ``expert`` blocks of a ``metrics.json`` split, in one call for the
trainer.

``metrics["test"].update(extra_metrics(test_predictions, thresholds, test_metadata, ...))`` adds them next
to the AUC block of :func:`.roc.summarize`; :func:`.calibration.calibration_table`,
:func:`.subgroups.subgroup_table` and :func:`.subgroups.underdiagnosis_table` read them back as tables.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .calibration import calibration_block
from .expert import expert_block
from .predictions import Predictions
from .roc import SeedLike
from .subgroups import bundled_metadata, subgroup_block

log = logging.getLogger(__name__)

__all__ = ["extra_metrics", "thresholds_of"]


def thresholds_of(split_block: Mapping[str, Any], labels: Sequence[str]) -> list[float | None]:
    """The validation-chosen thresholds of a :func:`.roc.summarize` block, in ``labels`` order."""
    per_label = split_block.get("per_label") or {}
    return [(per_label.get(lab) or {}).get("threshold") for lab in labels]


def extra_metrics(pred: Predictions, thresholds: Sequence[float | None] | Mapping[str, Any] | None,
                  metadata: pd.DataFrame | None = None, *, n_bootstrap: int = 1000, level: float = 0.95,
                  seed: SeedLike = 0, threshold_method: str | None = None,
                  predictions_sha256: str | None = None) -> dict[str, Any]:
    """``{"calibration": ..., "subgroups": ..., "expert": ...}`` for one split's predictions (JSON types only).

    ``expert`` (:func:`.expert.expert_block`) scores the images the Google 2019 expert labels cover, with
    its own fixed bootstrap, tagged with ``predictions_sha256`` (the sha256 of the predictions file written
    for ``pred``): the leaderboard and the reports read it back instead of re-reading the file.

    ``thresholds``: per label of ``pred`` (None where none), or the :func:`.roc.summarize` block they were
    reported in. ``metadata``: a table with ``image, sex, age, view`` covering ``pred.images`` (the
    dataset's ``.csv``); None reads the bundled full NIH metadata, which covers every NIH image name.
    """
    if isinstance(thresholds, Mapping):
        threshold_method = threshold_method or thresholds.get("threshold_method")
        thresholds = thresholds_of(thresholds, pred.labels)
    meta = bundled_metadata() if metadata is None else metadata
    return {
        "calibration": calibration_block(pred.y_true, pred.y_prob, pred.labels),
        "subgroups": subgroup_block(pred, meta, thresholds, n_bootstrap=n_bootstrap, level=level, seed=seed,
                                    threshold_method=threshold_method),
        "expert": expert_block(pred, predictions_sha256=predictions_sha256),
    }
