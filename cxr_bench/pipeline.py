"""What follows a sweep: localize the completed runs, write the leaderboard, render the reports.

This module sits above the runner, results and reports layers (see docs/architecture.md), so the sweep
itself imports none of them: ``cxr-bench run`` calls :func:`finish_outputs` once ``run_suite`` returns.
Each step is a plain call; only the reports need optional packages (papermill, nbconvert), and without
them the step says which command renders the reports later.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from .errors import CxrBenchError
from .runner.store import RunStore

log = logging.getLogger(__name__)


def finish_outputs(out: str | os.PathLike, suite: str) -> list[str]:
    """The post-sweep steps of :data:`POST_SWEEP`, in order, on ``<out>/<suite>/``. Returns lines to show
    the user.

    A failure here is reported, not raised: the runs themselves are done and safe in the store.
    """
    store = RunStore(out, suite)
    lines: list[str] = []
    for step in POST_SWEEP:
        try:
            lines += step(store)
        except Exception as e:  # reported, with its traceback in the log when it is not a user error
            log.error("%s failed: %s", step.__name__, e, exc_info=not isinstance(e, CxrBenchError))
            retry = _RETRY[step.__name__].format(store=store.path, suite=suite)  # before the message: it may hold braces
            lines.append(f"{step.__name__.replace('_', ' ')} failed ({e}); retry: {retry}")
    return lines


def localize_completed(store: RunStore) -> list[str]:
    """Score the heatmaps of every completed, not yet localized run against BBox_List (Wang Table 4).

    Each run goes with its typed config as the store's records read it, and each distinct data root is
    opened once for all its runs. Runs whose release has no box file, or whose label set has no box label,
    are skipped; a failure is reported, never raised (the leaderboard then leaves that run's localization
    columns empty).
    """
    from .data.release import NIHRelease
    from .engine.localize import localize_run
    from .results.runs import iter_runs

    if not store.path.is_dir():
        return []
    todo = [r for r in iter_runs(store.path) if not (r.run_dir / "localization.csv").is_file()]
    releases: dict[str | None, NIHRelease | CxrBenchError] = {}
    done, failed = 0, []
    for rec in todo:
        root = rec.config.data.root
        try:
            if root not in releases:
                try:
                    releases[root] = NIHRelease.open(root)
                except CxrBenchError as e:  # said once per root, for each of its runs
                    releases[root] = e
            release = releases[root]
            if isinstance(release, CxrBenchError):
                raise release
            localize_run(rec.run_dir, config=rec.config, release=release, progress=False)
            done += 1
        except CxrBenchError as e:
            log.info("run %s: not localized: %s", rec.run_id, e)
        except Exception as e:  # reported with its traceback; the other runs go on
            log.error("run %s: localization failed: %s", rec.run_id, e, exc_info=True)
            failed.append(rec.run_id)
    lines = [f"localization: {done} run(s) scored against BBox_List_2017"] if done else []
    if failed:
        lines.append(f"localization failed for {', '.join(failed)}; retry: cxr-bench localize --run-dir RUN_DIR")
    return lines


def write_leaderboard_csv(store: RunStore) -> list[str]:
    from .results.leaderboard import build_leaderboard, write_leaderboard

    lb_csv = store.path / "leaderboard.csv"
    write_leaderboard(build_leaderboard(store.path, store.suite), lb_csv, named=False)
    return [f"leaderboard: {lb_csv}"]


def render_store_reports(store: RunStore) -> list[str]:
    report_dir = store.path / "reports"
    try:
        from .reports.render import render_reports
    except ImportError as e:  # papermill / nbformat / nbconvert are optional on a compute node
        return [f"reports not rendered ({e.name} is not installed); later, where it is: "
                f"cxr-bench report --runs {store.root} --suite {store.suite}"]
    rendered = render_reports(store.path, report_dir, suite=store.suite)
    return [f"report: {r.html}" for r in rendered] or [f"report: {report_dir}"]


# In order: localization first, since the leaderboard and reports show its columns.
POST_SWEEP: tuple[Callable[[RunStore], list[str]], ...] = (localize_completed, write_leaderboard_csv,
                                                           render_store_reports)
_RETRY = {"localize_completed": "cxr-bench localize --run-dir RUN_DIR",
          "write_leaderboard_csv": "cxr-bench leaderboard --runs {store}",
          "render_store_reports": "cxr-bench report --runs {store} --suite {suite}"}
