"""Reading the benchmark results CSVs (``benchmarks/results/*.csv``): the table and its machine record.

They are written by :func:`cxr_bench.bench.write_results_csv`; the runner's dry-run estimate reads them too,
so the reader lives here, below both.
"""

from __future__ import annotations

import os

import pandas as pd


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
