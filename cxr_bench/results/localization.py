"""Wang et al. 2017 Table 4 beside a run's localization accuracy: pandas only, so reports and leaderboards
read it without loading the engine.

Table 4 was measured on the paper's own ResNet-50 model and its own split of the 880 boxed images; a run
here is scored on the boxed images of its test split with its own model, so the comparison is of the
protocol, not a replication of those exact numbers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from ..errors import ConfigError, CxrBenchError
from ..metrics.localization import BBOX_LABELS

log = logging.getLogger(__name__)


def table4_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Our accuracy at T(IoBB) beside Wang et al. 2017 Table 4 (ResNet-50; their model, their split of the
    boxed images): one row per (T, label).

    Columns ``t_iobb, label, accuracy, paper, diff, n_gt``; ``paper`` is NaN where the paper has no entry.
    """
    from .references import wang2017_table4

    ours = table[table["metric"] == "iobb"][["threshold", "label", "accuracy", "n_gt"]]
    ours = ours.rename(columns={"threshold": "t_iobb"})
    try:
        ref = wang2017_table4()
    except ConfigError as e:
        log.warning("Wang et al. Table 4 not available (%s); comparison without it", e)
        ref = pd.DataFrame(columns=list(BBOX_LABELS), dtype=float)
    paper = (ref.rename_axis("t_iobb").reset_index()
             .melt(id_vars="t_iobb", var_name="label", value_name="paper"))
    paper["t_iobb"] = paper["t_iobb"].astype(float).round(4)
    ours = ours.assign(t_iobb=ours["t_iobb"].astype(float).round(4))
    out = ours.merge(paper, on=["t_iobb", "label"], how="left")
    out["diff"] = out["accuracy"] - out["paper"]
    return out[["t_iobb", "label", "accuracy", "paper", "diff", "n_gt"]].reset_index(drop=True)


def _is_synthetic(run_dir: Path) -> bool:
    from .runs import RunRecord

    try:
        return RunRecord.load(run_dir).synthetic
    except CxrBenchError:
        return False


def localization_report_table(run_dir: str | os.PathLike, *, wide: bool = True,
                              include_synthetic: bool = False) -> pd.DataFrame | None:
    """The localization table of a run beside Table 4, for leaderboards and reports; None if the run
    has no ``localization.csv`` (run ``cxr-bench localize --run-dir RUN_DIR`` first), or was tested on synthetic
    data (a phantom's planted lesions are no match for the paper's boxes) unless ``include_synthetic``.

    ``wide=True``: rows T(IoBB), columns ``<Label>`` (ours) and ``<Label> (paper)``, the layout of the
    paper's table. ``wide=False``: the long form of :func:`table4_comparison`.
    """
    path = Path(run_dir) / "localization.csv"
    if not path.is_file():
        return None
    if not include_synthetic and _is_synthetic(Path(run_dir)):
        log.info("%s was tested on synthetic data; not set beside Wang et al. Table 4", run_dir)
        return None
    long = table4_comparison(pd.read_csv(path))
    if not wide:
        return long
    ours = long.pivot(index="t_iobb", columns="label", values="accuracy")
    paper = long.pivot(index="t_iobb", columns="label", values="paper").add_suffix(" (paper)")
    cols = [c for label in BBOX_LABELS if label in ours.columns for c in (label, f"{label} (paper)")]
    return pd.concat([ours, paper], axis=1)[cols]
