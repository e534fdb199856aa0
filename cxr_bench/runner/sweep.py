"""Sweeps: run every run of a suite into a run store, resumably, whatever happens to one of them.

``run_suite`` expands a suite, skips the runs that are already completed, builds each image cache the
remaining runs need once (so a broken image is reported once, not once per run), then hands the runs to a
launcher (:mod:`cxr_bench.runner.launchers`: in-process, or submitit jobs). Each run is executed by
:func:`execute_run`, the one unit of work every launcher calls:

- take the run's lock, or skip the run if another process holds it;
- skip it if it is completed (and was computed on the same data files);
- write ``config.json`` and a ``running`` manifest with provenance, copy the log into ``log.txt``;
- call the engine (:func:`cxr_bench.engine.trainer.train_run`, which resumes from ``checkpoints/last.pt``)
  in-process, or under ``torchrun`` when the run asks for several processes;
- record ``completed``, or ``failed`` with the error and its traceback, and go on.

An interrupted run (killed, out of time, Ctrl-C) keeps status ``running`` with its lock released; the next
sweep finds it that way and resumes it.

``python -m cxr_bench train --config RUN_DIR/config.json --run-dir RUN_DIR`` is the per-process entry point
``torchrun`` starts for a multi-GPU run (see docs/running.md).

What follows a sweep (localization, leaderboard, reports) is :mod:`cxr_bench.pipeline`, a layer above this
one: ``cxr-bench run`` calls it once :func:`run_suite` returns.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config import RunConfig, get_dotted
from ..data.release import PHANTOM_PREFIX
from ..errors import ConfigError, CxrBenchError, RunStoreError, TrainingError, errno_suffix
from ..utils.clock import utc_now
from ..utils.io import atomic_write_json, read_json, remove_stale_temps
from ..utils.text import text_table
from .precheck import check_registry_names, image_group
from .provenance import collect_provenance
from .store import (
    LOCK_HELD_ENV,
    RunDir,
    RunLocked,
    RunStore,
    Status,
    artifact_record,
    set_aside_damaged_manifest,
    verify_artifacts,
)
from .suite import Suite, SuiteRun

log = logging.getLogger(__name__)

SAMPLE_BANNER = (
    "Running the '{profile}' profile on the bundled real sample (1,673 NIH images stored at 256 px, trained "
    "at 64 px; no --data-root given).\nThese numbers are NOT comparable with the paper and sit at chance by "
    "construction: random initialisation, 64 px, a few dozen steps, and a tiny, biased sample (1,000 of its "
    "images are 500 'Pneumonia' + 500 'No Finding' from a single source). The 'sanity' run (a small network "
    "on a seeded phantom release with planted lesions) shows the same pipeline learning. For the real "
    "benchmark pass --data-root /path/to/NIH (see docs/running.md)."
)


# ---------------------------------------------------------------------------------------------- records
@dataclass
class RunSpec:
    """Everything a process needs to execute one run; small and picklable (sent to submitit jobs)."""

    store_root: str
    suite: str
    run_id: str
    config: RunConfig
    suite_record: dict[str, Any]
    nproc: int = 1
    launcher: dict[str, Any] = field(default_factory=dict)
    cache_key: str | None = None
    data: dict[str, Any] | None = None  # data_record of the run's root, taken by the sweep; None: at the run

    @property
    def name(self) -> str:
        return self.config.name or self.run_id


@dataclass
class RunOutcome:
    """What one run did in this sweep: the run's :class:`Status` afterwards, and ``skipped`` when this sweep
    left it alone (completed before, or locked by another process, which is running it)."""

    run_id: str
    name: str
    status: Status
    detail: str = ""
    wall_seconds: float | None = None
    test_mean_auc: float | None = None
    skipped: bool = False

    @property
    def label(self) -> str:
        """What the sweep's summary shows: ``skipped``, or the status this sweep left the run in."""
        return "skipped" if self.skipped else str(self.status)


