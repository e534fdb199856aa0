"""Analysing a finished paper sweep: leaderboard, paired ablations, paper comparison and reports.

A synthetic run store of the wang2017 ``paper`` profile's shape is built through the project's own code:
the suite is expanded by the runner (``plan_sweep``: 24 configurations x 5 seeds, their blocks and
ablation pairs in each manifest), each run directory is opened and closed by ``runner.store.RunDir``
(manifest, artifact hashes), its predictions, their bootstrap replicates and its ``metrics.json`` by the function the trainer calls when a run
completes (``metrics.extended.score_run``). Only the model outputs are synthetic: seeded scores separating the
real labels of the official test list (25,596 images, 2,797 patients, from the bundled metadata) and of
the validation split (about 8,650 images) with a per-configuration strength.

Then each step runs as its own ``cxr-bench`` process, as a user would run it, and is measured from the
outside (``os.wait4``): CPU seconds (user + system, the number that matters on a shared machine), wall
seconds and peak resident memory.

    python benchmarks/bench_analysis.py                     # 30 and 120 runs (about 40 min on 2 cores)
    python benchmarks/bench_analysis.py --runs 30 --steps leaderboard,ablations

Results: ``benchmarks/results/analysis.csv``, one row per (runs, step), with the machine and commit in
columns (a plain CSV). ``--quick`` builds 4 runs on 300 test images (what the tests run), written to ``analysis_quick.csv``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_bench.bench.measure import machine_info
from cxr_bench.bench.results import write_results_csv
from cxr_bench.data.labels import get_label_set
from cxr_bench.data.release import NIHRelease
from cxr_bench.data.splits import make_splits
from cxr_bench.engine.trainer import history_csv
from cxr_bench.metrics.extended import score_run
from cxr_bench.metrics.predictions import Predictions
from cxr_bench.runner.planning import plan_specs, plan_sweep
from cxr_bench.runner.store import RunStore, artifact_record
from cxr_bench.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CSV_NAME = "analysis.csv"
SUITE = "wang2017"
STEPS = ("leaderboard", "ablations", "reference", "report")
# Issue 30's goal at 120 runs on the 2-core machine (CPU seconds).
TARGETS = {"leaderboard": 9.0, "ablations": 24.0, "report": 60.0}
COLUMNS = ("runs", "step", "cpu_s", "wall_s", "peak_rss_mb", "target_cpu_s", "returncode", "test_images",
           "bootstrap", "build_cpu_s")
MACHINE_COLUMNS = ("timestamp_utc", "hostname", "cpu", "cpu_count", "loadavg_1m", "python", "numpy", "git_commit",
                   "git_dirty")


def _split_frames(n_test: int | None) -> dict[str, pd.DataFrame]:
    """The official test list and the validation split as metadata rows (real images, patients, labels)."""
    release = NIHRelease.bundled_full()
    splits = make_splits(release, "official")
    meta = release.metadata
    out = {"test": meta.iloc[splits.test].reset_index(drop=True), "val": meta.iloc[splits.val].reset_index(drop=True)}
    if n_test is not None:  # a prefix of whole patients keeps the clustering of the full list
        for split, n in (("test", n_test), ("val", max(n_test // 3, 40))):
            df = out[split]
            keep = df["patient_id"].isin(pd.unique(df["patient_id"])[: max(2, n // 3)])
            out[split] = df[keep].head(n).reset_index(drop=True)
    return out


def _scores(y: np.ndarray, patients: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities that separate ``y`` with ``strength``, plus a per-patient component (images of one
    patient are correlated, as a model's outputs are)."""
    _, g = np.unique(patients, return_inverse=True)
    patient_part = rng.normal(scale=0.5, size=(int(g.max()) + 1, y.shape[1]))[g]
    logits = strength * (2.0 * y - 1.0) + patient_part + rng.normal(size=y.shape)
    # Rounded as a model's float32 outputs are: ties occur, as in real predictions files.
    return np.round(1.0 / (1.0 + np.exp(-logits)), 6)


def _history(final_auc: float, rng: np.random.Generator, epochs: int = 4) -> list[dict[str, Any]]:
    """A training history that climbs from chance to the run's validation AUC (what the history figure
    draws; the trainer's own writer turns it into ``history.csv``)."""
    rows = []
    for e in range(epochs):
        frac = (e + 1) / epochs
        rows.append({"epoch": e, "step": 1000 * (e + 1), "train_loss": round(0.7 - 0.2 * frac + rng.normal(0, 0.01), 4),
                     "val_loss": round(0.7 - 0.15 * frac + rng.normal(0, 0.01), 4),
                     "val_mean_auc": round(0.5 + (final_auc - 0.5) * frac ** 0.5 + rng.normal(0, 0.005), 4),
                     "lr": 1e-3 * 0.5**e, "epoch_seconds": 600.0, "train_images_per_s": 100.0})
    return rows


