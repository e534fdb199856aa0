"""Brier score and ECE against a hand computation and scikit-learn; the reliability table reader."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from cxr_bench.metrics import brier_score, calibration_block, calibration_table, expected_calibration_error
from cxr_bench.metrics.calibration import CALIBRATION_COLUMNS, N_BINS, reliability_bins


def test_hand_example():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.1, 0.9, 0.5, 0.5])
    # Brier: (0.01 + 0.01 + 0.25 + 0.25) / 4
    assert brier_score(y, p)[0] == pytest.approx(0.13)
    # 15 bins: 0.1 -> bin 1, 0.9 -> bin 13, 0.5 -> bin 7 (twice).
    # ECE = 1/4 |0 - 0.1| + 1/4 |1 - 0.9| + 2/4 |0.5 - 0.5| = 0.05
    assert expected_calibration_error(y, p)[0] == pytest.approx(0.05)
    n, mean_score, frac_pos = reliability_bins(y, p)
    assert n[0].tolist() == [0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0]
    assert mean_score[0, 7] == pytest.approx(0.5) and frac_pos[0, 13] == 1.0 and math.isnan(frac_pos[0, 0])


def test_edges_go_to_the_first_and_last_bin():
    n, _, _ = reliability_bins(np.array([0, 1, 1]), np.array([0.0, 1.0, 14.5 / 15]))
    assert n[0, 0] == 1 and n[0, 14] == 2 and n.sum() == 3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_bins(np.array([1]), np.array([1.2]))


def test_brier_equals_sklearn_and_perfect_calibration_has_small_ece():
    rng = np.random.default_rng(0)
    p = rng.random((20000, 3))
    y = (rng.random(p.shape) < p).astype(int)  # calibrated by construction
    for j in range(3):
        assert brier_score(y, p)[j] == pytest.approx(brier_score_loss(y[:, j], p[:, j]), abs=1e-12)
    assert (expected_calibration_error(y, p) < 0.02).all()
    overconfident = np.clip((p - 0.5) * 3 + 0.5, 0, 1)
    assert (expected_calibration_error(y, overconfident) > 0.1).all()


def test_block_is_json_and_table_round_trips():
    rng = np.random.default_rng(1)
    p = rng.random((200, 2))
    y = (rng.random(p.shape) < 0.3).astype(int)
    block = calibration_block(y, p, ["A", "B"])
    json.dumps(block, allow_nan=False)
    assert block["binning"]["n_bins"] == N_BINS
    t = calibration_table({"per_label": {}, "calibration": block})  # a split block
    assert list(t.columns) == list(CALIBRATION_COLUMNS) and len(t) == 2 * N_BINS
    a = t[t["label"] == "A"]
    assert (a["brier"] == brier_score(y, p)[0]).all() and a["n"].sum() == 200
    assert a["bin_lo"].iloc[3] == pytest.approx(3 / 15) and a["bin_hi"].iloc[-1] == pytest.approx(1.0)
    assert calibration_table(block).equals(t)  # the calibration block itself
    empty = calibration_table({"per_label": {"A": {"auc": 0.7}}})  # a metrics.json from before calibration
    assert empty.empty and list(empty.columns) == list(CALIBRATION_COLUMNS)
