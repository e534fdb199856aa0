"""The ``calibration`` and ``subgroups`` blocks of a ``metrics.json`` split, in one call for the trainer.

``metrics["test"].update(extra_metrics(test_predictions, val_predictions, test_metadata, ...))`` adds them next
to the AUC block of :func:`.roc.summarize`; :func:`.calibration.calibration_table`,
:func:`.subgroups.subgroup_table` and :func:`.subgroups.underdiagnosis_table` read them back as tables.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from .calibration import calibration_block
from .predictions import Predictions
from .roc import SeedLike
from .subgroups import bundled_metadata, has_finding, no_finding_threshold, subgroup_block

log = logging.getLogger(__name__)

__all__ = ["extra_metrics"]


def extra_metrics(pred: Predictions, val: Predictions | None = None, metadata: pd.DataFrame | None = None, *,
                  val_metadata: pd.DataFrame | None = None, n_bootstrap: int = 1000, level: float = 0.95,
                  seed: SeedLike = 0) -> dict[str, Any]:
    """``{"calibration": ..., "subgroups": ...}`` for one split's predictions (JSON types only).

    ``val``: the validation predictions of the same run, on which the one "No Finding" operating point of
    the underdiagnosis rate is chosen (:func:`.subgroups.no_finding_threshold`); None leaves the
    underdiagnosis records NaN with a reason. ``metadata`` / ``val_metadata``: tables with ``image,
    finding_labels, sex, age, view`` covering ``pred.images`` / ``val.images`` (the datasets' ``.csv``);
    None reads the bundled full NIH metadata, which covers every NIH image name.
    """
    meta = bundled_metadata() if metadata is None else metadata
    threshold = None
    if val is not None:
        vmeta = bundled_metadata() if val_metadata is None else val_metadata
        threshold = no_finding_threshold(has_finding(vmeta, val.images), val.y_prob)
    return {
        "calibration": calibration_block(pred.y_true, pred.y_prob, pred.labels),
        "subgroups": subgroup_block(pred, meta, threshold, n_bootstrap=n_bootstrap, level=level, seed=seed),
    }
