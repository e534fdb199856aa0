"""Each run's expected wall time, for a dry run, from the benchmark figures the package ships.

The figures are ``cxr_bench/bundled/benchmarks.json``, written from the committed
``benchmarks/results/*.csv`` by :func:`cxr_bench.bench.results.write_bundled_figures` (package data, so an
installed wheel has them too). Each ``paper_profile`` row of a cost CSV (benchmarks/bench_cost.py) is the
cost of one run of a suite from per-image times measured on one machine. A run is matched on what sets its
cost (backbone, head, image size, batch, epochs, frozen backbone); a run no row matches has no figure: it
is never extrapolated here. GPU and CPU figures are kept apart, because a GPU is one to two orders of
magnitude faster and that ratio has not been measured for these models.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig

log = logging.getLogger(__name__)

FIGURES = Path(__file__).resolve().parents[1] / "bundled" / "benchmarks.json"
UNMEASURED = "unmeasured"
# What measures the missing figures on a machine, and the most it takes per distinct cost setting: one
# inference and one training phase, each capped by bench_cost.py's default --max-seconds (60).
MEASURE_COMMAND = "python benchmarks/bench_cost.py --sections paper_profile --device {device}"
MEASURE_SECONDS_PER_SETTING = 2 * 60


@dataclass(frozen=True, eq=False)
class Source:
    """One results CSV: the machine it was measured on and the hours of each run setting it measured."""

    file: str
    machine: Mapping[str, str]
    hours: Mapping[tuple, float]

    @property
    def gpu(self) -> str | None:
        name = self.machine.get("gpu", "")
        return None if name in ("", "None", "none", "null") else name

    def describe(self) -> str:
        m = self.machine
        where = self.gpu or f"{m.get('cpu', 'a CPU')}, {m.get('cpu_usable', '?')} usable cores, no GPU"
        text = f"{m.get('hostname', 'an unnamed machine')} ({where}) on {m.get('timestamp_utc', '?')[:10]}"
        return text + (f"; {m['extrapolation']}" if m.get("extrapolation") else "")


@dataclass(frozen=True)
class Figure:
    hours: float
    source: Source

    @property
    def kind(self) -> str:
        return "GPU" if self.source.gpu else "CPU"


@dataclass
class Estimates:
    """Per run id, the GPU and the CPU figure (None: not measured), and the sources they come from."""

    gpu: dict[str, Figure | None] = field(default_factory=dict)
    cpu: dict[str, Figure | None] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)

    def cell(self, run_id: str) -> str:
        """A run's time column: the GPU figure, else the CPU one (saying which), else ``unmeasured``."""
        fig = self.gpu.get(run_id) or self.cpu.get(run_id)
        return UNMEASURED if fig is None else f"{format_hours(fig.hours)} {fig.kind}"

    @property
    def cells(self) -> dict[str, str]:
        return {run_id: self.cell(run_id) for run_id in self.gpu}

    def notes(self) -> list[str]:
        used = {f.source for f in (*self.gpu.values(), *self.cpu.values()) if f is not None}
        notes = [f"est. time: the whole run (all epochs), from {s.file}, measured on {s.describe()}"
                 for s in self.sources if s in used]
        if not any(s.gpu for s in self.sources):
            notes.append("no GPU has been benchmarked (the committed benchmarks/results hold CPU figures only): "
                         "GPU time is unmeasured")
        return notes


def cost_key(cfg: RunConfig) -> tuple:
    """What a run's cost depends on: the columns of ``cxr_bench.bench.results.COST_KEY``, in that order."""
    return (cfg.model.backbone, cfg.model.head, int(cfg.data.image_size), int(cfg.optim.batch_size),
            int(cfg.optim.epochs), bool(cfg.model.freeze_backbone))


def load_sources(path: str | os.PathLike | None = None) -> list[Source]:
    """The sources of the shipped figures file (or ``path``); none when it is absent or unreadable."""
    path = Path(path) if path is not None else FIGURES
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.debug("%s: not read (%s)", path, e)
        return []
    sources = []
    for s in data.get("sources", []):
        hours = {(r["backbone"], r["head"], int(r["image_size"]), int(r["batch_size"]), int(r["epochs"]),
                  bool(r["frozen_backbone"])): float(r["hours"]) for r in s.get("runs", [])}
        sources.append(Source(str(s.get("file", path)), dict(s.get("machine", {})), hours))
    return sources


def estimate_runs(configs: Mapping[str, RunConfig], figures: str | os.PathLike | None = None) -> Estimates:
    """The GPU and CPU figure of each run of ``configs`` (run id -> config), from ``figures`` (default: the
    shipped file). Where several sources measured a run, the first in the file is taken."""
    out = Estimates(sources=load_sources(figures))
    for run_id, cfg in configs.items():
        key = cost_key(cfg)
        for kind, table in (("GPU", out.gpu), ("CPU", out.cpu)):
            source = next((s for s in out.sources if key in s.hours and bool(s.gpu) == (kind == "GPU")), None)
            table[run_id] = None if source is None else Figure(source.hours[key], source)
    return out


def format_hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.0f} h" if h < 100 else f"{h:,.0f} h ({h / 24:.0f} d)"
