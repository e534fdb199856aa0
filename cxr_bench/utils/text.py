"""Plain fixed-width text tables for the terminal (a sweep's summary, a dry run, ``data info``, ``models``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A fixed-width table: the header, a rule of dashes, one line per row; cells are ``str()``-ed.

    ``align`` has one letter per column, ``l`` or ``r`` (default: all left).
    """
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    align = align or "l" * len(headers)

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(vals, widths, align)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])