def _pick(runs: list[Any], suite: Any, n: int) -> list[Any]:
    """The first ``n`` runs in plan order; under one seed's worth (24), an ablation pair and its reference
    first, so that even a tiny store has something to pair."""
    if n >= 24:
        return runs[:n]
    by_id = {r.run_id: r for r in runs}
    chosen: list[Any] = []
    for r in runs:
        pairs = r.suite_record(suite, "paper").get("pairs") or []
        refs = [by_id[p["reference"]] for p in pairs if p.get("reference") in by_id]
        if refs:
            chosen = [refs[0], r]
            break
    chosen += [r for r in runs if r not in chosen]
    return chosen[:n]


def build_store(root: Path, n_runs: int, *, seed: int = 0, metrics_bootstrap: int = 200,
                n_test: int | None = None) -> dict[str, Any]:
    """Write ``n_runs`` completed runs of the wang2017 paper profile under ``root`` (module docstring).

    ``metrics_bootstrap``: resamples of each run's own metrics.json intervals (the analysis steps run
    their own bootstrap; this only sets how long the build takes). Returns build facts.
    """
    fake_root = root / "nih-release"  # the profile needs a data root; nothing reads images here
    fake_root.mkdir(parents=True, exist_ok=True)
    plan = plan_sweep(SUITE, data_root=fake_root, profile="paper", seeds=max(1, math.ceil(n_runs / 24)),
                      dry_run=True)
    runs = _pick(plan.runs, plan.suite, n_runs)
    specs = plan_specs(plan.suite, runs, plan.profile, root)
    frames = _split_frames(n_test)
    cpu0 = time.process_time()
    config_strength: dict[str, float] = {}
    for i, (run, spec) in enumerate(zip(runs, specs)):
        rd = RunStore(root, SUITE).run(spec.run_id)
        rd.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(rd.config_path, spec.config.to_dict())
        attempt = rd.start({"name": run.name, "seed": run.config.seed, "suite": spec.suite_record,
                            "data": {"root": str(fake_root), "file_hashes": {}},
                            "git": {"commit": "0" * 40, "dirty": False}})
        labels = get_label_set(run.config.data.label_set).labels
        conf = str(spec.suite_record.get("configuration"))
        rng_conf = np.random.default_rng([seed, int(conf, 16) % (2**32)])
        strength = config_strength.setdefault(conf, float(rng_conf.uniform(0.6, 1.4)))
        rng = np.random.default_rng([seed, i])
        preds: dict[str, Predictions] = {}
        for split, df in frames.items():
            y = get_label_set(run.config.data.label_set).encode(df["finding_labels"]).astype(np.int8)
            patients = df["patient_id"].astype(str).to_numpy()
            p = _scores(y, patients, strength, rng)
            preds[split] = Predictions(df["image"].astype(str).to_numpy(), patients, y, p, tuple(labels))
        # What the trainer calls when a run completes (metrics.extended.score_run: predictions, the test set's
        # bootstrap replicates, the metrics): only the model outputs are synthetic.
        metrics: dict[str, Any] = score_run(
            rd.path, preds["test"], preds["val"], frames["test"], val_metadata=frames["val"],
            label_set=run.config.data.label_set, n_bootstrap=metrics_bootstrap, seed=run.config.seed)
        atomic_write_text(rd.path / "history.csv", history_csv(_history(metrics["val"]["mean_auc"], rng)))
        metrics.update({"best_epoch": 3, "epochs_run": 4, "steps": 4000, "train_images_per_s": 100.0 + i,
                        "params": 7_000_000 + i, "gmacs": 5.7, "world_size": 1, "device": "cpu"})
        atomic_write_json(rd.metrics_path, metrics)
        attempt.manifest["artifacts"] = artifact_record(rd.path)
        rd.finish(attempt, "completed", result={"test_mean_auc": metrics["test"]["mean_auc"]})
        log.info("built run %d/%d (%s)", i + 1, len(runs), run.name)
    return {"runs": len(runs), "test_images": len(frames["test"]), "build_cpu_s": time.process_time() - cpu0}


# Runs the step in this interpreter and records its own memory high-water mark at exit: VmHWM belongs to the
# process's address space (reset by exec), unlike ru_maxrss, which inherits the forking parent's peak.
_WRAPPER = (
    "import atexit, runpy, sys\n"
    "out = sys.argv.pop(1)\n"
    "def hwm():\n"
    "    kb = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
    "    open(out, 'w').write(kb[0] if kb else '')\n"
    "atexit.register(hwm)\n"
    "sys.argv[0] = 'cxr-bench'\n"
    "runpy.run_module('cxr_bench', run_name='__main__')\n"
)


