"""HTML escaping for the reports: every string a report prints passes through :func:`esc` or
:func:`escape_frame`.

Run names, error messages, weights file names and suite names are text from the run store, and a report is
HTML opened in a browser, so every string is escaped before it reaches a cell, an index, a caption or a
sentence (pandas' Styler does not escape by default).
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd


def esc(value: Any) -> str:
    """``value`` as HTML text: every ``<``, ``>``, ``&`` and quote escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def _escape_index(idx: pd.Index) -> pd.Index:
    if isinstance(idx, pd.MultiIndex):
        return pd.MultiIndex.from_tuples([tuple(esc(x) if isinstance(x, str) else x for x in t) for t in idx],
                                         names=[esc(n) if isinstance(n, str) else n for n in idx.names])
    return pd.Index([esc(x) if isinstance(x, str) else x for x in idx],
                    name=esc(idx.name) if isinstance(idx.name, str) else idx.name)


def escape_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with every string cell, index label and column label HTML-escaped."""
    out = df.copy()
    for j in range(out.shape[1]):
        col = out.iloc[:, j]
        if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
            out.isetitem(j, col.astype(object).map(lambda v: esc(v) if isinstance(v, str) else v))
    out.index = _escape_index(out.index)
    out.columns = _escape_index(out.columns)
    return out


def message(text: str) -> str:
    """A one-sentence note where a section has nothing (or nothing meaningful) to show, as HTML."""
    return f'<p style="color:#555;font-style:italic">{esc(text)}</p>'
