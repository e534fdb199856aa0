"""Null simulation: do the paired tests of :mod:`.paired` reject 5% of the time when nothing differs?

Each simulated test set is a patient bootstrap of the official ChestX-ray14 test split itself (bundled
metadata: 25,596 images of 2,797 patients, 1 to 184 images each): its patients are drawn with replacement
and keep their images and their real 14 labels. So every label is tested at its real prevalence and with
its real clustering of positives by patient (Hernia: 86 positive images of 32 patients; Infiltration:
6,112 of 1,465), which is what makes the rare labels hard. For image ``j`` of patient ``i``, label ``l`` and
model ``m``, the score is

    ``s_ijlm = (mu + tau_lm) y_ijl + u_il + v_ilm + c_ijl + d_ijlm``

with ``u_il ~ N(0, su^2)`` (patient appearance, seen by every model), ``v_ilm ~ N(0, sv^2)`` (how model
``m`` happens to treat patient ``i``: the errors clustered by patient that an image-level test ignores),
``c_ijl ~ N(0, sc^2)`` (the image, seen by every model), ``d_ijlm ~ N(0, sd^2)`` and ``tau_lm ~ N(0,
seed_sd^2)`` (training variance: two trained models of the *same* configuration differ in true AUC; with
the defaults, ``seed_sd = 0.1`` is a seed-to-seed AUC sd of about 0.02). Both configurations draw their
models from the same distribution, so their true AUCs are equal and every rejection is a false positive.

A design with one seed per side and ``seed_sd > 0`` asks the configuration question of two single models:
no test can answer it (the training variance is not estimable), which is why the verdict of such a pair is
about two models (:func:`.paired.seed_note`); its row is run at ``seed_sd = 0``, where the two-model
question is the null. A 1-vs-5 design with ``seed_sd > 0`` is the one where the 1-seed side borrows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from .paired import _contrast_tests, _difference, paired_bootstrap

__all__ = ["NullScenario", "OfficialTestSet", "official_test_cluster_sizes", "official_test_set", "rejection_rates",
           "rejection_table", "simulate_null_set"]

METHODS = ("bootstrap", "clustered", "delong_image_level", "bootstrap_patients_only")


@dataclass(frozen=True)
class OfficialTestSet:
    """The official test split as the simulation draws from it: images sorted by patient."""

    labels: tuple[str, ...]
    y: np.ndarray  # (N, L) int8
    sizes: np.ndarray  # (P,) images per patient, in patient order
    starts: np.ndarray  # (P,) first row of each patient


@lru_cache(maxsize=1)
def official_test_set() -> OfficialTestSet:
    """The 25,596 images / 2,797 patients of ``test_list.txt`` with their 14 labels (bundled metadata)."""
    from ..data.bundled import full_metadata_root
    from ..data.labels import get_label_set
    from ..data.metadata import read_data_entry, read_split_list

    root = full_metadata_root()
    meta = read_data_entry(root / "Data_Entry_2017_v2020.csv.gz")
    test = meta[meta["image"].isin(set(read_split_list(root / "test_list.txt")))]
    test = test.sort_values(["patient_id", "image"], kind="mergesort")
    ls = get_label_set("chestxray14")
    y = ls.encode(test["finding_labels"]).astype(np.int8)
    sizes = test.groupby("patient_id", sort=True).size().to_numpy()
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    for a in (y, sizes, starts):
        a.setflags(write=False)
    return OfficialTestSet(tuple(ls.labels), y, sizes, starts)


def official_test_cluster_sizes() -> np.ndarray:
    """Images per patient of the official test split (2,797 patients, 25,596 images), bundled metadata."""
    return official_test_set().sizes


@dataclass(frozen=True)
class NullScenario:
    """One simulated design: ``seeds_a`` / ``seeds_b`` models per configuration on test sets of
    ``n_patients`` patients drawn from the official test split (its 2,797 by default)."""

    name: str
    n_patients: int = 2797
    seeds_a: int = 1
    seeds_b: int = 1
    mu: float = 1.2
    su: float = 0.5
    sv: float = 0.7
    sc: float = 0.5
    sd: float = 0.5
    seed_sd: float = 0.0


def simulate_null_set(rng: np.random.Generator, scenario: NullScenario, data: OfficialTestSet | None = None
                      ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
    """``(y (N, L), scores_a [seeds_a x (N, L)], scores_b [...], patient (N,))`` of one null test set."""
    data = official_test_set() if data is None else data
    sc = scenario
    pick = rng.integers(0, data.sizes.size, size=sc.n_patients)
    sizes = data.sizes[pick]
    patient = np.repeat(np.arange(sc.n_patients), sizes)
    # Row of each drawn image in the official set: its patient's first row plus its rank within the patient.
    within = np.arange(patient.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    y = data.y[np.repeat(data.starts[pick], sizes) + within]
    n, n_labels = y.shape
    shared = sc.su * rng.normal(size=(sc.n_patients, n_labels))[patient] + sc.sc * rng.normal(size=(n, n_labels))

    def model() -> np.ndarray:
        mu = sc.mu + sc.seed_sd * rng.normal(size=n_labels)
        return (mu * y + shared + sc.sv * rng.normal(size=(sc.n_patients, n_labels))[patient]
                + sc.sd * rng.normal(size=(n, n_labels)))

    return y, [model() for _ in range(sc.seeds_a)], [model() for _ in range(sc.seeds_b)], patient


def _null_pvalues(y: np.ndarray, a: list[np.ndarray], b: list[np.ndarray], patient: np.ndarray, n_bootstrap: int,
                  seed: int) -> dict[str, np.ndarray]:
    """Per label, the p-values :func:`.paired.paired_comparison` reports (and, with seeds, the bootstrap
    that ignores them), without building its table."""
    t = y.astype(bool)
    boot = paired_bootstrap(t, a, b, patient, n=n_bootstrap, seed=seed, show_progress=False)
    n_groups = int(patient.max()) + 1
    n_labels = t.shape[1]
    out = {m: np.full(n_labels, np.nan) for m in METHODS}
    for j in range(n_labels):
        tj = t[:, j]
        if min(int(tj.sum()), int((~tj).sum())) < 2:
            continue
        out["bootstrap"][j] = boot.labels[j].p
        out["clustered"][j], out["delong_image_level"][j] = _contrast_tests(
            tj, [s[:, j] for s in a], [s[:, j] for s in b], patient, n_groups, 0.95)
        # Every seed's deviation counted as test noise (the seed means bootstrapped over patients only).
        ra, rb = boot.replicates_a[:, :, j], boot.replicates_b[:, :, j]
        out["bootstrap_patients_only"][j] = _difference(
            ra.mean(axis=0, keepdims=True), rb.mean(axis=0, keepdims=True),
            np.array([boot.auc_a[j]]), np.array([boot.auc_b[j]]), 0.95).p
    return out


def rejection_rates(scenario: NullScenario, n_sets: int = 1000, *, n_bootstrap: int = 200, alpha: float = 0.05,
                    seed: int = 0, labels: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per label: the fraction of ``n_sets`` null test sets on which each test rejects at ``alpha``.

    One row per label of the official test set (``labels``: a subset), with its positive images and
    positive patients in the official split, the Monte Carlo standard error of a rate of ``alpha``
    (``sqrt(alpha (1 - alpha) / n_sets)``), ``<method>_ok`` (the rate within 2 Monte Carlo SEs of alpha)
    and the mean between-seed AUC sd of the simulated models. ``bootstrap_patients_only`` resamples
    patients but not seeds (a one-level bootstrap of the seed means): it shows what ignoring training
    variance costs. All labels of a set share its patients and bootstrap draws; their scores are
    independent.
    """
    data = official_test_set()
    rng = np.random.default_rng(seed)
    cols = [data.labels.index(lab) for lab in (labels or data.labels)]
    rejected = {m: np.zeros(len(cols)) for m in METHODS}
    seed_sd_auc: list[np.ndarray] = []
    t0 = time.perf_counter()
    for _ in range(n_sets):
        y, a, b, patient = simulate_null_set(rng, scenario, data)
        y, a, b = y[:, cols], [s[:, cols] for s in a], [s[:, cols] for s in b]
        p = _null_pvalues(y, a, b, patient, n_bootstrap, int(rng.integers(2**31)))
        for m in METHODS:
            rejected[m] += p[m] < alpha
        if max(scenario.seeds_a, scenario.seeds_b) > 1:
            from .roc import per_label_auc

            side = a if len(a) > 1 else b
            seed_sd_auc.append(np.std([per_label_auc(y, s) for s in side], axis=0, ddof=1))
    seconds = time.perf_counter() - t0
    mc_se = math.sqrt(alpha * (1 - alpha) / n_sets)
    rows = []
    patients = np.repeat(np.arange(data.sizes.size), data.sizes)
    for i, j in enumerate(cols):
        yj = data.y[:, j].astype(bool)
        row: dict[str, Any] = {
            "scenario": scenario.name, "label": data.labels[j], "n_pos_images": int(yj.sum()),
            "n_pos_patients": int(np.unique(patients[yj]).size), "prevalence": float(yj.mean()),
            "n_patients": scenario.n_patients, "seeds_a": scenario.seeds_a, "seeds_b": scenario.seeds_b,
            "seed_sd": scenario.seed_sd,
            "seed_sd_auc": float(np.mean([s[i] for s in seed_sd_auc])) if seed_sd_auc else 0.0,
            "sv": scenario.sv, "n_sets": n_sets, "n_bootstrap": n_bootstrap, "alpha": alpha, "mc_se": mc_se,
        }
        for m in METHODS:
            rate = rejected[m][i] / n_sets
            if m == "bootstrap_patients_only" and max(scenario.seeds_a, scenario.seeds_b) < 2:
                rate = math.nan  # the same as "bootstrap" with one seed per side
            row[f"reject_{m}"] = rate
            row[f"{m}_ok"] = bool(abs(rate - alpha) <= 2 * mc_se) if math.isfinite(rate) else None
        row["seconds"] = round(seconds / len(cols), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def rejection_table(scenarios: list[NullScenario], n_sets: int = 1000, **kwargs: Any) -> pd.DataFrame:
    """:func:`rejection_rates` of each scenario, one table."""
    return pd.concat([rejection_rates(s, n_sets, **kwargs) for s in scenarios], ignore_index=True)