@dataclass
class SweepResult:
    suite: str
    profile: str | None
    store_dir: Path
    outcomes: list[RunOutcome]
    wall_seconds: float = 0.0

    def count(self, label: str) -> int:
        """Outcomes whose :attr:`RunOutcome.label` is ``label`` (a status, or ``skipped``)."""
        return sum(o.label == label for o in self.outcomes)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status is Status.FAILED]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        """A table of every run and one line of totals, for the end of a sweep."""
        rows = [[o.run_id, o.name, o.label,
                 "" if o.test_mean_auc is None else f"{o.test_mean_auc:.3f}",
                 "" if o.wall_seconds is None else f"{o.wall_seconds:.0f}s",
                 _one_line(o.detail, 100)] for o in self.outcomes]
        table = text_table(["run id", "name", "status", "test AUC", "wall", "detail"], rows)
        totals = (f"{self.suite} ({self.profile or 'no profile'}): {self.count('completed')} completed, "
                  f"{self.count('skipped')} skipped, {len(self.failed)} failed "
                  f"in {self.wall_seconds:.0f}s; run store {self.store_dir}")
        return f"{table}\n{totals}"


# ---------------------------------------------------------------------------------------------- one run
def data_record(root: str | None) -> dict[str, Any]:
    """What a run's manifest records of its data: the resolved root, its kind and the sha256 of its metadata
    and split files. The sweep takes it once per root (:attr:`RunSpec.data`)."""
    from ..data.release import NIHRelease

    release = NIHRelease.open(root)
    return {"root": None if root is None else str(Path(release.root).resolve()),
            "is_bundled_sample": bool(release.is_bundled_sample),
            "is_phantom": (release.root / "phantom.json").is_file() if root is not None else False,
            "file_hashes": dict(release.file_hashes())}


def check_same_data(rd: RunDir, data: dict[str, Any]) -> None:
    """Refuse to reuse a run computed on other data files.

    ``data.root`` is not part of the run id (moving a dataset must not orphan runs), so the sha256 of the
    metadata and split files recorded in the manifest is what tells a sample run from a full-data run.
    """
    before = (rd.manifest().get("data") or {}).get("file_hashes")
    if before and before != data["file_hashes"]:
        changed = sorted(k for k in set(before) | set(data["file_hashes"])
                         if before.get(k) != data["file_hashes"].get(k))
        raise RunStoreError(
            f"run {rd.run_id} in {rd.path} was computed on other data files ({', '.join(changed)} differ "
            f"from {data['root'] or 'the bundled sample'}); use another --runs for this dataset"
        )


def execute_run(spec: RunSpec, *, progress: bool | None = None) -> RunOutcome:
    """Execute one run into the store (see the module docstring). Never raises for a failing run: the
    failure is recorded in the run's manifest and returned as a ``failed`` outcome."""
    try:
        rd = RunStore(spec.store_root, spec.suite).run(spec.run_id)
    except RunStoreError as e:  # e.g. its folder is a link to another run's: reported, the others go on
        log.error("run %s (%s): %s", spec.run_id, spec.name, e)
        return RunOutcome(spec.run_id, spec.name, Status.FAILED, str(e))
    cfg = spec.config
    if cfg.run_id() != spec.run_id:
        raise RunStoreError(f"run {spec.run_id}: config hashes to {cfg.run_id()}; the spec is inconsistent")
    try:
        with rd.lock():
            return _execute_locked(spec, cfg, rd, progress)
    except RunLocked as e:
        log.warning("%s", e)
        return RunOutcome(spec.run_id, spec.name, Status.RUNNING, "locked: running in another process",
                          skipped=True)


