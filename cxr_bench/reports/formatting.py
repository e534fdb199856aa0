"""How a report writes numbers and names: AUCs with three decimals, CIs as ``[lo, hi]``, p-values below
0.001 as ``< 0.001``, label names with spaces, and "too few" where an AUC would rest on too few cases.

Every table and figure of the reports and the CLI's readable output use these, so a label or a number
reads the same everywhere.
"""

from __future__ import annotations

import math
from typing import Any

# Fewest positives (and negatives) for which a report prints an AUC. With 10 positives the 95% CI of an
# AUC of 0.75 is about +-0.18 wide even against unlimited negatives (Hanley & McNeil 1982, Radiology 143:29,
# eq. 2), so a smaller count says nothing a reader could use; below it the report says "too few" instead.
MIN_CASES = 10


def label_name(label: Any) -> str:
    """The one spelling of a label a reader sees: ``Pleural_Thickening`` -> ``Pleural Thickening``, the
    mean over labels -> ``MEAN``."""
    return "MEAN" if label == "mean" else str(label).replace("_", " ")


def fmt(v: Any, nd: int = 3) -> str:
    """A number with ``nd`` decimals; empty for NaN and None; other text as is."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    return "" if math.isnan(f) else f"{f:.{nd}f}"


def num(v: Any) -> float:
    """``v`` as a float; NaN when it is not a number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fmt_ci(lo: Any, hi: Any, nd: int = 3) -> str:
    a, b = fmt(lo, nd), fmt(hi, nd)
    return f"[{a},\u00a0{b}]" if a and b else ""


def fmt_delta(v: Any) -> str:
    f = num(v)
    return f"{f:+.3f}" if math.isfinite(f) else ""


def fmt_p(p: Any) -> str:
    """A p-value for a table: three decimals, ``< 0.001`` below that (a printed 0.000 reads as impossible)."""
    f = num(p)
    if not math.isfinite(f):
        return ""
    return "< 0.001" if f < 0.001 else f"{f:.3f}"


def too_few(n_pos: Any, n_neg: Any = None, minimum: int = MIN_CASES) -> bool:
    """True when an AUC from ``n_pos`` positives and ``n_neg`` negatives would be noise (see MIN_CASES)."""
    p, n = num(n_pos), num(n_neg) if n_neg is not None else math.inf
    return not (p >= minimum and n >= minimum)


def too_few_text(n_pos: Any, n_neg: Any = None) -> str:
    p, n = num(n_pos), num(n_neg) if n_neg is not None else math.inf
    parts = []
    if not p >= MIN_CASES:
        parts.append(f"{int(p) if math.isfinite(p) else 0}\u00a0pos.")
    if not n >= MIN_CASES:
        parts.append(f"{int(n) if math.isfinite(n) else 0}\u00a0neg.")
    return "too few\n" + ", ".join(parts)


CHANCE = 0.5


def at_chance(mean: Any, ci_lo: Any = None) -> bool:
    """True when a run shows no evidence of beating chance: the lower end of its mean AUC's 95% CI is at or
    below 0.5 (without an interval: the mean itself). Such runs are listed, not ranked: their order is noise."""
    lo = num(ci_lo)
    value = lo if math.isfinite(lo) else num(mean)
    return not value > CHANCE
