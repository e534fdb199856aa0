"""Each run's expected wall time, for a dry run, from the committed benchmark results (benchmarks/results/).

Only measured figures are shown, each with the machine it was measured on: the ``paper_profile`` rows of a
results CSV (written by benchmarks/bench_cost.py) cost one run of a suite from per-image times measured on
that machine. A run is matched on what sets its cost (backbone, head, image size, batch, epochs, frozen
backbone); a run no row matches is ``unmeasured``, never extrapolated here. A figure from a machine with a
GPU is preferred; a CPU figure says CPU, because a GPU is one to two orders of magnitude faster and that
ratio has not been measured for these models.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig

log = logging.getLogger(__name__)

# benchmarks/ sits beside the package in a source checkout; an installed wheel has no results.
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
UNMEASURED = "unmeasured"


@dataclass
class Estimates:
    """``cells``: run id -> the text of its time column; ``notes``: where each figure comes from."""

    cells: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Source:
    path: Path
    machine: str
    gpu: bool
    hours: dict[tuple, float]


def _cost_key(cfg: RunConfig) -> tuple:
    return (cfg.model.backbone, cfg.model.head, int(cfg.data.image_size), int(cfg.optim.batch_size),
            int(cfg.optim.epochs), bool(cfg.model.freeze_backbone))


def _read(path: Path) -> _Source | None:
    from ..utils.results_csv import read_results_csv

    try:
        table, meta = read_results_csv(path)
    except (OSError, ValueError) as e:
        log.debug("%s: not read (%s)", path, e)
        return None
    if not {"section", "backbone", "head", "image_size", "batch_size", "epochs", "hours", "note"} <= set(table):
        return None
    hours: dict[tuple, float] = {}
    for row in table[table["section"] == "paper_profile"].itertuples():
        frozen = re.search(r"frozen backbone: (True|False)", str(row.note))
        if frozen is None or not isinstance(row.hours, float) or not math.isfinite(row.hours):
            continue
        key = (row.backbone, row.head, int(row.image_size), int(row.batch_size), int(row.epochs),
               frozen.group(1) == "True")
        hours[key] = float(row.hours)
    if not hours:
        return None
    gpu = meta.get("gpu", "None") not in ("", "None", "none", "null")
    where = meta.get("gpu") if gpu else f"{meta.get('cpu', 'a CPU')}, {meta.get('cpu_usable', '?')} usable cores, no GPU"
    machine = f"{meta.get('hostname', 'an unnamed machine')} ({where}) on {meta.get('timestamp_utc', '?')[:10]}"
    if meta.get("extrapolation"):
        machine += f"; {meta['extrapolation']}"
    return _Source(path, machine, gpu, hours)


def estimate_runs(configs: dict[str, RunConfig], results_dir: str | os.PathLike | None = None) -> Estimates:
    """The time column of a dry run for ``configs`` (run id -> config) and the notes that source it."""
    directory = Path(results_dir) if results_dir is not None else RESULTS_DIR
    sources = [s for s in (_read(p) for p in sorted(directory.glob("*.csv"))) if s is not None] \
        if directory.is_dir() else []
    sources.sort(key=lambda s: not s.gpu)  # a GPU figure first
    out = Estimates()
    used: list[_Source] = []
    for run_id, cfg in configs.items():
        key = _cost_key(cfg)
        source = next((s for s in sources if key in s.hours), None)
        if source is None:
            out.cells[run_id] = UNMEASURED
            continue
        out.cells[run_id] = f"{_hours(source.hours[key])} {'GPU' if source.gpu else 'CPU'}"
        if source not in used:
            used.append(source)
    for s in used:
        out.notes.append(f"est. time: the whole run (all epochs), from {_shown(s.path)}, measured on {s.machine}")
    if not any(s.gpu for s in sources):
        out.notes.append(f"no GPU has been benchmarked ({_shown(directory)} holds CPU figures only): GPU time is "
                         "unmeasured; benchmarks/README.md says how to measure it on yours")
    return out


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.0f} h" if h < 100 else f"{h:,.0f} h ({h / 24:.0f} d)"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(RESULTS_DIR.parents[1]))
    except ValueError:
        return str(path)
