"""Progress bars for anything a person waits for (tqdm), quiet when output is not a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled(enabled: bool | None = None) -> bool:
    """``None`` means: on when stderr is a terminal and CXR_BENCH_PROGRESS is not 0."""
    if enabled is not None:
        return enabled
    env = os.environ.get("CXR_BENCH_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             enabled: bool | None = None, unit: str = "it", leave: bool = True, **kw: Any) -> tqdm:
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave,
                disable=not progress_enabled(enabled), dynamic_ncols=True, **kw)