def _execute_locked(spec: RunSpec, cfg: RunConfig, rd: RunDir, progress: bool | None) -> RunOutcome:
    damaged = set_aside_damaged_manifest(rd)
    if damaged:
        log.warning("run %s (%s): %s; evaluating it again from its checkpoints", spec.run_id, spec.name, damaged)
    try:
        data = spec.data if spec.data is not None else data_record(cfg.data.root)
        check_same_data(rd, data)
    except CxrBenchError as e:
        log.error("run %s (%s): %s", spec.run_id, spec.name, e)
        return RunOutcome(spec.run_id, spec.name, Status.FAILED, str(e))
    # The manifest is the record of a run's state, the files are its results; where the two disagree (a
    # kill between the engine's last write and the manifest's, a file deleted or cut), the run is done
    # again from its checkpoints: the engine resumes a finished run by evaluating its best checkpoint
    # again (same numbers, new files), an unfinished one by training on from last.pt.
    repair = None
    if rd.completed:
        damage = verify_artifacts(rd.path)
        if not damage:
            return RunOutcome(spec.run_id, spec.name, Status.COMPLETED, "completed before",
                              test_mean_auc=_test_auc(rd), skipped=True)
        repair = f"completed, but {'; '.join(damage)}"
    elif rd.status is Status.COMPLETED:
        repair = f"its manifest says completed but {rd.metrics_path.name} is missing"
    for tmp in remove_stale_temps(rd.path):  # we hold the run's lock: these are a killed attempt's
        log.info("removed %s, left by an interrupted write", tmp)
    try:
        atomic_write_json(rd.config_path, cfg.to_dict())
    except OSError as e:
        raise RunStoreError(f"cannot write {rd.config_path}: {e.strerror or e}{errno_suffix(e)}; "
                            f"{_RERUN_ADVICE}") from e
    prov = collect_provenance()
    attempt = rd.start({
        **prov, "name": cfg.name, "seed": cfg.seed, "suite": spec.suite_record, "data": data,
        "cache_key": spec.cache_key, "launcher": {**spec.launcher, "nproc": spec.nproc},
    })
    resumed = attempt.manifest["attempts"][-1]["resumed_from_checkpoint"]
    with rd.log_to_file() as file_handler:
        if repair:
            log.warning("run %s: %s; evaluating it again from its checkpoints", spec.run_id, repair)
        log.info("run %s (%s): %s%s", spec.run_id, spec.name,
                 "resuming from checkpoints/last.pt" if resumed else "starting",
                 f" with torchrun, {spec.nproc} processes" if spec.nproc > 1 else "")
        try:
            with console_digest(file_handler, f"run {spec.run_id}"):
                result = _train(cfg, rd, spec.nproc, progress)
        except Exception as e:  # recorded and reported; the sweep goes on unless the disk is full
            log.exception("run %s (%s) failed: %s", spec.run_id, spec.name, e)
            m = rd.finish(attempt, Status.FAILED, error=e)
            if stops_the_sweep(e):
                raise RunStoreError(f"run {spec.run_id}: {e}; {_RERUN_ADVICE}") from e
            return RunOutcome(spec.run_id, spec.name, Status.FAILED, f"{type(e).__name__}: {e}",
                              m["wall_seconds"])
        attempt.manifest["artifacts"] = artifact_record(rd.path)
        m = rd.finish(attempt, Status.COMPLETED, result=result)
        from ..engine.checkpoint import LAST, compact_finished

        try:  # the run is complete and recorded; a failure here only leaves a larger last.pt
            saved = compact_finished(rd.path / "checkpoints" / LAST)
            if saved:
                log.info("compacted checkpoints/last.pt of the finished run (%.0f MB freed)", saved / 2**20)
        except Exception as e:  # noqa: BLE001 - any failure here only leaves a larger last.pt
            log.warning("run %s: could not compact checkpoints/last.pt (%s); the run is complete", spec.run_id, e)
        log.info("run %s (%s): completed in %.0fs", spec.run_id, spec.name, m["wall_seconds"])
    return RunOutcome(spec.run_id, spec.name, Status.COMPLETED, "resumed" if resumed else "",
                      m["wall_seconds"], _test_auc(rd))


# ---------------------------------------------------------------------------------------------- console
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_RERUN_ADVICE = ("free some disk space (or fix the folder) and run the same command again: finished runs are "
                 "kept and this one resumes")
