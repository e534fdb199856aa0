"""The null simulation: its test sets are patient bootstraps of the official test split (each label at its
real prevalence and patient clustering), and on them the clustered tests hold their level where
image-level DeLong does not.

The slow test draws 1,000 of the official test split's patients per set (about 9,200 images; the full size
takes over a minute here); 300 sets put a 5% rate within about +-2.5% (two Monte Carlo SEs).
``benchmarks/bench_metrics.py`` runs every label and the seed designs and commits the rates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_bench.data.bundled import full_metadata_root
from cxr_bench.data.metadata import read_data_entry, read_split_list
from cxr_bench.metrics.paired import CONSERVATIVE_LABELS, LIBERAL_LABELS
from cxr_bench.metrics.simulation import NullScenario, official_test_set, rejection_rates, simulate_null_set


def test_simulated_sets_are_patient_bootstraps_of_the_official_test_split():
    root = full_metadata_root()
    meta = read_data_entry(root / "Data_Entry_2017_v2020.csv.gz")
    test = meta[meta["image"].isin(set(read_split_list(root / "test_list.txt")))]
    hernia = test[test["finding_labels"].str.contains("Hernia")]
    data = official_test_set()
    assert data.y.shape == (25596, 14) and data.sizes.size == 2797 and data.sizes.sum() == 25596
    j = data.labels.index("Hernia")
    assert data.y[:, j].sum() == len(hernia) == 86 and hernia["patient_id"].nunique() == 32
    rng = np.random.default_rng(0)
    y, a, b, patient = simulate_null_set(rng, NullScenario("x", n_patients=50, seeds_b=3), data)
    assert len(a) == 1 and len(b) == 3 and y.shape == a[0].shape == b[2].shape and patient.shape == (y.shape[0],)
    # Replay the draw: each simulated patient carries one official patient's images and labels, in order.
    pick = np.random.default_rng(0).integers(0, data.sizes.size, size=50)
    expected = np.concatenate([data.y[data.starts[p]:data.starts[p] + data.sizes[p]] for p in pick])
    np.testing.assert_array_equal(y, expected)
    assert np.array_equal(np.bincount(patient), data.sizes[pick])


@pytest.mark.slow
def test_clustered_tests_hold_their_level_and_image_level_delong_does_not():
    r = rejection_rates(NullScenario("1,000 official test patients", n_patients=1000), 300, n_bootstrap=100, seed=0,
                        labels=("Effusion",)).iloc[0]
    lo, hi = 0.05 - 2.5 * r["mc_se"], 0.05 + 2.5 * r["mc_se"]
    assert lo <= r["reject_bootstrap"] <= hi and lo <= r["reject_clustered"] <= hi, r.to_dict()
    assert r["reject_delong_image_level"] > 0.15, r.to_dict()


def test_committed_null_rejection_csv_is_plain_covers_every_label_and_names_the_liberal_ones():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "null_rejection.csv"
    text = path.read_text()
    assert text.startswith("git_commit,") and "\n#" not in text and not text.startswith("#")
    df = pd.read_csv(path)
    assert len(df["git_commit"].unique()) == 1 and len(df["git_commit"].iloc[0]) == 40
    assert not df["git_dirty"].any() and not df["quick"].any()
    labels = set(official_test_set().labels)
    designs = {(int(a), int(b)) for a, b in zip(df["seeds_a"], df["seeds_b"])}
    assert (1, 1) in designs and (5, 5) in designs
    for design, g in df.groupby(["seeds_a", "seeds_b"]):
        assert set(g["label"]) == labels, design
    # Every verdict-producing method is inside its band or its label is flagged (paired.LIBERAL_LABELS).
    high = df[df["reject_bootstrap"] > df["alpha"] + 2 * df["mc_se"]]
    assert LIBERAL_LABELS == pytest.approx(high.groupby("label")["reject_bootstrap"].max().round(3).to_dict())
    low = df[df["reject_bootstrap"] < df["alpha"] - 2 * df["mc_se"]]
    assert CONSERVATIVE_LABELS == pytest.approx(low.groupby("label")["reject_bootstrap"].min().round(3).to_dict())
