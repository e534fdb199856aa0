"""Null simulation: do the paired tests of :mod:`.paired` reject 5% of the time when nothing differs?

Each simulated test set copies the clustering of the official ChestX-ray14 test split: patients are drawn
with replacement from its 2,797 patients' image counts (1 to 184 images, mean 9.2; read from the bundled
metadata), so a small set has the same mix of one-image patients and patients with a hundred follow-ups.
For patient ``i`` and image ``j``:

- truth: ``y_ij = 1[alpha + z_i + e_ij > 0]`` with ``z_i, e_ij ~ N(0, 1)``: a patient's images share a
  disease propensity (prevalence ``Phi(alpha / sqrt 2)``, 15% by default);
- model ``m``: ``s_ij = mu_m y_ij + u_i + v_im + c_ij + d_ijm`` with ``u_i ~ N(0, su^2)`` (patient
  appearance, seen by every model), ``v_im ~ N(0, sv^2)`` (how model ``m`` happens to treat patient
  ``i``), ``c_ij ~ N(0, sc^2)`` (the image, seen by every model) and ``d_ijm ~ N(0, sd^2)``.

Both configurations draw their models from the same distribution, so their true AUCs are equal and every
rejection is a false positive. ``v_im`` makes one model's errors cluster by patient, which is what an
image-level test ignores. ``mu_m = mu + tau_m`` with ``tau_m ~ N(0, seed_sd^2)`` adds training variance:
with ``seed_sd > 0`` two trained models of the *same* configuration differ in true AUC, and a test that
ignores seeds compares two particular models rather than two configurations.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .paired import _contrast_tests, paired_bootstrap

__all__ = ["NullScenario", "official_test_cluster_sizes", "rejection_rates", "simulate_null_set"]


@lru_cache(maxsize=1)
def official_test_cluster_sizes() -> np.ndarray:
    """Images per patient of the official test split (2,797 patients, 25,596 images), bundled metadata."""
    from ..data.bundled import full_metadata_root
    from ..data.metadata import read_data_entry, read_split_list

    root = full_metadata_root()
    meta = read_data_entry(root / "Data_Entry_2017_v2020.csv.gz")
    test = meta[meta["image"].isin(set(read_split_list(root / "test_list.txt")))]
    sizes = test.groupby("patient_id").size().to_numpy()
    sizes.setflags(write=False)
    return sizes


@dataclass(frozen=True)
class NullScenario:
    """One simulated design: ``n_patients`` per test set, ``seeds`` models per configuration."""

    name: str
    n_patients: int = 300
    seeds: int = 1
    prevalence: float = 0.15
    mu: float = 1.2
    su: float = 0.5
    sv: float = 0.7
    sc: float = 0.5
    sd: float = 0.5
    seed_sd: float = 0.0


def simulate_null_set(rng: np.random.Generator, scenario: NullScenario, sizes: np.ndarray | None = None
                      ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
    """``(y (N,), scores_a [seeds x (N,)], scores_b [...], patient (N,))`` of one null test set."""
    sizes = official_test_cluster_sizes() if sizes is None else sizes
    sc = scenario
    per_patient = rng.choice(sizes, size=sc.n_patients, replace=True)
    patient = np.repeat(np.arange(sc.n_patients), per_patient)
    n = patient.size
    alpha = math.sqrt(2.0) * stats.norm.ppf(sc.prevalence)
    y = (alpha + rng.normal(size=sc.n_patients)[patient] + rng.normal(size=n) > 0).astype(np.int8)
    shared = sc.su * rng.normal(size=sc.n_patients)[patient] + sc.sc * rng.normal(size=n)

    def model() -> np.ndarray:
        mu = sc.mu + sc.seed_sd * rng.normal()
        return mu * y + shared + sc.sv * rng.normal(size=sc.n_patients)[patient] + sc.sd * rng.normal(size=n)

    return y, [model() for _ in range(sc.seeds)], [model() for _ in range(sc.seeds)], patient


def _null_pvalues(y: np.ndarray, a: list[np.ndarray], b: list[np.ndarray], patient: np.ndarray, n_bootstrap: int,
                  seed: int, seeds: bool) -> dict[str, float]:
    """The p-values :func:`.paired.paired_comparison` reports for one label, without building its table."""
    t = y.astype(bool)
    boot = paired_bootstrap(t, a, b, patient, n=n_bootstrap, seed=seed, show_progress=False)
    p_cl, p_dl = _contrast_tests(t, a, b, patient, int(patient.max()) + 1, 0.95)
    out = {"p_bootstrap": boot.labels[0].p, "p_clustered": p_cl, "p_delong_image_level": p_dl}
    if seeds:
        out["p_bootstrap_patients_only"] = paired_bootstrap(t, a, b, patient, n=n_bootstrap, seed=seed,
                                                            seed_variance=False, show_progress=False).labels[0].p
    return out


def rejection_rates(scenario: NullScenario, n_sets: int = 1000, *, n_bootstrap: int = 200, alpha: float = 0.05,
                    seed: int = 0) -> dict[str, Any]:
    """Fraction of ``n_sets`` null test sets on which each test rejects at ``alpha`` (one label per set).

    Also returns the Monte Carlo standard error of a 5% rate, the design's size and the wall time. With
    several seeds the ``p_bootstrap_patients_only`` column resamples patients but not seeds (what a
    one-level bootstrap of the seed means would do), to show what ignoring training variance costs.
    """
    rng = np.random.default_rng(seed)
    sizes = official_test_cluster_sizes()
    keys = ["p_bootstrap", "p_clustered", "p_delong_image_level"]
    if scenario.seeds > 1:
        keys.append("p_bootstrap_patients_only")
    rejected = {k: 0 for k in keys}
    n_images = []
    t0 = time.perf_counter()
    for _ in range(n_sets):
        y, a, b, patient = simulate_null_set(rng, scenario, sizes)
        n_images.append(y.size)
        boot_seed = int(rng.integers(2**31))
        p = _null_pvalues(y, a, b, patient, n_bootstrap, boot_seed, scenario.seeds > 1)
        for k in keys:
            rejected[k] += bool(p[k] < alpha)
    out: dict[str, Any] = {
        "scenario": scenario.name, "n_sets": n_sets, "n_patients": scenario.n_patients,
        "mean_images": float(np.mean(n_images)), "seeds_per_side": scenario.seeds, "seed_sd": scenario.seed_sd,
        "n_bootstrap": n_bootstrap, "alpha": alpha,
    }
    for k in keys:
        out[f"reject_{k.removeprefix('p_')}"] = rejected[k] / n_sets
    out["mc_se_at_5pct"] = math.sqrt(alpha * (1 - alpha) / n_sets)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def rejection_table(scenarios: list[NullScenario], n_sets: int = 1000, **kwargs: Any) -> pd.DataFrame:
    return pd.DataFrame([rejection_rates(s, n_sets, **kwargs) for s in scenarios])
