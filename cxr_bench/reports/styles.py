"""The look of every report: table CSS, the colour scales of AUCs and differences, and one colour per
backbone shared by every figure.

Numbers are formatted to strings first and colours come from separate numeric maps
(:func:`gradient_css`), so escaping (:mod:`.escape`) never meets a formatter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from .escape import esc, escape_frame

CMAP = "RdYlGn"  # AUC colour scale (low red, high green), shared by tables and heatmaps
DELTA_CMAP = "RdBu"  # differences: diverging, white at zero

# One colour per backbone in every figure of every report, whatever else a figure shows: the shipped
# backbones have fixed colours (Okabe & Ito's colour-blind-safe set without its yellow),
# and any other name (a ``timm:`` model) takes one of the rest from a hash of its name, so it too keeps its
# colour between figures and reports. No two entries are near-identical hues.
BACKBONE_COLOURS: dict[str, str] = {
    "resnet50": "#0072b2", "densenet121": "#d55e00", "alexnet": "#009e73", "vgg16": "#cc79a7",
    "googlenet": "#e69f00", "mobilenet_v1": "#56b4e9", "resnet18": "#000000",
}
_SPARE_COLOURS = ("#9467bd", "#8c564b", "#7f7f7f", "#bcbd22", "#17becf", "#882255", "#332288")


def backbone_colour(backbone: Any) -> str:
    """The colour of ``backbone`` in every figure (:data:`BACKBONE_COLOURS`, else a stable spare)."""
    name = str(backbone)
    if name in BACKBONE_COLOURS:
        return BACKBONE_COLOURS[name]
    digest = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16)
    return _SPARE_COLOURS[digest % len(_SPARE_COLOURS)]


def backbone_colours(backbones: Iterable[Any]) -> dict[str, str]:
    return {str(b): backbone_colour(b) for b in backbones}


TABLE_CSS = [
    {"selector": "", "props": "font-size: 0.85em; border-collapse: collapse; margin-bottom: 10px;"},
    {"selector": "td, th", "props": "padding: 2px 6px; white-space: pre-line; text-align: left;"},
    {"selector": "td", "props": "font-variant-numeric: tabular-nums;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; font-weight: bold; color: #333;"},
]
# Column headers written bottom-to-top, so a table with a column per label stays within the page.
VERTICAL_HEADER = ("writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; "
                   "vertical-align: bottom;")


def gradient_css(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """CSS background (and a readable text colour) per value on ``cmap``; NaN gets no style (pandas'
    background_gradient paints NaN black)."""
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    v = np.asarray(values, dtype=float)
    out = np.full(v.shape, "", dtype=object)
    ok = np.isfinite(v)
    if ok.any():
        rgba = cm(np.clip((v[ok] - vmin) / (vmax - vmin), 0.0, 1.0))
        lum = 0.2126 * rgba[:, 0] + 0.7152 * rgba[:, 1] + 0.0722 * rgba[:, 2]
        out[ok] = [f"background-color: {matplotlib.colors.to_hex(c)}; color: {'#000' if y > 0.45 else '#fff'}"
                   for c, y in zip(rgba, lum)]
    return out


def styled(df: pd.DataFrame, caption: str = "", *, hide_index: bool = False,
           gradients: Sequence[tuple[Any, np.ndarray, str, float, float]] = (),
           greyed: np.ndarray | None = None, vertical: Sequence[str] = ()) -> Styler:
    """The one way a report shows a table: ``df`` with every string escaped, an escaped caption, compact
    CSS, and background colours from numeric maps (``(columns or None, values, cmap, vmin, vmax)``, values
    shaped like those columns; NaN: no colour). ``greyed`` (a boolean array of ``df``'s shape) greys out
    cells whose number would mislead (too few cases); ``vertical`` columns get bottom-to-top headers."""
    st = escape_frame(df).style.set_table_styles(TABLE_CSS)
    css = np.full(df.shape, "", dtype=object)
    for subset, values, cmap, vmin, vmax in gradients:
        idx = list(range(df.shape[1])) if subset is None else [list(df.columns).index(c) for c in subset]
        block = gradient_css(np.asarray(values, dtype=float).reshape(df.shape[0], len(idx)), cmap, vmin, vmax)
        for k, j in enumerate(idx):
            css[:, j] = np.where(block[:, k] != "", block[:, k], css[:, j])
    if greyed is not None:
        css = np.where(np.asarray(greyed, dtype=bool),
                       "background-color: #eeeeee; color: #666666; font-style: italic", css)
    if (css != "").any():
        st = st.apply(lambda _: css, axis=None)
    if vertical:
        cols = [j for j, c in enumerate(df.columns) if c in set(vertical)]
        heads = [{"selector": f"th.col_heading.col{j}", "props": VERTICAL_HEADER} for j in cols]
        st = st.set_table_styles(heads, overwrite=False)
    if caption:
        st = st.set_caption(esc(caption))
    if hide_index:
        st = st.hide(axis="index")
    return st
