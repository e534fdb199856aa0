"""One spelling of labels, and which runs are at chance (listed, not ranked)."""

from __future__ import annotations

import math

from cxr_bench.data.labels import CHESTXRAY14
from cxr_bench.reports.formatting import at_chance, label_name


def test_label_names_are_spelled_one_way():
    assert label_name("Pleural_Thickening") == "Pleural Thickening" and label_name("mean") == "MEAN"
    assert all("_" not in label_name(lab) for lab in CHESTXRAY14)
    assert label_name("airspace_opacity") == "airspace opacity"


def test_a_run_is_at_chance_when_its_interval_reaches_one_half():
    assert at_chance(0.9, 0.45) and at_chance(0.52, 0.5)
    assert not at_chance(0.6, 0.51)
    assert at_chance(0.5, math.nan) and not at_chance(0.7, None)  # no interval: the mean decides
