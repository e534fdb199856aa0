"""Plain-text output for a terminal: the one fixed-width table helper of the package."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_cell(value: Any) -> str:
    """Integers with thousands separators, floats to two decimals, anything else as ``str``."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A fixed-width table: a header, a rule of dashes, one line per row, no trailing blanks.

    ``align`` has one letter per column, ``l`` (left) or ``r`` (right); by default every column is left
    aligned. Cells go through :func:`format_cell`.
    """
    cells = [[format_cell(v) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    align = align or "l" * len(headers)

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(vals, widths, align)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def one_line(text: Any, n: int) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``n`` characters with ``...``."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."
