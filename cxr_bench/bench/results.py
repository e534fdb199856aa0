"""The benchmark results format (one plain CSV per benchmark, the machine in its sidecar) and the figures the
package ships from it.

A results file is a plain CSV (header first: ``pandas.read_csv(path)`` reads it) with one row per measured
setting, and beside it ``<name>.csv.json`` (:func:`cxr_bench.utils.io.sidecar_path`) whose ``provenance`` is
the machine, library versions, commit (:func:`~cxr_bench.bench.measure.machine_info`) and the script's
settings: a throughput number without the machine that produced it cannot be compared with anything.

A dry run (:mod:`cxr_bench.runner.estimate`) reads the committed cost figures through
``cxr_bench/bundled/benchmarks.json``: package data, present in an installed wheel, written from
``benchmarks/results/*.csv`` by :func:`write_bundled_figures` (``benchmarks/run_all.py`` calls it; a test
checks the shipped copy equals what the committed CSVs give).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..utils.io import atomic_write_text, read_json, sidecar_path, write_csv
from .measure import machine_info

log = logging.getLogger(__name__)

RESULTS_DIRNAME = "results"


def write_results_csv(path: str | os.PathLike, rows: pd.DataFrame | Sequence[dict[str, Any]],
                      meta: dict[str, Any] | None = None, columns: Sequence[str] | None = None, *,
                      float_format: str | None = "%.6g") -> Path:
    """Write a benchmark's results atomically: a plain CSV (``columns`` first, in that order, then any
    others) and its sidecar, whose ``provenance`` is ``meta`` (default :func:`machine_info`: pass
    ``machine_info()`` updated with the script's settings).

    Read it back with :func:`read_results_csv`; ``pandas.read_csv(path)`` reads the table alone.
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"results for {path} lack columns {missing}")
        df = df[list(columns) + [c for c in df.columns if c not in columns]]
    path = write_csv(df, path, float_format=float_format,
                     provenance=meta if meta is not None else machine_info())
    log.info("wrote %s (%d rows)", path, len(df))
    return path


def read_results_csv(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A results CSV as (table, the provenance of its sidecar; empty where it has none)."""
    side = sidecar_path(path)
    meta = read_json(side).get("provenance", {}) if side.is_file() else {}
    return pd.read_csv(path), dict(meta)


# ---------------------------------------------------------------------------------------------- shipped figures
BUNDLED_FIGURES = Path(__file__).resolve().parents[1] / "bundled" / "benchmarks.json"
# What a run's cost depends on, as columns of a cost CSV (the key :mod:`cxr_bench.runner.estimate` matches).
COST_KEY = ("backbone", "head", "image_size", "batch_size", "epochs", "frozen_backbone")
# The provenance a dry run quotes beside a figure (as text: the shipped file maps names to strings).
MACHINE_KEYS = ("hostname", "timestamp_utc", "cpu", "cpu_usable", "gpu", "torch", "extrapolation", "seconds",
                "suite", "profile")


def bundled_figures(results_dir: str | os.PathLike) -> dict[str, Any]:
    """The figures :mod:`cxr_bench.runner.estimate` needs from the results CSVs in ``results_dir``: for each
    CSV with ``paper_profile`` rows, its machine (from the sidecar) and each measured run's hours, keyed by the columns
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
                            "machine": {k: str(meta[k]) for k in MACHINE_KEYS if k in meta}, "runs": runs})
    return {"about": "generated from benchmarks/results/*.csv by cxr_bench.bench.results.write_bundled_figures "
                     "(benchmarks/run_all.py); do not edit by hand", "sources": sources}


def write_bundled_figures(results_dir: str | os.PathLike, path: str | os.PathLike = BUNDLED_FIGURES) -> Path:
    """Write :func:`bundled_figures` of ``results_dir`` to the package's ``bundled/benchmarks.json``."""
    path = Path(path)
    atomic_write_text(path, json.dumps(bundled_figures(results_dir), indent=1, sort_keys=True) + "\n")
    log.info("wrote %s", path)
    return path