_WARNINGS_LOG = logging.getLogger("cxr_bench.warnings")


def stops_the_sweep(error: BaseException) -> bool:
    """A full or read-only disk (the error or what caused it): every next cache and run would fail the same
    way, so the sweep stops with one line instead of recording the same failure for every run."""
    return any(isinstance(x, OSError) and x.errno in _DISK_ERRNOS
               for x in (error, error.__cause__, error.__context__))


class ConsoleDigest(logging.Filter):
    """Keeps the metric warnings off the console, counting them for one line per run.

    The bootstrap's dropped resamples and the labels without positives (:mod:`cxr_bench.metrics.roc`) are
    properties of the data, so every run of a suite warns the same way, several times; the run's
    ``log.txt`` (a handler this filter is not on) keeps each of them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bootstrap = 0  # labels whose bootstrap dropped resamples
        self.undefined: list[str] = []  # "split: labels" whose AUC is undefined
        self.other = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not record.name.startswith(("cxr_bench.metrics",
                                                                             _WARNINGS_LOG.name)):
            return True
        if not getattr(record, "_cxr_digested", False):  # counted once, however many handlers see it
            record._cxr_digested = True
            msg = str(record.msg)
            if msg.startswith("bootstrap:"):
                self.bootstrap += 1
            elif msg.startswith("%s split") and isinstance(record.args, tuple) and len(record.args) >= 3:
                self.undefined.append(f"{record.args[0]}: {record.args[2]}")
            else:
                self.other += 1
        return False

    def summary(self) -> str:
        parts = [f"no positive or no negative case (AUC null) in {'; '.join(self.undefined)}"] \
            if self.undefined else []
        if self.bootstrap:
            parts.append(f"the bootstrap dropped resamples without a positive or negative case for "
                         f"{self.bootstrap} label(s) (their intervals use the rest)")
        if self.other:
            parts.append(f"{self.other} other warning(s)")
        return "; ".join(parts)


@contextlib.contextmanager
def console_digest(keep: logging.Handler, what: str) -> Iterator[ConsoleDigest]:
    """During the block, metric warnings and Python warnings reach only the handler ``keep`` (a run's
    log file; each distinct Python warning once); then one line says what was kept there."""
    digest = ConsoleDigest()
    handlers = [h for h in logging.getLogger().handlers if h is not keep]
    for h in handlers:
        h.addFilter(digest)
    try:
        with warnings.catch_warnings(record=True) as caught:
            try:
                yield digest
            finally:
                for key in dict.fromkeys((w.category.__name__, str(w.message), w.filename, w.lineno)
                                         for w in caught):
                    _WARNINGS_LOG.warning("%s: %s (%s:%d)", *key)
    finally:
        for h in handlers:
            h.removeFilter(digest)
    line = digest.summary()
    if line:
        where = getattr(keep, "baseFilename", None)
        log.info("%s: %s%s", what, line, f"; details in {where}" if where else "")


def _train(cfg: RunConfig, rd: RunDir, nproc: int, progress: bool | None) -> dict[str, Any]:
    """Run the engine in this process, or under torchrun with ``nproc`` processes (one per GPU)."""
    if nproc <= 1:
        from ..engine.trainer import train_run

        train_run(cfg, rd.path, progress=progress)
    else:
        cmd = torchrun_command(rd.path, nproc)
        log.info("launching: %s", " ".join(cmd))
        with open(rd.log_path, "a", encoding="utf-8") as fh:
            fh.flush()
            # The ranks write into the run directory whose lock this process holds for them.
            env = {**os.environ, LOCK_HELD_ENV: str(rd.path)}
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False, env=env).returncode
        if rc != 0:
            raise TrainingError(f"torchrun exited with status {rc}; the ranks' output is in {rd.log_path}")
    if not rd.metrics_path.is_file():
        raise TrainingError(f"the engine finished without writing {rd.metrics_path}")
    return _result_summary(rd)


def torchrun_command(run_dir: Path, nproc: int) -> list[str]:
    """The single-node torchrun command line for one run: ``nproc`` ranks of ``cxr-bench train`` on the
    run's own ``config.json`` (the one torchrun entry point; the parent process holds the run's lock).

    ``--standalone`` gives the ranks a private rendezvous on localhost, so several runs (or jobs on one
    node) never collide on a port.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "cxr_bench", "train", "--config", str(run_dir / "config.json"), "--run-dir", str(run_dir)]


