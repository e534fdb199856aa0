"""Speed of the evaluation metrics at the scale of the official ChestX-ray14 test split, and the null
simulation that shows the paired tests hold their level there.

Speed (``metrics.csv``), on the official test split itself: its 25,596 images, 2,797 patients, true labels
and sex / age / view from the bundled metadata, with synthetic scores of two correlated "models" (AUC
about 0.8):

- ``bootstrap_auc``: per-label and mean AUC with 95% intervals from 1,000 patient resamples (one run);
- ``delong``: image-level DeLong on every label (two runs);
- ``paired_comparison``: what ``compare --ablations`` computes for one pair: paired patient bootstrap
  (1,000 resamples) + Obuchowski's clustered test + image-level DeLong + Holm over the 14 labels
  (target: under 10 s on 2 cores);
- ``subgroups_calibration``: ``metrics.extra_metrics`` of one run: AUC with patient-bootstrap intervals
  (1,000 resamples) by sex, age band and view, underdiagnosis by subgroup, Brier, ECE and reliability
  bins (target: under 5 s).

Null simulation (``null_rejection.csv``, :mod:`cxr_bench.metrics.simulation`): patient bootstraps of the
official test split (every label at its real prevalence and patient clustering), two configurations with
the same true AUC, 1 vs 1, 5 vs 5 and 1 vs 5 seeds; per label the fraction of sets on which each test
rejects at 5%, and ``<method>_ok``: within 2 Monte Carlo SEs (``mc_se``) of 5%. The CSV is plain (header
first); its first column ``git_commit`` names the commit of the code that made it (``git_dirty`` must be
false). The earlier figure of 51% for image-level DeLong was one scenario: 1,000 synthetic test sets with
the official set's patient sizes, 15% prevalence from a patient-level propensity, a model-by-patient error
sd of 0.7 and one seed per side; its rates here are per label.

Run ``python benchmarks/bench_metrics.py`` (or ``python benchmarks/run_all.py --only metrics``); results
go to ``benchmarks/results/``, each CSV with the machine and library versions in its sidecar (``<name>.csv.json``).
``--no-simulation`` skips the simulation (minutes); ``--quick`` runs both at a tenth of the size.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy
import sklearn

from cxr_bench.bench.measure import load_average, machine_info, timed
from cxr_bench.bench.results import write_results_csv
from cxr_bench.data.bundled import full_metadata_root
from cxr_bench.data.labels import get_label_set
from cxr_bench.data.metadata import read_split_list
from cxr_bench.metrics import Predictions, bootstrap_auc, delong_per_label, extra_metrics, paired_comparison
from cxr_bench.metrics.simulation import NullScenario, rejection_table
from cxr_bench.metrics.subgroups import bundled_metadata

log = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CSV_NAME = "metrics.csv"
SIMULATION_CSV = "null_rejection.csv"
TARGETS = {"paired_comparison": 10.0, "subgroups_calibration": 5.0}


def official_test_predictions(seed: int = 0, n_images: int | None = None
                              ) -> tuple[Predictions, Predictions, pd.DataFrame]:
    """Two runs' predictions on the official test split (real images, patients and labels; synthetic
    scores sharing a per-patient component) and the split's metadata. ``n_images`` keeps the first
    patients' images only (``--quick``)."""
    meta = bundled_metadata()
    test = meta[meta["image"].isin(set(read_split_list(full_metadata_root() / "test_list.txt")))]
    test = test.sort_values(["patient_id", "image"]).reset_index(drop=True)
    if n_images is not None:
        test = test.iloc[:n_images].reset_index(drop=True)
    ls = get_label_set("chestxray14")
    y = ls.encode(test["finding_labels"]).astype(np.int8)
    rng = np.random.default_rng(seed)
    _, patient = np.unique(test["patient_id"].to_numpy(), return_inverse=True)
    shared = rng.normal(size=(patient.max() + 1, y.shape[1]))[patient] + rng.normal(size=y.shape)
    preds = []
    for strength in (1.4, 1.2):
        logit = shared + rng.normal(scale=0.7, size=y.shape) + strength * y - 1.5
        preds.append(Predictions(test["image"].to_numpy(), test["patient_id"].astype(str).to_numpy(), y,
                                 1.0 / (1.0 + np.exp(-logit)), tuple(ls.labels)))
    return preds[0], preds[1], test


def run(n_resamples: int = 1_000, seed: int = 0, n_images: int | None = None) -> list[dict[str, Any]]:
    """Time each measurement once; one row per measurement."""
    a, b, meta = official_test_predictions(seed, n_images)
    measurements = {
        "bootstrap_auc": lambda: bootstrap_auc(a.y_true, a.y_prob, a.patient_ids, n=n_resamples, seed=seed,
                                               labels=a.labels),
        "delong": lambda: delong_per_label(a.y_true, a.y_prob, b.y_prob, a.labels),
        "paired_comparison": lambda: paired_comparison(a.y_true, [a.y_prob], [b.y_prob], a.patient_ids,
                                                       labels=a.labels, n_bootstrap=n_resamples, seed=seed),
        "subgroups_calibration": lambda: extra_metrics(a, b, meta, val_metadata=meta, n_bootstrap=n_resamples,
                                                       seed=seed),
    }
    common = {"n_images": len(a), "n_labels": len(a.labels), "n_patients": int(pd.unique(a.patient_ids).size),
              "n_resamples": n_resamples}
    rows = []
    for name, fn in measurements.items():
        # Wall time is what the targets are about; CPU time says how much of it was ours.
        out, seconds, cpu = timed(fn)
        if name == "paired_comparison":
            log.info("paired: mean delta %.4f, %d labels better by the Holm-adjusted bootstrap",
                     out["delta"].iloc[-1], int((out["verdict"] == "better").sum()))
        target = TARGETS.get(name)
        rows.append({"benchmark": name, **common, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                     "target_seconds": target, "meets_target": None if target is None else bool(seconds < target),
                     "loadavg_1m": load_average()})
    return rows


