"""What ``cxr-bench run --dry-run`` says before any work: the runs to do and done, the hours they take, the disk
they need, and what is already there.

Hours come from the shipped benchmark figures (:mod:`cxr_bench.runner.estimate`): per run, a GPU figure and a
CPU figure, each only where that kind of machine measured that run's cost setting. Where none did, the plan
says so and gives the command that measures it (and the most it takes), never a number made up here.

Disk is counted, not measured: every image cache the runs read (images x pixels, the layout of
:func:`cxr_bench.data.cache.estimate_cache_bytes`), the scored weights of each run (``best.pt``: four bytes per
parameter; ``last.pt`` keeps no weights once a run is finished, see
:func:`cxr_bench.engine.checkpoint.compact_finished`) and the val/test predictions CSVs. Without the
``--data-root`` a profile needs, the image counts come from the bundled NIH metadata (the same lists the
full release has).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import RunConfig, get_dotted
from ..errors import CxrBenchError, RunStoreError
from ..utils.text import format_table, one_line
from .estimate import MEASURE_COMMAND, MEASURE_SECONDS_PER_SETTING, Estimates, cost_key, estimate_runs, format_hours
from .precheck import CacheNeed, SweepCheck, cache_groups, cache_root, image_group, run_image_names
from .store import RunStore

if TYPE_CHECKING:
    from ..data.release import NIHRelease
    from .planning import SweepPlan
    from .suite import SuiteRun

log = logging.getLogger(__name__)

# A predictions CSV row: image name (16 chars), patient id, then per label a 0/1 column and a probability
# written with full float precision (up to 22 chars with its comma).
PREDICTION_ROW_BYTES = 32
PREDICTION_LABEL_BYTES = 2 + 22
WEIGHT_BYTES = 4  # float32 state dict


@dataclass
class BlockCost:
    """The runs of one block still to do and their hours; ``*_missing`` counts those without a figure."""

    name: str
    runs: int = 0
    todo: int = 0
    gpu_hours: float = 0.0
    gpu_missing: int = 0
    cpu_hours: float = 0.0
    cpu_missing: int = 0

    def add(self, run_id: str, todo: bool, est: Estimates) -> None:
        self.runs += 1
        if not todo:
            return
        self.todo += 1
        gpu, cpu = est.gpu.get(run_id), est.cpu.get(run_id)
        self.gpu_hours += gpu.hours if gpu else 0.0
        self.gpu_missing += gpu is None
        self.cpu_hours += cpu.hours if cpu else 0.0
        self.cpu_missing += cpu is None


@dataclass
class DiskPlan:
    caches: list[CacheNeed]
    checkpoint_bytes: int  # best.pt of every run to do
    prediction_bytes: int  # predictions/val.csv + test.csv of every run to do
    images_checked: bool  # False: no data root, so whether a cache exists is not known

    @property
    def cache_bytes(self) -> int:
        return sum(c.bytes for c in self.caches)

    @property
    def cache_bytes_needed(self) -> int:
        return sum(c.bytes_needed for c in self.caches)

    @property
    def total_bytes(self) -> int:
        return self.cache_bytes + self.checkpoint_bytes + self.prediction_bytes


@dataclass
class DryRun:
    """The plan of one invocation of ``cxr-bench run``; :meth:`table`, :meth:`summary` and :meth:`to_json`
    are its three views."""

    plan: SweepPlan
    status: dict[str, str]  # run id -> done | to do | failed (done again) | resumes (interrupted)
    estimates: Estimates
    blocks: list[BlockCost]
    total: BlockCost
    disk: DiskPlan
    device: str | None = None
    hardware: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------------------------- table
    def table(self, *, wide: bool = False) -> str:
        """One row per run. Narrow: run id, block, what sets the run apart, status, time; ``wide``: every
        factor that differs between the runs in its own column, and the ablation pair."""
        from .suite import varying_factors

        runs = self.plan.runs
        factors = varying_factors(runs)
        if wide:
            heads = [f.split(".")[0] if f.endswith(".name") else f.split(".")[-1] for f in factors]
            rows = [[r.run_id, ",".join(r.blocks), *(str(get_dotted(r.config, f)) for f in factors),
                     self.status[r.run_id], self.estimates.cell(r.run_id),
                     ", ".join(f"{p.factor.split('.')[-1]}={p.value}" for p in r.pairs)] for r in runs]
            return format_table(["run id", "block(s)", *heads, "status", "est. time", "pair (vs reference)"], rows)
        usual = {f: _mode([str(get_dotted(r.config, f)) for r in runs]) for f in factors}
        rows = []
        for r in runs:
            shown = [str(r.config.model.backbone)] if "model.backbone" in factors else []
            for f in factors:
                value = str(get_dotted(r.config, f))
                if f not in ("model.backbone", "seed") and value != usual[f]:
                    shown.append(f"{f.split('.')[-1]}={value}")
            if "seed" in factors:
                shown.append(f"seed {r.config.seed}")
            block = r.blocks[0] + (f" +{len(r.blocks) - 1}" if len(r.blocks) > 1 else "")
            rows.append([r.run_id, block, one_line(" ".join(shown), 50), self.status[r.run_id],
                         self.estimates.cell(r.run_id)])
        return format_table(["run id", "block", "differs", "status", "est. time"], rows)

    # ---------------------------------------------------------------------------------- summary
    def summary(self) -> list[str]:
        """The plan's closing lines: runs, hours (GPU, then CPU, total and per block), disk, what is there."""
        t = self.total
        done = sum(s == "done" for s in self.status.values())
        lines = [f"plan: {len(self.status)} runs, {done} done, {t.todo} to do"]
        lines += self._hours_lines()
        lines += self._disk_lines()
        return lines

    def _hours_lines(self) -> list[str]:
        t, est = self.total, self.estimates
        gpu_sources = [s for s in est.sources if s.gpu]
        cpu_sources = [s for s in est.sources if not s.gpu]
        lines = []
        if t.todo == 0:
            return ["time: nothing to do"]
        if gpu_sources and t.gpu_missing < t.todo:
            lines.append("GPU time on the reference GPU: " + _hours_total(t.gpu_hours, t.todo - t.gpu_missing, t.todo))
            lines.append(f"  measured on {gpu_sources[0].describe()}")
        else:
            lines.append("GPU time: not measured (no GPU has been benchmarked for these runs)")
        if t.gpu_missing:
            lines.append("  " + self._measure_line("cuda", self._missing_settings("GPU")))
        if self.device is not None:
            lines.append(self._hardware_line())
        if cpu_sources and t.cpu_missing < t.todo:
            lines.append("CPU time: " + _hours_total(t.cpu_hours, t.todo - t.cpu_missing, t.todo))
            lines.append(f"  measured on {cpu_sources[0].describe()}")
        if self.blocks:
            rows = [[b.name, b.todo,
                     _block_hours(b.gpu_hours, b.todo, b.gpu_missing), _block_hours(b.cpu_hours, b.todo, b.cpu_missing)]
                    for b in self.blocks]
            table = format_table(["block", "runs to do", "GPU h", "CPU h"], rows, align="lrrr")
            lines += ["per block (a run in several blocks counts in each):", *("  " + x for x in table.split("\n"))]
        return lines

    def _missing_settings(self, kind: str) -> int:
        table = self.estimates.gpu if kind == "GPU" else self.estimates.cpu
        configs = {r.run_id: r.config for r in self.plan.runs}
        return len({cost_key(configs[i]) for i, f in table.items() if f is None and self.status[i] != "done"})

    def _measure_line(self, device: str, settings: int) -> str:
        minutes = settings * MEASURE_SECONDS_PER_SETTING / 60
        return (f"to measure it on yours ({settings} cost setting(s) of this plan, at most {minutes:.0f} min): "
                f"{MEASURE_COMMAND.format(device=device)}")

    def _hardware_line(self) -> str:
        """The same hours on the machine ``--device`` names: only where it is the machine that measured them."""
        hw = self.hardware
        name = hw.get("name") or "this machine"
        kind = "GPU" if hw.get("gpu") else "CPU"
        figures = self.estimates.gpu if kind == "GPU" else self.estimates.cpu
        same = [s for s in self.estimates.sources if hw.get("match") and hw["match"](s)]
        if same:
            hours = sum(f.hours for i, f in figures.items() if f is not None and f.source in same
                        and self.status[i] != "done")
            n = sum(f is not None and f.source in same and self.status[i] != "done" for i, f in figures.items())
            return f"on {name} (--device {self.device}), measured there: " + _hours_total(hours, n, self.total.todo)
        settings = len({cost_key(r.config) for r in self.plan.runs if self.status[r.run_id] != "done"})
        return f"on {name} (--device {self.device}): not measured; " + self._measure_line(self.device or "auto",
                                                                                            settings)

    def _disk_lines(self) -> list[str]:
        d = self.disk
        by_size: dict[tuple[int, int], list[CacheNeed]] = {}
        for c in d.caches:
            by_size.setdefault((c.image_size, c.n_images), []).append(c)
        lines = [f"disk: {_size(d.total_bytes)} in all"
                 + (", besides the NIH images themselves (about 42 GB)" if self.plan.without_data else "")]
        for (size, n), cs in sorted(by_size.items(), key=lambda kv: -kv[0][0]):
            what = ", ".join(sorted({c.grayscale for c in cs}))
            lines.append(f"  image caches: {len(cs)} x {size} px x {n:,} images x {cs[0].bytes / n:,.0f} bytes = "
                         f"{_size(sum(c.bytes for c in cs))} ({what})")
        lines.append(f"  checkpoints: {_size(d.checkpoint_bytes)} (best.pt of {self.total.todo} runs); "
                     f"predictions: {_size(d.prediction_bytes)}")
        if d.images_checked:
            there = [c for c in d.caches if c.bytes_needed == 0]
            lines.append(f"already there: {len(there)} of {len(d.caches)} image caches "
                         f"({_size(sum(c.bytes for c in there))}); still to build: {_size(d.cache_bytes_needed)}")
        else:
            lines.append("already there: image caches not checked (they are keyed by the images: pass --data-root)")
        for root in sorted({c.root for c in d.caches}):
            lines.append(f"  image cache root: {root}")
        return lines

    # ---------------------------------------------------------------------------------- json
    def to_json(self) -> dict[str, Any]:
        from .suite import varying_factors

        factors = varying_factors(self.plan.runs)

        def fig(f: Any) -> dict[str, Any] | None:
            return None if f is None else {"hours": f.hours, "source": f.source.file, "machine": f.source.describe()}

        return {
            "suite": self.plan.suite.name, "profile": self.plan.profile,
            "runs": [{"run_id": r.run_id, "name": r.name, "blocks": r.blocks, "status": self.status[r.run_id],
                      "factors": {f: get_dotted(r.config, f) for f in factors},
                      "gpu": fig(self.estimates.gpu.get(r.run_id)), "cpu": fig(self.estimates.cpu.get(r.run_id)),
                      "pairs": [{"factor": p.factor, "value": p.value} for p in r.pairs]}
                     for r in self.plan.runs],
            "totals": {"runs": len(self.status), "done": sum(s == "done" for s in self.status.values()),
                       "todo": self.total.todo, "gpu_hours": self.total.gpu_hours,
                       "gpu_unmeasured": self.total.gpu_missing, "cpu_hours": self.total.cpu_hours,
                       "cpu_unmeasured": self.total.cpu_missing},
            "blocks": [vars(b) for b in self.blocks],
            "disk": {"total_bytes": self.disk.total_bytes, "cache_bytes": self.disk.cache_bytes,
                     "cache_bytes_to_build": self.disk.cache_bytes_needed if self.disk.images_checked else None,
                     "checkpoint_bytes": self.disk.checkpoint_bytes, "prediction_bytes": self.disk.prediction_bytes,
                     "caches": [{"root": c.root, "image_size": c.image_size, "grayscale": c.grayscale,
                                 "resize": c.resize, "n_images": c.n_images, "bytes": c.bytes,
                                 "bytes_to_build": c.bytes_needed if self.disk.images_checked else None,
                                 "runs": len(c.runs), "directory": c.directory} for c in self.disk.caches]},
            "notes": self.estimates.notes(),
        }


