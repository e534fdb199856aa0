"""The proof that the clustered tests are honest: on test sets clustered like the official one and two
configurations with the same true AUC, they reject at 5% about 5% of the time; image-level DeLong does not.

Why it is slow (about 40 s of CPU): the claim is about the official test set's structure (2,797 patients,
1 to 184 images each), and a reduced set with fewer patients over-weights the few patients with a hundred
images, which is exactly what makes clustered variances optimistic. So every simulated set here has the
official test set's size; 400 of them put a 5% rate within about +-2.2% (two Monte Carlo SEs).
``benchmarks/bench_metrics.py`` runs more sets and more designs and commits the rates.
"""

from __future__ import annotations

import numpy as np
import pytest

from cxr_bench.metrics.simulation import NullScenario, official_test_cluster_sizes, rejection_rates, simulate_null_set


def test_simulated_sets_copy_the_official_clustering():
    sizes = official_test_cluster_sizes()
    assert sizes.size == 2797 and sizes.sum() == 25596 and sizes.max() == 184
    y, a, b, patient = simulate_null_set(np.random.default_rng(0), NullScenario("x", n_patients=50))
    assert len(a) == len(b) == 1 and y.shape == a[0].shape == patient.shape
    assert np.bincount(patient).min() >= 1 and 0.05 < y.mean() < 0.3


@pytest.mark.slow
def test_clustered_tests_hold_their_level_and_image_level_delong_does_not():
    r = rejection_rates(NullScenario("official test set", n_patients=2797), 400, n_bootstrap=200, seed=0)
    assert 0.03 <= r["reject_bootstrap"] <= 0.07, r
    assert 0.03 <= r["reject_clustered"] <= 0.07, r
    assert r["reject_delong_image_level"] > 0.15, r
