"""The scored part of a ``metrics.json``: :func:`split_metrics` (label set, val and test blocks, the test
block with its ``calibration``, ``subgroups`` and ``expert`` blocks), the one function every run's numbers come
from, whether the model was trained here or its predictions were made elsewhere (``cxr-bench evaluate``).

:func:`score_run` is what a run's three writers (training, re-scoring a checkpoint, ``cxr-bench evaluate``) call
when a run completes: it writes the predictions and the test set's bootstrap replicates that the comparisons read
back, and returns the metrics.

``metrics["test"].update(extra_metrics(test_predictions, val_predictions, test_metadata, ...))`` adds them next
to the AUC block of :func:`.roc.summarize`; :func:`.calibration.calibration_table`,
:func:`.subgroups.subgroup_table` and :func:`.subgroups.underdiagnosis_table` read them back as tables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import RunConfig
from ..utils.io import sha256_file
from .calibration import calibration_block, calibration_table
from .expert import expert_block
from .paired import save_replicates
from .predictions import Predictions, write_predictions
from .roc import SeedLike, summarize
from .subgroups import (
    bundled_metadata,
    has_finding,
    no_finding_threshold,
    subgroup_block,
    subgroup_table,
    underdiagnosis_table,
)

log = logging.getLogger(__name__)

__all__ = ["BLOCK_TABLES", "REPLICATES_NAME", "eval_settings", "extra_metrics", "score_run", "split_metrics"]

# Beside predictions/test.csv: its per-label AUC under the paired comparisons' default patient bootstrap.
REPLICATES_NAME = "test.replicates.npz"


# The readers of a split block's ``calibration`` and ``subgroups`` entries, by name: the leaderboard and the
# reports name the table they want.
BLOCK_TABLES: dict[str, Callable[[Mapping[str, Any]], pd.DataFrame]] = {
    "calibration_table": calibration_table,
    "subgroup_table": subgroup_table,
    "underdiagnosis_table": underdiagnosis_table,
}


def extra_metrics(pred: Predictions, val: Predictions | None = None, metadata: pd.DataFrame | None = None, *,
                  val_metadata: pd.DataFrame | None = None, n_bootstrap: int = 1000, level: float = 0.95,
                  seed: SeedLike = 0, predictions_sha256: str | None = None) -> dict[str, Any]:
    """``{"calibration": ..., "subgroups": ..., "expert": ...}`` for one split's predictions (JSON types only).

    ``expert`` (:func:`.expert.expert_block`) scores the images the Google 2019 expert labels cover, with
    its own fixed bootstrap, tagged with ``predictions_sha256`` (the sha256 of the predictions file written
    for ``pred``): the leaderboard and the reports read it back instead of re-reading the file.

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
        "expert": expert_block(pred, predictions_sha256=predictions_sha256),
    }


def split_metrics(test: Predictions, val: Predictions | None, test_metadata: pd.DataFrame | None, *,
                  val_metadata: pd.DataFrame | None = None, label_set: str, predictions_sha256: str | None = None, threshold_method: str = "youden", n_bootstrap: int = 1000, level: float = 0.95,
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
    out["test"].update(extra_metrics(test, val, test_metadata, val_metadata=val_metadata, n_bootstrap=n_bootstrap,
                                     level=level, seed=seed, predictions_sha256=predictions_sha256))
    return out


def score_run(run_dir: str | os.PathLike, test: Predictions, val: Predictions | None,
              test_metadata: pd.DataFrame | None, *, val_metadata: pd.DataFrame | None = None, label_set: str,
              **settings: Any) -> dict[str, Any]:
    """What a run's predictions determine, computed once when it completes: writes
    ``predictions/test.csv`` (and ``val.csv``), then ``predictions/test.replicates.npz`` (each label's AUC
    on the full test set and on the patient resamples that ``compare --ablations`` / ``--pair`` and the
    reports draw by default, tagged with the test file's sha256: :func:`.paired.save_replicates`), and
    returns :func:`split_metrics` (``settings``: its keyword arguments, e.g. :func:`eval_settings`) for the
    caller to complete and write as ``metrics.json``."""
    pred_dir = Path(run_dir) / "predictions"
    for name, pred in (("val", val), ("test", test)):
        if pred is not None:
            write_predictions(pred_dir / f"{name}.csv", list(pred.images), list(pred.patient_ids), pred.y_true,
                              pred.y_prob, pred.labels)
    sha = sha256_file(pred_dir / "test.csv")
    save_replicates(pred_dir / REPLICATES_NAME, test.y_true, test.y_prob, test.patient_ids, test.labels,
                    model_key=sha)
    return split_metrics(test, val, test_metadata, val_metadata=val_metadata, label_set=label_set,
                         predictions_sha256=sha, **settings)


def eval_settings(cfg: RunConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`split_metrics` that a run's config chooses (its ``eval`` and ``seed``)."""
    e = cfg.eval
    return {"threshold_method": e.threshold, "n_bootstrap": e.bootstrap, "level": e.ci_level, "seed": cfg.seed}