# ---------------------------------------------------------------------------------------------- building
def make_dry_run(plan: SweepPlan, store: RunStore, check: SweepCheck, *, device: str | None = None,
                 figures: str | None = None) -> DryRun:
    """The plan of ``plan``'s runs in ``store``, from the checks :func:`~.precheck.check_sweep` made."""
    runs = plan.runs
    status = {r.run_id: _status(r.run_id, store, check) for r in runs}
    est = estimate_runs({r.run_id: r.config for r in runs}, figures)
    blocks: dict[str, BlockCost] = {}
    total = BlockCost("all")
    for r in runs:
        todo = status[r.run_id] != "done"
        total.add(r.run_id, todo, est)
        for b in r.blocks:
            blocks.setdefault(b, BlockCost(b)).add(r.run_id, todo, est)
    disk = _disk(plan, check, status)
    return DryRun(plan, status, est, list(blocks.values()), total, disk, device, _hardware(device))


def _status(run_id: str, store: RunStore, check: SweepCheck) -> str:
    if run_id in check.done:
        return "done"
    try:
        rd = store.run(run_id)
        if not rd.manifest_path.is_file():
            return "to do"
        state = str(rd.status)
    except RunStoreError:  # a linked folder or a damaged manifest: the run is evaluated again
        return "damaged (done again)"
    return {"failed": "failed", "running": "resumes"}.get(state, "to do")


