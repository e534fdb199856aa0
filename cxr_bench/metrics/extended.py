"""The scored part of a ``metrics.json``: :func:`split_metrics` (label set, val and test blocks, the test
block with its ``calibration`` and ``subgroups``), the one function every run's numbers come from, whether
the model was trained here or its predictions were made elsewhere (``cxr-bench evaluate``).

``metrics["test"].update(extra_metrics(test_predictions, thresholds, test_metadata, ...))`` adds calibration
and subgroups next to the AUC block of :func:`.roc.summarize`; :func:`.calibration.calibration_table`,
:func:`.subgroups.subgroup_table` and :func:`.subgroups.underdiagnosis_table` read them back as tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..config import RunConfig
from .calibration import calibration_block, calibration_table
from .predictions import Predictions
from .roc import SeedLike, summarize
from .subgroups import bundled_metadata, subgroup_block, subgroup_table, underdiagnosis_table

log = logging.getLogger(__name__)

__all__ = ["eval_settings", "extra_metrics", "split_metrics", "thresholds_of"]


# The readers of a split block's ``calibration`` and ``subgroups`` entries, by name: the leaderboard and the
# reports name the table they want.
BLOCK_TABLES: dict[str, Callable[[Mapping[str, Any]], pd.DataFrame]] = {
    "calibration_table": calibration_table,
    "subgroup_table": subgroup_table,
    "underdiagnosis_table": underdiagnosis_table,
}


def thresholds_of(split_block: Mapping[str, Any], labels: Sequence[str]) -> list[float | None]:
    """The validation-chosen thresholds of a :func:`.roc.summarize` block, in ``labels`` order."""
    per_label = split_block.get("per_label") or {}
    return [(per_label.get(lab) or {}).get("threshold") for lab in labels]


def extra_metrics(pred: Predictions, thresholds: Sequence[float | None] | Mapping[str, Any] | None,
                  metadata: pd.DataFrame | None = None, *, n_bootstrap: int = 1000, level: float = 0.95,
                  seed: SeedLike = 0, threshold_method: str | None = None) -> dict[str, Any]:
    """``{"calibration": ..., "subgroups": ...}`` for one split's predictions (JSON types only).

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
    }


def split_metrics(test: Predictions, val: Predictions | None, test_metadata: pd.DataFrame | None, *,
                  label_set: str, threshold_method: str = "youden", n_bootstrap: int = 1000, level: float = 0.95,
                  seed: int = 0) -> dict[str, Any]:
    """``{"label_set", "labels", "val", "test"}`` of a run's ``metrics.json`` (JSON types only).

    Thresholds are tuned on ``val``: the val block reports them in-sample, the test block out of sample.
    Without ``val`` (predictions made elsewhere, test images only) the ``val`` key is left out and the test
    block has no thresholds, sensitivity, specificity or underdiagnosis rates rather than ones tuned on the
    images they are reported on.
    """
    common: dict[str, Any] = dict(threshold_method=threshold_method, n_bootstrap=n_bootstrap, level=level,
                                  seed=seed)
    out: dict[str, Any] = {"label_set": label_set, "labels": list(test.labels)}
    if val is not None:
        out["val"] = summarize(val, val=val, split="val", **common)
    out["test"] = summarize(test, val=val, split="test", **common)
    out["test"].update(extra_metrics(test, out["test"], test_metadata, n_bootstrap=n_bootstrap, level=level,
                                     seed=seed))
    return out


def eval_settings(cfg: RunConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`split_metrics` that a run's config chooses (its ``eval`` and ``seed``)."""
    e = cfg.eval
    return {"threshold_method": e.threshold, "n_bootstrap": e.bootstrap, "level": e.ci_level, "seed": cfg.seed}
