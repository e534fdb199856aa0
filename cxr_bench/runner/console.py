"""The sweep's console: what a run's messages look like on the terminal while its ``log.txt`` keeps them all.

:class:`ConsoleDigest` keeps the metric warnings that every run repeats off the console (one line per run
says what was kept in the log); :class:`SuiteConsole` is the default view of a sweep: one progress bar for
the suite and one line per finished run.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

log = logging.getLogger(__name__)

_WARNINGS_LOG = logging.getLogger("cxr_bench.warnings")


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



# The logger of the sweep's default console: one line per finished run, each distinct warning once. The CLI
# keeps it at INFO while the rest of the package speaks at INFO only with -v (see cxr_bench.cli.run).
CONSOLE_LOG = logging.getLogger("cxr_bench.console")


class RunLines:
    """One console line per finished run (name, test AUC, wall time) and each distinct warning once.

    The digest of a run's metric warnings (:class:`ConsoleDigest`) is usually the same for every run of a
    suite (the same labels lack positives in the same split), so it is said once, with where the details are.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._said: set[str] = set()

    def finished(self, run_id: str, name: str, status: str, *, test_mean_auc: float | None = None,
                 wall_seconds: float | None = None, detail: str = "", warnings: str = "") -> None:
        self.done += 1
        auc = f"test AUC {test_mean_auc:.3f}" if test_mean_auc is not None else ""
        wall = f"{wall_seconds:.0f}s" if wall_seconds is not None else ""
        what = status if status != "completed" else ""
        if status == "failed":
            what = f"FAILED (run {run_id}, see its log.txt): {' '.join(detail.split())[:200]}"
        elif status == "skipped":
            what = f"skipped ({detail})" if detail else "skipped"
        parts = ", ".join(p for p in (auc, wall, what) if p)
        CONSOLE_LOG.info("[%d/%d] %s: %s", self.done, self.total, name, parts)
        if warnings and warnings not in self._said:
            self._said.add(warnings)
            CONSOLE_LOG.info("  note%s: %s; details in log.txt", " (said once)" if self.total > 1 else "",
                             warnings)
