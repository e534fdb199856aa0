"""The image caches of a sweep: built once each, before the runs that read them."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import CxrBenchError
from .precheck import cache_groups

if TYPE_CHECKING:
    from .planning import RunSpec

log = logging.getLogger(__name__)

_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def stops_the_sweep(error: BaseException) -> bool:
    """A full or read-only disk (the error or what caused it): every next cache and run would fail the same
    way, so the sweep stops with one line instead of recording the same failure for every run."""
    return any(isinstance(x, OSError) and x.errno in _DISK_ERRNOS
               for x in (error, error.__cause__, error.__context__))


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
    for group in cache_groups(specs, lambda spec: spec.config).values():
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


