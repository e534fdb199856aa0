"""Tables for a paper: the leaderboard and the comparisons as GitHub Markdown or LaTeX (``booktabs``).

``cxr-bench leaderboard --format markdown|latex`` prints :func:`leaderboard_tables` (one row per configuration:
its mean test AUC over seeds with the interval :mod:`.compare` gives a configuration, and the number of
seeds); ``cxr-bench compare ... --format markdown|latex`` prints :func:`reference_tables` (per label: ours
over seeds [CI], the paper's value as published, the difference [CI], seeds) or :func:`pair_tables` (one
row per compared pair). Why a row is not comparable with the paper goes under the table as a numbered
footnote, never into a cell.

Numbers: AUCs with 3 decimals, the paper's values exactly as ``replication/`` holds them, differences
signed. Every text cell is escaped for its format (``|`` in Markdown; ``& % $ # _ { } ~ ^ \\`` in LaTeX), so
a run name cannot break the table or inject markup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FORMATS", "PaperTable", "leaderboard_tables", "pair_tables", "reference_tables", "render"]

FORMATS = ("markdown", "latex")
DASH = {"markdown": "—", "latex": "---"}


@dataclass
class PaperTable:
    """A caption, a header, rows of cells (numbers already formatted) and footnotes.

    A cell is a plain string; ``None`` is shown as a dash. ``align`` has one of ``l`` / ``r`` per column.
    """

    caption: str
    header: list[str]
    rows: list[list[str | None]]
    align: str
    footnotes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- numbers
def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _auc(v: Any) -> str | None:
    f = _finite(v)
    return None if f is None else f"{f:.3f}"


def _signed(v: Any) -> str | None:
    f = _finite(v)
    return None if f is None else f"{f:+.3f}"


def _with_ci(value: str | None, lo: Any, hi: Any, fmt: Any = _auc) -> str | None:
    if value is None:
        return None
    a, b = fmt(lo), fmt(hi)
    return value if a is None or b is None else f"{value} [{a}, {b}]"


def _exact(v: Any) -> str | None:
    """A published value as published: the shortest repr of the float ``replication/`` holds."""
    f = _finite(v)
    return None if f is None else repr(f)


# ---------------------------------------------------------------------------------------------- builders
def reference_tables(comparison: pd.DataFrame) -> list[PaperTable]:
    """One table per configuration of a :func:`cxr_bench.results.compare.compare_reference` result."""
    tables = []
    for _, g in comparison.groupby("run_id", sort=False):
        first = g.iloc[0]
        rows = []
        for rec in g.to_dict("records"):
            label = "Mean" if rec["label"] == "mean" else str(rec["label"])
            rows.append([label, _with_ci(_auc(rec["ours"]), rec["ours_ci_lo"], rec["ours_ci_hi"]),
                         _exact(rec["paper"]),
                         _with_ci(_signed(rec["delta"]), rec["delta_ci_lo"], rec["delta_ci_hi"], _signed),
                         str(int(rec["n_seeds"]))])
        caption = (f"{first['backbone']} + {first['head']} head, {first['label_set']}, {first['split']} split, "
                   f"vs {first['source']} ({first['setting']})")
        notes = []
        if not bool(first["comparable"]):
            notes.append(f"Not comparable with the paper: {first['why_not']}.")
        if int(first["n_seeds"]) < 2:
            notes.append("One seed: the interval covers test sampling only, not training variance.")
        tables.append(PaperTable(caption, ["Label", "Ours mean [95% CI]", "Paper", "Difference [95% CI]", "Seeds"],
                                 rows, "lrrrr", notes))
    return tables


def _config_name(rows: pd.DataFrame) -> str:
    name = str(rows.iloc[0].get("run_name") or "")
    seed = rows.iloc[0].get("seed")
    if name and _finite(seed) is not None:  # a suite's names end in -s<seed>: the configuration has several
        name = re.sub(rf"-s{int(float(seed))}$", "", name)
    return name or f"{rows.iloc[0].get('backbone')} + {rows.iloc[0].get('head')}"


def leaderboard_tables(table: pd.DataFrame, *, level: float = 0.95) -> list[PaperTable]:
    """One table per suite of a leaderboard (one row per run): a row per configuration with its mean test
    AUC over seeds and the interval :func:`cxr_bench.results.compare.compare_reference` uses (test sampling
    plus seed variance; a single seed's own patient-bootstrap CI)."""
    from .compare import _config_groups, seed_interval
    from .leaderboard import ranked_rows, truthy

    tables = []
    done = ranked_rows(table)
    for suite, runs in done.groupby("suite", sort=False):
        rows, sample, single = [], False, False
        for g in _config_groups(runs):
            vals, lo, hi = (pd.to_numeric(g[c], errors="coerce").to_numpy(dtype=np.float64)
                            for c in ("mean_auc", "mean_auc_ci_lo", "mean_auc_ci_hi"))
            mean, _sd, ci_lo, ci_hi, _how = seed_interval(vals, lo, hi, level)
            k = int(np.isfinite(vals).sum())
            single |= k == 1
            sample |= "bundled_sample" in g.columns and bool(truthy(g["bundled_sample"]).any())
            rows.append([_config_name(g), str(g.iloc[0].get("label_set")), _with_ci(_auc(mean), ci_lo, ci_hi),
                         str(k)])
        notes = []
        if sample:
            notes.append("Bundled 1,673-image sample: a smoke test, not comparable with any paper.")
        if single:
            notes.append("One seed: the interval covers test sampling only, not training variance.")
        tables.append(PaperTable(f"Suite {suite}: mean test AUC over the labels", ["Model", "Label set",
                                 f"Mean AUC [{round(level * 100)}% CI]", "Seeds"], rows, "llrr", notes))
    return tables


def pair_tables(summary: pd.DataFrame) -> list[PaperTable]:
    """One table of :func:`cxr_bench.results.compare.pair_summary` rows (``--pair`` or ``--ablations``)."""
    rows = [[str(r["factor"]), str(r["value_a"]), str(r["value_b"]), _auc(r["mean_a"]), _auc(r["mean_b"]),
             _with_ci(_signed(r["delta"]), r["ci_lo"], r["ci_hi"], _signed),
             None if _finite(r["p"]) is None else f"{float(r['p']):.3g}", f"{int(r['seeds_a'])}/{int(r['seeds_b'])}"]
            for r in summary.to_dict("records")]
    notes = ["Difference: B - A of the mean test AUC over labels, paired patient bootstrap (with seed variance "
             "when a side has several seeds); p from the same bootstrap."]
    return [PaperTable("Paired comparisons on the same test images", ["Factor", "A", "B", "AUC A", "AUC B",
                       "Difference [95% CI]", "p", "Seeds"], rows, "lllrrrrr", notes)]


# ---------------------------------------------------------------------------------------------- rendering
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_NUMBER = re.compile(r"[+-]?\d+\.\d+")


def _latex_text(s: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in " ".join(s.split()))


def _latex_cell(s: str | None) -> str:
    if s is None:
        return DASH["latex"]
    # A minus sign, not a hyphen, in front of a number.
    return _NUMBER.sub(lambda m: m.group().replace("-", "$-$"), _latex_text(s))


def _md_text(s: str) -> str:
    return " ".join(s.split()).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(s: str | None) -> str:
    return DASH["markdown"] if s is None else _md_text(s)


def to_markdown(t: PaperTable) -> str:
    marks = "".join(f"[^{i}]" for i in range(1, len(t.footnotes) + 1))
    lines = [f"**{_md_text(t.caption)}**{marks}", "", "| " + " | ".join(_md_text(h) for h in t.header) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in t.align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.footnotes:
        lines.append("")
        lines += [f"[^{i}]: {_md_text(n)}" for i, n in enumerate(t.footnotes, 1)]
    return "\n".join(lines) + "\n"


def to_latex(t: PaperTable) -> str:
    marks = ",".join(str(i) for i in range(1, len(t.footnotes) + 1))
    caption = _latex_text(t.caption) + (f"\\textsuperscript{{{marks}}}" if marks else "")
    lines = [r"\begin{table}[htbp]", r"\centering", f"\\caption{{{caption}}}", f"\\begin{{tabular}}{{{t.align}}}",
             r"\toprule", " & ".join(_latex_text(h) for h in t.header) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_cell(c) for c in row) + r" \\" for row in t.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if t.footnotes:
        lines.append(r"\par\smallskip\footnotesize")
        lines += [f"\\textsuperscript{{{i}}}{_latex_text(n)}\\par" for i, n in enumerate(t.footnotes, 1)]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render(tables: Sequence[PaperTable], fmt: str) -> str:
    """The tables in ``fmt`` (``markdown`` or ``latex``), separated by a blank line. LaTeX needs
    ``\\usepackage{booktabs}`` in the preamble."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    one = to_markdown if fmt == "markdown" else to_latex
    return "\n".join(one(t) for t in tables)
