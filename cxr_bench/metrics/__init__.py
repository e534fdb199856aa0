"""Metrics: ROC AUC with patient-level bootstrap intervals, DeLong's test, Obuchowski's clustered test,
paired comparisons with Holm's correction, calibration, subgroups, operating points, the predictions CSV,
and the box math of weakly-supervised localization.

See docs/architecture.md ("metrics") for the contract; :func:`summarize` builds a ``metrics.json`` split and
:func:`extra_metrics` its ``calibration`` and ``subgroups`` blocks.
"""

from .calibration import N_BINS, brier_score, calibration_block, calibration_table, expected_calibration_error
from .clustered import ClusteredCovariance, ClusteredTestResult, clustered_auc_covariance, clustered_auc_test
from .delong import (
    AucVariance,
    DeLongResult,
    delong_auc_variance,
    delong_per_label,
    delong_test,
)
from .extended import extra_metrics
from .localization import (
    IOBB_THRESHOLDS,
    IOU_THRESHOLDS,
    heatmap_to_boxes,
    iobb,
    iou,
    localization_accuracy,
    localization_table,
    pairwise_overlap,
)
from .paired import PairedBootstrap, holm, paired_bootstrap, paired_comparison
from .predictions import Predictions, read_predictions, write_predictions
from .roc import (
    THRESHOLD_METHODS,
    BootstrapResult,
    auprc,
    bootstrap_auc,
    choose_thresholds,
    mean_defined,
    per_label_auc,
    resample_groups,
    sens_spec,
    summarize,
    summary_table,
)
from .subgroups import subgroup_block, subgroup_table, underdiagnosis_table

__all__ = [
    "IOBB_THRESHOLDS",
    "IOU_THRESHOLDS",
    "THRESHOLD_METHODS",
    "AucVariance",
    "BootstrapResult",
    "DeLongResult",
    "Predictions",
    "auprc",
    "bootstrap_auc",
    "choose_thresholds",
    "delong_auc_variance",
    "delong_per_label",
    "delong_test",
    "heatmap_to_boxes",
    "iobb",
    "iou",
    "localization_accuracy",
    "localization_table",
    "mean_defined",
    "pairwise_overlap",
    "per_label_auc",
    "read_predictions",
    "resample_groups",
    "sens_spec",
    "summarize",
    "summary_table",
    "write_predictions",
    "N_BINS",
    "brier_score",
    "calibration_block",
    "calibration_table",
    "expected_calibration_error",
    "ClusteredCovariance",
    "ClusteredTestResult",
    "clustered_auc_covariance",
    "clustered_auc_test",
    "extra_metrics",
    "PairedBootstrap",
    "holm",
    "paired_bootstrap",
    "paired_comparison",
    "subgroup_block",
    "subgroup_table",
    "underdiagnosis_table",
]