def _result_summary(rd: RunDir) -> dict[str, Any]:
    m = read_json(rd.metrics_path)
    test = m.get("test") or {}
    return {"test_mean_auc": test.get("mean_auc"), "test_mean_auc_ci": test.get("mean_auc_ci"),
            "best_epoch": m.get("best_epoch"), "epochs_run": m.get("epochs_run")}


def _test_auc(rd: RunDir) -> float | None:
    try:
        auc = (read_json(rd.metrics_path).get("test") or {}).get("mean_auc")
    except (OSError, ValueError):
        return None
    return None if auc is None else float(auc)


# ---------------------------------------------------------------------------------------------- caches
def cache_groups(specs: Iterable[RunSpec]) -> dict[tuple, list[RunSpec]]:
    """Runs grouped by the image cache they read.

    The engine caches exactly the images a run needs (train, possibly capped, + val + test), so the cache
    key follows the data fields that choose those images as well as the pixel fields.
    """
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        cfg = spec.config
        if cfg.data.source == "cache":
            groups.setdefault((*image_group(cfg), cfg.data.cache_dir), []).append(spec)
    return groups


@dataclass
class CacheReport:
    """What :func:`prepare_caches` did: the cache key each run reads, the error of each run whose cache
    could not be built."""

    keys: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def apply(self, specs: Iterable[RunSpec]) -> None:
        for spec in specs:
            spec.cache_key = self.keys.get(spec.run_id, spec.cache_key)


def prepare_caches(specs: Sequence[RunSpec], *, progress: bool | None = None) -> CacheReport:
    """Build every image cache ``specs`` need, once each (a failure is logged once per cache).

    Goes through the engine's own :func:`~cxr_bench.engine.trainer.load_run_data`, so the runs find
    exactly these caches (same images, same key) and build nothing themselves.
    """
    from ..engine.trainer import load_run_data

    report = CacheReport()
    for group in cache_groups(specs).values():
        d = group[0].config.data
        what = f"image cache {d.image_size}px/{d.grayscale} of {d.root or 'the bundled sample'}"
        t0 = time.monotonic()
        try:
            cache = load_run_data(group[0].config, progress=progress).train.cache
        except Exception as e:  # one report for every run that needs this cache
            if stops_the_sweep(e):  # a full disk: the next cache, and every run, would fail the same way
                raise
            log.error("%s failed (%d runs need it): %s", what, len(group), e,
                      exc_info=not isinstance(e, CxrBenchError))
            report.errors.update({spec.run_id: f"{what} failed: {e}" for spec in group})
            continue
        log.info("%s ready in %.1fs (key %s, %d rejected images)", what, time.monotonic() - t0, cache.key,
                 len(cache.rejected))
        report.keys.update({spec.run_id: cache.key for spec in group})
    return report


# ---------------------------------------------------------------------------------------------- sweep
class Launcher(Protocol):
    name: str

    def launch(self, specs: list[RunSpec], *, progress: bool | None = None) -> list[RunOutcome]: ...

    def prepare(self, specs: list[RunSpec], *, progress: bool | None = None) -> CacheReport: ...


def plan_specs(suite: Suite, runs: Sequence[SuiteRun], profile: str | None, out: str | os.PathLike,
               *, nproc: int = 1, launcher: str = "local") -> list[RunSpec]:
    store = RunStore(out, suite.name)
    return [RunSpec(str(store.root), suite.name, r.run_id, r.config, r.suite_record(suite, profile),
                    nproc=nproc, launcher={"kind": launcher}) for r in runs]


