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

Null simulation (``null_rejection.csv``, :mod:`cxr_bench.metrics.simulation`): test sets clustered like the
official one, two configurations with the same true AUC; the fraction of sets on which each test rejects
at 5%. The clustered tests should stay between 3% and 7%; image-level DeLong is recorded beside them.

Run ``python benchmarks/bench_metrics.py`` (or ``python benchmarks/run_all.py --only metrics``); results
go to ``benchmarks/results/``, headed by ``# key: value`` lines naming the machine and library versions.
``--no-simulation`` skips the simulation (minutes); ``--quick`` runs both at a tenth of the size.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy
import sklearn

from cxr_bench.bench.measure import machine_info
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


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    # Wall time is what the targets are about; CPU time of this process says how much of it was ours on a
    # shared machine (wall >> cpu means the cores were busy with something else).
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def run(n_resamples: int = 1_000, seed: int = 0, n_images: int | None = None) -> list[dict[str, Any]]:
    """Time each measurement once; one row per measurement."""
    a, b, meta = official_test_predictions(seed, n_images)
    thresholds = [0.3] * len(a.labels)
    measurements = {
        "bootstrap_auc": lambda: bootstrap_auc(a.y_true, a.y_prob, a.patient_ids, n=n_resamples, seed=seed,
                                               labels=a.labels),
        "delong": lambda: delong_per_label(a.y_true, a.y_prob, b.y_prob, a.labels),
        "paired_comparison": lambda: paired_comparison(a.y_true, [a.y_prob], [b.y_prob], a.patient_ids,
                                                       labels=a.labels, n_bootstrap=n_resamples, seed=seed),
        "subgroups_calibration": lambda: extra_metrics(a, thresholds, meta, n_bootstrap=n_resamples, seed=seed),
    }
    common = {"n_images": len(a), "n_labels": len(a.labels), "n_patients": int(pd.unique(a.patient_ids).size),
              "n_resamples": n_resamples}
    rows = []
    for name, fn in measurements.items():
        out, seconds, cpu = _timed(fn)
        if name == "paired_comparison":
            log.info("paired: mean delta %.4f, %d labels better by the Holm-adjusted bootstrap",
                     out["delta"].iloc[-1], int((out["verdict"] == "better").sum()))
        target = TARGETS.get(name)
        rows.append({"benchmark": name, **common, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                     "target_seconds": target, "meets_target": None if target is None else bool(seconds < target),
                     "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None})
    return rows


SCENARIOS = (
    NullScenario("official test set, 1 seed per side", n_patients=2797),
    NullScenario("official test set, weakly clustered model errors", n_patients=2797, sv=0.3),
    NullScenario("1,000-patient sets, 1 seed per side", n_patients=1000),
    NullScenario("1,000-patient sets, 5 seeds per side with training variance", n_patients=1000, seeds=5,
                 seed_sd=0.3),
)
# Sets per scenario (full run); the seed scenario costs ~5x per set.
N_SETS = (1000, 400, 1000, 400)


def simulate(quick: bool, seed: int) -> pd.DataFrame:
    frames = []
    for i, (sc, n) in enumerate(zip(SCENARIOS, N_SETS)):
        if quick:
            sc = NullScenario(**{**sc.__dict__, "n_patients": max(100, sc.n_patients // 10)})
            n = 50
        t0 = time.perf_counter()
        df = rejection_table([sc], n, n_bootstrap=200, seed=seed + i)
        log.info("%s: %s (%.0f s)", sc.name, df.filter(like="reject_").iloc[0].to_dict(), time.perf_counter() - t0)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    for col in ("reject_bootstrap", "reject_clustered"):
        out[f"{col}_in_3_to_7pct"] = out[col].between(0.03, 0.07)
    return out


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
    args = parser.parse_args(argv)
    out_dir = args.out if args.out is not None else (None if args.quick else RESULTS_DIR)
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
        sim = simulate(args.quick, args.seed)
        sim["quick"] = args.quick
        print(sim.drop(columns=["alpha", "quick"]).to_string(index=False))
        if out_dir is not None:
            print(f"written: {write_results_csv(Path(out_dir) / SIMULATION_CSV, sim, meta)}")
    return rc


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