def _disk(plan: SweepPlan, check: SweepCheck, status: dict[str, str]) -> DiskPlan:
    todo = [r for r in plan.runs if status[r.run_id] != "done"]
    caches = [] if plan.without_data else list(check.caches)
    # Runs whose data root was not read (none given, or one the checks refused): counted from the bundled
    # NIH metadata, and whether their caches exist is not known.
    seen = {run_id for c in caches for run_id in c.runs}
    unread = [r for r in plan.runs if r.config.data.source == "cache" and r.run_id not in seen]
    checked = not unread
    caches += _caches_from_metadata(unread) if unread else []
    releases: dict[str | None, NIHRelease] = {}
    eval_rows: dict[tuple, int] = {}
    checkpoints = predictions = 0
    for r in todo:
        cfg = r.config
        checkpoints += WEIGHT_BYTES * _parameters(cfg.model.backbone, cfg.model.head, _num_labels(cfg),
                                                  cfg.data.channels, tuple(sorted(cfg.model.head_kwargs.items())))
        group = image_group(cfg)
        if group not in eval_rows:
            eval_rows[group] = _eval_rows(cfg, releases, plan.without_data)
        predictions += eval_rows[group] * (PREDICTION_ROW_BYTES + PREDICTION_LABEL_BYTES * _num_labels(cfg))
    return DiskPlan(caches, checkpoints, predictions, checked)