def write_plan(suite: Suite, runs: Sequence[SuiteRun], profile: str | None, store: RunStore) -> Path:
    """``plan-<profile>.json``: the expanded suite, with every run's blocks and ablation pairs in one file
    (what a report needs to pair runs without reading every manifest)."""
    path = store.plan_path(profile)
    atomic_write_json(path, {
        "suite": suite.name, "file": str(suite.path), "file_sha256": suite.sha256, "profile": profile,
        "written_at": utc_now(),
        "blocks": [{"name": b.name, "description": b.description, "grid": b.grid, "reference": b.reference}
                   for b in suite.blocks],
        "runs": [{"run_id": r.run_id, "name": r.name, **r.suite_record(suite, profile)} for r in runs],
    })
    return path


def run_suite(suite: Suite, runs: Sequence[SuiteRun], *, profile: str | None, out: str | os.PathLike,
              launcher: Launcher, nproc: int = 1, progress: bool | None = None) -> SweepResult:
    """Execute ``runs`` (an expansion of ``suite``) into ``<out>/<suite.name>/`` with ``launcher``.

    First the phantom releases the runs name (``data.root = "phantom:<seed>"``, written once into the cache
    folder), then every check of :mod:`cxr_bench.runner.precheck` (a problem raises before anything else is
    written), then the downloadable pretrained weights, then the image caches, then the runs.
    """
    from ..data.release import is_phantom, materialize_phantom
    from .precheck import check_sweep, fetch_weights

    t0 = time.monotonic()
    store = RunStore(out, suite.name)
    specs = plan_specs(suite, runs, profile, out, nproc=nproc, launcher=launcher.name)
    for phantom in sorted({str(r.config.data.root) for r in runs if is_phantom(r.config.data.root)}):
        materialize_phantom(phantom)  # a synthetic release, in the cache folder: the checks below open it
    check = check_sweep(specs, store)
    check.raise_problems()
    for note in check.notes:
        log.warning("%s", note)
    fetch_weights(check.to_fetch)
    store.path.mkdir(parents=True, exist_ok=True)
    write_plan(suite, runs, profile, store)
    outcomes: dict[str, RunOutcome] = {}
    todo: list[RunSpec] = []
    records: dict[str | None, dict[str, Any]] = {}  # one data record per root, for this sweep
    for spec in specs:
        spec.cache_key = check.image_keys.get(spec.run_id)  # the built cache's key replaces it (same value)
        rd = store.run(spec.run_id)
        root = spec.config.data.root
        try:
            if root not in records:
                records[root] = data_record(root)
            spec.data = records[root]
        except CxrBenchError as e:
            outcomes[spec.run_id] = RunOutcome(spec.run_id, spec.name, Status.FAILED, str(e))
            continue
        if spec.run_id in check.done:
            try:
                check_same_data(rd, spec.data)
            except CxrBenchError as e:
                outcomes[spec.run_id] = RunOutcome(spec.run_id, spec.name, Status.FAILED, str(e))
                continue
            outcomes[spec.run_id] = RunOutcome(spec.run_id, spec.name, Status.COMPLETED, "completed before",
                                               test_mean_auc=_test_auc(rd), skipped=True)
        else:
            todo.append(spec)
    log.info("%s: %d runs, %d completed before, %d to run with the %s launcher", suite.name, len(specs),
             len(specs) - len(todo), len(todo), launcher.name)
    if todo:
        report = launcher.prepare(todo, progress=progress)
        report.apply(todo)
        cache_errors = report.errors
        for spec in todo:
            if spec.run_id in cache_errors:
                outcomes[spec.run_id] = RunOutcome(spec.run_id, spec.name, Status.FAILED, cache_errors[spec.run_id])
        todo = [s for s in todo if s.run_id not in cache_errors]
        for o in launcher.launch(todo, progress=progress):
            outcomes[o.run_id] = o
    ordered = [outcomes[s.run_id] for s in specs if s.run_id in outcomes]
    return SweepResult(suite.name, profile, store.path, ordered, time.monotonic() - t0)


