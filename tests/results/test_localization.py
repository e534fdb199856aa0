"""Wang et al. 2017 Table 4 beside a run's localization table (cxr_bench.results.localization); a phantom
sanity run is never set beside the paper."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_bench.metrics.localization import BBOX_LABELS, localization_table
from cxr_bench.results.localization import localization_report_table, table4_comparison
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


def test_phantom_runs_stay_out_of_the_table4_comparison(tmp_path, store_factory):
    base = {"optim.epochs": 3, "data.image_size": 64}
    _, real = store_factory.write_run(tmp_path / "runs", "s", {**base, "data.root": "/data/nih"}, strength=1.0,
                                      n_bootstrap=5)
    _, fake = store_factory.write_run(tmp_path / "runs", "s", {**base, "model.backbone": "alexnet",
                                                               "data.root": "phantom:0"}, strength=1.0, n_bootstrap=5)
    for run_dir in (real, fake):
        store_factory.write_localization(run_dir)
    table = localization_report_table(real)
    assert table is not None and "Atelectasis (paper)" in table.columns
    assert localization_report_table(fake) is None
    assert localization_report_table(fake, include_synthetic=True) is not None