def _caches_from_metadata(runs: Sequence[SuiteRun]) -> list[CacheNeed]:
    """The caches of runs planned without their data root: image counts from the bundled NIH metadata."""
    from ..data.cache import estimate_cache_bytes
    from ..data.release import NIHRelease

    release = NIHRelease.bundled_full()
    caches = []
    for members in cache_groups(runs, lambda r: r.config).values():
        d = members[0].config.data
        n = len(run_image_names(members[0].config, release))
        size = estimate_cache_bytes(n, d.image_size)
        caches.append(CacheNeed(str(cache_root(d.cache_dir)), d.image_size, d.grayscale, d.resize, n, size, size,
                                tuple(r.run_id for r in members)))
    return caches


def _eval_rows(cfg: RunConfig, releases: dict[str | None, NIHRelease], without_data: bool) -> int:
    """Images in the val and test splits of ``cfg`` (the rows of its two predictions files)."""
    from ..data.release import NIHRelease
    from ..engine.trainer import split_rows

    root = None if without_data else cfg.data.root
    if root not in releases:
        try:
            releases[root] = NIHRelease.bundled_full() if without_data else NIHRelease.open(root)
        except CxrBenchError:  # already one of the checks' problems; count the NIH lists instead
            releases[root] = NIHRelease.bundled_full()
    rows = split_rows(cfg, releases[root])
    return len(rows.val) + len(rows.test)


def _num_labels(cfg: RunConfig) -> int:
    from ..data.labels import get_label_set

    return len(get_label_set(cfg.data.label_set).labels)


@functools.cache
def _parameters(backbone: str, head: str, num_labels: int, channels: str, head_kwargs: tuple) -> int:
    """Parameters of a run's model, from a shapes-only build on the meta device (no weights are read)."""
    import warnings

    import torch

    from ..models import create_model

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = create_model(backbone, head=head, num_labels=num_labels, channels=channels,
                             head_kwargs=dict(head_kwargs))
    return int(sum(p.numel() for p in model.parameters()))


def _hardware(device: str | None) -> dict[str, Any]:
    """The machine ``--device`` names (this one), and how to tell a figure measured on it."""
    if device is None:
        return {}
    from .provenance import hardware_info

    hw = hardware_info()
    if device.startswith("cuda") or (device == "auto" and hw["gpus"]):
        name = hw["gpus"][0]["name"] if hw["gpus"] else None
        return {"gpu": True, "name": f"this machine's GPU ({name})" if name else "this machine's GPU",
                "match": (lambda s: bool(name) and s.gpu == name)}
    cpu, cores = hw["cpu_model"], hw["cpu_usable"]
    return {"gpu": False, "name": f"this machine's CPU ({cpu}, {cores} usable cores)",
            "match": (lambda s: not s.gpu and s.machine.get("cpu") == cpu and s.machine.get("cpu_usable") == str(cores))}


# ---------------------------------------------------------------------------------------------- text
def _mode(values: list[str]) -> str | None:
    """The value most runs share, if more than half do (a factor without one is shown for every run)."""
    best = max(dict.fromkeys(values), key=values.count)
    return best if 2 * values.count(best) > len(values) else None


def _hours_total(hours: float, measured: int, todo: int) -> str:
    text = f"{format_hours(hours)} for the {measured} measured run(s) of {todo} to do"
    return text + (f"; {todo - measured} not measured" if measured < todo else "")


def _block_hours(hours: float, todo: int, missing: int) -> str:
    if todo == 0:
        return "-"
    if missing == todo:
        return "not measured"
    return f"{hours:,.0f}" + (f" (+{missing} unmeasured)" if missing else "")


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:.0f} B"
