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

After a sweep, :func:`finish_outputs` runs the post-sweep steps in :data:`POST_SWEEP` order: localization,
leaderboard, reports. They are plain calls; only the reports need optional packages (papermill, nbconvert),
and without them the sweep says which command renders the reports later.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import RunConfig
from ..errors import CxrBenchError, RunStoreError, TrainingError
from ..utils.io import atomic_write_json, read_json, remove_stale_temps
from ..utils.text import format_table, one_line
from .caches import CacheReport, stops_the_sweep
from .console import console_digest
from .planning import RunSpec, plan_specs, write_plan
from .provenance import collect_provenance
from .store import RunDir, RunLocked, RunStore, Status, artifact_record, verify_artifacts
from .suite import Suite, SuiteRun

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- records
@dataclass
class RunOutcome:
    """What one run did in this sweep: ``completed``, ``skipped`` (done before, or locked), ``failed``."""

    run_id: str
    name: str
    status: str
    detail: str = ""
    wall_seconds: float | None = None
    test_mean_auc: float | None = None
    warnings: str = ""  # the run's digest of metric warnings (kept in full in its log.txt)


@dataclass
class SweepResult:
    suite: str
    profile: str | None
    store_dir: Path
    outcomes: list[RunOutcome]
    wall_seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        """A table of every run and one line of totals, for the end of a sweep."""
        rows = [[o.run_id, o.name, o.status,
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
@functools.lru_cache(maxsize=8)
def _data_record(root: str | None) -> dict[str, Any]:
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
            f"from {data['root'] or 'the bundled sample'}); use another --out for this dataset"
        )


def execute_run(spec: RunSpec, *, progress: bool | None = None) -> RunOutcome:
    """Execute one run into the store (see the module docstring). Never raises for a failing run: the
    failure is recorded in the run's manifest and returned as a ``failed`` outcome."""
    rd = RunStore(spec.store_root, spec.suite).run(spec.run_id)
    cfg = RunConfig.from_dict(spec.config)
    if cfg.run_id() != spec.run_id:
        raise RunStoreError(f"run {spec.run_id}: config hashes to {cfg.run_id()}; the spec is inconsistent")
    try:
        with rd.lock():
            return _execute_locked(spec, cfg, rd, progress)
    except RunLocked as e:
        log.warning("%s", e)
        return RunOutcome(spec.run_id, spec.name, "skipped", "locked: running in another process")


def _execute_locked(spec: RunSpec, cfg: RunConfig, rd: RunDir, progress: bool | None) -> RunOutcome:
    try:
        data = _data_record(cfg.data.root)
        check_same_data(rd, data)
    except CxrBenchError as e:
        log.error("run %s (%s): %s", spec.run_id, spec.name, e)
        return RunOutcome(spec.run_id, spec.name, "failed", str(e))
    # The manifest is the record of a run's state, the files are its results; where the two disagree (a
    # kill between the engine's last write and the manifest's, a file deleted or cut), the run is done
    # again from its checkpoints: the engine resumes a finished run by evaluating its best checkpoint
    # again (same numbers, new files), an unfinished one by training on from last.pt.
    repair = None
    if rd.completed:
        damage = verify_artifacts(rd.path)
        if not damage:
            return RunOutcome(spec.run_id, spec.name, "skipped", "completed before",
                              test_mean_auc=_test_auc(rd))
        repair = f"completed, but {'; '.join(damage)}"
    elif rd.status is Status.COMPLETED:
        repair = f"its manifest says completed but {rd.metrics_path.name} is missing"
    for tmp in remove_stale_temps(rd.path):  # we hold the run's lock: these are a killed attempt's
        log.info("removed %s, left by an interrupted write", tmp)
    try:
        atomic_write_json(rd.config_path, cfg.to_dict())
    except OSError as e:
        raise RunStoreError(f"cannot write {rd.config_path}: {e.strerror or e}{_errno_name(e)}; "
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
            m = rd.finish(attempt, "failed", error=e)
            if stops_the_sweep(e):
                raise RunStoreError(f"run {spec.run_id}: {e}; {_RERUN_ADVICE}") from e
            return RunOutcome(spec.run_id, spec.name, "failed", f"{type(e).__name__}: {e}",
                              m["wall_seconds"])
        attempt.manifest["artifacts"] = artifact_record(rd.path)
        m = rd.finish(attempt, "completed", result=result)
        from ..engine.checkpoint import LAST, compact_finished

        try:  # the run is complete and recorded; a failure here only leaves a larger last.pt
            saved = compact_finished(rd.path / "checkpoints" / LAST)
            if saved:
                log.info("compacted checkpoints/last.pt of the finished run (%.0f MB freed)", saved / 2**20)
        except Exception as e:  # noqa: BLE001 - any failure here only leaves a larger last.pt
            log.warning("run %s: could not compact checkpoints/last.pt (%s); the run is complete", spec.run_id, e)
        log.info("run %s (%s): completed in %.0fs", spec.run_id, spec.name, m["wall_seconds"])
    return RunOutcome(spec.run_id, spec.name, "completed", "resumed" if resumed else "",
                      m["wall_seconds"], _test_auc(rd), digest.summary())


# ---------------------------------------------------------------------------------------------- disk
_RERUN_ADVICE = ("free some disk space (or fix the folder) and run the same command again: finished runs are "
                 "kept and this one resumes")


def _errno_name(e: OSError) -> str:
    return f" [{errno.errorcode[e.errno]}]" if e.errno is not None and e.errno in errno.errorcode else ""


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

    First every check of :mod:`cxr_bench.runner.precheck` (a problem raises before anything is written),
    then the downloadable pretrained weights, then the image caches, then the runs.
    """
    from .precheck import check_sweep, fetch_weights

    t0 = time.monotonic()
    store = RunStore(out, suite.name)
    specs = plan_specs(suite, runs, profile, out, nproc=nproc, launcher=launcher.name)
    check = check_sweep(specs, store)
    check.raise_problems()
    for note in check.notes:
        log.warning("%s", note)
    fetch_weights(check.to_fetch)
    store.path.mkdir(parents=True, exist_ok=True)
    write_plan(suite, runs, profile, store)
    outcomes: dict[str, RunOutcome] = {}
    todo: list[RunSpec] = []
    for spec in specs:
        spec.cache_key = check.image_keys.get(spec.run_id)  # the built cache's key replaces it (same value)
        rd = store.run(spec.run_id)
        if spec.run_id in check.done:
            try:
                check_same_data(rd, _data_record(spec.config["data"]["root"]))
            except CxrBenchError as e:
                outcomes[spec.run_id] = RunOutcome(spec.run_id, spec.name, "failed", str(e))
                continue
            outcomes[spec.run_id] = RunOutcome(spec.run_id, spec.name, "skipped", "completed before",
                                               test_mean_auc=_test_auc(rd))
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
                outcomes[spec.run_id] = RunOutcome(spec.run_id, spec.name, "failed", cache_errors[spec.run_id])
        todo = [s for s in todo if s.run_id not in cache_errors]
        for o in launcher.launch(todo, progress=progress):
            outcomes[o.run_id] = o
    ordered = [outcomes[s.run_id] for s in specs if s.run_id in outcomes]
    return SweepResult(suite.name, profile, store.path, ordered, time.monotonic() - t0)


# ---------------------------------------------------------------------------------------------- after
def finish_outputs(out: str | os.PathLike, suite: str, profile: str | None) -> list[str]:
    """The post-sweep steps, in order: localize the completed runs, write ``<out>/<suite>/leaderboard.csv``,
    render the reports into ``<out>/<suite>/reports/``. Returns lines to show the user.

    A failure here is reported, not raised: the runs themselves are done and safe in the store.
    """
    store = RunStore(out, suite)
    lines: list[str] = []
    for step in POST_SWEEP:
        try:
            lines += step(store)
        except Exception as e:  # reported, with its traceback in the log when it is not a user error
            log.error("%s failed: %s", step.__name__, e, exc_info=not isinstance(e, CxrBenchError))
            lines.append(f"{step.__name__.replace('_', ' ')} failed ({e}); retry: {_RETRY[step.__name__]}"
                         .format(store=store.path, suite=suite))
    return lines


def write_leaderboard_csv(store: RunStore) -> list[str]:
    from ..results.leaderboard import build_leaderboard, write_leaderboard

    lb_csv = store.path / "leaderboard.csv"
    write_leaderboard(build_leaderboard(store.path, store.suite), lb_csv)
    return [f"leaderboard: {lb_csv}"]


def render_store_reports(store: RunStore) -> list[str]:
    report_dir = store.path / "reports"
    try:
        from ..reports.render import render_reports
    except ImportError as e:  # papermill / nbformat / nbconvert are optional on a compute node
        return [f"reports not rendered ({e.name} is not installed); later, where it is: "
                f"cxr-bench report --runs {store.path.parent} --suite {store.suite}"]
    rendered = render_reports(store.path, report_dir, suite=store.suite)
    return [f"report: {r.html}" for r in rendered] or [f"report: {report_dir}"]


def localize_completed(store: RunStore) -> list[str]:
    """Score the heatmaps of every completed, not yet localized run against BBox_List (Wang Table 4).

    Runs whose release has no box file, or whose label set has no box label, are skipped; a failure is
    reported, never raised (the leaderboard then leaves that run's localization columns empty).
    """
    from ..engine.localize import localize_run

    done, failed = 0, []
    for run_id in store.run_ids():
        try:
            rd = store.run(run_id)
            if not rd.completed or (rd.path / "localization.csv").is_file():
                continue
            localize_run(rd.path, progress=False)
            done += 1
        except CxrBenchError as e:
            log.info("run %s: not localized: %s", run_id, e)
        except Exception as e:  # reported with its traceback; the other runs go on
            log.error("run %s: localization failed: %s", run_id, e, exc_info=True)
            failed.append(run_id)
    lines = [f"localization: {done} run(s) scored against BBox_List_2017"] if done else []
    if failed:
        lines.append(f"localization failed for {', '.join(failed)}; retry: cxr-bench localize --run RUN_DIR")
    return lines


# The post-sweep hooks, in order (localization first: the leaderboard and reports show its columns).
POST_SWEEP: tuple[Callable[[RunStore], list[str]], ...] = (localize_completed, write_leaderboard_csv,
                                                           render_store_reports)
_RETRY = {"localize_completed": "cxr-bench localize --run RUN_DIR",
          "write_leaderboard_csv": "cxr-bench leaderboard --runs {store}",
          "render_store_reports": "cxr-bench report --runs {store} --suite {suite}"}
