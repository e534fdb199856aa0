"""Text for people: fixed-width tables for the terminal (a sweep's summary, a dry run, ``data info``, ``models``,
and a DataFrame such as the leaderboard or a comparison: :func:`text_table`), and the check that text a user
or a file gives, which becomes a name (a run name, a file name, an sbatch value), is one line of visible
characters. Judged by Unicode category, not by code points below 32: U+0085 (NEL), U+2028/U+2029 (line and
paragraph separators) end a line in many readers, and the bidirectional controls (U+202E ...) make a name read
differently from what it is."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the annotation: this module is imported at CLI start-up, without pandas
    import pandas as pd

# Cc controls, Cf format (bidi controls, zero-width), Cs surrogates, Co private use, Cn unassigned, Zl/Zp
# line and paragraph separators.
UNPRINTABLE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def first_unprintable(text: str, *, spaces: bool = True) -> str | None:
    """The first character of ``text`` that a one-line, visible name must not hold; None if there is none.
    ``spaces=False`` also refuses every space but U+0020 (tabs are Cc anyway; U+00A0 and such are Zs)."""
    for c in text:
        if unicodedata.category(c) in UNPRINTABLE_CATEGORIES or (not spaces and c.isspace() and c != " "):
            return c
    return None


def describe_char(c: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: how an error names a character it cannot print."""
    return f"U+{ord(c):04X} ({unicodedata.name(c, unicodedata.category(c))})"


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


def text_table(df: pd.DataFrame, decimals: int = 4, max_colwidth: int = 40) -> str:
    """A DataFrame as a :func:`format_table` for the terminal, without its index: floats with ``decimals``
    (NaN empty), every other cell on one line of at most ``max_colwidth`` characters (:func:`one_line`);
    numeric columns right aligned, the others left. ``(no rows)`` when it is empty."""
    if df.empty:
        return "(no rows)"

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{decimals}f}"
        return one_line(v, max_colwidth)

    align = "".join("r" if df[c].dtype.kind in "iuf" else "l" for c in df.columns)
    rows = [[cell(v) for v in r] for r in df.itertuples(index=False, name=None)]
    return format_table([str(c) for c in df.columns], rows, align)


def one_line(text: Any, n: int) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``n`` characters with ``...``."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."
