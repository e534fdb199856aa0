"""Wang et al. 2017 Table 4 beside a run's localization table (cxr_bench.results.localization)."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_bench.metrics.localization import BBOX_LABELS, localization_table
from cxr_bench.results.localization import table4_comparison
from cxr_bench.results.references import wang2017_table4


def test_table4_comparison_lines_up_with_the_paper():
    gt = {lab: [np.array([[0.0, 0.0, 256.0, 256.0]])] for lab in BBOX_LABELS}
    det = {lab: [np.array([[0.0, 0.0, 128.0, 128.0]])] for lab in BBOX_LABELS}  # IoBB 1: all hit
    comp = table4_comparison(localization_table(det, gt))
    paper = wang2017_table4()
    assert len(comp) == 5 * len(BBOX_LABELS)
    row = comp[(comp["label"] == "Atelectasis") & (comp["t_iobb"] == 0.1)].iloc[0]
    assert row["paper"] == pytest.approx(float(paper.loc[0.1, "Atelectasis"]))
    assert row["diff"] == pytest.approx(1.0 - row["paper"])
    assert comp["paper"].notna().all()