def _measure(args: Sequence[str], work: Path, name: str) -> dict[str, Any]:
    """Run ``cxr-bench args`` as a child process: its CPU seconds (user + system, with the processes it
    waited for, e.g. a notebook kernel), wall seconds, and peak RSS (the larger of the process's own
    high-water mark and the sampled total of its process tree)."""
    import psutil

    hwm_file = work / f"{name}.hwm"
    t0 = time.perf_counter()
    peak_tree = 0
    with open(work / f"{name}.log", "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(hwm_file), *args], stdout=fh,
                                stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                tree = [ps, *ps.children(recursive=True)]
                peak_tree = max(peak_tree, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    own = float(hwm_file.read_text() or 0) * 1024 if hwm_file.is_file() else 0.0
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "wall_s": round(wall, 2),
            "peak_rss_mb": round(max(own, peak_tree) / 2**20, 1), "returncode": proc.returncode}


def step_commands(store: Path, work: Path, bootstrap: int) -> dict[str, list[str]]:
    cli: list[str] = []
    board = store / SUITE / "leaderboard.csv"
    return {
        "leaderboard": [*cli, "leaderboard", "--runs", str(store), "--suite", SUITE],
        "ablations": [*cli, "compare", "--ablations", "--runs", str(store), "--suite", SUITE, "--bootstrap",
                      str(bootstrap), "--out", str(work / "ablations.csv")],
        "reference": [*cli, "compare", str(board), "--reference", SUITE, "--out", str(work / "reference.csv")],
        "report": [*cli, "report", "--runs", str(store), "--suite", SUITE, "--out", str(work / "reports")],
    }


def measure_store(store: Path, work: Path, steps: Sequence[str], *, bootstrap: int = 1000) -> list[dict[str, Any]]:
    """Time ``steps`` (in :data:`STEPS` order; ``reference`` needs the leaderboard) on ``store``."""
    cmds = step_commands(store, work, bootstrap)
    rows = []
    for step in [s for s in STEPS if s in steps]:
        r = _measure(cmds[step], work, step)
        if r["returncode"]:
            log.error("%s failed (exit %s); see %s", step, r["returncode"], work / f"{step}.log")
        log.info("%s: %.1f CPU s, %.1f wall s, %.0f MB peak RSS", step, r["cpu_s"], r["wall_s"], r["peak_rss_mb"])
        rows.append({"step": step, **r, "target_cpu_s": TARGETS.get(step), "bootstrap": bootstrap})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="30,120", help="store sizes, comma-separated (default 30,120)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"steps to time (default {','.join(STEPS)})")
    p.add_argument("--bootstrap", type=int, default=1000, help="compare --ablations resamples (default 1000)")
    p.add_argument("--test-images", type=int, default=None, help="keep this many test images (default: all)")
    p.add_argument("--store", type=Path, default=None,
                   help="build (or reuse, when it holds the runs) the store here instead of a temporary folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="4 runs on 300 test images, 50 resamples")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default: results/)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sizes = [4] if args.quick else [int(x) for x in args.runs.split(",")]
    n_test = 300 if args.quick else args.test_images
    bootstrap = 50 if args.quick else args.bootstrap
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(steps) - set(STEPS)
    if unknown:
        p.error(f"unknown step(s) {', '.join(sorted(unknown))}; choose from {', '.join(STEPS)}")
    machine = machine_info()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix=f"cxr-analysis-{n}-"))
        store = args.store / f"runs-{n}" if args.store else tmp / "store"
        try:
            existing = store / SUITE
            have = sum(1 for d in existing.iterdir() if (d / "metrics.json").is_file()) if existing.is_dir() else 0
            if have == n:
                facts: dict[str, Any] = {"runs": n, "test_images": None, "build_cpu_s": None}
            else:
                if store.exists():
                    shutil.rmtree(store)
                facts = build_store(store, n, seed=args.seed, n_test=n_test,
                                    metrics_bootstrap=20 if args.quick else 200)
            for r in measure_store(store, tmp, steps, bootstrap=bootstrap):
                rows.append({**facts, **r, **{k: machine.get(k) for k in MACHINE_COLUMNS}})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows, columns=list(COLUMNS + MACHINE_COLUMNS))
    # A smoke run never replaces the committed figures.
    name = CSV_NAME.replace(".csv", "_quick.csv") if args.quick else CSV_NAME
    write_results_csv(args.out / name, df, machine, float_format=None)
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