SCENARIOS = (
    NullScenario("1 seed per side (two models compared)", seeds_a=1, seeds_b=1),
    NullScenario("5 seeds per side, seed-to-seed AUC sd ~0.02", seeds_a=5, seeds_b=5, seed_sd=0.1),
    NullScenario("1 vs 5 seeds (1-seed side borrows), seed-to-seed AUC sd ~0.02", seeds_a=1, seeds_b=5,
                 seed_sd=0.1),
)
# Sets per scenario, sized for ~15 minutes of one core of the project's 2-core VM (a 5-seed set costs ~5x a
# 1-seed set); the Monte Carlo SE of a 5% rate is 0.9% at 600 sets and 1.5% at 200.
N_SETS = (600, 200, 200)
QUICK_LABELS = ("Atelectasis", "Hernia")


def simulate(quick: bool, seed: int, n_sets: Sequence[int] = N_SETS,
             done: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """Every official-split label under each of :data:`SCENARIOS` (``quick``: two labels, 20 sets);
    ``done`` gets the table so far after each scenario (a long run keeps what it finished)."""
    frames: list[pd.DataFrame] = []
    for i, (sc, n) in enumerate(zip(SCENARIOS, n_sets)):
        t0 = time.perf_counter()
        df = rejection_table([sc], 20 if quick else n, n_bootstrap=200, seed=seed + i,
                             labels=QUICK_LABELS if quick else None)
        log.info("%s: %.0f s; outside 2 Monte Carlo SEs of alpha: %s", sc.name, time.perf_counter() - t0,
                 {m: df.loc[df[f"{m}_ok"] == False, "label"].tolist()  # noqa: E712 (None = not applicable)
                  for m in ("bootstrap", "clustered")})
        frames.append(df)
        if done is not None:
            done(pd.concat(frames, ignore_index=True))
    return pd.concat(frames, ignore_index=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print tables, write ``<out>/metrics.csv`` and ``<out>/null_rejection.csv``;
    returns 1 if a speed target is missed.

    ``--out DIR`` (what run_all.py passes) defaults to ``benchmarks/results``; a ``--quick`` run without
    ``--out`` only prints, so it never replaces the full-size result.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 10x smaller problem (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help=f"results directory (default {RESULTS_DIR})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-simulation", action="store_true", help="speed only (the simulation takes minutes)")
    parser.add_argument("--no-speed", action="store_true", help="simulation only")
    parser.add_argument("--sets", type=lambda v: tuple(int(x) for x in v.split(",")), default=N_SETS,
                        help="simulated test sets per scenario, comma-separated (default %(default)s)")
    args = parser.parse_args(argv)
    out_dir = args.out if args.out is not None else (None if args.quick else RESULTS_DIR)
    # Taken before the minutes of simulation: the code that runs is the code at this commit.
    meta = {**machine_info(), "scipy": scipy.__version__, "sklearn": sklearn.__version__,
            "benchmark": "bench_metrics.py", "seed": args.seed}
    rc = 0
    if not args.no_speed:
        df = pd.DataFrame(run(seed=args.seed, n_images=2_560 if args.quick else None))
        df["quick"] = args.quick
        print(df[["benchmark", "n_images", "n_patients", "n_resamples", "seconds", "cpu_seconds", "target_seconds",
                  "meets_target", "loadavg_1m"]].to_string(index=False))
        if out_dir is not None:
            print(f"written: {write_results_csv(Path(out_dir) / CSV_NAME, df, meta)}")
        rc = 0 if df["meets_target"].dropna().all() else 1
    if not args.no_simulation:
        def write(sim: pd.DataFrame) -> None:
            sim = sim.assign(quick=args.quick)
            if out_dir is not None:
                # A plain CSV: the commit and machine in columns, the commit first (the code that made it).
                prov = {k: meta[k] for k in ("git_commit", "git_dirty", "timestamp_utc", "cpu", "cpu_usable",
                                             "loadavg_1m", "numpy", "scipy")}
                sim = pd.concat([pd.DataFrame([prov] * len(sim)), sim], axis=1)
                log.info("written: %s", write_results_csv(Path(out_dir) / SIMULATION_CSV, sim, meta))

        sim = simulate(args.quick, args.seed, args.sets, done=write)
        print(sim.filter(regex="^(scenario|label|n_pos_patients|reject_.*)$").to_string(index=False))
    return rc


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
