"""Progress for anything a person waits for: a tqdm bar on a terminal, log lines off it (SLURM logs).

``progress(iterable, desc=..., total=..., enabled=...)`` returns an object with tqdm's interface as the
library uses it (iteration, ``update``, ``set_postfix``, ``set_postfix_str``, ``close``, context manager):

- ``enabled=True``: a tqdm bar; ``enabled=False``: nothing at all (``--no-progress``, ranks > 0);
- ``enabled=None`` (the default): a bar when stderr is a terminal; otherwise :class:`LogProgress`, one
  INFO line on the ``cxr_bench.progress`` logger every :data:`LOG_EVERY_PERCENT` percent (at most one per
  :data:`LOG_MIN_SECONDS`, so a fast loop does not flood the log) and a last line with the totals (not for
  a loop that ended within :data:`LOG_MIN_SECONDS`). A bar
  redrawn with carriage returns is unreadable in a SLURM output file; these lines are not.
- ``CXR_BENCH_PROGRESS``: ``0`` turns progress off, ``1`` forces bars, ``log`` forces log lines.

A sweep's default console has one bar, the suite's (:func:`suite_bar`): inside ``progress_scope(nested=False)``
every other bar (epochs, evaluation, bootstrap, caches) is off unless its caller asked for it explicitly
(``enabled=True``), so nothing collides with the suite bar or the per-run lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

log = logging.getLogger("cxr_bench.progress")

ENV = "CXR_BENCH_PROGRESS"
LOG_EVERY_PERCENT = 5
LOG_MIN_SECONDS = 2.0
_NESTED = contextvars.ContextVar("cxr_bench_nested_progress", default=True)


def progress_mode(enabled: bool | None = None) -> str:
    """``"bar"``, ``"log"`` or ``"off"`` for ``enabled`` (see the module docstring)."""
    if enabled is not None:
        return "bar" if enabled else "off"
    if not _NESTED.get():
        return "off"
    return _default_mode()


def _default_mode() -> str:
    env = os.environ.get(ENV)
    if env is not None:
        env = env.strip().lower()
        if env in ("0", "false", "no", "off"):
            return "off"
        if env == "log":
            return "log"
        return "bar"
    return "bar" if sys.stderr.isatty() else "log"


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar is drawn (False for log lines too: a caller that logs its own progress asks this)."""
    return progress_mode(enabled) == "bar"


def _rate(n: float, seconds: float, unit: str) -> str:
    return f"{n / seconds:.3g} {unit}/s" if seconds > 0 else f"- {unit}/s"


class LogProgress:
    """tqdm's interface, reporting through ``logging`` every few percent instead of redrawing a bar."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, desc: str = "", total: int | None = None,
                 unit: str = "it", initial: int = 0, every_percent: float = LOG_EVERY_PERCENT,
                 min_seconds: float | None = None, logger: logging.Logger | None = None,
                 clock: Any = time.monotonic) -> None:
        self.iterable = iterable
        self.desc = desc
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]  # an Iterable may have __len__; TypeError otherwise
            except TypeError:
                total = None
        self.total = total
        self.unit = unit
        self.n = initial
        self.every = every_percent
        self.min_seconds = LOG_MIN_SECONDS if min_seconds is None else min_seconds
        self.logged = False
        self.log = logger or log
        self.clock = clock
        self.start = clock()
        self._last_time = self.start
        self._last_mark = self._mark(initial)
        self.postfix = ""
        self.closed = False

    def _mark(self, n: int) -> int:
        """Index of the last ``every``-percent step reached at ``n`` items (a time step without a total)."""
        if not self.total:
            return -1
        return int(100.0 * n / self.total // self.every)

    def _line(self, final: bool = False) -> str:
        elapsed = self.clock() - self.start
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            where = f"{100.0 * self.n / self.total:3.0f}% {self.n}/{self.total} {self.unit}"
        else:
            where = f"{self.n} {self.unit}"
        tail = f" in {elapsed:.1f} s" if final else f", {elapsed:.0f} s"
        post = f", {self.postfix}" if self.postfix else ""
        return f"{head}{where}{tail} ({_rate(self.n, elapsed, self.unit)}){post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last_time < self.min_seconds:
            return
        mark = self._mark(self.n)
        # With a total: a new 5 % step. Without one: every 30 s of work.
        if (self.total and mark > self._last_mark and self.n < self.total) or \
                (not self.total and now - self._last_time >= 30.0):
            self._last_mark, self._last_time = mark, now
            self.logged = True
            self.log.info("%s", self._line())

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LogProgress without an iterable cannot be iterated")
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()  # not on an exception or an abandoned loop: no "done" line for work that was not

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # A loop shorter than the spacing (a bootstrap over 14 labels, a 1-batch evaluation) stays silent.
        if self.logged or self.clock() - self.start >= self.min_seconds:
            self.log.info("%s", self._line(final=True))

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             enabled: bool | None = None, unit: str = "it", leave: bool = True, **kw: Any) -> Any:
    """A tqdm bar, a :class:`LogProgress` or a silent tqdm, by :func:`progress_mode` ``(enabled)``."""
    mode = progress_mode(enabled)
    if mode == "log":
        return LogProgress(iterable, desc=desc, total=total, unit=unit, initial=int(kw.get("initial", 0)))
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=mode == "off",
                dynamic_ncols=True, **kw)


@contextlib.contextmanager
def progress_scope(*, nested: bool) -> Iterator[None]:
    """Within the block, ``progress(enabled=None)`` draws nothing when ``nested`` is False (see the module
    docstring); the suite bar (:func:`suite_bar`) is drawn either way."""
    token = _NESTED.set(nested)
    try:
        yield
    finally:
        _NESTED.reset(token)


@contextlib.contextmanager
def suite_bar(total: int, desc: str, enabled: bool | None = None) -> Iterator[Any]:
    """The one bar over a sweep's runs: a tqdm bar on a terminal (whatever the scope), nothing off it (the
    per-run lines are the progress there)."""
    if enabled is None:
        enabled = _default_mode() == "bar"
    bar = tqdm(total=total, desc=desc, unit="run", disable=not enabled, dynamic_ncols=True, leave=False)
    # Log lines go above the bar (tqdm.write clears it, prints, redraws) instead of through it.
    moved = [(h, h.setStream(_AboveBar(h.stream))) for h in logging.getLogger().handlers
             if enabled and type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.stdout)]
    try:
        yield bar
    finally:
        for handler, stream in moved:
            handler.setStream(stream)
        bar.close()


class _AboveBar:
    """A console stream whose writes go above the open tqdm bars."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        tqdm.write(text[:-1] if text.endswith("\n") else text, file=self.stream)

    def flush(self) -> None:
        self.stream.flush()
