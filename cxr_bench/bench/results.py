"""The benchmark results format (one flat CSV per benchmark, machine lines first) and the figures the package
ships from it.

A dry run (:mod:`cxr_bench.runner.estimate`) reads the committed cost figures through
``cxr_bench/bundled/benchmarks.json``: package data, present in an installed wheel, written from
``benchmarks/results/*.csv`` by :func:`write_bundled_figures` (``benchmarks/run_all.py`` calls it; a test
checks the shipped copy equals what the committed CSVs give).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..utils.io import atomic_write_text
from .measure import machine_info

log = logging.getLogger(__name__)

RESULTS_DIRNAME = "results"


def write_results_csv(path: str | os.PathLike, rows: pd.DataFrame | Sequence[dict[str, Any]],
                      meta: dict[str, Any] | None = None, columns: Sequence[str] | None = None) -> Path:
    """Write a results CSV atomically: ``# key: value`` lines (machine, versions, settings), then the table.

    Read it back with :func:`read_results_csv` (``pandas.read_csv(path, comment="#")`` works too).
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"results for {path} lack columns {missing}")
        df = df[list(columns) + [c for c in df.columns if c not in columns]]
    buf = io.StringIO()
    for key, value in (meta if meta is not None else machine_info()).items():
        # '#' inside a value would end the field for readers that treat '#' as a comment anywhere.
        buf.write(f"# {key}: {str(value).replace(chr(10), ' ').replace('#', 'no.')}\n")
    df.to_csv(buf, index=False, lineterminator="\n", float_format="%.6g")
    path = Path(path)
    atomic_write_text(path, buf.getvalue())
    log.info("wrote %s (%d rows)", path, len(df))
    return path


def read_results_csv(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, str]]:
    """A results CSV as (table, metadata from its leading ``# key: value`` lines)."""
    meta: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            key, _, value = line[1:].partition(":")
            meta[key.strip()] = value.strip()
    return pd.read_csv(path, comment="#"), meta




# ---------------------------------------------------------------------------------------------- shipped figures
BUNDLED_FIGURES = Path(__file__).resolve().parents[1] / "bundled" / "benchmarks.json"
# What a run's cost depends on, as columns of a cost CSV (the key :mod:`cxr_bench.runner.estimate` matches).
COST_KEY = ("backbone", "head", "image_size", "batch_size", "epochs", "frozen_backbone")
# The machine lines a dry run quotes beside a figure.
MACHINE_KEYS = ("hostname", "timestamp_utc", "cpu", "cpu_usable", "gpu", "torch", "extrapolation", "seconds",
                "suite", "profile")


def bundled_figures(results_dir: str | os.PathLike) -> dict[str, Any]:
    """The figures :mod:`cxr_bench.runner.estimate` needs from the results CSVs in ``results_dir``: for each
    CSV with ``paper_profile`` rows, its machine lines and each measured run's hours, keyed by the columns
    that set a run's cost (:data:`COST_KEY`)."""
    sources = []
    for path in sorted(Path(results_dir).glob("*.csv")):
        table, meta = read_results_csv(path)
        if not {"section", "hours", *COST_KEY} <= set(table.columns):
            continue
        runs = []
        for row in table[table["section"] == "paper_profile"].to_dict("records"):
            hours = row["hours"]
            if not isinstance(hours, float) or not math.isfinite(hours):
                continue
            runs.append({"backbone": str(row["backbone"]), "head": str(row["head"]),
                         "image_size": int(row["image_size"]), "batch_size": int(row["batch_size"]),
                         "epochs": int(row["epochs"]), "frozen_backbone": bool(row["frozen_backbone"]),
                         "hours": hours})
        if runs:
            sources.append({"file": f"benchmarks/{RESULTS_DIRNAME}/{path.name}",
                            "machine": {k: meta[k] for k in MACHINE_KEYS if k in meta}, "runs": runs})
    return {"about": "generated from benchmarks/results/*.csv by cxr_bench.bench.results.write_bundled_figures "
                     "(benchmarks/run_all.py); do not edit by hand", "sources": sources}


def write_bundled_figures(results_dir: str | os.PathLike, path: str | os.PathLike = BUNDLED_FIGURES) -> Path:
    """Write :func:`bundled_figures` of ``results_dir`` to the package's ``bundled/benchmarks.json``."""
    path = Path(path)
    atomic_write_text(path, json.dumps(bundled_figures(results_dir), indent=1, sort_keys=True) + "\n")
    log.info("wrote %s", path)
    return path
