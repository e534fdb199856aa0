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

