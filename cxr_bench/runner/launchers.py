"""Launchers: how the runs of a sweep are executed.

- :class:`LocalLauncher`: in this process, one run after the other (the default; what ``make demo`` uses).
- :class:`SubmititLauncher`: each run is a submitit job. On a SLURM cluster the runs go in as one job
  array (``executor.map_array``) with ``--slurm-*`` parameters; without SLURM, submitit's local executor
  runs the jobs as subprocesses of this machine (what the tests use). The image caches are first built
  by one job, so a bad image is reported once and the array's jobs only read the caches.

Both call :func:`cxr_bench.runner.execute_run`, which takes each run's lock: a job that finds its run
completed or held by another process returns at once, so re-submitting a suite is always safe.

A run that asks for several processes (``--nproc-per-run N``, one per GPU) runs them with
``torchrun --standalone --nproc-per-node N`` inside the job (one SLURM task with N GPUs), see
docs/running.md. SLURM options are checked in :mod:`cxr_bench.runner.slurm` before submitit sees them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

import submitit

from ..utils.progress import suite_bar
from .caches import CacheReport, prepare_caches
from .console import RunLines
from .planning import RunSpec
from .slurm import SlurmOptions
from .store import RunLocked, RunStore, Status
from .sweep import RunOutcome, execute_run

log = logging.getLogger(__name__)

__all__ = ["LocalLauncher", "RunJob", "SlurmOptions", "SubmititLauncher"]


class LocalLauncher:
    """Runs one after another in this process; one progress bar over the runs, the engine's per run."""

    name = "local"

    def prepare(self, specs: list[RunSpec], *, progress: bool | None = None) -> CacheReport:
        return prepare_caches(specs, progress=progress)

    def launch(self, specs: list[RunSpec], *, progress: bool | None = None) -> list[RunOutcome]:
        outcomes = []
        lines = RunLines(len(specs))
        with suite_bar(len(specs), "suite", progress) as bar:
            for spec in specs:
                bar.set_postfix_str(spec.name, refresh=True)
                outcome = execute_run(spec, progress=progress)
                outcomes.append(outcome)
                bar.update(1)
                lines.finished(outcome.run_id, outcome.name, outcome.label, test_mean_auc=outcome.test_mean_auc,
                               wall_seconds=outcome.wall_seconds, detail=outcome.detail, warnings=outcome.warnings)
        return outcomes


class RunJob(submitit.helpers.Checkpointable):
    """The job function: one run. Checkpointable, so a job that reaches its SLURM time limit is requeued
    (submitit signals it first) and the new job resumes the run from ``checkpoints/last.pt``."""

    def __call__(self, spec: RunSpec) -> RunOutcome:
        return execute_run(spec, progress=None)  # off a terminal: log lines, not bars


class SubmititLauncher:
    """Each run a submitit job; on SLURM one job array. Waits for the jobs and returns their outcomes."""

    name = "submitit"

    def __init__(self, folder: str | os.PathLike, options: SlurmOptions, *, cluster: str | None = None,
                 nproc: int = 1, local_parallelism: int = 1) -> None:
        self.folder = Path(folder)
        self.options = options
        self.cluster = cluster
        self.nproc = nproc
        # submitit's local executor starts every submitted job at once; on a workstation that would
        # oversubscribe it, so local jobs go in waves of this many.
        self.local_parallelism = max(1, local_parallelism)

    def _executor(self) -> submitit.AutoExecutor:
        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        executor.update_parameters(**self.options.executor_parameters(self.nproc))
        log.info("submitit executor: %s (folder %s)", executor.cluster, self.folder)
        return executor

    def prepare(self, specs: list[RunSpec], *, progress: bool | None = None) -> CacheReport:
        """Build the image caches: on SLURM in one job (a compute node, not the login node), otherwise
        here, where a job would run on this same machine anyway."""
        executor = self._executor()
        if executor.cluster != "slurm":
            return prepare_caches(specs, progress=progress)
        job = executor.submit(prepare_caches, specs, progress=None)
        log.info("image caches: job %s", job.job_id)
        try:
            return job.result()
        except Exception as e:  # noqa: BLE001 - the job died: report it once, as the reason for every run
            log.error("image cache job %s failed: %s", job.job_id, _short(e))
            return CacheReport(errors={s.run_id: f"image cache job {job.job_id} failed: {_short(e)}"
                                       for s in specs})

    def launch(self, specs: list[RunSpec], *, progress: bool | None = None) -> list[RunOutcome]:
        if not specs:
            return []
        executor = self._executor()
        for spec in specs:
            spec.launcher = {"kind": "submitit", "cluster": executor.cluster,
                             "options": asdict(self.options)}
        waves = [specs] if executor.cluster == "slurm" else [
            specs[i:i + self.local_parallelism] for i in range(0, len(specs), self.local_parallelism)]
        outcomes: dict[str, RunOutcome] = {}
        lines = RunLines(len(specs))
        with suite_bar(len(specs), "suite jobs", progress) as bar:
            for wave in waves:
                jobs = executor.map_array(RunJob(), wave)
                log.info("submitted %d runs as jobs %s", len(jobs), ", ".join(j.job_id for j in jobs))
                by_job = {j.job_id: s for j, s in zip(jobs, wave)}
                for job in submitit.helpers.as_completed(jobs, poll_frequency=2):
                    spec = by_job[job.job_id]
                    try:
                        outcome = job.result()
                    except Exception as e:  # noqa: BLE001 - the job itself died (timeout, OOM, node failure)
                        outcome = _job_died(spec, job, e)
                    outcomes[spec.run_id] = outcome
                    bar.update(1)
                    lines.finished(outcome.run_id, outcome.name, outcome.label,
                                   test_mean_auc=outcome.test_mean_auc, wall_seconds=outcome.wall_seconds,
                                   detail=outcome.detail, warnings=outcome.warnings)
        return [outcomes[s.run_id] for s in specs]


def _job_died(spec: RunSpec, job: submitit.Job, error: BaseException) -> RunOutcome:
    """Record in the run's manifest that its job died without a result, and return a failed outcome."""
    message = f"job {job.job_id} died: {_short(error)}; job logs in {job.paths.folder}"
    rd = RunStore(spec.store_root, spec.suite).run(spec.run_id)
    try:
        with rd.lock():
            rd.mark_failed(type(error).__name__, message, str(error))
    except RunLocked:  # a new job already took the run over (e.g. submitit requeued it)
        pass
    return RunOutcome(spec.run_id, spec.name, Status.FAILED, message)


def _short(e: BaseException, n: int = 400) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= n else "..." + text[-n:]