@dataclass
class SweepPlan:
    """A suite expanded for one invocation: the profile chosen, the runs selected, what to tell the user."""

    suite: Suite
    profile: str | None
    runs: list[SuiteRun]
    total: int  # runs in the suite before --only
    banner: str | None  # set when running on the bundled sample
    without_data: bool = False  # a dry run of a profile that needs --data-root, planned without one


def plan_sweep(suite_name: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
               profile: str | None = None, overrides: dict[str, Any] | None = None,
               only: Sequence[str] = (), seeds: int | None = None, dry_run: bool = False) -> SweepPlan:
    """Load and expand a suite the way ``cxr-bench run`` does.

    No ``data_root``: the suite's sample profile on the bundled real sample (with a banner saying so).
    With one: the suite's full profile (``paper`` for wang2017). ``only`` keeps the runs whose id, name,
    backbone or block matches one of the fnmatch patterns.
    """
    from .suite import load_suite

    suite = load_suite(suite_name if isinstance(suite_name, str) else Path(suite_name))
    profile = profile if profile is not None else suite.default_profile(str(data_root) if data_root else None)
    prof = suite.check_profile(profile)
    overrides = dict(overrides or {})
    if data_root is not None:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise ConfigError(f"--data-root {root} is not a directory (the folder holding Data_Entry_2017*.csv "
                              "and the images)")
        overrides["data.root"] = str(root.resolve())
    elif prof is not None and prof.needs_data_root and not dry_run:  # a dry run may plan without the data
        raise ConfigError(f"profile {profile!r} of suite {suite.name!r} runs on the full NIH release: pass "
                          f"--data-root DIR (or use --profile {suite.sample_profile or '<a sample profile>'})")
    runs = suite.expand(profile, overrides, seeds=seeds)
    check_registry_names(runs, overrides)
    total = len(runs)
    if only:
        runs = [r for r in runs if r.matches(only)]
        if not runs:
            raise ConfigError(f"--only {' '.join(only)} matches none of the {total} runs of {suite.name} "
                              "(patterns match run id, name, backbone or block; see --dry-run)")
    without_data = data_root is None and prof is not None and prof.needs_data_root
    # The bundled sample, possibly beside the sanity block's synthetic phantom release, but no real data.
    roots = {r.config.data.root for r in runs}
    is_sample = None in roots and all(r is None or r.startswith(PHANTOM_PREFIX) for r in roots) and not without_data
    banner = SAMPLE_BANNER.format(profile=profile or "default") if is_sample else None
    return SweepPlan(suite, profile, runs, total, banner, without_data)


# ---------------------------------------------------------------------------------------------- tables
def dry_run_table(runs: Sequence[SuiteRun], store: RunStore | None = None,
                  times: dict[str, str] | None = None) -> str:
    """One row per run: its id, blocks, every factor that differs between the runs, whether it is done, its
    expected time (``times``: run id -> text, see :mod:`cxr_bench.runner.estimate`) and its ablation pair."""
    from .suite import varying_factors

    factors = varying_factors(runs)
    rows = []
    for r in runs:
        done = ""
        if store is not None:
            try:
                rd = store.run(r.run_id)
                done = "done" if rd.completed else str(rd.status) if rd.manifest_path.is_file() else ""
            except RunStoreError:
                done = "damaged"
        rows.append([r.run_id, ",".join(r.blocks), *(str(get_dotted(r.config, f)) for f in factors), done,
                     *([times.get(r.run_id, "")] if times is not None else []),
                     ", ".join(f"{p.factor.split('.')[-1]}={p.value}" for p in r.pairs)])
    heads = [f.split(".")[0] if f.endswith(".name") else f.split(".")[-1] for f in factors]
    return text_table(["run id", "block(s)", *heads, "status", *(["est. time"] if times is not None else []),
                         "pair (vs reference)"], rows)


def _one_line(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."
