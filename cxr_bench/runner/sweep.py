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

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import RunConfig
from ..errors import CxrBenchError, RunStoreError, TrainingError, errno_suffix
from ..utils.io import atomic_write_json, read_json, remove_stale_temps
from ..utils.text import format_table, one_line
from .caches import CacheReport, stops_the_sweep
from .console import console_digest
from .planning import RunSpec, plan_specs, write_plan
from .provenance import collect_provenance
from .store import (
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

# ---------------------------------------------------------------------------------------------- records
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
    warnings: str = ""  # the run's digest of metric warnings (kept in full in its log.txt)

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
                 one_line(o.detail, 100)] for o in self.outcomes]
        table = format_table(["run id", "name", "status", "test AUC", "wall", "detail"], rows)
        return f"{table}\n{self.totals()}"

    def totals(self) -> str:
        """One line: how many runs completed, were skipped and failed, in how long, into which store."""
        return (f"{self.suite} ({self.profile or 'no profile'}): {self.count('completed')} completed, "
                f"{self.count('skipped')} skipped, {self.count('failed')} failed "
                f"in {self.wall_seconds:.0f}s; run store {self.store_dir}")


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
            with console_digest(file_handler, f"run {spec.run_id}") as digest:
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
                      m["wall_seconds"], _test_auc(rd), warnings=digest.summary())


# ---------------------------------------------------------------------------------------------- disk
_RERUN_ADVICE = ("free some disk space (or fix the folder) and run the same command again: finished runs are "
                 "kept and this one resumes")




def _train(cfg: RunConfig, rd: RunDir, nproc: int, progress: bool | None) -> dict[str, Any]:
    """Run the engine in this process, or under torchrun with ``nproc`` processes (one per GPU)."""
    if nproc <= 1:
        from ..engine.trainer import train_run

        train_run(cfg, rd.path, progress=progress)
    else:
        from .torchrun import run_torchrun

        run_torchrun(rd.path, nproc, rd.log_path)
    if not rd.metrics_path.is_file():
        raise TrainingError(f"the engine finished without writing {rd.metrics_path}")
    return _result_summary(rd)


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


# ---------------------------------------------------------------------------------------------- sweep
class Launcher(Protocol):
    name: str

    def launch(self, specs: list[RunSpec], *, progress: bool | None = None) -> list[RunOutcome]: ...

    def prepare(self, specs: list[RunSpec], *, progress: bool | None = None) -> CacheReport: ...


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
        root = spec.config.data.root
        try:
            rd = store.run(spec.run_id)  # e.g. a linked run folder: that run fails, the others go on
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


